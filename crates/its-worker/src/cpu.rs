//! The CPU worker: decode, letterbox, ONNX Runtime, NMS, on its own threads.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    /// Fault injection at the engine boundary (inert unless armed; tests arm it).
    pub faults: FaultHook,
}

/// Fault injection at the engine boundary of a [`CpuWorker`]: the real batch path runs, and
/// where it would call the detector it fails, panics or waits instead, as armed. Cheap to clone;
/// all clones arm the same worker. Inert by default.
///
/// - `fail_next_batches(n)`: the next `n` batches that reach the detector fail as a device
///   error; the thread then restarts its engine (reloads the detector).
/// - `panic_next_batches(n)`: the next `n` batches panic in the middle of the batch (after
///   decode, before inference); the thread's supervisor catches the panic, restarts the engine,
///   and reports the batch's frames as device errors.
/// - `set_delay(d)`: every batch spends `d` more on the device (a slower device, for routing
///   tests and for simulating overload).
#[derive(Debug, Clone, Default)]
pub struct FaultHook(Arc<FaultState>);

#[derive(Debug, Default)]
struct FaultState {
    fail: AtomicU32,
    panic: AtomicU32,
    delay_ns: AtomicU64,
    restarts: AtomicU64,
}

/// What the fault hook asks of one batch.
enum Fault {
    None,
    Fail,
    Panic,
}

impl FaultHook {
    /// The next `n` batches fail as device errors.
    pub fn fail_next_batches(&self, n: u32) {
        self.0.fail.store(n, Relaxed);
    }

    /// The next `n` batches panic mid-batch.
    pub fn panic_next_batches(&self, n: u32) {
        self.0.panic.store(n, Relaxed);
    }

    /// Every batch takes `d` longer.
    pub fn set_delay(&self, d: Duration) {
        self.0.delay_ns.store(d.as_nanos() as u64, Relaxed);
    }

    /// Engine restarts of the worker so far.
    pub fn restarts(&self) -> u64 {
        self.0.restarts.load(Relaxed)
    }

    fn take(counter: &AtomicU32) -> bool {
        counter
            .fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }

    fn next(&self) -> Fault {
        let delay = self.0.delay_ns.load(Relaxed);
        if delay > 0 {
            std::thread::sleep(Duration::from_nanos(delay));
        }
        if Self::take(&self.0.panic) {
            Fault::Panic
        } else if Self::take(&self.0.fail) {
            Fault::Fail
        } else {
            Fault::None
        }
    }
}

/// Why a batch did not reach a result.
enum BatchFailure {
    /// The engine returned an error; the frames are reported as dropped (`worker_failed`).
    Engine(String),
    /// The device failed or the engine panicked: restart, frames come back as device errors.
    Device(String),
}

/// One thread of the CPU worker. Start them with [`CpuWorker::start`].
pub struct CpuWorker {
    detector: Detector,
    classes: Arc<Vec<String>>,
    limits: DecodeLimits,
    opts: Arc<CpuWorkerOptions>,
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
        let shared = Arc::new(opts.clone());
        let addr = SyncArbiter::start(threads as usize, move || {
            // Each thread takes one preloaded detector. A panic in a batch is caught in the
            // handler, which restarts the engine in place, so the arbiter never restarts a
            // thread (a restart would find the pool empty).
            let detector = pool.lock().ok().and_then(|mut p| p.pop());
            CpuWorker {
                detector: detector.expect("one preloaded detector per worker thread"),
                classes: classes.clone(),
                limits,
                opts: shared.clone(),
            }
        });
        tracing::info!(worker = %info.id, threads, model = %info.model.name, "cpu worker started");
        Ok((addr, info))
    }

    /// Replaces this thread's engine with a freshly loaded one (after a panic or a device
    /// error). When loading fails, the old engine stays and the next batch tries again.
    fn restart(&mut self) {
        match Detector::load(&self.opts.model_dir, &self.opts.ort) {
            Ok(d) => {
                self.detector = d;
                self.opts.faults.0.restarts.fetch_add(1, Relaxed);
                tracing::warn!(worker = %self.opts.id, "engine restarted");
            }
            Err(e) => {
                tracing::error!(worker = %self.opts.id, error = %e, "engine restart failed")
            }
        }
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
            let faults = self.opts.faults.clone();
            let detector = &mut self.detector;
            let run = catch_unwind(AssertUnwindSafe(|| match faults.next() {
                Fault::Panic => panic!("injected fault: the engine died mid-batch"),
                Fault::Fail => Err(BatchFailure::Device(
                    "injected fault: device error".to_owned(),
                )),
                Fault::None => detector
                    .detect(&images)
                    .map_err(|e| BatchFailure::Engine(e.to_string())),
            }));
            match run {
                Ok(r) => r,
                Err(_) => Err(BatchFailure::Device("the engine panicked".to_owned())),
            }
        };
        let mut outputs = match outputs {
            Ok(o) => o.into_iter().map(Some).collect::<Vec<_>>(),
            Err(failure) => {
                let device = matches!(failure, BatchFailure::Device(_));
                let (BatchFailure::Engine(message) | BatchFailure::Device(message)) = failure;
                tracing::warn!(worker = %self.opts.id, %message, frames = images.len(), "batch failed");
                if device {
                    self.restart();
                }
                return jobs
                    .into_iter()
                    .zip(decoded)
                    .map(|(job, d)| {
                        let r = d.err().unwrap_or_else(|| {
                            if device {
                                JobResult::DeviceError {
                                    message: message.clone(),
                                }
                            } else {
                                JobResult::Dropped {
                                    reason: DropReason::WorkerFailed,
                                    message: message.clone(),
                                }
                            }
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
