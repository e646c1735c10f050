//! The messages between the scheduler and any worker.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::Message;
use its_engine::EngineError;
use its_gpu::PoolStats;
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
    /// Counters of the device and pinned pools of its GPU streams (the GPU frame path);
    /// `None` elsewhere.
    pub pools: Option<PoolReport>,
}

/// The buffer pools of a GPU worker's streams, as each stream last reported them: one
/// (device pool, pinned pool) entry per stream. Cheap to clone; every clone reads the same.
#[derive(Debug, Clone, Default)]
pub struct PoolReport(Arc<Mutex<Vec<(PoolStats, PoolStats)>>>);

impl PoolReport {
    /// A report for `streams` streams, all zero.
    pub fn new(streams: usize) -> Self {
        Self(Arc::new(Mutex::new(vec![Default::default(); streams])))
    }

    /// Stream `slot`'s counters now (called by the stream after each batch).
    pub fn set(&self, slot: usize, device: PoolStats, pinned: PoolStats) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = v.get_mut(slot) {
            *e = (device, pinned);
        }
    }

    /// Every stream's device and pinned pools summed: hits, misses, evictions and bytes
    /// add up; the high-water mark is the sum of each pool's own.
    pub fn total(&self) -> PoolStats {
        let v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .flat_map(|(d, p)| [d, p])
            .fold(PoolStats::default(), |mut t, s| {
                t.hits += s.hits;
                t.misses += s.misses;
                t.evictions += s.evictions;
                t.bytes_held += s.bytes_held;
                t.bytes_in_use += s.bytes_in_use;
                t.high_water_bytes += s.high_water_bytes;
                t
            })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_report_sums_every_stream_and_both_pools() {
        let r = PoolReport::new(2);
        let s = |hits, misses, held| PoolStats {
            hits,
            misses,
            bytes_held: held,
            high_water_bytes: held,
            ..Default::default()
        };
        r.set(0, s(10, 2, 100), s(5, 1, 10));
        r.set(1, s(7, 3, 200), s(0, 0, 0));
        // A slot past the streams is ignored rather than growing the report.
        r.set(2, s(1000, 1000, 1000), s(0, 0, 0));
        let t = r.total();
        assert_eq!((t.hits, t.misses), (22, 6));
        assert_eq!((t.bytes_held, t.high_water_bytes), (310, 310));
        // A later report of a stream replaces its earlier one.
        r.set(0, s(20, 2, 100), s(5, 1, 10));
        assert_eq!(r.total().hits, 32);
    }
}
