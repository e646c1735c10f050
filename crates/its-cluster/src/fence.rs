//! Fencing of assignments by leader-lease revision.
//!
//! Every assignment the placement leader writes carries the revision of the lease under which
//! it was written. A node remembers the newest lease revision it has seen and obeys an
//! assignment only if its fence is at least that revision: a deposed leader, whose lease was
//! taken over at a higher revision, can still write, but nobody acts on it.

/// What a node does with an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceVerdict {
    /// Written under the newest lease seen: obey it.
    Obey,
    /// Written under an older lease than one already seen: ignore it.
    Stale,
}

/// The newest leader-lease revision a node has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FenceFilter {
    newest: u64,
}

impl FenceFilter {
    /// A filter that has seen no lease yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a lease revision seen on the lease key (a new leader or a renewal that took a
    /// new lease). Older revisions never lower the fence.
    pub fn observe_lease(&mut self, revision: u64) {
        self.newest = self.newest.max(revision);
    }

    /// The newest lease revision seen.
    pub fn newest(&self) -> u64 {
        self.newest
    }

    /// Judges an assignment written under lease revision `fence`. An obeyed assignment also
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
