//! The CPU worker: decode, letterbox, ONNX Runtime, NMS, on its own threads.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix::prelude::*;
use its_engine::{DecodeLimits, Detector, EngineError, OrtOptions, RgbImage};
use its_proto::{Detection, DropReason, Encoding, ModelRef};

use crate::{BatchOutcome, FrameJob, JobResult, RunBatch, WorkerInfo};

/// Errors of starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum CpuWorkerError {
    /// The model or ONNX Runtime could not be loaded.
    #[error("cannot load the detector from {model_dir}: {source}")]
    Load {
        /// The model directory.
        model_dir: PathBuf,
        /// Why.
        source: EngineError,
    },
}

/// How to start the CPU worker.
#[derive(Debug, Clone)]
pub struct CpuWorkerOptions {
    /// Worker id, unique on the node.
    pub id: String,
    /// Model directory (`model.toml` + ONNX file).
    pub model_dir: PathBuf,
    /// ONNX Runtime options.
    pub ort: OrtOptions,
    /// Threads, each with its own detector; the worker's slot count.
    pub threads: u32,
    /// Largest decoded frame side, pixels.
    pub max_frame_dim: u32,
}

/// One thread of the CPU worker. Start them with [`CpuWorker::start`].
pub struct CpuWorker {
    detector: Detector,
    classes: Arc<Vec<String>>,
    limits: DecodeLimits,
}

impl Actor for CpuWorker {
    type Context = SyncContext<Self>;
}

impl CpuWorker {
    /// Loads one detector per thread (so a bad model fails here, at start-up) and starts the
    /// threads. Must be called inside an actix system.
    pub fn start(opts: &CpuWorkerOptions) -> Result<(Addr<CpuWorker>, WorkerInfo), CpuWorkerError> {
        let threads = opts.threads.max(1);
        let mut detectors = Vec::with_capacity(threads as usize);
        for _ in 0..threads {
            detectors.push(
                Detector::load(&opts.model_dir, &opts.ort).map_err(|source| {
                    CpuWorkerError::Load {
                        model_dir: opts.model_dir.clone(),
                        source,
                    }
                })?,
            );
        }
        let manifest = detectors[0].manifest().clone();
        let info = WorkerInfo {
            id: opts.id.clone(),
            device: "cpu".into(),
            slots: threads,
            model: ModelRef {
                name: manifest.name.clone(),
                version: manifest.version.clone(),
            },
        };
        let classes = Arc::new(manifest.classes.clone());
        let limits = DecodeLimits {
            max_width: opts.max_frame_dim,
            max_height: opts.max_frame_dim,
        };
        let pool = Arc::new(Mutex::new(detectors));
        let addr = SyncArbiter::start(threads as usize, move || {
            // Each thread takes one preloaded detector. A panic inside the detector is caught
            // in `run` and reported as `worker_failed`, so the arbiter never restarts a thread
            // (a restart would find the pool empty).
            let detector = pool.lock().ok().and_then(|mut p| p.pop());
            CpuWorker {
                detector: detector.expect("one preloaded detector per worker thread"),
                classes: classes.clone(),
                limits,
            }
        });
        tracing::info!(worker = %info.id, threads, model = %info.model.name, "cpu worker started");
        Ok((addr, info))
    }

    fn run(&mut self, jobs: Vec<FrameJob>) -> Vec<(FrameJob, JobResult)> {
        let t0 = Instant::now();
        let mut images: Vec<RgbImage> = Vec::with_capacity(jobs.len());
        let mut decoded: Vec<Result<usize, JobResult>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            if job.frame.encoding != Encoding::Jpeg {
                decoded.push(Err(JobResult::Dropped {
                    reason: DropReason::UnsupportedEncoding,
                    message: format!(
                        "the CPU worker decodes JPEG only, this frame is {:?}",
                        job.frame.encoding
                    ),
                }));
                continue;
            }
            match its_engine::decode_jpeg_with_limits(&job.frame.data, &self.limits) {
                Ok(img) => {
                    decoded.push(Ok(images.len()));
                    images.push(img);
                }
                Err(e) => {
                    let reason = match e {
                        EngineError::EmptyImage { .. } | EngineError::ImageTooLarge { .. } => {
                            DropReason::BadDimensions
                        }
                        _ => DropReason::Undecodable,
                    };
                    decoded.push(Err(JobResult::Dropped {
                        reason,
                        message: e.to_string(),
                    }));
                }
            }
        }
        let decode_ns = t0.elapsed().as_nanos() as u64;
        let outputs = if images.is_empty() {
            Ok(Vec::new())
        } else {
            match catch_unwind(AssertUnwindSafe(|| self.detector.detect(&images))) {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the detector panicked".to_owned()),
            }
        };
        let mut outputs = match outputs {
            Ok(o) => o.into_iter().map(Some).collect::<Vec<_>>(),
            Err(message) => {
                tracing::warn!(%message, frames = images.len(), "batch failed");
                return jobs
                    .into_iter()
                    .zip(decoded)
                    .map(|(job, d)| {
                        let r = d.err().unwrap_or_else(|| JobResult::Dropped {
                            reason: DropReason::WorkerFailed,
                            message: message.clone(),
                        });
                        (job, r)
                    })
                    .collect();
            }
        };
        jobs.into_iter()
            .zip(decoded)
            .map(|(job, d)| {
                let result = match d {
                    Err(dropped) => dropped,
                    Ok(i) => {
                        let out = outputs[i].take().expect("one output per image");
                        JobResult::Done {
                            detections: out
                                .detections
                                .iter()
                                .take(its_proto::limits::MAX_DETECTIONS)
                                .map(|d| Detection {
                                    class_id: d.class_id,
                                    class_name: self
                                        .classes
                                        .get(d.class_id as usize)
                                        .cloned()
                                        .unwrap_or_default(),
                                    score: d.score,
                                    x1: d.x1,
                                    y1: d.y1,
                                    x2: d.x2,
                                    y2: d.y2,
                                })
                                .collect(),
                            frame_width: images[i].width,
                            frame_height: images[i].height,
                            preprocess_ns: decode_ns + out.preprocess_ns,
                            infer_ns: out.infer_ns,
                            postprocess_ns: out.postprocess_ns,
                        }
                    }
                };
                (job, result)
            })
            .collect()
    }
}

impl Handler<RunBatch> for CpuWorker {
    type Result = MessageResult<RunBatch>;

    fn handle(&mut self, msg: RunBatch, _: &mut SyncContext<Self>) -> Self::Result {
        let t0 = Instant::now();
        let results = self.run(msg.jobs);
        MessageResult(BatchOutcome {
            results,
            service_ns: t0.elapsed().as_nanos() as u64,
        })
    }
}
