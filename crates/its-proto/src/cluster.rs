//! Cluster membership, the placement leader's lease and camera assignments.
//!
//! Three NATS KV buckets, every value a MessagePack named map like any other message:
//!
//! - [`NODES_BUCKET`], key = node id: the node's [`NodeInfo`] heartbeat. A node whose
//!   `heartbeat_at_ns` is older than [`DEAD_AFTER_HEARTBEATS`] heartbeat intervals is dead.
//! - [`LEADER_BUCKET`], key [`LEADER_KEY`]: the [`LeaderLease`]. It is taken with a create
//!   (fails if the key exists) and renewed with an update checked against the revision last
//!   read; the KV revision of the taking write is the leader's term, its fencing token.
//! - [`ASSIGNMENTS_BUCKET`], key = camera id: the [`Assignment`] of that camera, carrying the
//!   fencing token under which it was written. Nodes ignore an assignment whose `fence` is
//!   older than the newest lease revision they have seen.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// KV bucket of node heartbeats, key = node id.
pub const NODES_BUCKET: &str = "its_cluster_nodes";
/// KV bucket of the placement leader's lease.
pub const LEADER_BUCKET: &str = "its_cluster_leader";
/// Key of the lease in [`LEADER_BUCKET`].
pub const LEADER_KEY: &str = "leader";
/// KV bucket of camera assignments, key = camera id.
pub const ASSIGNMENTS_BUCKET: &str = "its_cluster_assignments";
/// Heartbeat intervals a node may miss before it is dead.
pub const DEAD_AFTER_HEARTBEATS: u32 = 3;

/// `its.control.cluster.<node_id>`: [`ClusterControl`] requests (drain, resume) for one node.
pub fn control_cluster(node_id: &str) -> String {
    format!("{}.control.cluster.{node_id}", crate::subjects::ROOT)
}

/// A node's heartbeat in [`NODES_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NodeInfo {
    /// Schema version of this message.
    pub v: u16,
    /// Node id.
    pub node_id: String,
    /// GPUs on the node (0 for a CPU-only node).
    pub gpus: u32,
    /// Estimated frames per second the node can serve with its model and input size.
    pub capacity_fps: f64,
    /// Frames per second the node received over the last interval.
    pub load_fps: f64,
    /// Cameras the node currently serves.
    pub cameras: u32,
    /// The node was asked to give its cameras away.
    pub draining: bool,
    /// The node is draining and serves no camera any more.
    pub drained: bool,
    /// The node's overload breaker has been open for a sustained period.
    pub overloaded: bool,
    /// Time of this heartbeat, unix nanoseconds.
    pub heartbeat_at_ns: u64,
    /// Interval between heartbeats, milliseconds.
    pub heartbeat_ms: u32,
}

/// The placement leader's lease in [`LEADER_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct LeaderLease {
    /// Schema version of this message.
    pub v: u16,
    /// Node id of the leader.
    pub node_id: String,
    /// The leader's term: the KV revision of the write with which it took the lease, kept by
    /// its renewals; 0 in that taking write itself, meaning "this entry's revision". The term is
    /// the fencing token written into every assignment.
    #[serde(default)]
    pub term: u64,
    /// Last renewal, unix nanoseconds.
    pub renewed_at_ns: u64,
    /// The lease lapses when not renewed within this many milliseconds.
    pub ttl_ms: u32,
}

/// The assignment of one camera in [`ASSIGNMENTS_BUCKET`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Assignment {
    /// Schema version of this message.
    pub v: u16,
    /// Camera id.
    pub camera_id: String,
    /// Node that serves the camera.
    pub node_id: String,
    /// Node that served it before, which lets go once `node_id` has subscribed
    /// (make-before-break).
    #[serde(default)]
    pub previous_node: Option<String>,
    /// Term of the leader lease under which this was written (fencing token).
    pub fence: u64,
    /// Time written, unix nanoseconds.
    pub written_at_ns: u64,
}

/// A request on `its.control.cluster.<node_id>`; the reply is a `ControlReply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ClusterControl {
    /// Move every camera of the node elsewhere and report `drained` when none is left.
    Drain,
    /// Take cameras again.
    Resume,
}

impl LeaderLease {
    /// The term of this lease read at KV revision `revision`.
    pub fn term_at(&self, revision: u64) -> u64 {
        if self.term == 0 { revision } else { self.term }
    }
}
