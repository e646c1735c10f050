//! Cluster placement for ITS Camera AI.
//!
//! The core is [`placement::place`], a pure function from the cluster as the leader sees it
//! (nodes with capacity, cameras with demand and priority, the current assignment) to the next
//! assignment and the moves that lead to it. [`fence::FenceFilter`] decides which assignments a
//! node obeys (fencing by leader-lease revision) and [`dedup::SeqDedup`] suppresses the
//! duplicate results of a make-before-break handover by (camera, seq).
//!
//! Architecture invariant: nothing in this module tree does I/O; the NATS parts (membership
//! heartbeats, the leader lease, the assignment bucket) are thin layers around these functions.

pub mod dedup;
pub mod fence;
pub mod placement;

pub use dedup::SeqDedup;
pub use fence::{FenceFilter, FenceVerdict};
pub use placement::{CameraDemand, Move, NodeView, Placement, PlacementParams, place};
