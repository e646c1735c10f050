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
        }
    }

    /// Adds an item; refuses it (newest is dropped) when its class is full.
    pub fn push(&mut self, p: Priority, q: Queued<T>) -> Result<(), (QueueFull, Queued<T>)> {
        let class = &mut self.classes[p.index()];
        if class.len() >= self.capacity {
            return Err((QueueFull, q));
        }
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
        out
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
        self.classes
            .iter()
            .flat_map(|c| c.iter())
            .map(|q| q.deadline)
            .min()
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
