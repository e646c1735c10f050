//! Camera ingest: one [`CameraActor`] per camera, publishing JPEG frames on
//! `its.frames.<camera_id>`.
//!
//! Architecture invariant: cameras know the bus and the wire contract, nothing of scheduling or
//! inference. A camera never decodes a JPEG it passes through.

mod actor;
mod synthetic;

pub use actor::{CameraActor, CameraSnapshot, CameraState, GetSnapshot, StopCamera, WaitStopped};
pub use synthetic::{SceneSpec, SyntheticScene};

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
