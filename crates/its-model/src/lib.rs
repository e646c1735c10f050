//! `its-model`: model files.
//!
//! * [`onnx`]: the ONNX protobuf messages this project writes and reads (hand-written `prost`
//!   structs, field numbers from `onnx.proto`), plus parameter and operator counts.
//! * [`graph`]: [`GraphBuilder`], a small append-only ONNX graph builder.
//! * [`darknet`]: Darknet `.cfg` + `.weights` to an ONNX graph whose output is already
//!   decoded to the YOLOv5 layout, and the `model.toml` manifest `its-engine` loads.
//! * [`synth`]: the public YOLO11n / YOLOv8n architectures with deterministic random weights.
//!
//! Architecture invariant: this crate writes and reads files; it never runs a model (tests
//! do, through `its-engine`).

pub mod darknet;
mod error;
pub mod graph;
pub mod onnx;
pub mod synth;

pub use error::ModelError;
pub use graph::GraphBuilder;
