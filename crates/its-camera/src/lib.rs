//! Camera ingest: one [`CameraActor`] per camera under a [`CameraSupervisor`], publishing JPEG
//! frames on `its.frames.<camera_id>`; a [`Registry`] keeps the cameras in step with the NATS
//! KV registry and shares them between ingest processes.
//!
//! Sources: synthetic scenes, HTTP MJPEG streams and JPEG snapshots, directories of JPEGs
//! (all passed through without re-encoding), and RTSP streams and video files, decoded and
//! re-encoded to JPEG by a supervised `ffmpeg` child process (which also reads `https://`
//! MJPEG streams, copying their JPEGs).
//!
//! Architecture invariant: cameras know the bus and the wire contract, nothing of scheduling or
//! inference. A camera never decodes a JPEG it passes through.

mod actor;
mod backoff;
mod capture;
mod ffmpeg;
mod http;
pub mod jpeg;
mod registry;
mod source;
mod stats;
mod supervisor;
mod synthetic;

pub use actor::{
    Boost, CameraActor, CameraEnv, CameraSnapshot, GetSnapshot, Shutdown, StopCamera, WaitStopped,
};
pub use backoff::{Backoff, RestartPolicy, Verdict};
pub use its_proto::CameraState;
pub use registry::{LEASES_BUCKET, Lease, Registry, RegistryOptions};
pub use source::{SourceError, SourceFrame, SourceOptions};
pub use stats::{
    DROP_BEHIND, DROP_CORRUPT, DROP_FPS_LIMIT, DROP_LATE, DROP_PUBLISH_FAILED, DROP_TOO_LARGE,
    LiveCounts,
};
pub use supervisor::{
    ApplySpec, CameraSupervisor, GetSupervisorSnapshot, RemoveCamera, StopAll, SupervisorSnapshot,
    WaitAllStopped,
};
pub use synthetic::{SceneCache, SceneSpec, SyntheticScene};

/// Errors of camera sources.
#[derive(Debug, thiserror::Error)]
pub enum CameraError {
    /// A frame could not be encoded.
    #[error("cannot encode a {width}x{height} frame as JPEG: {detail}")]
    Encode {
        /// Frame width.
        width: u32,
        /// Frame height.
        height: u32,
        /// Encoder's message.
        detail: String,
    },
    /// The scene parameters are unusable.
    #[error("invalid scene: {0}")]
    Scene(String),
}
