//! The inference-engine seam: anything that turns an input batch tensor into a raw output.

use crate::{EngineError, InputSpec};

/// A raw output tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RawOutput {
    /// The values, `shape.iter().product()` of them.
    pub data: Vec<f32>,
    /// The tensor shape, e.g. `[batch, 84, 8400]`.
    pub shape: Vec<usize>,
}

/// An inference engine for one model.
///
/// Implementations: [`OrtEngine`](crate::OrtEngine) (ONNX Runtime; CPU, CUDA, TensorRT
/// execution providers). Tests use fakes.
pub trait Engine: Send {
    /// The input tensor the model expects (one image of it; the batch is the outer dim).
    fn input(&self) -> InputSpec;

    /// Runs one batch. `input` holds `batch` images laid out as [`Engine::input`] says,
    /// i.e. `batch * 3 * height * width` floats for NCHW.
    fn run(&mut self, input: &[f32], batch: usize) -> Result<RawOutput, EngineError>;

    /// A short name for logs, e.g. `ort[cpu]:tiny-yolo`.
    fn name(&self) -> &str;
}
