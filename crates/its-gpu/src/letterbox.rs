//! Fused letterbox preprocessing: a batch of decoded RGB u8 HWC frames of mixed sizes,
//! packed in one device buffer, becomes the detector's NCHW `[B, 3, TH, TW]` input (FP16 or
//! FP32) in one kernel launch: aspect-preserving bilinear resize, centred, padded with
//! 114/255, scaled to 0..1. Kernel: `kernels/letterbox.cu`; CPU oracle: [`reference`].

use std::sync::Arc;

use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};

use crate::context::LETTERBOX_SRC;
use crate::{GpuContext, GpuError};

/// Most frames one launch takes (the per-frame table travels in the kernel's parameters).
/// Must match `LB_MAX_FRAMES` in `kernels/letterbox.cu`.
pub const MAX_FRAMES_PER_LAUNCH: usize = 64;
/// The target width must be a multiple of this (the widest kernel variant's pixel group).
pub const PIXELS_PER_THREAD: u32 = 8;
/// Pixels per thread of the default kernels `letterbox_<dtype>` (`LB_DEFAULT_PX` in the .cu).
pub const DEFAULT_PIXELS_PER_THREAD: u32 = 2;
/// The compiled variants (`letterbox_px<N>_<dtype>`), for benchmarks.
pub const PIXELS_PER_THREAD_VARIANTS: [u32; 4] = [1, 2, 4, 8];
/// Pad value before scaling (YOLO convention).
pub const PAD_VALUE: u8 = 114;
const THREADS_PER_BLOCK: u32 = 256;

/// Where one frame's box coordinates land in the letterboxed image; invert with
/// [`LetterboxParams::to_source`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LetterboxParams {
    /// min(tw / w, th / h).
    pub scale: f64,
    /// round(w * scale).
    pub new_w: u32,
    /// round(h * scale).
    pub new_h: u32,
    /// (tw - new_w) / 2, floor.
    pub pad_x: u32,
    /// (th - new_h) / 2, floor.
    pub pad_y: u32,
}

impl LetterboxParams {
    /// The parameters for a `width` x `height` frame into a `target_w` x `target_h` input.
    pub fn compute(width: u32, height: u32, target_w: u32, target_h: u32) -> Self {
        let scale =
            (f64::from(target_w) / f64::from(width)).min(f64::from(target_h) / f64::from(height));
        // Rounding can only overshoot by float noise; the clamp keeps the region inside.
        let new_w = ((f64::from(width) * scale).round() as u32).clamp(1, target_w);
        let new_h = ((f64::from(height) * scale).round() as u32).clamp(1, target_h);
        Self {
            scale,
            new_w,
            new_h,
            pad_x: (target_w - new_w) / 2,
            pad_y: (target_h - new_h) / 2,
        }
    }

    /// Maps a point of the letterboxed image back to source-frame pixel coordinates.
    pub fn to_source(&self, x: f32, y: f32) -> (f32, f32) {
        let s = self.scale as f32;
        ((x - self.pad_x as f32) / s, (y - self.pad_y as f32) / s)
    }
}

/// A frame already in device memory: RGB u8 HWC rows at `offset` in an input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    /// Byte offset of the first row.
    pub offset: u64,
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from one row to the next (>= 3 * width).
    pub pitch: u32,
}

impl FrameRef {
    /// One past the frame's last byte.
    fn end(&self) -> u64 {
        self.offset + u64::from(self.height - 1) * u64::from(self.pitch) + 3 * u64::from(self.width)
    }
}

/// A decoded frame in host memory (RGB u8 HWC).
#[derive(Debug, Clone, Copy)]
pub struct HostFrame<'a> {
    /// At least (height - 1) * pitch + 3 * width bytes.
    pub data: &'a [u8],
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Bytes from one row to the next.
    pub pitch: usize,
}

impl HostFrame<'_> {
    fn validate(&self) -> Result<(), GpuError> {
        if self.width == 0 || self.height == 0 {
            return Err(GpuError::InvalidInput(
                "frame with zero width or height".into(),
            ));
        }
        let row = 3 * self.width as usize;
        if self.pitch < row || self.data.len() < (self.height as usize - 1) * self.pitch + row {
            return Err(GpuError::InvalidInput(format!(
                "host frame {}x{} pitch {} does not fit its {} bytes",
                self.width,
                self.height,
                self.pitch,
                self.data.len()
            )));
        }
        Ok(())
    }
}

/// Per-frame record of the kernel's parameter table; layout matches `FrameDesc` in the .cu.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct FrameDesc {
    offset: u64,
    width: i32,
    height: i32,
    pitch: i32,
    new_w: i32,
    new_h: i32,
    pad_x: i32,
    pad_y: i32,
    inv_scale: f32,
}

/// The kernel's by-value parameter table (`FrameBatch` in the .cu).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct FrameBatch {
    frames: [FrameDesc; MAX_FRAMES_PER_LAUNCH],
}

// SAFETY: plain-old-data, #[repr(C)], laid out exactly as the CUDA struct (checked by the
// size assertion below and the GPU-vs-CPU tests).
unsafe impl DeviceRepr for FrameBatch {}
const _: () = assert!(std::mem::size_of::<FrameDesc>() == 40);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutDtype {
    F16,
    F32,
}

/// Sizes a [`Letterboxer`] allocates for, once.
#[derive(Debug, Clone, Copy)]
pub struct LetterboxConfig {
    /// Detector input width (multiple of 8).
    pub target_w: u32,
    /// Detector input height.
    pub target_h: u32,
    /// Largest batch (<= 64).
    pub max_batch: usize,
    /// Bytes of the device input buffer (and of the pinned staging buffer).
    pub input_capacity: usize,
}

impl LetterboxConfig {
    /// 640x640, `max_batch` frames of up to 1920x1080.
    pub fn yolo640(max_batch: usize) -> Self {
        Self {
            target_w: 640,
            target_h: 640,
            max_batch,
            input_capacity: max_batch * 1920 * 1080 * 3,
        }
    }
}

/// The two compiled letterbox kernels of one device; launches into any buffers
/// (e.g. straight into the engine's input binding).
#[derive(Debug, Clone)]
pub struct LetterboxKernels {
    f16: CudaFunction,
    f32: CudaFunction,
    px: u32,
}

fn frame_table(
    frames: &[FrameRef],
    input_len: usize,
    target_w: u32,
    target_h: u32,
) -> Result<(FrameBatch, Vec<LetterboxParams>), GpuError> {
    if frames.is_empty() || frames.len() > MAX_FRAMES_PER_LAUNCH {
        return Err(GpuError::InvalidInput(format!(
            "{} frames in one launch (1..={MAX_FRAMES_PER_LAUNCH})",
            frames.len()
        )));
    }
    let mut table = FrameBatch {
        frames: [FrameDesc::default(); MAX_FRAMES_PER_LAUNCH],
    };
    let mut params = Vec::with_capacity(frames.len());
    for (i, f) in frames.iter().enumerate() {
        if f.width == 0 || f.height == 0 || u64::from(f.pitch) < 3 * u64::from(f.width) {
            return Err(GpuError::InvalidInput(format!(
                "frame {i}: {}x{} with pitch {}",
                f.width, f.height, f.pitch
            )));
        }
        if f.end() > input_len as u64 || f.pitch > i32::MAX as u32 {
            return Err(GpuError::InvalidInput(format!(
                "frame {i} ends at byte {} past the {input_len}-byte input buffer",
                f.end()
            )));
        }
        let p = LetterboxParams::compute(f.width, f.height, target_w, target_h);
        table.frames[i] = FrameDesc {
            offset: f.offset,
            width: f.width as i32,
            height: f.height as i32,
            pitch: f.pitch as i32,
            new_w: p.new_w as i32,
            new_h: p.new_h as i32,
            pad_x: p.pad_x as i32,
            pad_y: p.pad_y as i32,
            inv_scale: (1.0 / p.scale) as f32,
        };
        params.push(p);
    }
    Ok((table, params))
}

fn check_target(target_w: u32, target_h: u32) -> Result<(), GpuError> {
    if target_w == 0 || target_h == 0 || !target_w.is_multiple_of(PIXELS_PER_THREAD) {
        return Err(GpuError::InvalidInput(format!(
            "target {target_w}x{target_h}: width must be a non-zero multiple of {PIXELS_PER_THREAD}"
        )));
    }
    Ok(())
}

impl LetterboxKernels {
    /// Compiles (once per device, cached in the context) and loads the kernels.
    pub fn load(gpu: &GpuContext) -> Result<Self, GpuError> {
        Ok(Self {
            f16: gpu.function(LETTERBOX_SRC, "letterbox_f16")?,
            f32: gpu.function(LETTERBOX_SRC, "letterbox_f32")?,
            px: DEFAULT_PIXELS_PER_THREAD,
        })
    }

    /// The variant computing `pixels_per_thread` (1, 2, 4 or 8) consecutive pixels per
    /// thread; same results, different speed (see `gpu-bench`).
    pub fn load_variant(gpu: &GpuContext, pixels_per_thread: u32) -> Result<Self, GpuError> {
        if !PIXELS_PER_THREAD_VARIANTS.contains(&pixels_per_thread) {
            return Err(GpuError::InvalidInput(format!(
                "no letterbox variant with {pixels_per_thread} pixels per thread"
            )));
        }
        Ok(Self {
            f16: gpu.function(
                LETTERBOX_SRC,
                &format!("letterbox_px{pixels_per_thread}_f16"),
            )?,
            f32: gpu.function(
                LETTERBOX_SRC,
                &format!("letterbox_px{pixels_per_thread}_f32"),
            )?,
            px: pixels_per_thread,
        })
    }

    /// Pixels per thread of these kernels.
    pub fn pixels_per_thread(&self) -> u32 {
        self.px
    }

    #[allow(clippy::too_many_arguments)]
    fn launch<T>(
        &self,
        dtype: OutDtype,
        stream: &CudaStream,
        input: &CudaView<'_, u8>,
        frames: &[FrameRef],
        out: &mut CudaViewMut<'_, T>,
        target_w: u32,
        target_h: u32,
    ) -> Result<Vec<LetterboxParams>, GpuError> {
        check_target(target_w, target_h)?;
        let (table, params) = frame_table(frames, input.len(), target_w, target_h)?;
        let needed = frames.len() * 3 * target_w as usize * target_h as usize;
        if out.len() < needed {
            return Err(GpuError::InvalidInput(format!(
                "output holds {} elements, the batch needs {needed}",
                out.len()
            )));
        }
        let groups = (target_w / self.px) * target_h;
        let cfg = LaunchConfig {
            grid_dim: (groups.div_ceil(THREADS_PER_BLOCK), frames.len() as u32, 1),
            block_dim: (THREADS_PER_BLOCK, 1, 1),
            shared_mem_bytes: 0,
        };
        let func = match dtype {
            OutDtype::F16 => &self.f16,
            OutDtype::F32 => &self.f32,
        };
        let (tw, th) = (target_w as i32, target_h as i32);
        {
            let (ptr, _sync) = cudarc::driver::DevicePtr::device_ptr(&*out, stream);
            if ptr % 16 != 0 {
                return Err(GpuError::InvalidInput(
                    "output pointer not 16-byte aligned".into(),
                ));
            }
        }
        let mut builder = stream.launch_builder(func);
        builder.arg(input).arg(out).arg(&table).arg(&tw).arg(&th);
        // SAFETY: argument list matches the kernel signature (src, dst, FrameBatch, tw, th);
        // every frame's bytes lie inside `input` and the output holds the batch (checked above);
        // views from cudaMalloc'd slices at element offsets that are multiples of the plane
        // size keep the 16-byte alignment the vector stores need (checked above).
        unsafe { builder.launch(cfg) }?;
        Ok(params)
    }

    /// Letterboxes `frames` (in `input`) into `out` as FP16 (bits in u16), NCHW, on `stream`.
    /// Asynchronous: the output is ready for later work on the same stream.
    pub fn launch_f16(
        &self,
        stream: &CudaStream,
        input: &CudaView<'_, u8>,
        frames: &[FrameRef],
        out: &mut CudaViewMut<'_, u16>,
        target_w: u32,
        target_h: u32,
    ) -> Result<Vec<LetterboxParams>, GpuError> {
        self.launch(
            OutDtype::F16,
            stream,
            input,
            frames,
            out,
            target_w,
            target_h,
        )
    }

    /// As [`Self::launch_f16`], FP32 output.
    pub fn launch_f32(
        &self,
        stream: &CudaStream,
        input: &CudaView<'_, u8>,
        frames: &[FrameRef],
        out: &mut CudaViewMut<'_, f32>,
        target_w: u32,
        target_h: u32,
    ) -> Result<Vec<LetterboxParams>, GpuError> {
        self.launch(
            OutDtype::F32,
            stream,
            input,
            frames,
            out,
            target_w,
            target_h,
        )
    }
}

/// The output buffer in `slot`, allocated with `len` elements on first use.
fn output_buffer<'a, T: cudarc::driver::DeviceRepr>(
    stream: &Arc<CudaStream>,
    slot: &'a mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<&'a mut CudaSlice<T>, GpuError> {
    if slot.is_none() {
        // SAFETY: every element of a batch's region is written by the kernel before it is read.
        *slot = Some(unsafe { stream.alloc::<T>(len) }?);
    }
    slot.as_mut()
        .ok_or_else(|| GpuError::InvalidInput("no output buffer".into()))
}

/// Owns a device input buffer, a pinned staging buffer and the output buffers for one
/// batch profile, on its own stream. Steady state allocates nothing.
pub struct Letterboxer {
    gpu: GpuContext,
    stream: Arc<CudaStream>,
    kernels: LetterboxKernels,
    cfg: LetterboxConfig,
    input: CudaSlice<u8>,
    staging: PinnedHostSlice<u8>,
    out_f16: Option<CudaSlice<u16>>,
    out_f32: Option<CudaSlice<f32>>,
}

impl std::fmt::Debug for Letterboxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Letterboxer")
            .field("gpu", &self.gpu)
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl Letterboxer {
    /// Allocates the buffers of `cfg` and loads the kernels.
    pub fn new(gpu: &GpuContext, cfg: LetterboxConfig) -> Result<Self, GpuError> {
        check_target(cfg.target_w, cfg.target_h)?;
        if cfg.max_batch == 0 || cfg.max_batch > MAX_FRAMES_PER_LAUNCH || cfg.input_capacity == 0 {
            return Err(GpuError::InvalidInput(format!(
                "max_batch {} (1..={MAX_FRAMES_PER_LAUNCH}), input_capacity {}",
                cfg.max_batch, cfg.input_capacity
            )));
        }
        let kernels = LetterboxKernels::load(gpu)?;
        let stream = gpu.new_stream()?;
        // SAFETY: the input is only read where `upload` (or the caller) wrote frames; the
        // kernels check every frame lies inside the buffer.
        let input = unsafe { stream.alloc::<u8>(cfg.input_capacity) }?;
        // SAFETY: staging is written before it is read (pack in `upload`).
        let staging = unsafe { gpu.cuda().alloc_pinned::<u8>(cfg.input_capacity) }?;
        Ok(Self {
            gpu: gpu.clone(),
            stream,
            kernels,
            cfg,
            input,
            staging,
            out_f16: None,
            out_f32: None,
        })
    }

    /// The stream all of this letterboxer's work runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernels, for launches into caller-owned buffers.
    pub fn kernels(&self) -> &LetterboxKernels {
        &self.kernels
    }

    /// The device input buffer (where [`Self::upload`] packs frames).
    pub fn input(&self) -> &CudaSlice<u8> {
        &self.input
    }

    /// Elements of one output batch of `batch` frames.
    pub fn output_len(&self, batch: usize) -> usize {
        batch * 3 * self.cfg.target_w as usize * self.cfg.target_h as usize
    }

    /// Packs host frames (rows tight, each frame 256-byte aligned) into the pinned staging
    /// buffer and copies them to the device input buffer, asynchronously on this stream.
    pub fn upload(&mut self, frames: &[HostFrame<'_>]) -> Result<Vec<FrameRef>, GpuError> {
        let mut refs = Vec::with_capacity(frames.len());
        let mut end = 0usize;
        for f in frames {
            f.validate()?;
            let offset = end.next_multiple_of(256);
            let pitch = 3 * f.width as usize;
            let size = pitch * f.height as usize;
            if offset + size > self.cfg.input_capacity {
                return Err(GpuError::InvalidInput(format!(
                    "frames need more than the {}-byte input buffer",
                    self.cfg.input_capacity
                )));
            }
            refs.push(FrameRef {
                offset: offset as u64,
                width: f.width,
                height: f.height,
                pitch: pitch as u32,
            });
            end = offset + size;
        }
        // Waits for the previous copy out of staging (the slice's event), then packs.
        self.stream.synchronize()?;
        let staging = self.staging.as_mut_slice()?;
        for (f, r) in frames.iter().zip(&refs) {
            let row = 3 * f.width as usize;
            for y in 0..f.height as usize {
                let dst = r.offset as usize + y * row;
                staging[dst..dst + row].copy_from_slice(&f.data[y * f.pitch..y * f.pitch + row]);
            }
        }
        let used = end;
        let mut dst = self.input.slice_mut(0..used);
        let src = self.staging.as_slice()?;
        self.stream.memcpy_htod(&src[..used], &mut dst)?;
        Ok(refs)
    }

    fn check_batch(&self, frames: &[FrameRef]) -> Result<(), GpuError> {
        if frames.len() > self.cfg.max_batch {
            return Err(GpuError::InvalidInput(format!(
                "batch of {} over max_batch {}",
                frames.len(),
                self.cfg.max_batch
            )));
        }
        Ok(())
    }

    /// Letterboxes `frames` (already in the input buffer) into the FP16 output buffer.
    /// Asynchronous; call [`Self::synchronize`] or order later work on [`Self::stream`].
    pub fn run_f16(&mut self, frames: &[FrameRef]) -> Result<Vec<LetterboxParams>, GpuError> {
        self.check_batch(frames)?;
        let len = self.output_len(self.cfg.max_batch);
        let out = output_buffer(&self.stream, &mut self.out_f16, len)?;
        self.kernels.launch(
            OutDtype::F16,
            &self.stream,
            &self.input.as_view(),
            frames,
            &mut out.as_view_mut(),
            self.cfg.target_w,
            self.cfg.target_h,
        )
    }

    /// As [`Self::run_f16`], into the FP32 output buffer.
    pub fn run_f32(&mut self, frames: &[FrameRef]) -> Result<Vec<LetterboxParams>, GpuError> {
        self.check_batch(frames)?;
        let len = self.output_len(self.cfg.max_batch);
        let out = output_buffer(&self.stream, &mut self.out_f32, len)?;
        self.kernels.launch(
            OutDtype::F32,
            &self.stream,
            &self.input.as_view(),
            frames,
            &mut out.as_view_mut(),
            self.cfg.target_w,
            self.cfg.target_h,
        )
    }

    /// The FP16 output buffer (bits as u16), once [`Self::run_f16`] has run.
    pub fn output_f16(&self) -> Option<&CudaSlice<u16>> {
        self.out_f16.as_ref()
    }

    /// The FP32 output buffer, once [`Self::run_f32`] has run.
    pub fn output_f32(&self) -> Option<&CudaSlice<f32>> {
        self.out_f32.as_ref()
    }

    /// Waits for all work on this letterboxer's stream.
    pub fn synchronize(&self) -> Result<(), GpuError> {
        Ok(self.stream.synchronize()?)
    }

    /// Copies the first `batch` FP16 outputs to the host (synchronises).
    pub fn download_f16(&self, batch: usize) -> Result<Vec<half::f16>, GpuError> {
        let out = self
            .out_f16
            .as_ref()
            .ok_or_else(|| GpuError::InvalidInput("run_f16 has not run".into()))?;
        let bits = self
            .stream
            .clone_dtoh(&out.slice(0..self.output_len(batch)))?;
        self.stream.synchronize()?;
        Ok(bits.into_iter().map(half::f16::from_bits).collect())
    }

    /// Copies the first `batch` FP32 outputs to the host (synchronises).
    pub fn download_f32(&self, batch: usize) -> Result<Vec<f32>, GpuError> {
        let out = self
            .out_f32
            .as_ref()
            .ok_or_else(|| GpuError::InvalidInput("run_f32 has not run".into()))?;
        let v = self
            .stream
            .clone_dtoh(&out.slice(0..self.output_len(batch)))?;
        self.stream.synchronize()?;
        Ok(v)
    }
}

/// CPU oracle with the same semantics, in f64, and random test frames.
pub mod reference {
    use super::{HostFrame, LetterboxParams, PAD_VALUE};

    /// Letterboxes one frame into `out` (`3 * tw * th` values, CHW, 0..1).
    pub fn letterbox_frame(
        frame: &HostFrame<'_>,
        tw: u32,
        th: u32,
        out: &mut [f64],
    ) -> LetterboxParams {
        let p = LetterboxParams::compute(frame.width, frame.height, tw, th);
        let (w, h) = (frame.width as usize, frame.height as usize);
        let (tw, th) = (tw as usize, th as usize);
        let plane = tw * th;
        let pad = f64::from(PAD_VALUE) / 255.0;
        let px = |x: usize, y: usize, c: usize| f64::from(frame.data[y * frame.pitch + 3 * x + c]);
        for y in 0..th {
            for x in 0..tw {
                let inside = x >= p.pad_x as usize
                    && x < (p.pad_x + p.new_w) as usize
                    && y >= p.pad_y as usize
                    && y < (p.pad_y + p.new_h) as usize;
                if !inside {
                    for c in 0..3 {
                        out[c * plane + y * tw + x] = pad;
                    }
                    continue;
                }
                let sx = ((x as f64 - f64::from(p.pad_x) + 0.5) / p.scale - 0.5)
                    .clamp(0.0, (w - 1) as f64);
                let sy = ((y as f64 - f64::from(p.pad_y) + 0.5) / p.scale - 0.5)
                    .clamp(0.0, (h - 1) as f64);
                let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
                for c in 0..3 {
                    let top = px(x0, y0, c) * (1.0 - fx) + px(x1, y0, c) * fx;
                    let bot = px(x0, y1, c) * (1.0 - fx) + px(x1, y1, c) * fx;
                    out[c * plane + y * tw + x] = (top * (1.0 - fy) + bot * fy) / 255.0;
                }
            }
        }
        p
    }

    /// Letterboxes a batch into NCHW.
    pub fn letterbox_batch(
        frames: &[HostFrame<'_>],
        tw: u32,
        th: u32,
    ) -> (Vec<f64>, Vec<LetterboxParams>) {
        let plane3 = 3 * tw as usize * th as usize;
        let mut out = vec![0.0; frames.len() * plane3];
        let params = frames
            .iter()
            .zip(out.chunks_mut(plane3))
            .map(|(f, o)| letterbox_frame(f, tw, th, o))
            .collect();
        (out, params)
    }

    /// Deterministic pseudo-random bytes (splitmix64), for test frames without a rand crate.
    pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            out.extend_from_slice(&z.to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Largest |gpu - reference| over all elements; NaN (an unwritten poisoned element)
    /// counts as infinite.
    pub fn max_abs_err(gpu: impl IntoIterator<Item = f64>, reference: &[f64]) -> f64 {
        let mut n = 0usize;
        let mut worst = 0.0f64;
        for (g, r) in gpu.into_iter().zip(reference) {
            n += 1;
            let e = (g - r).abs();
            worst = if e.is_nan() {
                f64::INFINITY
            } else {
                worst.max(e)
            };
        }
        if n != reference.len() {
            f64::INFINITY
        } else {
            worst
        }
    }
}
