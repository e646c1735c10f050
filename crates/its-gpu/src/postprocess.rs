//! YOLOv8 / YOLO11 post-processing on the GPU: decode, confidence filter, per-frame top-k,
//! class-aware greedy NMS and mapping back through each frame's letterbox, in two kernel
//! launches (`kernels/postprocess.cu`); only the detections are copied to the host.
//! CPU oracle: [`reference`] (its-engine's decode and NMS semantics, bit for bit).

use std::sync::Arc;

use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{
    CudaEvent, CudaFunction, CudaStream, CudaView, DeviceRepr, LaunchConfig, PushKernelArg,
};

use crate::context::POSTPROCESS_SRC;
use crate::pool::{DevicePool, PinnedPool, PooledDevice, PooledPinned};
use crate::{GpuContext, GpuError, LetterboxParams};

/// Most frames per launch (`PP_MAX_FRAMES` in the .cu).
pub const MAX_FRAMES: usize = 64;
/// Largest `max_candidates` (`PP_MAX_CANDIDATES`).
pub const MAX_CANDIDATES: usize = 4096;
/// Largest `max_detections` (`PP_MAX_DETECTIONS`).
pub const MAX_DETECTIONS: usize = 512;
const DECODE_THREADS: u32 = 256;
const NMS_THREADS: u32 = 1024;

/// Post-processing settings (the model manifest's thresholds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PostprocessConfig {
    /// Classes of the model (rows of the output minus 4).
    pub num_classes: usize,
    /// Anchors per frame (8400 for a 640x640 YOLOv8/11).
    pub num_anchors: usize,
    /// A candidate's best class score must be `>` this.
    pub score_threshold: f32,
    /// A box is suppressed when its IoU with a kept box is `>` this.
    pub iou_threshold: f32,
    /// Detections kept per frame (<= [`MAX_DETECTIONS`]).
    pub max_detections: usize,
    /// Candidates per frame that enter NMS, the highest scores first (<= [`MAX_CANDIDATES`]).
    pub max_candidates: usize,
    /// Suppress only boxes of the same class.
    pub class_aware: bool,
}

impl PostprocessConfig {
    /// COCO YOLO11n / YOLOv8n at 640x640: 80 classes, 8400 anchors, 0.25 / 0.45, 300 kept.
    pub fn yolo_coco640() -> Self {
        Self {
            num_classes: 80,
            num_anchors: 8400,
            score_threshold: 0.25,
            iou_threshold: 0.45,
            max_detections: 300,
            max_candidates: MAX_CANDIDATES,
            class_aware: true,
        }
    }

    fn validate(&self) -> Result<(), GpuError> {
        if self.num_classes == 0
            || self.num_anchors == 0
            || self.num_anchors >= u32::MAX as usize / 2
            || self.max_detections == 0
            || self.max_detections > MAX_DETECTIONS
            || self.max_candidates == 0
            || self.max_candidates > MAX_CANDIDATES
        {
            return Err(GpuError::InvalidInput(format!(
                "postprocess config {self:?}: need classes, anchors > 0, max_detections \
                 1..={MAX_DETECTIONS}, max_candidates 1..={MAX_CANDIDATES}"
            )));
        }
        Ok(())
    }

    /// Floats of one frame's output, `(4 + classes) * anchors`.
    pub fn per_frame(&self) -> usize {
        (4 + self.num_classes) * self.num_anchors
    }
}

/// How one frame was letterboxed: maps model-input pixels back to the source frame,
/// `clamp((v - pad) / scale, 0, src size)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FrameGeometry {
    /// Resize factor, source -> model input.
    pub scale: f32,
    /// Columns of padding on the left.
    pub pad_x: u32,
    /// Rows of padding on the top.
    pub pad_y: u32,
    /// Source width.
    pub src_width: u32,
    /// Source height.
    pub src_height: u32,
}

impl FrameGeometry {
    /// From the GPU letterbox's parameters of a `src_width` x `src_height` frame.
    pub fn from_letterbox(p: &LetterboxParams, src_width: u32, src_height: u32) -> Self {
        Self {
            scale: p.scale as f32,
            pad_x: p.pad_x,
            pad_y: p.pad_y,
            src_width,
            src_height,
        }
    }

    /// The identity mapping for a frame that is the model input (`w` x `h`).
    pub fn identity(w: u32, h: u32) -> Self {
        Self {
            scale: 1.0,
            pad_x: 0,
            pad_y: 0,
            src_width: w,
            src_height: h,
        }
    }
}

/// A detection in source-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Class index.
    pub class_id: u32,
    /// Confidence.
    pub score: f32,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct GeoDesc {
    scale: f32,
    pad_x: f32,
    pad_y: f32,
    src_w: f32,
    src_h: f32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct GeoBatch {
    f: [GeoDesc; MAX_FRAMES],
}

// SAFETY: plain-old-data, #[repr(C)], laid out as `GeoBatch` in postprocess.cu (5 floats
// per frame, no padding).
unsafe impl DeviceRepr for GeoBatch {}
const _: () = assert!(std::mem::size_of::<GeoDesc>() == 20);

/// Dynamic shared memory of the NMS kernel for `k` candidates (6 x 4-byte arrays).
fn dynamic_smem(k: usize) -> u32 {
    (24 * k) as u32
}

/// The two compiled kernels of one device.
#[derive(Debug, Clone)]
pub struct PostprocessKernels {
    decode: CudaFunction,
    decode_x4: CudaFunction,
    nms: CudaFunction,
}

impl PostprocessKernels {
    /// Compiles (once per device, cached) and loads the kernels.
    pub fn load(gpu: &GpuContext) -> Result<Self, GpuError> {
        let nms = gpu.function(POSTPROCESS_SRC, "yolo_nms")?;
        // The candidate boxes live in dynamic shared memory (over the 48 KiB default).
        nms.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic_smem(MAX_CANDIDATES) as i32,
        )?;
        Ok(Self {
            decode: gpu.function(POSTPROCESS_SRC, "yolo_decode")?,
            decode_x4: gpu.function(POSTPROCESS_SRC, "yolo_decode_x4")?,
            nms,
        })
    }
}

/// Device scratch and the pinned result slab of one batch; from the pools, back on drop.
struct Scratch {
    keys: PooledDevice,
    classes: PooledDevice,
    counts: PooledDevice,
    result: PooledDevice,
    host: PooledPinned,
}

/// Result slab layout: `batch` u32 counts (padded to 4-byte words), then `batch *
/// max_detections * 6` floats.
fn result_words(batch: usize, max_det: usize) -> usize {
    batch + batch * max_det * 6
}

/// Runs post-processing for batches of up to `max_batch` frames with pooled buffers.
pub struct Postprocessor {
    kernels: PostprocessKernels,
    cfg: PostprocessConfig,
    device_pool: DevicePool,
    pinned_pool: PinnedPool,
    pending: Option<(usize, Scratch)>,
    profile: bool,
    stage_events: Option<[CudaEvent; 4]>,
    last_stage_ms: Option<[f64; 3]>,
}

impl std::fmt::Debug for Postprocessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Postprocessor")
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Postprocessor {
    /// Loads the kernels; buffers come from the pools on first use.
    pub fn new(
        gpu: &GpuContext,
        cfg: PostprocessConfig,
        device_pool: DevicePool,
        pinned_pool: PinnedPool,
    ) -> Result<Self, GpuError> {
        cfg.validate()?;
        Ok(Self {
            kernels: PostprocessKernels::load(gpu)?,
            cfg,
            device_pool,
            pinned_pool,
            pending: None,
            profile: false,
            stage_events: None,
            last_stage_ms: None,
        })
    }

    /// Records CUDA events between the stages of each batch (costs a few microseconds);
    /// read them with [`Self::last_stage_ms`].
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on;
    }

    /// With profiling on, device ms of the last batch: [zero counters + decode kernel, NMS
    /// kernel, copy of the detections to the host].
    pub fn last_stage_ms(&self) -> Option<[f64; 3]> {
        self.last_stage_ms
    }

    fn record(&self, stream: &CudaStream) -> Result<Option<CudaEvent>, GpuError> {
        if !self.profile {
            return Ok(None);
        }
        Ok(Some(stream.record_event(Some(
            cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT,
        ))?))
    }

    /// The settings.
    pub fn config(&self) -> &PostprocessConfig {
        &self.cfg
    }

    /// Enqueues decode + NMS + the copy of the detections to pinned host memory on
    /// `stream`, for `geometry.len()` frames of `output` (`[B, 4 + C, N]` FP32). Collect
    /// the result with [`Self::finish`] once the stream has reached this point.
    pub fn enqueue(
        &mut self,
        stream: &Arc<CudaStream>,
        output: &CudaView<'_, f32>,
        geometry: &[FrameGeometry],
    ) -> Result<(), GpuError> {
        let batch = geometry.len();
        let cfg = self.cfg;
        if batch == 0 || batch > MAX_FRAMES {
            return Err(GpuError::InvalidInput(format!(
                "{batch} frames in one postprocess launch (1..={MAX_FRAMES})"
            )));
        }
        if output.len() < batch * cfg.per_frame() {
            return Err(GpuError::InvalidInput(format!(
                "output holds {} floats, {batch} frames of (4 + {}) x {} need {}",
                output.len(),
                cfg.num_classes,
                cfg.num_anchors,
                batch * cfg.per_frame()
            )));
        }
        let mut geo = GeoBatch {
            f: [GeoDesc::default(); MAX_FRAMES],
        };
        for (i, g) in geometry.iter().enumerate() {
            if !(g.scale.is_finite() && g.scale > 0.0) {
                return Err(GpuError::InvalidInput(format!(
                    "frame {i}: letterbox scale {}",
                    g.scale
                )));
            }
            geo.f[i] = GeoDesc {
                scale: g.scale,
                pad_x: g.pad_x as f32,
                pad_y: g.pad_y as f32,
                src_w: g.src_width as f32,
                src_h: g.src_height as f32,
            };
        }
        let n = cfg.num_anchors;
        let words = result_words(batch, cfg.max_detections);
        let mut s = Scratch {
            keys: self.device_pool.take(batch * n * 8)?,
            classes: self.device_pool.take(batch * n * 4)?,
            counts: self.device_pool.take(batch * 4)?,
            result: self.device_pool.take(words * 4)?,
            host: self.pinned_pool.take(words * 4)?,
        };
        // SAFETY: the pooled byte buffers hold at least the typed lengths asked for above
        // (bucket >= request), and cudaMalloc'd buffers are 256-byte aligned.
        let mut counts = unsafe { s.counts.slice_mut().transmute_mut::<u32>(batch) }
            .ok_or_else(|| GpuError::InvalidInput("counts buffer too small".into()))?;
        let e_start = self.record(stream)?;
        stream.memset_zeros(&mut counts)?;
        let (classes_u32, n_i32) = (cfg.num_classes as i32, n as i32);
        {
            let keys = s.keys.slice_mut();
            let classes = s.classes.slice_mut();
            // 16-byte loads need every class row 16-byte aligned: N % 4 == 0 and an aligned
            // output pointer.
            let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(output, stream);
            let vec4 = n.is_multiple_of(4) && ptr % 16 == 0;
            let (func, threads_needed) = if vec4 {
                (&self.kernels.decode_x4, n / 4)
            } else {
                (&self.kernels.decode, n)
            };
            let mut b = stream.launch_builder(func);
            b.arg(output)
                .arg(&classes_u32)
                .arg(&n_i32)
                .arg(&cfg.score_threshold)
                .arg(keys)
                .arg(classes)
                .arg(&mut counts);
            let cfg_launch = LaunchConfig {
                grid_dim: (
                    (threads_needed as u32).div_ceil(DECODE_THREADS),
                    batch as u32,
                    1,
                ),
                block_dim: (DECODE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: arguments match `yolo_decode[_x4](out, C, N, thr, keys, best_class,
            // counts)`; the x4 variant only with N % 4 == 0 and a 16-byte aligned output;
            // `output` holds batch * (4 + C) * N floats (checked), keys and classes hold
            // batch * N entries, counts batch words zeroed above; each frame appends at
            // most N keys.
            unsafe { b.launch(cfg_launch) }?;
        }
        let e_decoded = self.record(stream)?;
        {
            let (max_cand, max_det) = (cfg.max_candidates as i32, cfg.max_detections as i32);
            let aware = i32::from(cfg.class_aware);
            let (mut head, mut tail) = s.result.slice_mut().split_at_mut(batch * 4);
            let mut b = stream.launch_builder(&self.kernels.nms);
            b.arg(output)
                .arg(&classes_u32)
                .arg(&n_i32)
                .arg(s.keys.slice())
                .arg(s.classes.slice())
                .arg(&mut counts)
                .arg(&max_cand)
                .arg(&max_det)
                .arg(&cfg.iou_threshold)
                .arg(&aware)
                .arg(&geo)
                .arg(&mut head)
                .arg(&mut tail);
            let cfg_launch = LaunchConfig {
                grid_dim: (batch as u32, 1, 1),
                block_dim: (NMS_THREADS, 1, 1),
                shared_mem_bytes: dynamic_smem(cfg.max_candidates),
            };
            // SAFETY: arguments match `yolo_nms(...)` in postprocess.cu; the decode launch
            // before it on the same stream filled keys/classes/counts; the result slab
            // holds batch count words then batch * max_det * 6 floats (result_words), and
            // its float part starts 4-byte aligned.
            unsafe { b.launch(cfg_launch) }?;
        }
        let e_nms = self.record(stream)?;
        {
            let src = s.result.slice().slice(0..words * 4);
            stream.memcpy_dtoh(&src, s.host.slice_mut())?;
        }
        let e_copied = self.record(stream)?;
        self.stage_events = match (e_start, e_decoded, e_nms, e_copied) {
            (Some(a), Some(b), Some(c), Some(d)) => Some([a, b, c, d]),
            _ => None,
        };
        self.pending = Some((batch, s));
        Ok(())
    }

    /// Reads the detections of the last [`Self::enqueue`]; synchronises `stream` first.
    pub fn finish(&mut self, stream: &CudaStream) -> Result<Vec<Vec<Detection>>, GpuError> {
        let (batch, s) = self
            .pending
            .take()
            .ok_or_else(|| GpuError::InvalidInput("no postprocess batch enqueued".into()))?;
        stream.synchronize()?;
        if let Some(ev) = self.stage_events.take() {
            self.last_stage_ms = Some([
                f64::from(ev[0].elapsed_ms(&ev[1])?),
                f64::from(ev[1].elapsed_ms(&ev[2])?),
                f64::from(ev[2].elapsed_ms(&ev[3])?),
            ]);
        }
        let bytes = s.host.slice().as_slice()?;
        let word = |i: usize| {
            let b = &bytes[4 * i..4 * i + 4];
            u32::from_le_bytes([b[0], b[1], b[2], b[3]])
        };
        let max_det = self.cfg.max_detections;
        let mut out = Vec::with_capacity(batch);
        for f in 0..batch {
            let count = (word(f) as usize).min(max_det);
            let base = batch + f * max_det * 6;
            let dets = (0..count)
                .map(|k| {
                    let v = |j: usize| f32::from_bits(word(base + k * 6 + j));
                    Detection {
                        x1: v(0),
                        y1: v(1),
                        x2: v(2),
                        y2: v(3),
                        score: v(4),
                        class_id: word(base + k * 6 + 5),
                    }
                })
                .collect();
            out.push(dets);
        }
        Ok(out)
    }

    /// [`Self::enqueue`] then [`Self::finish`].
    pub fn run(
        &mut self,
        stream: &Arc<CudaStream>,
        output: &CudaView<'_, f32>,
        geometry: &[FrameGeometry],
    ) -> Result<Vec<Vec<Detection>>, GpuError> {
        self.enqueue(stream, output, geometry)?;
        self.finish(stream)
    }
}

/// CPU oracle: its-engine's `decode_yolov8` semantics, stable sort by score, truncation to
/// `max_candidates`, its-engine's greedy `nms`, letterbox inverse. Self-contained here so
/// the crate does not depend on the engine; the tests check it against its-engine.
pub mod reference {
    use super::{Detection, FrameGeometry, PostprocessConfig};

    #[derive(Debug, Clone, Copy)]
    struct Cand {
        class_id: u32,
        score: f32,
        x1: f32,
        y1: f32,
        x2: f32,
        y2: f32,
    }

    fn area(c: &Cand) -> f32 {
        (c.x2 - c.x1).max(0.0) * (c.y2 - c.y1).max(0.0)
    }

    fn iou(a: &Cand, b: &Cand) -> f32 {
        let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
        let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
        let inter = iw * ih;
        let union = area(a) + area(b) - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Post-processes one frame's `[4 + C, N]` output.
    pub fn postprocess_frame(
        output: &[f32],
        cfg: &PostprocessConfig,
        geo: &FrameGeometry,
    ) -> Vec<Detection> {
        let n = cfg.num_anchors;
        let row = |r: usize| &output[r * n..(r + 1) * n];
        let mut cands = Vec::new();
        for a in 0..n {
            let mut best = f32::NEG_INFINITY;
            let mut bc = 0usize;
            for c in 0..cfg.num_classes {
                let s = row(4 + c)[a];
                if s > best {
                    best = s;
                    bc = c;
                }
            }
            if best > cfg.score_threshold {
                let (cx, cy, w, h) = (row(0)[a], row(1)[a], row(2)[a], row(3)[a]);
                cands.push(Cand {
                    class_id: bc as u32,
                    score: best,
                    x1: cx - w * 0.5,
                    y1: cy - h * 0.5,
                    x2: cx + w * 0.5,
                    y2: cy + h * 0.5,
                });
            }
        }
        cands.sort_by(|a, b| b.score.total_cmp(&a.score));
        cands.truncate(cfg.max_candidates);
        let mut kept: Vec<Cand> = Vec::new();
        for c in cands {
            if kept.len() >= cfg.max_detections {
                break;
            }
            if !kept.iter().any(|k| {
                (!cfg.class_aware || k.class_id == c.class_id) && iou(k, &c) > cfg.iou_threshold
            }) {
                kept.push(c);
            }
        }
        let map =
            |v: f32, pad: u32, max: u32| ((v - pad as f32) / geo.scale).clamp(0.0, max as f32);
        kept.into_iter()
            .map(|c| Detection {
                class_id: c.class_id,
                score: c.score,
                x1: map(c.x1, geo.pad_x, geo.src_width),
                y1: map(c.y1, geo.pad_y, geo.src_height),
                x2: map(c.x2, geo.pad_x, geo.src_width),
                y2: map(c.y2, geo.pad_y, geo.src_height),
            })
            .collect()
    }

    /// Deterministic pseudo-random f32 in [0, 1) (splitmix64).
    #[derive(Debug, Clone)]
    pub struct Rng(pub u64);

    impl Rng {
        /// Next value in [0, 1).
        pub fn next_f32(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32
        }
    }

    /// A YOLO-like output for one frame of a `size` x `size` input: low background scores
    /// everywhere, and `objects` objects each seen by a cluster of ~`per_object` anchors
    /// with jittered boxes and high scores of the object's class.
    pub fn synthetic_output(
        rng: &mut Rng,
        cfg: &PostprocessConfig,
        size: f32,
        objects: usize,
        per_object: usize,
    ) -> Vec<f32> {
        let (n, c) = (cfg.num_anchors, cfg.num_classes);
        let mut out = vec![0.0f32; (4 + c) * n];
        for a in 0..n {
            out[a] = rng.next_f32() * size;
            out[n + a] = rng.next_f32() * size;
            out[2 * n + a] = 4.0 + rng.next_f32() * size * 0.2;
            out[3 * n + a] = 4.0 + rng.next_f32() * size * 0.2;
            for k in 0..c {
                out[(4 + k) * n + a] = rng.next_f32() * 0.05;
            }
        }
        for _ in 0..objects {
            let (ox, oy) = (rng.next_f32() * size, rng.next_f32() * size);
            let (ow, oh) = (
                8.0 + rng.next_f32() * size * 0.3,
                8.0 + rng.next_f32() * size * 0.3,
            );
            let class = ((rng.next_f32() * c as f32) as usize).min(c - 1);
            let peak = 0.3 + rng.next_f32() * 0.7;
            for _ in 0..per_object {
                let a = ((rng.next_f32() * n as f32) as usize).min(n - 1);
                let j = |r: &mut Rng, v: f32| v * (1.0 + (r.next_f32() - 0.5) * 0.2);
                out[a] = j(rng, ox);
                out[n + a] = j(rng, oy);
                out[2 * n + a] = j(rng, ow);
                out[3 * n + a] = j(rng, oh);
                out[(4 + class) * n + a] = peak * (0.6 + 0.4 * rng.next_f32());
            }
        }
        out
    }
}
