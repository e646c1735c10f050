//! [`GpuLane`]: one stream of a GPU worker, the whole frame path on the device. A batch of
//! JPEG byte slices goes in; nvJPEG decodes it into a pooled device buffer, the fused
//! letterbox writes straight into the input buffer of the native engine's execution context
//! for the batch profile, the context replays its CUDA graph, GPU decode + NMS reads the
//! output where it lies, and only the detections (and the frame-quality figures) come back to
//! the host. Every stage runs on the lane's one stream, so they order without events; a GPU
//! runs several lanes side by side (one per worker thread) and overlaps them.

use std::collections::BTreeMap;
use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaFunction, CudaSlice, CudaStream, LaunchConfig, PushKernelArg};
use its_model::onnx::ModelProto;

use crate::context::POSTPROCESS_SRC;
use crate::engine::cache::EngineCache;
use crate::engine::cuda::from_elems;
use crate::engine::{ConvMath, CudaEngine, EngineBuildError, EngineOptions, Plan};
use crate::pipeline::{GpuPipeline, InputDtype, PipelineConfig};
use crate::postprocess::Detection;
use crate::quality::QualityReport;
use crate::{GpuContext, GpuError, PoolStats};

/// How to build a lane.
#[derive(Debug, Clone)]
pub struct LaneConfig {
    /// Decode / letterbox / post-processing sizes. `post.num_anchors` is taken from the
    /// model's output shape; `post.num_classes` must match it.
    pub pipeline: PipelineConfig,
    /// Engine build options (precision, layout, algorithm timing, CUDA graphs).
    pub engine: EngineOptions,
    /// Batch profiles built at start (an execution context each); a batch of `n` frames runs
    /// on the smallest profile `>= n`, and a larger batch builds a profile of its own size.
    pub batches: Vec<usize>,
    /// Engine cache of the model: a profile whose build decisions are cached skips timing the
    /// convolution algorithms. `None`: every context times them.
    pub cache: Option<EngineCache>,
}

/// One frame's result.
#[derive(Debug, Clone, PartialEq)]
pub struct LaneFrame {
    /// Detections in source pixels, best first.
    pub detections: Vec<Detection>,
    /// Source width.
    pub width: u32,
    /// Source height.
    pub height: u32,
    /// Brightness, contrast, sharpness of the frame.
    pub quality: QualityReport,
}

/// Device time of each stage of one batch, ms (CUDA events on the lane's stream).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LaneTimings {
    /// nvJPEG decode.
    pub decode_ms: f64,
    /// Fused letterbox into the engine input.
    pub letterbox_ms: f64,
    /// Frame quality.
    pub quality_ms: f64,
    /// The engine (graph replay).
    pub infer_ms: f64,
    /// FP16 widening, decode + NMS, copy of the detections.
    pub postprocess_ms: f64,
}

/// The outcome of [`GpuLane::run`].
#[derive(Debug)]
pub struct LaneBatch {
    /// One entry per input JPEG, in input order: its detections, or why it was refused
    /// (undecodable, too large); a refused frame does not stop the others.
    pub frames: Vec<Result<LaneFrame, GpuError>>,
    /// Stage times.
    pub timings: LaneTimings,
    /// The batch profile (execution context) that ran.
    pub profile: usize,
}

/// One GPU worker stream: pipeline stages and one engine context per batch profile, all on
/// one CUDA stream, with pooled buffers (no device allocation per batch in steady state).
pub struct GpuLane {
    gpu: GpuContext,
    stream: Arc<CudaStream>,
    pipeline: GpuPipeline,
    model: ModelProto,
    options: EngineOptions,
    cache: Option<EngineCache>,
    input: (u32, u32),
    contexts: BTreeMap<usize, CudaEngine>,
    widen: CudaFunction,
    widened: Option<CudaSlice<f32>>,
    per_frame: usize,
}

impl std::fmt::Debug for GpuLane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuLane")
            .field("gpu", &self.gpu)
            .field("profiles", &self.contexts.keys().collect::<Vec<_>>())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

// SAFETY: the lane owns its stream, pools, nvJPEG state and engine contexts (cuDNN handles)
// and is used by one thread at a time (`&mut self` for every batch); CUDA contexts and cuDNN
// handles may move between threads as long as calls on them do not overlap.
unsafe impl Send for GpuLane {}

fn event(stream: &CudaStream) -> Result<CudaEvent, GpuError> {
    Ok(stream.record_event(Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT))?)
}

fn elapsed(a: &CudaEvent, b: &CudaEvent) -> Result<f64, GpuError> {
    Ok(f64::from(a.elapsed_ms(b)?))
}

fn plan_for(
    model: &ModelProto,
    batch: usize,
    (w, h): (u32, u32),
) -> Result<Plan, EngineBuildError> {
    Plan::build(model, [batch, 3, h as usize, w as usize])
}

impl GpuLane {
    /// Builds the lane: a stream, the pipeline stages, and an execution context of `model`
    /// per profile of `cfg.batches`. Fails with [`EngineBuildError::Shape`] when the model's
    /// first output is not the `[B, 4 + classes, anchors]` head the GPU post-processing reads.
    pub fn new(
        gpu: &GpuContext,
        model: ModelProto,
        cfg: LaneConfig,
    ) -> Result<Self, EngineBuildError> {
        let mut batches = cfg.batches.clone();
        batches.retain(|&b| b > 0);
        batches.sort_unstable();
        batches.dedup();
        let largest = *batches.last().unwrap_or(&1);
        let mut pcfg = cfg.pipeline;
        if largest > pcfg.max_batch {
            pcfg.max_batch = largest;
        }
        let input = (pcfg.target_w, pcfg.target_h);
        // The output head decides the post-processing shape.
        let probe = plan_for(&model, 1, input)?;
        let out = probe
            .outputs
            .first()
            .map(|(_, t)| probe.shape(*t).to_vec())
            .ok_or_else(|| EngineBuildError::Shape("the model has no output".into()))?;
        if out.len() != 3 || out[1] != 4 + pcfg.post.num_classes {
            return Err(EngineBuildError::Shape(format!(
                "GPU post-processing reads a [batch, 4 + {} classes, anchors] output; this \
                 model's first output is {out:?}",
                pcfg.post.num_classes
            )));
        }
        pcfg.post.num_anchors = out[2];
        let stream = gpu.new_stream()?;
        let pipeline = GpuPipeline::with_stream(gpu, pcfg, stream.clone())?;
        let widen = gpu.function(POSTPROCESS_SRC, "widen_f16")?;
        let mut lane = Self {
            gpu: gpu.clone(),
            stream,
            pipeline,
            model,
            options: cfg.engine,
            cache: cfg.cache,
            input,
            contexts: BTreeMap::new(),
            widen,
            widened: None,
            per_frame: pcfg.post.per_frame(),
        };
        for b in batches {
            lane.build_context(b)?;
        }
        Ok(lane)
    }

    fn build_context(&mut self, batch: usize) -> Result<(), EngineBuildError> {
        let plan = plan_for(&self.model, batch, self.input)?;
        let ctx = CudaEngine::build_with(
            &self.gpu,
            plan,
            self.options,
            self.stream.clone(),
            self.cache.as_ref(),
        )?;
        tracing::debug!(
            batch,
            build_ms = ctx.report().build_ms,
            cache = ctx.report().cache.label(),
            "lane execution context built"
        );
        self.contexts.insert(batch, ctx);
        Ok(())
    }

    /// The lane's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Batch profiles built so far.
    pub fn profiles(&self) -> Vec<usize> {
        self.contexts.keys().copied().collect()
    }

    /// (device pool, pinned pool) counters.
    pub fn pool_stats(&self) -> (PoolStats, PoolStats) {
        self.pipeline.pool_stats()
    }

    /// The nvJPEG backend in use.
    pub fn jpeg_backend(&self) -> crate::JpegBackend {
        self.pipeline.jpeg_backend()
    }

    /// The input and first output of `profile`'s context as host floats, as the last batch
    /// on it left them (for checks and debugging; synchronous).
    pub fn last_io(&mut self, profile: usize) -> Result<(Vec<f32>, Vec<f32>), EngineBuildError> {
        let ctx = self
            .contexts
            .get_mut(&profile)
            .ok_or_else(|| EngineBuildError::Shape(format!("no batch profile {profile}")))?;
        let math = ctx.math();
        let input = self.stream.clone_dtoh(&ctx.input_view_mut())?;
        let (out, _) = ctx
            .output_view(0)
            .ok_or_else(|| EngineBuildError::Shape("the plan has no output".into()))?;
        let output = self.stream.clone_dtoh(&out)?;
        self.stream.synchronize()?;
        Ok((from_elems(&input, math), from_elems(&output, math)))
    }

    /// Runs a batch of JPEGs through decode, letterbox, the engine and NMS; waits for the
    /// device. Errors of the whole batch (a CUDA failure) come back as `Err`; frames nvJPEG
    /// refuses come back per frame.
    pub fn run(&mut self, jpegs: &[&[u8]]) -> Result<LaneBatch, EngineBuildError> {
        let n = jpegs.len();
        if n == 0 {
            return Err(EngineBuildError::Shape("an empty batch".into()));
        }
        let profile = match self.contexts.range(n..).next() {
            Some((&b, _)) => b,
            None => {
                self.build_context(n)?;
                n
            }
        };
        let ctx = self.contexts.get_mut(&profile).expect("built above");
        let dtype = match ctx.math() {
            ConvMath::Fp16 => InputDtype::F16,
            ConvMath::Fp32 | ConvMath::Tf32 => InputDtype::F32,
        };
        let prepared = self
            .pipeline
            .preprocess_into(jpegs, &mut ctx.input_view_mut(), dtype)?;
        let mut timings = LaneTimings {
            decode_ms: prepared.timings.decode_ms,
            letterbox_ms: prepared.timings.letterbox_ms,
            quality_ms: prepared.timings.quality_ms,
            ..LaneTimings::default()
        };
        let ok = prepared.batch;
        let mut dets = Vec::new();
        if ok > 0 {
            let e0 = event(&self.stream)?;
            ctx.launch()?;
            let e1 = event(&self.stream)?;
            let (out, _) = ctx
                .output_view(0)
                .ok_or_else(|| EngineBuildError::Shape("the plan has no output".into()))?;
            let values = ok * self.per_frame;
            let geometry: Vec<_> = prepared
                .frames
                .iter()
                .filter_map(|f| f.as_ref().ok().map(|p| p.geometry))
                .collect();
            let (found, pp_ms) = if dtype == InputDtype::F16 {
                if self.widened.as_ref().is_none_or(|w| w.len() < values) {
                    let cap = profile.max(ok) * self.per_frame;
                    // SAFETY: the widening kernel writes every element it is asked for before
                    // the post-processing reads them.
                    self.widened = Some(unsafe { self.stream.alloc::<f32>(cap) }?);
                }
                let wide = self.widened.as_mut().expect("allocated above");
                // SAFETY: `out` holds the FP16 output of `profile >= ok` frames.
                let half = unsafe { out.transmute::<u16>(values) }.ok_or_else(|| {
                    EngineBuildError::Shape("output shorter than the batch".into())
                })?;
                let threads = 256u32;
                let blocks = values.div_ceil(threads as usize).clamp(1, 65_535 * 4) as u32;
                let cfg = LaunchConfig {
                    grid_dim: (blocks, 1, 1),
                    block_dim: (threads, 1, 1),
                    shared_mem_bytes: 0,
                };
                let count = values as i64;
                let mut b = self.stream.launch_builder(&self.widen);
                b.arg(&half).arg(&mut *wide).arg(&count);
                // SAFETY: (in, out, n) matches `widen_f16`; both buffers hold `values` elements.
                unsafe { b.launch(cfg) }.map_err(GpuError::from)?;
                let view = wide.slice(0..values);
                let e2 = event(&self.stream)?;
                let (found, ms) = self.pipeline.postprocess(&view, &geometry)?;
                (found, ms + elapsed(&e1, &e2)?)
            } else {
                // SAFETY: `out` holds the f32 output of `profile >= ok` frames.
                let view = unsafe { out.transmute::<f32>(values) }.ok_or_else(|| {
                    EngineBuildError::Shape("output shorter than the batch".into())
                })?;
                self.pipeline.postprocess(&view, &geometry)?
            };
            timings.infer_ms = elapsed(&e0, &e1)?;
            timings.postprocess_ms = pp_ms;
            dets = found;
        }
        let mut dets = dets.into_iter();
        let frames = prepared
            .frames
            .into_iter()
            .zip(jpegs)
            .map(|(f, _)| {
                f.map(|p| LaneFrame {
                    detections: dets.next().unwrap_or_default(),
                    width: p.geometry.src_width,
                    height: p.geometry.src_height,
                    quality: p.quality,
                })
            })
            .collect();
        Ok(LaneBatch {
            frames,
            timings,
            profile,
        })
    }
}
