//! The messages between the scheduler and any worker.

use std::path::PathBuf;
use std::time::Instant;

use actix::Message;
use its_engine::EngineError;
use its_proto::{Detection, DropReason, FrameMsg, ModelRef};

/// One frame handed to a worker.
#[derive(Debug)]
pub struct FrameJob {
    /// The frame as received (envelope checked, payload not yet decoded).
    pub frame: FrameMsg,
    /// When the node received it.
    pub received_at: Instant,
    /// When the scheduler put it into a batch.
    pub dispatched_at: Instant,
    /// When its result is due (capture time plus its class deadline, on this process's clock).
    pub deadline: Instant,
    /// Runs before this one that ended in a device error (the scheduler retries once).
    pub attempts: u8,
}

/// What became of one job.
#[derive(Debug)]
pub enum JobResult {
    /// The detector ran.
    Done {
        /// Detections in original-frame pixels.
        detections: Vec<Detection>,
        /// Decoded width, pixels.
        frame_width: u32,
        /// Decoded height, pixels.
        frame_height: u32,
        /// Decode and preprocessing time of the batch, ns.
        preprocess_ns: u64,
        /// Inference time of the batch, ns.
        infer_ns: u64,
        /// Output decoding and NMS time of the batch, ns.
        postprocess_ns: u64,
    },
    /// The device failed while running the batch (the worker restarts its engine before it
    /// answers); the frame itself may be fine, so the scheduler may retry it once on another
    /// worker (else it is dropped as `device_error`).
    DeviceError {
        /// What failed.
        message: String,
    },
    /// The frame could not be served.
    Dropped {
        /// Counted reason.
        reason: DropReason,
        /// Detail for the error event.
        message: String,
    },
}

/// Runs a batch; answered with a [`BatchOutcome`] holding every job.
#[derive(Debug, Message)]
#[rtype(result = "BatchOutcome")]
pub struct RunBatch {
    /// The frames, highest priority first.
    pub jobs: Vec<FrameJob>,
}

/// Every job of a batch with its result, in the order given.
#[derive(Debug)]
pub struct BatchOutcome {
    /// The jobs and what became of them.
    pub results: Vec<(FrameJob, JobResult)>,
    /// Wall time the worker spent on the batch, ns.
    pub service_ns: u64,
    /// The model the batch ran on; `None` for a worker whose model never changes (its
    /// [`WorkerInfo::model`]).
    pub model: Option<ModelRef>,
}

impl BatchOutcome {
    /// Whether the device failed on this batch (some job came back as a device error); the
    /// worker restarts its engine before answering such a batch.
    pub fn device_failed(&self) -> bool {
        self.results
            .iter()
            .any(|(_, r)| matches!(r, JobResult::DeviceError { .. }))
    }
}

/// Static facts about a worker, for status reports and results.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    /// Worker id, unique on the node.
    pub id: String,
    /// `cpu` or the GPU's name (the CPU worker on the native engine: the GPU's name and the
    /// engine, `NVIDIA H200 native[fp16]`).
    pub device: String,
    /// The inference engine its detectors run on, e.g. `ort[cpu]:tiny-yolo` or
    /// `native[fp16]:tiny-yolo` (the model it started with).
    pub engine: String,
    /// Concurrent batches it runs.
    pub slots: u32,
    /// The model it runs.
    pub model: ModelRef,
    /// NVML telemetry of its GPU (workers on the native engine or the GPU frame path);
    /// `None` on the CPU.
    pub gpu: Option<its_gpu::GpuTelemetry>,
}

/// Loads another model beside the one a worker runs and switches to it between batches; the
/// old one is released. Answered with the models before and after.
#[derive(Debug, Message)]
#[rtype(result = "Result<Swapped, SwapError>")]
pub struct SwapModel {
    /// Model directory (`model.toml` + ONNX file).
    pub model_dir: PathBuf,
}

/// A completed model swap.
#[derive(Debug, Clone, PartialEq)]
pub struct Swapped {
    /// The model the worker ran before.
    pub previous: ModelRef,
    /// The model it runs now.
    pub model: ModelRef,
}

/// Why a model swap did not happen; the worker keeps its model.
#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    /// The new model could not be loaded.
    #[error("cannot load the model in {model_dir}: {source}")]
    Load {
        /// The model directory.
        model_dir: PathBuf,
        /// Why.
        source: EngineError,
    },
    /// The worker has stopped.
    #[error("the worker has stopped: {0}")]
    Stopped(String),
}
