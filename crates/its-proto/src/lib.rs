//! The wire contract of ITS Camera AI.
//!
//! Every message that crosses NATS is defined here, together with the subjects it travels on
//! and the limits a receiver enforces. `proto/README.md` is the readable specification and
//! `proto/schema.json` the machine-readable one; a test keeps both in step with these types.
//!
//! Architecture invariant: this crate does no I/O and knows nothing of NATS clients, actors or
//! engines. Anything that needs to agree on bytes or subject names depends on it.

pub mod cluster;
mod codec;
mod messages;
pub mod registry;
pub mod schema;
pub mod subjects;

pub use cluster::{Assignment, ClusterControl, LeaderLease, NodeInfo};
pub use codec::{ProtoError, decode, decode_frame, encode};
pub use messages::*;
pub use registry::{CAMERAS_BUCKET, CameraSpec, HttpMode, RtspTransport, SpecError, redact_url};

/// Version of the message schema written by this build. See `proto/README.md` for the rule.
pub const SCHEMA_VERSION: u16 = 1;

/// Hard limits a receiver enforces before doing any work on a message.
pub mod limits {
    /// Largest encoded FrameMsg accepted by default (1 MiB, the nats-server default payload).
    pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
    /// Largest width or height of a frame, in pixels.
    pub const MAX_FRAME_DIM: u32 = 8192;
    /// Longest camera id, in bytes.
    pub const MAX_CAMERA_ID_LEN: usize = 64;
    /// Most detections one DetectionMsg carries.
    pub const MAX_DETECTIONS: usize = 1000;
}
