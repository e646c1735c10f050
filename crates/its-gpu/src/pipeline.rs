//! The ORT-free GPU stages of one worker stream, behind one type: a batch of JPEG byte
//! slices -> nvJPEG decode into a pooled device buffer -> fused letterbox (FP16 NCHW, the
//! detector's input) + frame quality -> (the caller runs the detector on
//! [`GpuPipeline::input_f16`]) -> decode + NMS of the detector's output -> detections in
//! source pixels, with per-stage device timings. All buffers come from bounded pools: in
//! steady state a batch allocates nothing.

use std::sync::Arc;

use cudarc::driver::{CudaEvent, CudaStream, CudaView, CudaViewMut, sys::CUevent_flags};

use crate::nvjpeg::{JpegBackend, JpegDecoder};
use crate::pool::{DevicePool, PinnedPool, PoolStats, PooledDevice, PooledPinned};
use crate::postprocess::{Detection, FrameGeometry, PostprocessConfig, Postprocessor};
use crate::quality::{QualityKernel, QualityReport, reports_from};
use crate::{FrameRef, GpuContext, GpuError, LetterboxKernels};

/// Sizes and settings of one pipeline.
#[derive(Debug, Clone, Copy)]
pub struct PipelineConfig {
    /// Largest batch (<= 64).
    pub max_batch: usize,
    /// Largest frame accepted.
    pub max_width: u32,
    /// Largest frame accepted.
    pub max_height: u32,
    /// Detector input width (multiple of 8).
    pub target_w: u32,
    /// Detector input height.
    pub target_h: u32,
    /// Post-processing settings.
    pub post: PostprocessConfig,
    /// Bound of the device pool.
    pub device_pool_bytes: usize,
    /// Bound of the pinned host pool.
    pub pinned_pool_bytes: usize,
    /// Frames per batch decoded by CPU threads next to the JPEG engines
    /// ([`JpegDecoder::set_cpu_assist`]).
    pub jpeg_cpu_assist: usize,
}

impl PipelineConfig {
    /// YOLO11n / YOLOv8n COCO at 640x640, frames up to 1920x1080.
    pub fn yolo640(max_batch: usize) -> Self {
        let decoded = max_batch * 1920 * 1080 * 3;
        let input = max_batch * 3 * 640 * 640 * 2;
        Self {
            max_batch,
            max_width: 1920,
            max_height: 1080,
            target_w: 640,
            target_h: 640,
            post: PostprocessConfig::yolo_coco640(),
            // Two batches in flight of every buffer, rounded up to pool buckets.
            device_pool_bytes: 4 * (decoded + input) + (64 << 20),
            pinned_pool_bytes: 16 << 20,
            jpeg_cpu_assist: 0,
        }
    }
}

/// Device time of each stage of the last batch, in milliseconds (CUDA events).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimings {
    /// nvJPEG batched decode (includes nvJPEG's host work inside the call).
    pub decode_ms: f64,
    /// Fused letterbox into the FP16 input tensor.
    pub letterbox_ms: f64,
    /// Frame quality kernel and the copy of its results.
    pub quality_ms: f64,
    /// Decode + NMS kernels and the copy of the detections.
    pub postprocess_ms: f64,
}

/// Element type of the detector input tensor the letterbox writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputDtype {
    /// IEEE half (bits as u16).
    F16,
    /// f32.
    F32,
}

impl InputDtype {
    /// Bytes per element.
    pub fn bytes(self) -> usize {
        match self {
            InputDtype::F16 => 2,
            InputDtype::F32 => 4,
        }
    }
}

/// One frame of a prepared batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreparedFrame {
    /// Index of this frame in the input tensor (the batch position the detector sees).
    pub slot: usize,
    /// Where the frame sits in the detector input, to map boxes back.
    pub geometry: FrameGeometry,
    /// Brightness, contrast, sharpness; `quality.score()` is the 0..1 score.
    pub quality: QualityReport,
}

/// The result of [`GpuPipeline::preprocess`]: per input frame, its place in the input
/// tensor or why it was refused.
#[derive(Debug)]
pub struct PreparedBatch {
    /// One entry per input JPEG, in input order.
    pub frames: Vec<Result<PreparedFrame, GpuError>>,
    /// Frames in the input tensor (the batch the detector must run).
    pub batch: usize,
    /// Stage timings (decode, letterbox, quality filled).
    pub timings: StageTimings,
}

/// Decode -> letterbox -> quality, and post-processing, on one stream with pooled buffers.
pub struct GpuPipeline {
    gpu: GpuContext,
    stream: Arc<CudaStream>,
    cfg: PipelineConfig,
    decoder: JpegDecoder,
    letterbox: LetterboxKernels,
    quality: QualityKernel,
    post: Postprocessor,
    device_pool: DevicePool,
    pinned_pool: PinnedPool,
    input: Option<PooledDevice>,
    decoded: Option<PooledDevice>,
    quality_dev: Option<PooledDevice>,
    quality_host: Option<PooledPinned>,
}

impl std::fmt::Debug for GpuPipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuPipeline")
            .field("gpu", &self.gpu)
            .field("cfg", &self.cfg)
            .field("backend", &self.decoder.backend())
            .finish()
    }
}

fn event(stream: &CudaStream) -> Result<CudaEvent, GpuError> {
    Ok(stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?)
}

fn elapsed(a: &CudaEvent, b: &CudaEvent) -> Result<f64, GpuError> {
    Ok(f64::from(a.elapsed_ms(b)?))
}

impl GpuPipeline {
    /// Loads kernels and nvJPEG, creates the stream and the pools.
    pub fn new(gpu: &GpuContext, cfg: PipelineConfig) -> Result<Self, GpuError> {
        Self::with_stream(gpu, cfg, gpu.new_stream()?)
    }

    /// As [`Self::new`], every stage on `stream` (a GPU worker's stream, shared with its
    /// engine contexts).
    pub fn with_stream(
        gpu: &GpuContext,
        cfg: PipelineConfig,
        stream: Arc<CudaStream>,
    ) -> Result<Self, GpuError> {
        if cfg.max_batch == 0 || cfg.max_batch > crate::letterbox::MAX_FRAMES_PER_LAUNCH {
            return Err(GpuError::InvalidInput(format!(
                "max_batch {} (1..=64)",
                cfg.max_batch
            )));
        }
        let device_pool = DevicePool::new(stream.clone(), cfg.device_pool_bytes);
        let pinned_pool = PinnedPool::new(gpu, cfg.pinned_pool_bytes);
        let post = Postprocessor::new(gpu, cfg.post, device_pool.clone(), pinned_pool.clone())?;
        let mut decoder = JpegDecoder::new(cfg.max_width, cfg.max_height)?;
        decoder.set_cpu_assist(cfg.jpeg_cpu_assist);
        Ok(Self {
            gpu: gpu.clone(),
            decoder,
            letterbox: LetterboxKernels::load(gpu)?,
            quality: QualityKernel::load(gpu)?,
            post,
            stream,
            cfg,
            device_pool,
            pinned_pool,
            input: None,
            decoded: None,
            quality_dev: None,
            quality_host: None,
        })
    }

    /// The stream all stages run on (run the detector on it too, or wait on an event).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The nvJPEG backend in use.
    pub fn jpeg_backend(&self) -> JpegBackend {
        self.decoder.backend()
    }

    /// (device pool, pinned pool) counters.
    pub fn pool_stats(&self) -> (PoolStats, PoolStats) {
        (self.device_pool.stats(), self.pinned_pool.stats())
    }

    /// Elements of the input tensor for `batch` frames.
    pub fn input_len(&self, batch: usize) -> usize {
        batch * 3 * self.cfg.target_w as usize * self.cfg.target_h as usize
    }

    /// The FP16 NCHW input tensor of the last [`Self::preprocess`] (bits as u16),
    /// `batch` frames.
    pub fn input_f16(&self, batch: usize) -> Result<CudaView<'_, u16>, GpuError> {
        let buf = self
            .input
            .as_ref()
            .ok_or_else(|| GpuError::InvalidInput("no batch prepared".into()))?;
        // SAFETY: the buffer was taken with room for max_batch frames of u16 values and is
        // 256-byte aligned; `batch` is bounded by the caller's prepared batch.
        unsafe { buf.slice().transmute::<u16>(self.input_len(batch)) }
            .ok_or_else(|| GpuError::InvalidInput(format!("batch {batch} over the input tensor")))
    }

    /// Decodes, letterboxes and measures a batch of JPEGs; waits for the device. Frames
    /// that fail (undecodable, too large) are reported per frame and left out of the input
    /// tensor; the others fill slots 0..batch in input order.
    pub fn preprocess(&mut self, jpegs: &[&[u8]]) -> Result<PreparedBatch, GpuError> {
        // Drop last batch's tensor first, so the take below hits the pool.
        self.input = None;
        let mut input = self
            .device_pool
            .take(self.input_len(self.cfg.max_batch) * 2)?;
        let r = self.preprocess_into(jpegs, &mut input.slice_mut().as_view_mut(), InputDtype::F16);
        self.input = Some(input);
        r
    }

    /// As [`Self::preprocess`], the letterbox writing into `out` (the detector's input
    /// buffer, NCHW, elements of `dtype` as bytes; room for `jpegs.len()` frames), which
    /// must be used on this pipeline's stream.
    pub fn preprocess_into(
        &mut self,
        jpegs: &[&[u8]],
        out: &mut CudaViewMut<'_, u8>,
        dtype: InputDtype,
    ) -> Result<PreparedBatch, GpuError> {
        if jpegs.is_empty() || jpegs.len() > self.cfg.max_batch {
            return Err(GpuError::InvalidInput(format!(
                "batch of {} JPEGs (1..={})",
                jpegs.len(),
                self.cfg.max_batch
            )));
        }
        let cfg = self.cfg;
        let frame_bytes = 3 * cfg.max_width as usize * cfg.max_height as usize;
        let decoded_bytes = cfg.max_batch * (frame_bytes + crate::nvjpeg::FRAME_ALIGN);
        if out.len() < self.input_len(jpegs.len()) * dtype.bytes() {
            return Err(GpuError::InvalidInput(format!(
                "input tensor of {} bytes, {} frames need {}",
                out.len(),
                jpegs.len(),
                self.input_len(jpegs.len()) * dtype.bytes()
            )));
        }
        // Drop last batch's buffers first, so the take below hits the pool.
        self.decoded = None;
        let mut decoded = self.device_pool.take(decoded_bytes)?;
        let mut qdev = self
            .quality_dev
            .take()
            .map_or_else(|| self.device_pool.take(cfg.max_batch * 3 * 4), Ok)?;
        let mut qhost = self
            .quality_host
            .take()
            .map_or_else(|| self.pinned_pool.take(cfg.max_batch * 3 * 4), Ok)?;
        let stream = self.stream.clone();
        let e0 = event(&stream)?;
        let decoded_frames = self
            .decoder
            .decode_batch(&stream, jpegs, decoded.slice_mut())?;
        let e1 = event(&stream)?;
        let ok: Vec<FrameRef> = decoded_frames
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        let batch = ok.len();
        let mut params = Vec::new();
        if batch > 0 {
            let n = self.input_len(batch);
            let src = decoded.slice().as_view();
            let short = || GpuError::InvalidInput("input tensor too small".into());
            params = match dtype {
                InputDtype::F16 => {
                    // SAFETY: `out` holds at least n u16 values (checked above); device
                    // buffers and engine arena regions are 256-byte aligned.
                    let mut o = unsafe { out.transmute_mut::<u16>(n) }.ok_or_else(short)?;
                    let (w, h) = (cfg.target_w, cfg.target_h);
                    self.letterbox
                        .launch_f16(&stream, &src, &ok, &mut o, w, h)?
                }
                InputDtype::F32 => {
                    // SAFETY: as above, n f32 values.
                    let mut o = unsafe { out.transmute_mut::<f32>(n) }.ok_or_else(short)?;
                    let (w, h) = (cfg.target_w, cfg.target_h);
                    self.letterbox
                        .launch_f32(&stream, &src, &ok, &mut o, w, h)?
                }
            };
        }
        let e2 = event(&stream)?;
        if batch > 0 {
            // SAFETY: room for max_batch * 3 floats (taken above).
            let mut q = unsafe { qdev.slice_mut().transmute_mut::<f32>(3 * batch) }
                .ok_or_else(|| GpuError::InvalidInput("quality buffer too small".into()))?;
            self.quality
                .launch(&stream, &decoded.slice().as_view(), &ok, &mut q)?;
            let src = qdev.slice().slice(0..12 * batch);
            stream.memcpy_dtoh(&src, qhost.slice_mut())?;
        }
        let e3 = event(&stream)?;
        stream.synchronize()?;
        let qbytes = qhost.slice().as_slice()?;
        let qvals: Vec<f32> = qbytes[..12 * batch]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let reports = reports_from(&qvals);
        let mut slot = 0usize;
        let frames = decoded_frames
            .into_iter()
            .map(|r| {
                r.map(|f| {
                    let p = PreparedFrame {
                        slot,
                        geometry: FrameGeometry::from_letterbox(&params[slot], f.width, f.height),
                        quality: reports[slot],
                    };
                    slot += 1;
                    p
                })
            })
            .collect();
        let timings = StageTimings {
            decode_ms: elapsed(&e0, &e1)?,
            letterbox_ms: elapsed(&e1, &e2)?,
            quality_ms: elapsed(&e2, &e3)?,
            postprocess_ms: 0.0,
        };
        self.decoded = Some(decoded);
        self.quality_dev = Some(qdev);
        self.quality_host = Some(qhost);
        Ok(PreparedBatch {
            frames,
            batch,
            timings,
        })
    }

    /// Decode + NMS of the detector's FP32 output `[B, 4 + C, N]` for the frames of
    /// `geometry` (slot order); waits for the device. Returns detections per frame in
    /// source pixels and the stage's device time in ms.
    pub fn postprocess(
        &mut self,
        output: &CudaView<'_, f32>,
        geometry: &[FrameGeometry],
    ) -> Result<(Vec<Vec<Detection>>, f64), GpuError> {
        let stream = self.stream.clone();
        let e0 = event(&stream)?;
        self.post.enqueue(&stream, output, geometry)?;
        let e1 = event(&stream)?;
        let dets = self.post.finish(&stream)?;
        Ok((dets, elapsed(&e0, &e1)?))
    }
}
