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

use its_engine::{Detector, EngineError, ModelManifest, OrtOptions};
use its_gpu::GpuContext;
use its_gpu::engine::{ConvMath, EngineOptions, NativeEngine};
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
    /// The native CUDA engine; the worker fails to start without a usable GPU.
    Native,
}

impl Backend {
    /// The config spelling: `auto`, `ort`, `native`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Ort => "ort",
            Backend::Native => "native",
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

/// The engine a worker's detectors are built on, decided at its start.
#[derive(Clone)]
pub(crate) enum Resolved {
    /// ONNX Runtime.
    Ort,
    /// The native engine on `gpu`.
    Native {
        gpu: GpuContext,
        options: EngineOptions,
        precision: NativePrecision,
        batches: Vec<usize>,
    },
}

impl Resolved {
    /// Resolves `choice`: `Err` (why) only for [`Backend::Native`] without a usable GPU.
    pub(crate) fn resolve(choice: &EngineChoice, worker: &str) -> Result<Resolved, String> {
        if choice.backend == Backend::Ort {
            return Ok(Resolved::Ort);
        }
        let (gpu, first) = probe(choice.gpu_device);
        match gpu {
            Ok(gpu) => Ok(Resolved::native(gpu, choice)),
            Err(why) if choice.backend == Backend::Native => Err(why),
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
            },
            precision: choice.native_precision,
            batches: choice.batch_sizes.clone(),
        }
    }

    /// Whether this is the native engine.
    pub(crate) fn is_native(&self) -> bool {
        matches!(self, Resolved::Native { .. })
    }

    /// The worker's device, for [`crate::WorkerInfo::device`]: `cpu` for ONNX Runtime, the
    /// GPU's name and the engine for the native one (`NVIDIA H200 native[fp16]`).
    pub(crate) fn device(&self) -> String {
        match self {
            Resolved::Ort => "cpu".to_owned(),
            Resolved::Native { gpu, precision, .. } => {
                format!("{} native[{}]", gpu.device_name(), precision.as_str())
            }
        }
    }

    /// Builds one detector for `model_dir` on this engine: the one function every detector of
    /// a worker comes from (start-up, engine restart, model swap).
    pub(crate) fn load(&self, model_dir: &Path, ort: &OrtOptions) -> Result<Detector, EngineError> {
        let Resolved::Native {
            gpu,
            options,
            precision,
            batches,
        } = self
        else {
            return Detector::load(model_dir, ort);
        };
        let manifest = ModelManifest::load(model_dir)?;
        let engine = format!("native[{}]:{}", precision.as_str(), manifest.name);
        let failed = |message: String| EngineError::Backend {
            engine: engine.clone(),
            message,
        };
        let path = manifest.model_path(model_dir);
        let model = ModelProto::read(&path)
            .map_err(|e| failed(format!("reading {}: {e}", path.display())))?;
        let native = NativeEngine::new(
            gpu.clone(),
            model,
            manifest.input,
            *options,
            batches,
            &manifest.name,
        )
        .map_err(|e| failed(e.to_string()))?;
        Detector::new(Box::new(native), manifest)
    }
}
