//! The placement leader's lease in the KV bucket `its_cluster_leader`.
//!
//! [`decide`] is the pure rule; [`LeaderElector`] applies it against the bucket. The lease is
//! taken with a create (fails when the key exists) and renewed with an update checked against
//! the revision last read, so two contenders can never both succeed at one revision. A lease
//! lapses when its revision has not changed for `ttl` as observed by the contender itself, so no
//! two clocks are compared. The KV revision of the write that took the lease is the leader's
//! term, kept by its renewals: its fencing token, carried by every assignment it writes.

use std::time::{Duration, Instant};

use its_bus::{Bus, BusError, Kv};
use its_proto::{LeaderLease, SCHEMA_VERSION, cluster::LEADER_BUCKET, cluster::LEADER_KEY};

/// What a contender should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAction {
    /// No lease exists: create it.
    Create,
    /// We hold it at this revision: renew with an update checked against it.
    Renew(u64),
    /// Another node's lease at this revision lapsed: take it over with a checked update.
    TakeOver(u64),
    /// Another node holds a live lease at this revision.
    Follow {
        /// The leader.
        leader: String,
        /// Its lease revision.
        revision: u64,
    },
}

/// The lease entry last seen, and since when this contender has seen that exact revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// Leader node id.
    pub leader: String,
    /// KV revision of the lease entry.
    pub revision: u64,
    /// The leader's term (fencing token).
    pub term: u64,
    /// When this contender first saw this revision.
    pub since: Instant,
}

/// The pure lease rule: given the entry now in the bucket (`current`: leader and revision),
/// what this contender saw before, our id, the time and the ttl.
pub fn decide(
    me: &str,
    current: Option<(&str, u64)>,
    previous: Option<&Observed>,
    now: Instant,
    ttl: Duration,
) -> LeaseAction {
    match current {
        None => LeaseAction::Create,
        Some((leader, revision)) if leader == me => LeaseAction::Renew(revision),
        Some((leader, revision)) => {
            let since = previous
                .filter(|p| p.revision == revision)
                .map_or(now, |p| p.since);
            if now.duration_since(since) >= ttl {
                LeaseAction::TakeOver(revision)
            } else {
                LeaseAction::Follow {
                    leader: leader.to_string(),
                    revision,
                }
            }
        }
    }
}

/// This node's role after a [`LeaderElector::tick`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// We hold the lease; `fence` is our term, to be written into every assignment.
    Leader {
        /// The fencing token.
        fence: u64,
    },
    /// Another node leads (or nobody could be confirmed); we must not write assignments.
    Follower {
        /// The leader, when known.
        leader: Option<String>,
        /// The newest lease term seen.
        fence: u64,
    },
}

/// Contends for and renews the lease. Call [`tick`](Self::tick) about three times per ttl.
pub struct LeaderElector {
    kv: Kv<LeaderLease>,
    me: String,
    ttl: Duration,
    seen: Option<Observed>,
}

impl LeaderElector {
    /// Opens the lease bucket for node `me`.
    pub async fn new(bus: &Bus, me: &str, ttl: Duration) -> Result<Self, BusError> {
        Ok(Self {
            kv: bus.kv(LEADER_BUCKET, 1).await?,
            me: me.to_string(),
            ttl,
            seen: None,
        })
    }

    fn lease(&self, term: u64) -> LeaderLease {
        LeaderLease {
            v: SCHEMA_VERSION,
            node_id: self.me.clone(),
            term,
            renewed_at_ns: crate::now_ns(),
            ttl_ms: u32::try_from(self.ttl.as_millis()).unwrap_or(u32::MAX),
        }
    }

    fn follower(&self) -> Role {
        Role::Follower {
            leader: self.seen.as_ref().map(|s| s.leader.clone()),
            fence: self.seen.as_ref().map_or(0, |s| s.term),
        }
    }

    /// Reads the lease and acts on it: create, renew, take over or follow. A failed create or
    /// update means another node won that revision: we are a follower (a deposed leader learns
    /// it here and must stop writing). Bus errors are returned; the caller must then treat
    /// itself as a follower.
    pub async fn tick(&mut self) -> Result<Role, BusError> {
        let now = Instant::now();
        let entry = self.kv.get(LEADER_KEY).await?;
        let current = entry.as_ref().and_then(|e| {
            e.value
                .as_ref()
                .map(|v| (v.node_id.as_str(), e.revision, v.term_at(e.revision)))
        });
        let action = decide(
            &self.me,
            current.map(|(l, r, _)| (l, r)),
            self.seen.as_ref(),
            now,
            self.ttl,
        );
        if let Some((leader, revision, term)) = current
            && self.seen.as_ref().is_none_or(|s| s.revision != revision)
        {
            self.seen = Some(Observed {
                leader: leader.to_string(),
                revision,
                term,
                since: now,
            });
        }
        let (written, kept_term) = match action {
            LeaseAction::Follow { .. } => return Ok(self.follower()),
            LeaseAction::Create => (self.kv.create(LEADER_KEY, &self.lease(0)).await, None),
            LeaseAction::TakeOver(rev) => {
                (self.kv.update(LEADER_KEY, &self.lease(0), rev).await, None)
            }
            LeaseAction::Renew(rev) => {
                let term = current.map_or(rev, |(_, _, t)| t);
                (
                    self.kv.update(LEADER_KEY, &self.lease(term), rev).await,
                    Some(term),
                )
            }
        };
        match written {
            Ok(revision) => {
                let term = kept_term.unwrap_or(revision);
                self.seen = Some(Observed {
                    leader: self.me.clone(),
                    revision,
                    term,
                    since: Instant::now(),
                });
                Ok(Role::Leader { fence: term })
            }
            Err(BusError::Kv { .. }) => Ok(self.follower()),
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up if we hold it, so another node can take over at once.
    pub async fn resign(&mut self) -> Result<(), BusError> {
        if let Some(e) = self.kv.get(LEADER_KEY).await?
            && e.value.as_ref().is_some_and(|v| v.node_id == self.me)
        {
            self.kv.delete(LEADER_KEY).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_millis(1500);

    #[test]
    fn empty_bucket_is_created_and_own_lease_renewed() {
        let t = Instant::now();
        assert_eq!(decide("a", None, None, t, TTL), LeaseAction::Create);
        assert_eq!(
            decide("a", Some(("a", 4)), None, t, TTL),
            LeaseAction::Renew(4)
        );
    }

    #[test]
    fn foreign_lease_lapses_only_after_ttl_without_a_new_revision() {
        let t0 = Instant::now();
        let seen = Observed {
            leader: "b".into(),
            revision: 7,
            term: 5,
            since: t0,
        };
        let follow = LeaseAction::Follow {
            leader: "b".into(),
            revision: 7,
        };
        assert_eq!(
            decide("a", Some(("b", 7)), Some(&seen), t0 + TTL / 2, TTL),
            follow
        );
        assert_eq!(
            decide("a", Some(("b", 7)), Some(&seen), t0 + TTL, TTL),
            LeaseAction::TakeOver(7)
        );
        // a renewal (new revision) restarts the clock
        assert!(matches!(
            decide("a", Some(("b", 8)), Some(&seen), t0 + TTL * 2, TTL),
            LeaseAction::Follow { revision: 8, .. }
        ));
    }
}
