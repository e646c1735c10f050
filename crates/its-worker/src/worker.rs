//! The worker actor: batches of frames on the worker's own threads, each thread with its own
//! engine. On the CPU stages a thread decodes, letterboxes, runs its detector (ONNX Runtime, or
//! the native CUDA engine) and applies NMS; on the GPU frame path (`engine.backend = gpu`, or
//! `auto` with a GPU) each thread owns an [`its_gpu::GpuLane`] (its own CUDA stream, nvJPEG,
//! letterbox kernel, engine contexts and GPU NMS), so a GPU worker with 8 threads runs 8
//! streams that overlap on the device. [`EngineChoice`] picks.
//!
//! Each thread runs batches on its own detector, kept in a slot of its own. Every detector comes
//! from one function of the engine resolved at start (`Resolved::load`): with the native engine
//! each thread has its own execution context (stream, buffers, CUDA graphs) on the shared GPU.
//! A model swap ([`ModelSwitch`]) loads one new detector per thread on a separate loader
//! thread, beside the running ones, then takes every slot (waiting for the batches running in
//! them to end), puts the new detectors in and releases the old ones: every batch runs whole on
//! one model, the batches after the switch on the new one, and no frame waits for the load.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix::prelude::*;
use its_engine::{DecodeLimits, EngineError, OrtOptions, RgbImage};
use its_gpu::GpuError;
use its_proto::{Detection, DropReason, Encoding, ModelRef};

use crate::backend::{Resolved, Runner};
use crate::{
    Backend, BatchOutcome, EngineChoice, FrameJob, JobResult, PoolReport, RunBatch, SwapError,
    SwapModel, Swapped, WorkerInfo,
};

/// Errors of starting a worker.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The model or ONNX Runtime could not be loaded.
    #[error("cannot load the detector from {model_dir}: {source}")]
    Load {
        /// The model directory.
        model_dir: PathBuf,
        /// Why.
        source: EngineError,
    },
    /// `engine.backend = "native"` or `"gpu"`, and the native engine cannot run here.
    #[error(
        "engine.backend = \"{backend}\" needs a CUDA GPU (device {gpu_device}) with cuDNN and NVRTC, and there is none usable: {reason}; set engine.backend = \"auto\" (the GPU where one is present, ONNX Runtime otherwise) or \"ort\""
    )]
    NoGpu {
        /// The backend asked for (`native` or `gpu`).
        backend: &'static str,
        /// The device asked for (`engine.gpu_device`).
        gpu_device: u32,
        /// Why it is not usable.
        reason: String,
    },
}

/// How to start the CPU worker.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Worker id, unique on the node.
    pub id: String,
    /// Model directory (`model.toml` + ONNX file).
    pub model_dir: PathBuf,
    /// ONNX Runtime options (the ONNX Runtime engine only).
    pub ort: OrtOptions,
    /// Which engine the detectors run on; ONNX Runtime by default.
    pub engine: EngineChoice,
    /// Threads, each with its own detector; the worker's slot count.
    pub threads: u32,
    /// Largest decoded frame side, pixels.
    pub max_frame_dim: u32,
    /// Fault injection at the engine boundary (inert unless armed; tests arm it).
    pub faults: FaultHook,
}

impl WorkerOptions {
    /// A worker of `threads` threads on ONNX Runtime (one intra-op thread each), frames up to
    /// the protocol's largest side, no fault armed: what tests and tools start from.
    pub fn cpu(id: impl Into<String>, model_dir: impl Into<PathBuf>, threads: u32) -> Self {
        WorkerOptions {
            id: id.into(),
            model_dir: model_dir.into(),
            ort: OrtOptions {
                intra_threads: 1,
                ..Default::default()
            },
            engine: EngineChoice::default(),
            threads,
            max_frame_dim: its_proto::limits::MAX_FRAME_DIM,
            faults: FaultHook::default(),
        }
    }
}

/// Fault injection at the engine boundary of a [`Worker`]: the real batch path runs, and
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

/// A loaded detector (or GPU lane) and where it came from.
struct Loaded {
    runner: Runner,
    model: ModelRef,
    classes: Vec<String>,
    model_dir: PathBuf,
}

impl Loaded {
    fn load(engine: &Resolved, model_dir: &Path, ort: &OrtOptions) -> Result<Loaded, EngineError> {
        let runner = engine.load(model_dir, ort)?;
        let m = runner.manifest();
        Ok(Loaded {
            model: ModelRef {
                name: m.name.clone(),
                version: m.version.clone(),
            },
            classes: m.classes.clone(),
            model_dir: model_dir.to_owned(),
            runner,
        })
    }
}

/// What the threads of one worker and its model loader share.
struct Shared {
    /// One detector per thread; a thread holds its slot for the inference of a batch.
    slots: Vec<Mutex<Loaded>>,
    /// The slot the next thread to start takes.
    next_slot: AtomicUsize,
    /// The engine every detector of this worker is built on.
    engine: Resolved,
    opts: WorkerOptions,
    limits: DecodeLimits,
}

impl Shared {
    fn slot(&self, i: usize) -> MutexGuard<'_, Loaded> {
        // A panic in a batch is caught inside the guard's scope, so a slot is never poisoned
        // by one; if it were, the detector in it is still whole.
        self.slots[i].lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One thread of the CPU worker. Start them with [`Worker::start`].
pub struct Worker {
    slot: usize,
    shared: Arc<Shared>,
    /// Where this thread's lane reports its pools (GPU frame path).
    pools: Option<PoolReport>,
}

impl Actor for Worker {
    type Context = SyncContext<Self>;
}

/// Switches a running [`Worker`] to another model: send it a [`SwapModel`] (or call
/// [`swap`](Self::swap)). Cheap to clone. Swaps of one worker run one at a time.
#[derive(Clone)]
pub struct ModelSwitch {
    loader: Addr<ModelLoader>,
}

impl std::fmt::Debug for ModelSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSwitch").finish_non_exhaustive()
    }
}

impl ModelSwitch {
    /// Where [`SwapModel`] requests go.
    pub fn recipient(&self) -> Recipient<SwapModel> {
        self.loader.clone().recipient()
    }

    /// Loads `model_dir` beside the running model, switches every thread to it between
    /// batches and releases the old detectors. On a load error nothing changes.
    pub async fn swap(&self, model_dir: impl Into<PathBuf>) -> Result<Swapped, SwapError> {
        self.loader
            .send(SwapModel {
                model_dir: model_dir.into(),
            })
            .await
            .unwrap_or_else(|e| Err(SwapError::Stopped(e.to_string())))
    }
}

/// The loader thread of one CPU worker: loads new detectors off the batch threads.
struct ModelLoader {
    shared: Arc<Shared>,
}

impl Actor for ModelLoader {
    type Context = SyncContext<Self>;
}

impl Handler<SwapModel> for ModelLoader {
    type Result = Result<Swapped, SwapError>;

    fn handle(&mut self, msg: SwapModel, _: &mut SyncContext<Self>) -> Self::Result {
        let sh = &self.shared;
        let t0 = Instant::now();
        // Load beside the running detectors: the batch threads keep serving meanwhile.
        let mut fresh = Vec::with_capacity(sh.slots.len());
        for _ in 0..sh.slots.len() {
            fresh.push(
                Loaded::load(&sh.engine, &msg.model_dir, &sh.opts.ort).map_err(|source| {
                    SwapError::Load {
                        model_dir: msg.model_dir.clone(),
                        source,
                    }
                })?,
            );
        }
        let loaded_in = t0.elapsed();
        let model = fresh[0].model.clone();
        // Take every slot (each waits for the batch running in it), then switch them all at
        // once: every batch after this point runs on the new model.
        let t1 = Instant::now();
        let mut guards: Vec<MutexGuard<'_, Loaded>> =
            (0..sh.slots.len()).map(|i| sh.slot(i)).collect();
        let previous = guards[0].model.clone();
        let mut old = Vec::with_capacity(guards.len());
        for (g, new) in guards.iter_mut().zip(fresh) {
            old.push(std::mem::replace(&mut **g, new));
        }
        drop(guards);
        let paused = t1.elapsed();
        // The old detectors (ONNX Runtime sessions and their buffers) are released here.
        drop(old);
        tracing::info!(
            worker = %sh.opts.id,
            from = %format!("{} {}", previous.name, previous.version),
            to = %format!("{} {}", model.name, model.version),
            load_ms = loaded_in.as_secs_f64() * 1e3,
            switch_ms = paused.as_secs_f64() * 1e3,
            "model swapped"
        );
        Ok(Swapped { previous, model })
    }
}

impl Worker {
    /// Loads one detector per thread (so a bad model fails here, at start-up) and starts the
    /// threads. Must be called inside an actix system.
    pub fn start(opts: &WorkerOptions) -> Result<(Addr<Worker>, WorkerInfo), WorkerError> {
        Self::start_swappable(opts).map(|(addr, info, _)| (addr, info))
    }

    /// As [`start`](Self::start), and also returns the worker's [`ModelSwitch`] (and starts
    /// its loader thread).
    pub fn start_swappable(
        opts: &WorkerOptions,
    ) -> Result<(Addr<Worker>, WorkerInfo, ModelSwitch), WorkerError> {
        let threads = opts.threads.max(1);
        let mut engine =
            Resolved::resolve(&opts.engine, &opts.id).map_err(|reason| WorkerError::NoGpu {
                backend: opts.engine.backend.as_str(),
                gpu_device: opts.engine.gpu_device,
                reason,
            })?;
        let load_all = |engine: &Resolved| {
            (0..threads)
                .map(|_| Loaded::load(engine, &opts.model_dir, &opts.ort).map(Mutex::new))
                .collect::<Result<Vec<_>, _>>()
        };
        // auto: a model the GPU frame path cannot take runs on the native engine behind the
        // CPU stages, and a model that engine cannot build runs on ONNX Runtime.
        let mut loaded = load_all(&engine);
        while let Err(e @ EngineError::Backend { .. }) = &loaded {
            let Some(next) = engine
                .fallback()
                .filter(|_| opts.engine.backend == Backend::Auto)
            else {
                break;
            };
            tracing::warn!(
                worker = %opts.id,
                error = %e,
                from = %engine.device(),
                to = %next.device(),
                "engine.backend = auto: this engine cannot run the model, falling back"
            );
            engine = next;
            loaded = load_all(&engine);
        }
        let slots = loaded.map_err(|source| WorkerError::Load {
            model_dir: opts.model_dir.clone(),
            source,
        })?;
        let (model, engine_name) = {
            let first = slots[0].lock().unwrap_or_else(|p| p.into_inner());
            (first.model.clone(), first.runner.engine_name().to_owned())
        };
        let info = WorkerInfo {
            id: opts.id.clone(),
            device: engine.device(),
            engine: engine_name,
            slots: threads,
            model,
            gpu: engine
                .gpu()
                .map(|g| its_gpu::GpuTelemetry::new(g, opts.engine.gpu_device)),
            pools: engine.is_lane().then(|| PoolReport::new(threads as usize)),
        };
        let shared = Arc::new(Shared {
            slots,
            next_slot: AtomicUsize::new(0),
            engine,
            opts: opts.clone(),
            limits: DecodeLimits {
                max_width: opts.max_frame_dim,
                max_height: opts.max_frame_dim,
            },
        });
        let s = shared.clone();
        let pools = info.pools.clone();
        let addr = SyncArbiter::start(threads as usize, move || {
            // Each thread takes its own slot. A panic in a batch is caught in the handler,
            // which restarts the engine in place, so the arbiter never restarts a thread.
            let slot = s.next_slot.fetch_add(1, Relaxed) % s.slots.len();
            Worker {
                slot,
                shared: s.clone(),
                pools: pools.clone(),
            }
        });
        let s = shared.clone();
        let loader = SyncArbiter::start(1, move || ModelLoader { shared: s.clone() });
        tracing::info!(worker = %info.id, threads, engine = %info.engine, device = %info.device, model = %info.model.name, version = %info.model.version, "worker started");
        Ok((addr, info, ModelSwitch { loader }))
    }

    /// Replaces the engine in `slot` with a freshly loaded one of the same model (after a
    /// panic or a device error). When loading fails, the old engine stays and the next batch
    /// tries again.
    fn restart(sh: &Shared, slot: &mut Loaded) {
        let opts = &sh.opts;
        match Loaded::load(&sh.engine, &slot.model_dir, &opts.ort) {
            Ok(l) => {
                *slot = l;
                opts.faults.0.restarts.fetch_add(1, Relaxed);
                tracing::warn!(worker = %opts.id, "engine restarted");
            }
            Err(e) => {
                tracing::error!(worker = %opts.id, error = %e, "engine restart failed")
            }
        }
    }

    /// Runs one batch; returns every job with its result and the model it ran on.
    fn run(&mut self, jobs: Vec<FrameJob>) -> (Vec<(FrameJob, JobResult)>, ModelRef) {
        if self.shared.engine.is_lane() {
            self.run_on_lane(jobs)
        } else {
            self.run_on_cpu(jobs)
        }
    }

    /// Runs `infer` under the fault hook, catching a panic as a device failure.
    fn guarded<T>(
        faults: &FaultHook,
        infer: impl FnOnce() -> Result<T, BatchFailure>,
    ) -> Result<T, BatchFailure> {
        let run = catch_unwind(AssertUnwindSafe(|| match faults.next() {
            Fault::Panic => panic!("injected fault: the engine died mid-batch"),
            Fault::Fail => Err(BatchFailure::Device(
                "injected fault: device error".to_owned(),
            )),
            Fault::None => infer(),
        }));
        run.unwrap_or_else(|_| Err(BatchFailure::Device("the engine panicked".to_owned())))
    }

    /// The results of a batch that failed as a whole: the frames refused before inference
    /// keep their own result; the others are device errors (after which the slot's engine is
    /// restarted) or `worker_failed` drops.
    fn failed_batch(
        sh: &Shared,
        slot: &mut Loaded,
        jobs: Vec<FrameJob>,
        refused: Vec<Option<JobResult>>,
        failure: BatchFailure,
    ) -> Vec<(FrameJob, JobResult)> {
        let device = matches!(failure, BatchFailure::Device(_));
        let (BatchFailure::Engine(message) | BatchFailure::Device(message)) = failure;
        let frames = refused.iter().filter(|r| r.is_none()).count();
        tracing::warn!(worker = %sh.opts.id, %message, frames, "batch failed");
        if device {
            Self::restart(sh, slot);
        }
        jobs.into_iter()
            .zip(refused)
            .map(|(job, r)| {
                let r = r.unwrap_or_else(|| {
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
            .collect()
    }

    /// The frame's result when it is not a JPEG (`None` when it is).
    fn refuse_encoding(job: &FrameJob) -> Option<JobResult> {
        (job.frame.encoding != Encoding::Jpeg).then(|| JobResult::Dropped {
            reason: DropReason::UnsupportedEncoding,
            message: format!(
                "the worker decodes JPEG only, this frame is {:?}",
                job.frame.encoding
            ),
        })
    }

    /// Wire detections, at most `its_proto::limits::MAX_DETECTIONS`, from (class, score, box)
    /// in source pixels, best first.
    fn detections(
        classes: &[String],
        found: impl Iterator<Item = (u32, f32, [f32; 4])>,
    ) -> Vec<Detection> {
        found
            .take(its_proto::limits::MAX_DETECTIONS)
            .map(|(class_id, score, b)| Detection {
                class_id,
                class_name: classes.get(class_id as usize).cloned().unwrap_or_default(),
                score,
                x1: b[0],
                y1: b[1],
                x2: b[2],
                y2: b[3],
            })
            .collect()
    }

    /// The GPU frame path: the JPEG bytes go to the slot's lane as they are.
    fn run_on_lane(&mut self, jobs: Vec<FrameJob>) -> (Vec<(FrameJob, JobResult)>, ModelRef) {
        let sh = self.shared.clone();
        let refused: Vec<Option<JobResult>> = jobs.iter().map(Self::refuse_encoding).collect();
        let jpegs: Vec<&[u8]> = jobs
            .iter()
            .zip(&refused)
            .filter(|(_, r)| r.is_none())
            .map(|(j, _)| j.frame.data.as_slice())
            .collect();
        let mut slot = sh.slot(self.slot);
        let model = slot.model.clone();
        let batch = if jpegs.is_empty() {
            Ok(None)
        } else {
            let Runner::Lane { lane, .. } = &mut slot.runner else {
                unreachable!("a lane worker's slots hold lanes")
            };
            let r = Self::guarded(&sh.opts.faults, || {
                lane.run(&jpegs)
                    .map(Some)
                    .map_err(|e| BatchFailure::Device(e.to_string()))
            });
            if let Some(p) = &self.pools {
                let (device, pinned) = lane.pool_stats();
                p.set(self.slot, device, pinned);
            }
            r
        };
        drop(jpegs);
        let batch = match batch {
            Ok(b) => b,
            Err(failure) => {
                let results = Self::failed_batch(&sh, &mut slot, jobs, refused, failure);
                return (results, model);
            }
        };
        let (mut frames, timings) = match batch {
            Some(b) => (b.frames.into_iter(), b.timings),
            None => (Vec::new().into_iter(), Default::default()),
        };
        let ns = |ms: f64| (ms * 1e6) as u64;
        let classes = &slot.classes;
        let results = jobs
            .into_iter()
            .zip(refused)
            .map(|(job, refused)| {
                let result = refused.unwrap_or_else(|| match frames.next() {
                    Some(Ok(f)) => JobResult::Done {
                        detections: Self::detections(
                            classes,
                            f.detections
                                .iter()
                                .map(|d| (d.class_id, d.score, [d.x1, d.y1, d.x2, d.y2])),
                        ),
                        frame_width: f.width,
                        frame_height: f.height,
                        preprocess_ns: ns(timings.decode_ms
                            + timings.letterbox_ms
                            + timings.quality_ms),
                        infer_ns: ns(timings.infer_ms),
                        postprocess_ns: ns(timings.postprocess_ms),
                    },
                    Some(Err(e)) => JobResult::Dropped {
                        reason: match e {
                            GpuError::InvalidInput(_) => DropReason::BadDimensions,
                            _ => DropReason::Undecodable,
                        },
                        message: e.to_string(),
                    },
                    None => JobResult::Dropped {
                        reason: DropReason::WorkerFailed,
                        message: "the GPU lane returned fewer frames than it was given".into(),
                    },
                });
                (job, result)
            })
            .collect();
        (results, model)
    }

    /// CPU decode and letterbox, the slot's detector, CPU NMS.
    fn run_on_cpu(&mut self, jobs: Vec<FrameJob>) -> (Vec<(FrameJob, JobResult)>, ModelRef) {
        let sh = self.shared.clone();
        let t0 = Instant::now();
        let mut images: Vec<RgbImage> = Vec::with_capacity(jobs.len());
        let mut decoded: Vec<Result<usize, JobResult>> = Vec::with_capacity(jobs.len());
        for job in &jobs {
            if let Some(refused) = Self::refuse_encoding(job) {
                decoded.push(Err(refused));
                continue;
            }
            match its_engine::decode_jpeg_with_limits(&job.frame.data, &sh.limits) {
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
        // The slot is held from here to the end of the batch: a model swap waits for it, so
        // the whole batch runs on one model.
        let mut slot = sh.slot(self.slot);
        let model = slot.model.clone();
        let outputs = if images.is_empty() {
            Ok(Vec::new())
        } else {
            let Runner::Detector(detector) = &mut slot.runner else {
                unreachable!("a CPU worker's slots hold detectors")
            };
            Self::guarded(&sh.opts.faults, || {
                detector
                    .detect(&images)
                    .map_err(|e| BatchFailure::Engine(e.to_string()))
            })
        };
        let mut outputs = match outputs {
            Ok(o) => o.into_iter().map(Some).collect::<Vec<_>>(),
            Err(failure) => {
                let refused = decoded.into_iter().map(|d| d.err()).collect();
                let results = Self::failed_batch(&sh, &mut slot, jobs, refused, failure);
                return (results, model);
            }
        };
        let classes = &slot.classes;
        let results = jobs
            .into_iter()
            .zip(decoded)
            .map(|(job, d)| {
                let result = match d {
                    Err(dropped) => dropped,
                    Ok(i) => {
                        let out = outputs[i].take().expect("one output per image");
                        JobResult::Done {
                            detections: Self::detections(
                                classes,
                                out.detections
                                    .iter()
                                    .map(|d| (d.class_id, d.score, [d.x1, d.y1, d.x2, d.y2])),
                            ),
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
            .collect();
        (results, model)
    }
}

impl Handler<RunBatch> for Worker {
    type Result = MessageResult<RunBatch>;

    fn handle(&mut self, msg: RunBatch, _: &mut SyncContext<Self>) -> Self::Result {
        let t0 = Instant::now();
        let (results, model) = self.run(msg.jobs);
        MessageResult(BatchOutcome {
            results,
            service_ns: t0.elapsed().as_nanos() as u64,
            model: Some(model),
        })
    }
}
