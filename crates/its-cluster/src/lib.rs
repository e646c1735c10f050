//! Cluster placement for ITS Camera AI.
//!
//! The core is [`placement::place`], a pure function from the cluster as the leader sees it
//! (nodes with capacity, cameras with demand and priority, the current assignment) to the next
//! assignment and the moves that lead to it. [`fence::FenceFilter`] decides which assignments a
//! node obeys (fencing by leader-lease revision); [`handover::ResultGate`] decides which of the
//! two nodes of a make-before-break handover publishes each frame's result, and with
//! [`dedup::SeqDedup`] lets one result per (camera, seq) through.
//!
//! [`lease::LeaderElector`] is the thin NATS layer of the leader lease around the pure
//! [`lease::decide`]; [`membership`] judges node heartbeats.
//!
//! Architecture invariant: the decisions (placement, fencing, lease, liveness, dedup) are pure
//! functions of their inputs and the time they are given; the NATS parts only read and write
//! the buckets of `its_proto::cluster` through `its-bus`.

pub mod agent;
pub mod dedup;
pub mod fence;
pub mod handover;
pub mod lease;
pub mod membership;
mod mirror;
pub mod placement;

pub use agent::{AgentConfig, AgentState, ClusterAgent};
pub use dedup::SeqDedup;
pub use fence::{FenceFilter, FenceVerdict};
pub use handover::{ResultGate, Verdict, Window, Windows};
pub use placement::{CameraDemand, Move, NodeView, Placement, PlacementParams, place};

pub use lease::{LeaderElector, LeaseAction, Role};

/// Wall-clock time now, unix nanoseconds.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}
