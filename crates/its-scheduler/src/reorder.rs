//! Per-camera reorder buffer: results of one camera leave in sequence order even when batches
//! finish out of order across workers.
//!
//! Every queued frame is registered (`expect`) with its camera and sequence number. When it
//! settles, a result is offered (`ready`) and a drop is recorded (`settled`): a drop releases
//! nothing, but no longer holds later results back. A result leaves as soon as every earlier
//! registered frame of its camera has settled. A result held longer than `hold` (or past the
//! due time it was given, e.g. its deadline), or beyond `capacity` held results for its camera,
//! leaves anyway (with the held results before it);
//! an earlier frame that settles after that leaves flagged `out_of_order`.
//!
//! All functions take the time as an argument, so the policy is tested without a clock.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

enum Slot<T> {
    Pending,
    /// A result and when it must leave at the latest.
    Ready(T, Instant),
}

struct Camera<T> {
    slots: BTreeMap<u64, Slot<T>>,
    held: usize,
    /// Highest sequence number released so far.
    released: Option<u64>,
}

/// A result leaving the buffer.
#[derive(Debug, PartialEq)]
pub struct Released<T> {
    /// The result.
    pub item: T,
    /// It leaves after a later result of its camera.
    pub out_of_order: bool,
}

/// The reorder buffer of all cameras.
pub struct ReorderBuffer<T> {
    cameras: HashMap<String, Camera<T>>,
    hold: Duration,
    capacity: usize,
    held: usize,
}

impl<T> std::fmt::Debug for ReorderBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReorderBuffer")
            .field("cameras", &self.cameras.len())
            .field("held", &self.held)
            .finish()
    }
}

impl<T> ReorderBuffer<T> {
    /// Holds a result at most `hold`, and at most `capacity` results per camera.
    pub fn new(hold: Duration, capacity: usize) -> Self {
        ReorderBuffer {
            cameras: HashMap::new(),
            hold,
            capacity: capacity.max(1),
            held: 0,
        }
    }

    /// Results held now.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Registers a frame that will settle later. A sequence number already registered (a
    /// camera that restarted its counter) is ignored; its results are simply not ordered.
    pub fn expect(&mut self, camera: &str, seq: u64) {
        let cam = match self.cameras.get_mut(camera) {
            Some(c) => c,
            None => self.cameras.entry(camera.to_owned()).or_insert(Camera {
                slots: BTreeMap::new(),
                held: 0,
                released: None,
            }),
        };
        cam.slots.entry(seq).or_insert(Slot::Pending);
    }

    /// A registered frame settled without a result.
    pub fn settled(&mut self, camera: &str, seq: u64, out: &mut Vec<Released<T>>) {
        if let Some(cam) = self.cameras.get_mut(camera)
            && let Some(Slot::Pending) = cam.slots.get(&seq)
        {
            cam.slots.remove(&seq);
            self.drain_front(camera, out);
        }
    }

    /// A result for a registered frame; what can leave now is appended to `out`. A result for a
    /// frame never registered leaves at once.
    pub fn ready(
        &mut self,
        camera: &str,
        seq: u64,
        item: T,
        now: Instant,
        out: &mut Vec<Released<T>>,
    ) {
        self.ready_until(camera, seq, item, now, now + self.hold, out);
    }

    /// As [`ready`](Self::ready), but the result waits at most until `due` (and never longer
    /// than `hold`): the scheduler passes the frame's deadline, so ordering never makes a
    /// result miss it. A `due` at or before `now` releases the result at once.
    pub fn ready_until(
        &mut self,
        camera: &str,
        seq: u64,
        item: T,
        now: Instant,
        due: Instant,
        out: &mut Vec<Released<T>>,
    ) {
        let due = due.min(now + self.hold);
        let Some(cam) = self.cameras.get_mut(camera) else {
            out.push(Released {
                item,
                out_of_order: false,
            });
            return;
        };
        match cam.slots.get_mut(&seq) {
            Some(slot @ Slot::Pending) => {
                *slot = Slot::Ready(item, due);
                cam.held += 1;
                self.held += 1;
            }
            _ => {
                let out_of_order = cam.released.is_some_and(|r| r > seq);
                out.push(Released { item, out_of_order });
                return;
            }
        }
        self.drain_front(camera, out);
        if due <= now {
            self.release_upto(camera, seq, out);
        }
        let Some(cam) = self.cameras.get_mut(camera) else {
            return;
        };
        if cam.held > self.capacity {
            let oldest = cam
                .slots
                .iter()
                .find(|(_, s)| matches!(s, Slot::Ready(..)))
                .map(|(k, _)| *k);
            if let Some(upto) = oldest {
                self.release_upto(camera, upto, out);
            }
        }
    }

    /// Releases results due at `now` (with the held results before them).
    pub fn expire(&mut self, now: Instant, out: &mut Vec<Released<T>>) {
        if self.held == 0 {
            return;
        }
        let mut due: Vec<(String, u64)> = Vec::new();
        for (id, cam) in &self.cameras {
            let last_due = cam
                .slots
                .iter()
                .filter_map(|(seq, s)| match s {
                    Slot::Ready(_, due) if *due <= now => Some(*seq),
                    _ => None,
                })
                .last();
            if let Some(seq) = last_due {
                due.push((id.clone(), seq));
            }
        }
        for (id, seq) in due {
            self.release_upto(&id, seq, out);
        }
    }

    /// The earliest instant a held result is due to leave.
    pub fn next_expiry(&self) -> Option<Instant> {
        if self.held == 0 {
            return None;
        }
        self.cameras
            .values()
            .flat_map(|c| c.slots.values())
            .filter_map(|s| match s {
                Slot::Ready(_, due) => Some(*due),
                Slot::Pending => None,
            })
            .min()
    }

    /// Releases every held result of `camera` up to `upto`, leaving earlier pending frames.
    fn release_upto(&mut self, camera: &str, upto: u64, out: &mut Vec<Released<T>>) {
        let Some(cam) = self.cameras.get_mut(camera) else {
            return;
        };
        let ready: Vec<u64> = cam
            .slots
            .range(..=upto)
            .filter(|(_, s)| matches!(s, Slot::Ready(..)))
            .map(|(k, _)| *k)
            .collect();
        for seq in ready {
            if let Some(Slot::Ready(item, _)) = cam.slots.remove(&seq) {
                cam.held -= 1;
                self.held -= 1;
                let out_of_order = cam.released.is_some_and(|r| r > seq);
                cam.released = Some(cam.released.map_or(seq, |r| r.max(seq)));
                out.push(Released { item, out_of_order });
            }
        }
        self.drain_front(camera, out);
    }

    /// Releases the results at the front of `camera` that wait for nothing, and forgets a
    /// camera with nothing registered.
    fn drain_front(&mut self, camera: &str, out: &mut Vec<Released<T>>) {
        let Some(cam) = self.cameras.get_mut(camera) else {
            return;
        };
        while let Some(entry) = cam.slots.first_entry() {
            if matches!(entry.get(), Slot::Pending) {
                break;
            }
            let seq = *entry.key();
            if let Slot::Ready(item, _) = entry.remove() {
                cam.held -= 1;
                self.held -= 1;
                let out_of_order = cam.released.is_some_and(|r| r > seq);
                cam.released = Some(cam.released.map_or(seq, |r| r.max(seq)));
                out.push(Released { item, out_of_order });
            }
        }
        if cam.slots.is_empty() {
            // Everything registered has left: forget the camera, so the map holds only
            // cameras with frames in flight.
            self.cameras.remove(camera);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn seqs(out: &[Released<u64>]) -> Vec<(u64, bool)> {
        out.iter().map(|r| (r.item, r.out_of_order)).collect()
    }

    #[test]
    fn results_leave_in_order_and_drops_unblock() {
        let t0 = Instant::now();
        let mut b = ReorderBuffer::new(100 * MS, 16);
        for s in 1..=4 {
            b.expect("a", s);
        }
        let mut out = Vec::new();
        b.ready("a", 3, 3, t0, &mut out);
        b.ready("a", 2, 2, t0, &mut out);
        assert!(out.is_empty());
        b.settled("a", 1, &mut out);
        assert_eq!(seqs(&out), vec![(2, false), (3, false)]);
        out.clear();
        b.ready("a", 4, 4, t0, &mut out);
        assert_eq!(seqs(&out), vec![(4, false)]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_result_held_too_long_leaves_and_the_late_one_is_flagged() {
        let t0 = Instant::now();
        let mut b = ReorderBuffer::new(100 * MS, 16);
        for s in 1..=3 {
            b.expect("a", s);
        }
        let mut out = Vec::new();
        b.ready("a", 2, 2, t0, &mut out);
        b.ready("a", 3, 3, t0 + 50 * MS, &mut out);
        assert_eq!(b.next_expiry(), Some(t0 + 100 * MS));
        b.expire(t0 + 99 * MS, &mut out);
        assert!(out.is_empty());
        b.expire(t0 + 100 * MS, &mut out);
        assert_eq!(seqs(&out), vec![(2, false)]);
        b.expire(t0 + 150 * MS, &mut out);
        assert_eq!(seqs(&out), vec![(2, false), (3, false)]);
        out.clear();
        b.ready("a", 1, 1, t0 + 200 * MS, &mut out);
        assert_eq!(seqs(&out), vec![(1, true)]);
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn a_result_never_waits_past_its_due_time() {
        let t0 = Instant::now();
        let mut b = ReorderBuffer::new(100 * MS, 16);
        for s in 1..=3 {
            b.expect("a", s);
        }
        let mut out = Vec::new();
        b.ready_until("a", 2, 2, t0, t0 + 10 * MS, &mut out);
        assert_eq!(b.next_expiry(), Some(t0 + 10 * MS));
        b.ready_until("a", 3, 3, t0, t0, &mut out);
        assert_eq!(
            seqs(&out),
            vec![(2, false), (3, false)],
            "due now: leaves at once"
        );
        out.clear();
        b.settled("a", 1, &mut out);
        assert!(out.is_empty());
        assert_eq!(b.held(), 0);
    }

    #[test]
    fn capacity_bounds_what_one_camera_holds() {
        let t0 = Instant::now();
        let mut b = ReorderBuffer::new(Duration::from_secs(10), 2);
        for s in 0..5 {
            b.expect("a", s);
        }
        let mut out = Vec::new();
        for s in 1..5 {
            b.ready("a", s, s, t0, &mut out);
        }
        assert_eq!(seqs(&out), vec![(1, false), (2, false)]);
        assert_eq!(b.held(), 2);
    }
}
