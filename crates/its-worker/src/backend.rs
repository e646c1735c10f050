//! Which inference engine a worker's detectors run on: ONNX Runtime (its-engine) or the native
//! CUDA engine (its-gpu). [`EngineChoice`] is what the configuration asks for; the worker
//! resolves it once at start ([`Resolved`]) and builds every detector (start-up, engine
//! restart, model swap) through [`Resolved::load`].
//!
//! With the native engine every thread of every worker of the process shares one
//! [`GpuContext`] per device (so kernels compile once) and owns its own [`NativeEngine`]: its
//! own stream, buffers and CUDA graphs, one execution context per thread.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use its_engine::{Detector, EngineError, ModelManifest, OrtOptions, OutputFormat};
use its_gpu::engine::cache::EngineCache;
use its_gpu::engine::{ConvMath, EngineOptions, NativeEngine};
use its_gpu::{GpuContext, GpuLane, LaneConfig, PipelineConfig, PostprocessConfig};
use its_model::onnx::ModelProto;

/// The engine a worker runs (`engine.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// The native engine where a CUDA GPU with cuDNN and NVRTC is usable and the model builds
    /// on it; ONNX Runtime otherwise, logged once with the reason.
    Auto,
    /// ONNX Runtime with the execution providers of [`OrtOptions`].
    #[default]
    Ort,
    /// The native CUDA engine behind CPU decode, letterbox and NMS; the worker fails to start
    /// without a usable GPU.
    Native,
    /// The whole frame path on the GPU ([`its_gpu::GpuLane`]: nvJPEG, letterbox kernel, native
    /// engine, GPU NMS), one lane per worker thread; the worker fails to start without a
    /// usable GPU or with a model whose head the GPU post-processing cannot read.
    Gpu,
}

impl Backend {
    /// The config spelling: `auto`, `ort`, `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Ort => "ort",
            Backend::Native => "native",
            Backend::Gpu => "gpu",
        }
    }
}

/// Arithmetic of the native engine (`engine.native_precision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NativePrecision {
    /// FP16 activations and weights, FP32 accumulation (tensor cores).
    #[default]
    Fp16,
    /// Plain FP32.
    Fp32,
    /// FP32 storage, TF32 tensor cores inside cuDNN.
    Tf32,
}

impl NativePrecision {
    fn math(self) -> ConvMath {
        match self {
            NativePrecision::Fp16 => ConvMath::Fp16,
            NativePrecision::Fp32 => ConvMath::Fp32,
            NativePrecision::Tf32 => ConvMath::Tf32,
        }
    }

    /// The config spelling: `fp16`, `fp32`, `tf32`.
    pub fn as_str(self) -> &'static str {
        match self {
            NativePrecision::Fp16 => "fp16",
            NativePrecision::Fp32 => "fp32",
            NativePrecision::Tf32 => "tf32",
        }
    }
}

/// How a worker picks and builds its engines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineChoice {
    /// Which engine.
    pub backend: Backend,
    /// Arithmetic of the native engine.
    pub native_precision: NativePrecision,
    /// CUDA device ordinal of the native engine.
    pub gpu_device: u32,
    /// Batch sizes the native engine builds an execution context for at load (the
    /// scheduler's `batch_sizes`); any other size is built on its first batch. Empty: every
    /// size on first use.
    pub batch_sizes: Vec<usize>,
    /// Largest frame the GPU pipeline decodes, (width, height); each lane holds a decode
    /// buffer of its largest batch of such frames. (0, 0) = 3840 x 2160.
    pub gpu_max_frame: (u32, u32),
}

/// Why the native engine cannot run on `gpu_device` here, or `None` when it can: the CUDA
/// driver and the device, cuDNN and NVRTC are all usable. Never panics; probed once per device
/// and process.
pub fn native_unavailable(gpu_device: u32) -> Option<String> {
    probe(gpu_device).0.err()
}

/// The probe of one device, cached for the process: every worker of a process shares the
/// device's context. The flag says whether this call made the probe.
fn probe(gpu_device: u32) -> (Result<GpuContext, String>, bool) {
    static GPUS: OnceLock<Mutex<HashMap<u32, Result<GpuContext, String>>>> = OnceLock::new();
    let mut gpus = GPUS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(r) = gpus.get(&gpu_device) {
        return (r.clone(), false);
    }
    let r = (|| {
        let gpu = GpuContext::new(gpu_device as usize).map_err(|e| e.to_string())?;
        its_gpu::engine::cuda::cudnn_available().map_err(|e| format!("no cuDNN: {e}"))?;
        its_gpu::nvrtc_available().map_err(|e| e.to_string())?;
        Ok(gpu)
    })();
    gpus.insert(gpu_device, r.clone());
    (r, true)
}

/// The engine cache of the model file at `path` in its default place (its-gpu's
/// `engine::cache::default_dir`): builds after the first skip timing the convolution algorithms.
/// A model that cannot be read for hashing builds without a cache, with a warning.
fn engine_cache(path: &Path) -> Option<EngineCache> {
    match EngineCache::for_model(path, None) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(model = %path.display(), error = %e, "no engine cache for this model");
            None
        }
    }
}

/// The engine a worker's detectors are built on, decided at its start.
#[derive(Clone)]
pub(crate) enum Resolved {
    /// ONNX Runtime.
    Ort,
    /// The native engine on `gpu`: behind the CPU stages, or (`lane`) with the whole frame
    /// path on the GPU.
    Native {
        gpu: GpuContext,
        options: EngineOptions,
        precision: NativePrecision,
        batches: Vec<usize>,
        lane: bool,
        max_frame: (u32, u32),
    },
}

/// What runs a worker thread's batches.
pub(crate) enum Runner {
    /// CPU decode and letterbox, a detector (ONNX Runtime or the native engine), CPU NMS.
    Detector(Detector),
    /// The GPU frame path.
    Lane {
        lane: Box<GpuLane>,
        manifest: ModelManifest,
        engine: String,
    },
}

impl Runner {
    pub(crate) fn manifest(&self) -> &ModelManifest {
        match self {
            Runner::Detector(d) => d.manifest(),
            Runner::Lane { manifest, .. } => manifest,
        }
    }

    pub(crate) fn engine_name(&self) -> &str {
        match self {
            Runner::Detector(d) => d.engine_name(),
            Runner::Lane { engine, .. } => engine,
        }
    }
}

impl Resolved {
    /// Resolves `choice`: `Err` (why) only for [`Backend::Native`] or [`Backend::Gpu`] without
    /// a usable GPU.
    pub(crate) fn resolve(choice: &EngineChoice, worker: &str) -> Result<Resolved, String> {
        if choice.backend == Backend::Ort {
            return Ok(Resolved::Ort);
        }
        let (gpu, first) = probe(choice.gpu_device);
        match gpu {
            Ok(gpu) => Ok(Resolved::native(gpu, choice)),
            Err(why) if matches!(choice.backend, Backend::Native | Backend::Gpu) => Err(why),
            Err(why) => {
                if first {
                    tracing::warn!(
                        %worker,
                        "engine.backend = auto: no usable GPU {} ({why}), running ONNX Runtime",
                        choice.gpu_device
                    );
                }
                Ok(Resolved::Ort)
            }
        }
    }

    fn native(gpu: GpuContext, choice: &EngineChoice) -> Resolved {
        Resolved::Native {
            gpu,
            options: EngineOptions {
                math: choice.native_precision.math(),
                time_algorithms: true,
                cuda_graph: true,
                nhwc: true,
                fused: true,
                direct_stem: true,
                direct_depthwise: true,
                ..EngineOptions::default()
            },
            precision: choice.native_precision,
            batches: choice.batch_sizes.clone(),
            lane: matches!(choice.backend, Backend::Auto | Backend::Gpu),
            max_frame: match choice.gpu_max_frame {
                (0, 0) => (3840, 2160),
                m => m,
            },
        }
    }

    /// With `engine.backend = auto`, the engine to try when this one cannot load the model:
    /// the GPU frame path falls back to the native engine behind the CPU stages, which falls
    /// back to ONNX Runtime.
    pub(crate) fn fallback(&self) -> Option<Resolved> {
        match self {
            Resolved::Ort => None,
            Resolved::Native { lane: false, .. } => Some(Resolved::Ort),
            Resolved::Native {
                gpu,
                options,
                precision,
                batches,
                max_frame,
                lane: true,
            } => Some(Resolved::Native {
                gpu: gpu.clone(),
                options: *options,
                precision: *precision,
                batches: batches.clone(),
                lane: false,
                max_frame: *max_frame,
            }),
        }
    }

    /// The GPU the engine runs on.
    pub(crate) fn gpu(&self) -> Option<&GpuContext> {
        match self {
            Resolved::Ort => None,
            Resolved::Native { gpu, .. } => Some(gpu),
        }
    }

    /// Whether batches run on the GPU frame path.
    pub(crate) fn is_lane(&self) -> bool {
        matches!(self, Resolved::Native { lane: true, .. })
    }

    /// The worker's device, for [`crate::WorkerInfo::device`]: `cpu` for ONNX Runtime, the
    /// GPU's name and the engine for the native one (`NVIDIA H200 native[fp16]`).
    pub(crate) fn device(&self) -> String {
        match self {
            Resolved::Ort => "cpu".to_owned(),
            Resolved::Native {
                gpu,
                precision,
                lane,
                ..
            } => {
                let path = if *lane { "gpu" } else { "native" };
                format!("{} {path}[{}]", gpu.device_name(), precision.as_str())
            }
        }
    }

    /// Builds one detector for `model_dir` on this engine: the one function every detector of
    /// a worker comes from (start-up, engine restart, model swap).
    pub(crate) fn load(&self, model_dir: &Path, ort: &OrtOptions) -> Result<Runner, EngineError> {
        let Resolved::Native {
            gpu,
            options,
            precision,
            batches,
            lane,
            max_frame,
        } = self
        else {
            return Detector::load(model_dir, ort).map(Runner::Detector);
        };
        let manifest = ModelManifest::load(model_dir)?;
        let path = if *lane { "gpu" } else { "native" };
        let engine = format!("{path}[{}]:{}", precision.as_str(), manifest.name);
        let failed = |message: String| EngineError::Backend {
            engine: engine.clone(),
            message,
        };
        let path = manifest.model_path(model_dir);
        let model = ModelProto::read(&path)
            .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
        if *lane {
            if manifest.output.format != OutputFormat::Yolov8 {
                return Err(failed(format!(
                    "the GPU post-processing reads yolov8-format heads ([batch, 4 + classes, \
                     anchors]); this model's output format is {:?}",
                    manifest.output.format
                )));
            }
            let largest = batches.iter().copied().max().unwrap_or(32).clamp(1, 64);
            let cfg = LaneConfig {
                pipeline: PipelineConfig {
                    max_width: max_frame.0,
                    max_height: max_frame.1,
                    target_w: manifest.input.width,
                    target_h: manifest.input.height,
                    post: PostprocessConfig {
                        num_classes: manifest.classes.len(),
                        num_anchors: 1,
                        score_threshold: manifest.score_threshold,
                        iou_threshold: manifest.iou_threshold,
                        max_detections: manifest
                            .max_detections
                            .clamp(1, its_gpu::postprocess::MAX_DETECTIONS),
                        max_candidates: its_gpu::postprocess::MAX_CANDIDATES,
                        class_aware: true,
                    },
                    // The decode buffer of the largest batch of the largest frames, twice
                    // (pool buckets round up), and room for the post-processing scratch.
                    device_pool_bytes: 2
                        * largest
                        * (3 * max_frame.0 as usize * max_frame.1 as usize)
                        + (512 << 20),
                    ..PipelineConfig::yolo640(largest)
                },
                engine: *options,
                batches: batches.clone(),
                cache: engine_cache(&path),
            };
            let lane = GpuLane::new(gpu, model, cfg).map_err(|e| failed(e.to_string()))?;
            return Ok(Runner::Lane {
                lane: Box::new(lane),
                manifest,
                engine,
            });
        }
        let native = NativeEngine::new_cached(
            gpu.clone(),
            model,
            manifest.input,
            *options,
            batches,
            &manifest.name,
            engine_cache(&path),
        )
        .map_err(|e| failed(e.to_string()))?;
        Detector::new(Box::new(native), manifest).map(Runner::Detector)
    }
}
