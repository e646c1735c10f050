//! `its-engine`: YOLO object detection on the CPU reference path.
//!
//! Frames come in as JPEG bytes or RGB images and leave as [`Detection`]s in
//! original-frame pixels:
//!
//! ```text
//! decode_jpeg -> letterbox_into (batch tensor) -> Engine::run -> decode_yolov8/5 -> nms -> to_original
//! ```
//!
//! * [`manifest`]: `model.toml`, the contract between a model file and this crate.
//! * [`preprocess`]: JPEG decode and letterbox; **the reference the CUDA kernels are tested
//!   against**, so its formulas are documented exactly.
//! * [`decode`], [`mod@nms`]: output tensor -> boxes.
//! * [`engine`]: the [`Engine`] trait; [`ort_engine`]: ONNX Runtime behind it, loaded
//!   dynamically (this crate is the only owner of the `ort` dependency).
//! * [`detector`]: [`Detector`] ties it together for a batch of images.
//!
//! Architecture invariant: this crate knows nothing about cameras, NATS or scheduling; it
//! takes images and returns detections.

pub mod decode;
pub mod detector;
pub mod engine;
mod error;
pub mod manifest;
pub mod nms;
pub mod ort_engine;
pub mod preprocess;

pub use decode::{Candidate, Detection, decode_yolov5, decode_yolov8};
pub use detector::{DetectOutput, Detector};
pub use engine::{Engine, RawOutput};
pub use error::EngineError;
pub use manifest::{InputSpec, ModelManifest, OutputFormat};
pub use nms::nms;
pub use ort_engine::{ExecutionProviderKind, OrtEngine, OrtOptions, find_onnxruntime};
pub use preprocess::{
    DecodeLimits, Letterbox, PAD_VALUE, RgbImage, decode_jpeg, decode_jpeg_with_limits,
    letterbox_into,
};
