//! Workers run batches of frames through the detector and hand back one outcome per frame.
//!
//! Architecture invariant: a worker never touches NATS and never drops a frame silently:
//! every job it is given comes back in [`BatchOutcome`], as detections or with a drop reason.
//! Blocking work (decode, inference) runs on the worker's own threads (a `SyncArbiter`),
//! never inside an async handler.

mod api;
mod backend;
mod worker;

pub use api::{
    BatchOutcome, FrameJob, JobResult, PoolReport, RunBatch, SwapError, SwapModel, Swapped,
    WorkerInfo,
};
pub use backend::{Backend, EngineChoice, NativePrecision, native_unavailable};
pub use worker::{FaultHook, ModelSwitch, Worker, WorkerError, WorkerOptions};
