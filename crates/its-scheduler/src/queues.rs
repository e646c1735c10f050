//! Four FIFO queues, one per priority class, each frame with a deadline.
//!
//! Within a class frames share the deadline offset, so FIFO order is earliest-deadline order.
//! Taking a batch drains the highest class first.

use std::collections::VecDeque;
use std::time::Instant;

use its_proto::Priority;

/// A queued item with its times.
#[derive(Debug)]
pub struct Queued<T> {
    /// The item.
    pub item: T,
    /// When it entered the queue.
    pub arrived: Instant,
    /// When it must have been dispatched.
    pub deadline: Instant,
}

/// The per-class queues.
#[derive(Debug)]
pub struct Queues<T> {
    classes: [VecDeque<Queued<T>>; 4],
    capacity: usize,
    /// The earliest deadline of everything queued (`None` when empty). Kept exact: lowered on
    /// push, recomputed after removals, so the per-frame checks cost O(1) and only removals
    /// (per batch, or when something did expire) scan the queues.
    earliest: Option<Instant>,
}

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

impl<T> Queues<T> {
    /// Empty queues holding at most `capacity` items per class.
    pub fn new(capacity: usize) -> Self {
        Queues {
            classes: Default::default(),
            capacity,
            earliest: None,
        }
    }

    /// Adds an item; refuses it (newest is dropped) when its class is full.
    pub fn push(&mut self, p: Priority, q: Queued<T>) -> Result<(), (QueueFull, Queued<T>)> {
        let class = &mut self.classes[p.index()];
        if class.len() >= self.capacity {
            return Err((QueueFull, q));
        }
        self.earliest = Some(self.earliest.map_or(q.deadline, |e| e.min(q.deadline)));
        class.push_back(q);
        Ok(())
    }

    /// Total queued.
    pub fn len(&self) -> usize {
        self.classes.iter().map(VecDeque::len).sum()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued in one class.
    pub fn depth(&self, p: Priority) -> usize {
        self.classes[p.index()].len()
    }

    /// Removes and returns every item whose deadline is at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Queued<T>> {
        let mut out = Vec::new();
        if self.earliest.is_none_or(|e| e > now) {
            return out;
        }
        for class in &mut self.classes {
            let mut i = 0;
            while i < class.len() {
                if class[i].deadline <= now {
                    out.extend(class.remove(i));
                } else {
                    i += 1;
                }
            }
        }
        self.recompute_earliest();
        out
    }

    fn recompute_earliest(&mut self) {
        self.earliest = self
            .classes
            .iter()
            .flat_map(|c| c.iter())
            .map(|q| q.deadline)
            .min();
    }

    /// Takes up to `n` items, highest class first, FIFO within a class.
    pub fn take(&mut self, n: usize) -> Vec<Queued<T>> {
        let mut out = Vec::with_capacity(n);
        for class in &mut self.classes {
            while out.len() < n {
                match class.pop_front() {
                    Some(q) => out.push(q),
                    None => break,
                }
            }
        }
        self.recompute_earliest();
        out
    }

    /// Takes every item of one class.
    pub fn take_class(&mut self, p: Priority) -> Vec<Queued<T>> {
        let out: Vec<Queued<T>> = self.classes[p.index()].drain(..).collect();
        if !out.is_empty() {
            self.recompute_earliest();
        }
        out
    }

    /// Arrival of the oldest queued item.
    pub fn oldest_arrival(&self) -> Option<Instant> {
        self.classes
            .iter()
            .filter_map(|c| c.front())
            .map(|q| q.arrived)
            .min()
    }

    /// The earliest deadline of all queued items.
    pub fn earliest_deadline(&self) -> Option<Instant> {
        self.earliest
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn q(item: u32, t0: Instant, ms: u64) -> Queued<u32> {
        Queued {
            item,
            arrived: t0,
            deadline: t0 + Duration::from_millis(ms),
        }
    }

    #[test]
    fn higher_classes_are_taken_first_and_fifo_within_a_class() {
        let t0 = Instant::now();
        let mut qs = Queues::new(10);
        qs.push(Priority::Background, q(1, t0, 500)).unwrap();
        qs.push(Priority::Normal, q(2, t0, 100)).unwrap();
        qs.push(Priority::Normal, q(3, t0, 100)).unwrap();
        qs.push(Priority::Emergency, q(4, t0, 20)).unwrap();
        let taken: Vec<u32> = qs.take(3).into_iter().map(|q| q.item).collect();
        assert_eq!(taken, vec![4, 2, 3]);
        assert_eq!(qs.len(), 1);
        assert_eq!(qs.depth(Priority::Background), 1);
    }

    #[test]
    fn a_full_class_refuses_the_newest_frame_only() {
        let t0 = Instant::now();
        let mut qs = Queues::new(2);
        qs.push(Priority::Normal, q(1, t0, 100)).unwrap();
        qs.push(Priority::Normal, q(2, t0, 100)).unwrap();
        let (_, back) = qs.push(Priority::Normal, q(3, t0, 100)).unwrap_err();
        assert_eq!(back.item, 3);
        qs.push(Priority::Urgent, q(4, t0, 100))
            .expect("other classes still accept");
        assert_eq!(qs.len(), 3);
    }

    #[test]
    fn the_earliest_deadline_follows_pushes_and_takes() {
        let t0 = Instant::now();
        let mut qs = Queues::new(10);
        assert_eq!(qs.earliest_deadline(), None);
        qs.push(Priority::Normal, q(1, t0, 100)).unwrap();
        qs.push(Priority::Normal, q(2, t0, 30)).unwrap();
        qs.push(Priority::Background, q(3, t0, 500)).unwrap();
        assert_eq!(qs.earliest_deadline(), Some(t0 + Duration::from_millis(30)));
        assert!(qs.take_expired(t0 + Duration::from_millis(29)).is_empty());
        qs.take(2);
        assert_eq!(
            qs.earliest_deadline(),
            Some(t0 + Duration::from_millis(500))
        );
        qs.take(1);
        assert_eq!(qs.earliest_deadline(), None);
    }

    #[test]
    fn expired_frames_are_removed_and_returned() {
        let t0 = Instant::now();
        let mut qs = Queues::new(10);
        qs.push(Priority::Normal, q(1, t0, 10)).unwrap();
        qs.push(Priority::Normal, q(2, t0, 50)).unwrap();
        qs.push(Priority::Urgent, q(3, t0, 5)).unwrap();
        let gone: Vec<u32> = qs
            .take_expired(t0 + Duration::from_millis(10))
            .into_iter()
            .map(|q| q.item)
            .collect();
        assert_eq!(gone, vec![3, 1]);
        assert_eq!(qs.len(), 1);
        assert_eq!(qs.earliest_deadline(), Some(t0 + Duration::from_millis(50)));
    }
}
