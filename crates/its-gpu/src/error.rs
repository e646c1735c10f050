//! The crate's error type.

use cudarc::driver::DriverError;

/// Everything that can go wrong on the GPU path.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// The CUDA driver library (libcuda.so.1) could not be loaded: no NVIDIA driver here.
    #[error("no CUDA driver: {0}")]
    NoDriver(String),
    /// The driver loaded but there is no device with this ordinal.
    #[error("no CUDA device {ordinal}: {reason}")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// What the driver said.
        reason: String,
    },
    /// The NVRTC library (libnvrtc.so.13) could not be loaded, so kernels cannot be compiled.
    #[error("no NVRTC library: {0}")]
    NoNvrtc(String),
    /// NVRTC rejected a kernel source.
    #[error("kernel {kernel} failed to compile: {log}")]
    Compile {
        /// The kernel file.
        kernel: &'static str,
        /// The compiler's log.
        log: String,
    },
    /// The nvJPEG library (libnvjpeg.so.13) or one of its symbols could not be loaded.
    #[error("no nvjpeg library: {0}")]
    NoNvjpeg(String),
    /// nvJPEG refused a frame or a batch.
    #[error("jpeg decode: {0}")]
    Jpeg(String),
    /// A CUDA driver call failed.
    #[error("cuda driver: {0}")]
    Driver(#[from] DriverError),
    /// The caller passed frames, sizes or buffers that do not fit.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}
