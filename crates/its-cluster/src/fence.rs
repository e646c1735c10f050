//! Fencing of assignments by leader-lease term.
//!
//! Every assignment the placement leader writes carries its term: the KV revision of the write
//! with which it took the lease. A node remembers the newest term it has seen and obeys an
//! assignment only if its fence is at least that term: a deposed leader, whose lease was taken
//! over at a higher revision, can still write, but nobody acts on it.

/// What a node does with an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceVerdict {
    /// Written under the newest lease seen: obey it.
    Obey,
    /// Written under an older lease than one already seen: ignore it.
    Stale,
}

/// The newest leader-lease term a node has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceFilter {
    newest: u64,
}

impl FenceFilter {
    /// A filter that has seen no lease yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a lease term seen on the lease key. Older terms never lower the fence.
    pub fn observe_lease(&mut self, revision: u64) {
        self.newest = self.newest.max(revision);
    }

    /// The newest lease term seen.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Judges an assignment written under lease term `fence`. An obeyed assignment also
    /// raises the fence, since its writer held that lease.
    pub fn judge(&mut self, fence: u64) -> FenceVerdict {
        if fence < self.newest {
            FenceVerdict::Stale
        } else {
            self.newest = fence;
            FenceVerdict::Obey
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deposed_leader_is_ignored_after_a_newer_lease() {
        let mut f = FenceFilter::new();
        assert_eq!(f.judge(3), FenceVerdict::Obey);
        f.observe_lease(7);
        assert_eq!(f.judge(3), FenceVerdict::Stale);
        assert_eq!(f.judge(7), FenceVerdict::Obey);
        f.observe_lease(5);
        assert_eq!(f.newest(), 7);
        assert_eq!(f.judge(6), FenceVerdict::Stale);
    }
}
