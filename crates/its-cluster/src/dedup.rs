//! Duplicate suppression by (camera, seq) for make-before-break handover.
//!
//! While a camera moves, the new node subscribes before the old one lets go, so for a short
//! window both may produce a result for the same frame. A consumer-side or publisher-side
//! [`SeqDedup`] lets the first result of each (camera, seq) through and drops the rest. It keeps
//! a window of the newest `window` sequence numbers per camera, so memory stays bounded.

use std::collections::{BTreeSet, HashMap};

/// Remembers recently seen sequence numbers per camera.
#[derive(Debug, Clone)]
pub struct SeqDedup {
    window: u64,
    seen: HashMap<String, BTreeSet<u64>>,
}

impl SeqDedup {
    /// A suppressor that remembers, per camera, sequence numbers within `window` of the newest.
    pub fn new(window: u64) -> Self {
        Self {
            window: window.max(1),
            seen: HashMap::new(),
        }
    }

    /// True when (camera, seq) is new and should pass; false for a duplicate, or for a
    /// sequence number older than the window (already settled as far as this filter knows).
    pub fn admit(&mut self, camera: &str, seq: u64) -> bool {
        let set = match self.seen.get_mut(camera) {
            Some(s) => s,
            None => self.seen.entry(camera.to_string()).or_default(),
        };
        let newest = set.last().copied().unwrap_or(seq).max(seq);
        let floor = newest.saturating_sub(self.window - 1);
        if seq < floor || !set.insert(seq) {
            return false;
        }
        while set.first().is_some_and(|&s| s < floor) {
            set.pop_first();
        }
        true
    }

    /// Forgets a camera (it left this node for good).
    pub fn forget(&mut self, camera: &str) {
        self.seen.remove(camera);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_copy_of_a_frame_is_suppressed() {
        let mut d = SeqDedup::new(64);
        assert!(d.admit("c1", 1));
        assert!(d.admit("c1", 2));
        assert!(!d.admit("c1", 1));
        assert!(d.admit("c2", 1));
        assert!(!d.admit("c1", 2));
        assert!(d.admit("c1", 4));
        assert!(d.admit("c1", 3));
    }

    #[test]
    fn memory_stays_within_the_window() {
        let mut d = SeqDedup::new(8);
        for s in 0..1000 {
            assert!(d.admit("c", s));
        }
        assert!(d.seen["c"].len() <= 8);
        assert!(!d.admit("c", 10));
    }
}
