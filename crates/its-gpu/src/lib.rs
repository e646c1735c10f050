//! The GPU path of ITS Camera AI: CUDA context and run-time compiled kernels (cudarc, NVRTC,
//! loaded dynamically so the crate builds and runs on machines without CUDA), and the fused
//! letterbox preprocessing kernel, GPU post-processing (decode + NMS), frame quality, nvJPEG
//! batched decode, bounded device / pinned pools, [`GpuPipeline`] tying them together, and
//! [`GpuLane`]: one GPU worker stream, JPEG in and detections out, with the native engine.
//!
//! Architecture invariant: this is the only crate that imports cudarc. Kernels are CUDA C in
//! `kernels/`, embedded with `include_str!`, compiled once per device and cached.

// Kernel launches, pinned allocations and cudarc's library probing are `unsafe` in cudarc's
// API; each use carries a SAFETY comment. The rest of the workspace stays `deny(unsafe_code)`.
#![allow(unsafe_code)]

pub mod context;
pub mod engine;
mod error;
pub mod lane;
pub mod letterbox;
pub mod nvjpeg;
pub mod pipeline;
pub mod pool;
pub mod postprocess;
pub mod quality;
pub mod telemetry;
pub mod testdata;

pub use context::{
    GpuContext, KernelSource, compile_kernel, device_count, driver_available, nvrtc_available,
};
pub use error::GpuError;
pub use lane::{GpuLane, LaneBatch, LaneConfig, LaneFrame, LaneTimings};
pub use letterbox::{
    FrameRef, HostFrame, LetterboxConfig, LetterboxKernels, LetterboxParams, Letterboxer,
};
pub use nvjpeg::{JpegBackend, JpegDecoder, JpegOutput};
pub use pipeline::{
    GpuPipeline, InputDtype, PipelineConfig, PreparedBatch, PreparedFrame, StageTimings,
};
pub use pool::{DevicePool, PinnedPool, PoolStats};
pub use postprocess::{Detection, FrameGeometry, PostprocessConfig, Postprocessor};
pub use quality::{QualityIssue, QualityKernel, QualityReport};
pub use telemetry::{GpuSample, GpuTelemetry};

/// Env var that turns "no GPU here" in GPU tests and the bench into a failure.
pub const REQUIRE_GPU_ENV: &str = "ITS_REQUIRE_GPU";

/// Whether [`REQUIRE_GPU_ENV`] is set to 1 (or "true").
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}
