//! The native inference engine: YOLO-family ONNX graphs lowered to a [`Plan`] (shapes fixed
//! per batch profile, shape arithmetic folded, SiLU and activations fused into convolutions)
//! and run by [`CudaEngine`] on cuDNN convolutions and our kernels (`kernels/engine.cu`), with
//! one arena and one CUDA graph per execution context. [`cpu::run`] is the reference.

pub mod cache;
pub mod cpu;
pub mod cuda;
mod fused;
pub mod layout;
pub mod memory;
pub mod native;
pub mod plan;
pub mod slices;
pub mod tensor;

pub use cache::{CacheOutcome, EngineCache};
pub use cuda::{BuildReport, ConvMath, CudaEngine, EngineOptions, OpTime};
pub use native::NativeEngine;
pub use plan::{Act, BinOp, Op, Plan, Tid, View};

/// Why a model could not be turned into a plan or run.
#[derive(Debug, thiserror::Error)]
pub enum EngineBuildError {
    /// The file is not a model this engine can read.
    #[error("model: {0}")]
    Model(String),
    /// An operator, or an attribute of one, that the engine does not implement.
    #[error("unsupported operator {op} (node `{node}`): {detail}")]
    Unsupported {
        /// ONNX op type.
        op: String,
        /// Node name.
        node: String,
        /// What exactly is not supported.
        detail: String,
    },
    /// Shapes that do not fit together.
    #[error("shape: {0}")]
    Shape(String),
    /// A CUDA, cuDNN or kernel failure.
    #[error("gpu: {0}")]
    Gpu(#[from] crate::GpuError),
}

impl From<cudarc::driver::DriverError> for EngineBuildError {
    fn from(e: cudarc::driver::DriverError) -> Self {
        Self::Gpu(e.into())
    }
}
