//! Batched JPEG decode on the GPU with nvJPEG, loaded at run time (`libnvjpeg.so.13`), so
//! the crate builds and starts where CUDA is absent. The hardware backend (the JPEG engines
//! of A100 / H100 class GPUs) is used where the GPU has one, the GPU hybrid backend
//! otherwise. Frames decode straight into a device buffer as interleaved RGB, the layout
//! the letterbox and quality kernels read ([`FrameRef`]).

use std::ffi::{c_int, c_uint, c_void};
use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaEvent, CudaSlice, CudaStream, DevicePtrMut, PinnedHostSlice};
use libloading::Library;

use crate::{FrameRef, GpuError};

type Status = c_int;
type Handle = *mut c_void;
type State = *mut c_void;

const STATUS_SUCCESS: Status = 0;
const BACKEND_DEFAULT: c_int = 0;
const BACKEND_GPU_HYBRID: c_int = 2;
const BACKEND_HARDWARE: c_int = 3;
const OUTPUT_YUV: c_int = 1;
const OUTPUT_RGBI: c_int = 5;
const CSS_444: c_int = 0;
const CSS_422: c_int = 1;
const CSS_420: c_int = 2;
const CSS_440: c_int = 3;
const CSS_GRAY: c_int = 6;
const CSS_410: c_int = 5;
const CSS_411: c_int = 4;
const CSS_UNKNOWN: c_int = -1;

/// Alignment of each decoded frame in the output buffer.
pub const FRAME_ALIGN: usize = 256;

#[repr(C)]
#[derive(Clone, Copy)]
struct Image {
    channel: [*mut u8; 4],
    pitch: [usize; 4],
}

type CreateEx =
    unsafe extern "C" fn(c_int, *mut c_void, *mut c_void, c_uint, *mut Handle) -> Status;
type Destroy = unsafe extern "C" fn(Handle) -> Status;
type StateCreate = unsafe extern "C" fn(Handle, *mut State) -> Status;
type StateDestroy = unsafe extern "C" fn(State) -> Status;
type GetImageInfo = unsafe extern "C" fn(
    Handle,
    *const u8,
    usize,
    *mut c_int,
    *mut c_int,
    *mut c_int,
    *mut c_int,
) -> Status;
type BatchedInit = unsafe extern "C" fn(Handle, State, c_int, c_int, c_int) -> Status;
type DecodeBatched = unsafe extern "C" fn(
    Handle,
    State,
    *const *const u8,
    *const usize,
    *mut Image,
    cudarc::driver::sys::CUstream,
) -> Status;

/// The nvJPEG entry points this crate uses, resolved once.
struct Api {
    create_ex: CreateEx,
    destroy: Destroy,
    state_create: StateCreate,
    state_destroy: StateDestroy,
    get_image_info: GetImageInfo,
    batched_init: BatchedInit,
    decode_batched: DecodeBatched,
    // Keeps the library mapped while the function pointers above are alive.
    _lib: Library,
}

fn status_name(s: Status) -> &'static str {
    match s {
        1 => "not initialized",
        2 => "invalid parameter",
        3 => "bad jpeg",
        4 => "jpeg not supported",
        5 => "allocator failure",
        6 => "execution failed",
        7 => "arch mismatch",
        8 => "internal error",
        9 => "implementation not supported",
        10 => "incomplete bitstream",
        _ => "unknown status",
    }
}

fn check(call: &'static str, s: Status) -> Result<(), GpuError> {
    if s == STATUS_SUCCESS {
        Ok(())
    } else {
        Err(GpuError::Jpeg(format!("{call}: {} ({s})", status_name(s))))
    }
}

impl Api {
    fn load() -> Result<Self, GpuError> {
        let mut last = String::new();
        for name in ["libnvjpeg.so.13", "libnvjpeg.so"] {
            // SAFETY: loading nvJPEG runs its (C) initialisers only; it has no Rust-visible
            // global state.
            match unsafe { Library::new(name) } {
                Ok(lib) => return Self::resolve(lib),
                Err(e) => last = e.to_string(),
            }
        }
        Err(GpuError::NoNvjpeg(format!(
            "libnvjpeg.so.13 could not be loaded ({last}); set LD_LIBRARY_PATH to CUDA's lib64"
        )))
    }

    fn resolve(lib: Library) -> Result<Self, GpuError> {
        fn sym<T: Copy>(lib: &Library, name: &[u8]) -> Result<T, GpuError> {
            // SAFETY: each type alias above matches the C prototype in nvjpeg.h of the
            // symbol looked up with it.
            unsafe { lib.get::<T>(name) }
                .map(|s| *s)
                .map_err(|e| GpuError::NoNvjpeg(format!("missing nvJPEG symbol: {e}")))
        }
        Ok(Self {
            create_ex: sym(&lib, b"nvjpegCreateEx\0")?,
            destroy: sym(&lib, b"nvjpegDestroy\0")?,
            state_create: sym(&lib, b"nvjpegJpegStateCreate\0")?,
            state_destroy: sym(&lib, b"nvjpegJpegStateDestroy\0")?,
            get_image_info: sym(&lib, b"nvjpegGetImageInfo\0")?,
            batched_init: sym(&lib, b"nvjpegDecodeBatchedInitialize\0")?,
            decode_batched: sym(&lib, b"nvjpegDecodeBatched\0")?,
            _lib: lib,
        })
    }
}

/// Which nvJPEG backend a decoder runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegBackend {
    /// The GPU's JPEG engines (A100, H100 and later).
    Hardware,
    /// Huffman decode on the GPU (CUDA cores), IDCT and colour conversion on the GPU.
    GpuHybrid,
    /// nvJPEG's own choice.
    Default,
}

impl JpegBackend {
    fn raw(self) -> c_int {
        match self {
            Self::Hardware => BACKEND_HARDWARE,
            Self::GpuHybrid => BACKEND_GPU_HYBRID,
            Self::Default => BACKEND_DEFAULT,
        }
    }
}

/// What a decoder writes for each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegOutput {
    /// Interleaved RGB, rows tight: what the letterbox and quality kernels read.
    #[default]
    InterleavedRgb,
    /// The frame's own planes, Y then Cb then Cr, each tight, chroma at the frame's
    /// subsampling, inside the same region an RGB frame would take. Only the bench reads
    /// it (to time the JPEG engines without colour conversion); frames decoded on the CPU
    /// are still RGB.
    PlanarYuv,
}

/// Size of a JPEG as its header states it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegInfo {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Colour components (1 or 3).
    pub components: u32,
}

/// One nvJPEG library handle, shared by the decoders created from it; destroyed with the
/// last of them.
struct HandleOwner {
    api: Arc<Api>,
    handle: Handle,
}

// SAFETY: an nvJPEG handle is thread safe (nvJPEG documents handles as shareable between
// threads; only a decode state must not be used concurrently).
unsafe impl Send for HandleOwner {}
// SAFETY: as above; the handle is only passed by value to thread-safe nvJPEG calls.
unsafe impl Sync for HandleOwner {}

impl Drop for HandleOwner {
    fn drop(&mut self) {
        // SAFETY: the handle was created by `JpegDecoder::with_backend` and every state made
        // from it has been destroyed (each decoder holds an Arc of this owner).
        unsafe { (self.api.destroy)(self.handle) };
    }
}

/// A batched nvJPEG decoder: one library handle and one decode state, used by one thread
/// at a time (`&mut self`). Decodes on the stream given to each call.
pub struct JpegDecoder {
    api: Arc<Api>,
    owner: Arc<HandleOwner>,
    handle: Handle,
    state: State,
    backend: JpegBackend,
    batch_size: Option<usize>,
    max_width: u32,
    max_height: u32,
    cpu_assist: usize,
    pinned_input: bool,
    output: JpegOutput,
    staging: Option<PinnedHostSlice<u8>>,
    staging_free: Option<CudaEvent>,
}

// SAFETY: nvJPEG handles and states may be used from any thread as long as calls on one
// state do not overlap; `&mut self` on every call that touches the state guarantees that.
unsafe impl Send for JpegDecoder {}

impl std::fmt::Debug for JpegDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JpegDecoder")
            .field("backend", &self.backend)
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl Drop for JpegDecoder {
    fn drop(&mut self) {
        // SAFETY: the state was created by this decoder and is destroyed once, before the
        // handle (which `owner` keeps alive until after this); no decode is in flight on the
        // host side (&mut self).
        unsafe {
            (self.api.state_destroy)(self.state);
        }
    }
}

impl JpegDecoder {
    /// A decoder on the current device (the caller's [`crate::GpuContext`] must exist):
    /// the hardware backend where available, else GPU hybrid, else nvJPEG's default.
    /// Frames larger than `max_width` x `max_height` are refused per frame.
    pub fn new(max_width: u32, max_height: u32) -> Result<Self, GpuError> {
        let mut last = None;
        for backend in [
            JpegBackend::Hardware,
            JpegBackend::GpuHybrid,
            JpegBackend::Default,
        ] {
            match Self::with_backend(backend, max_width, max_height) {
                Ok(d) => return Ok(d),
                Err(e @ GpuError::NoNvjpeg(_)) => return Err(e),
                Err(e) => {
                    tracing::info!(?backend, error = %e, "nvjpeg backend unavailable");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| GpuError::Jpeg("no nvjpeg backend".into())))
    }

    /// A decoder on one specific backend.
    pub fn with_backend(
        backend: JpegBackend,
        max_width: u32,
        max_height: u32,
    ) -> Result<Self, GpuError> {
        let api = Arc::new(Api::load()?);
        let mut handle: Handle = std::ptr::null_mut();
        // SAFETY: null allocators select nvJPEG's defaults; flags 0; `handle` is written on
        // success only.
        check("nvjpegCreateEx", unsafe {
            (api.create_ex)(
                backend.raw(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                0,
                &mut handle,
            )
        })?;
        let mut state: State = std::ptr::null_mut();
        // SAFETY: `handle` is a live handle created above.
        let s = unsafe { (api.state_create)(handle, &mut state) };
        if let Err(e) = check("nvjpegJpegStateCreate", s) {
            // SAFETY: destroys the handle created above, once.
            unsafe { (api.destroy)(handle) };
            return Err(e);
        }
        tracing::info!(?backend, "nvjpeg decoder created");
        let owner = Arc::new(HandleOwner {
            api: api.clone(),
            handle,
        });
        Ok(Self {
            api,
            owner,
            handle,
            state,
            backend,
            batch_size: None,
            max_width,
            max_height,
            cpu_assist: 0,
            pinned_input: false,
            output: JpegOutput::default(),
            staging: None,
            staging_free: None,
        })
    }

    /// Another decoder on the same library handle with its own decode state, for a second
    /// thread or stream.
    pub fn sibling(&self) -> Result<Self, GpuError> {
        let mut state: State = std::ptr::null_mut();
        // SAFETY: the handle is alive (held by `owner`).
        check("nvjpegJpegStateCreate", unsafe {
            (self.api.state_create)(self.handle, &mut state)
        })?;
        Ok(Self {
            api: self.api.clone(),
            owner: self.owner.clone(),
            handle: self.handle,
            state,
            backend: self.backend,
            batch_size: None,
            max_width: self.max_width,
            max_height: self.max_height,
            cpu_assist: self.cpu_assist,
            pinned_input: self.pinned_input,
            output: self.output,
            staging: None,
            staging_free: None,
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> JpegBackend {
        self.backend
    }

    /// Reads a JPEG's size from its header; errors for data nvJPEG cannot parse and for
    /// frames over the limits.
    pub fn info(&self, jpeg: &[u8]) -> Result<JpegInfo, GpuError> {
        self.header(jpeg).map(|(info, _)| info)
    }

    fn header(&self, jpeg: &[u8]) -> Result<(JpegInfo, c_int), GpuError> {
        if jpeg.len() < 4 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
            return Err(GpuError::Jpeg("not a jpeg (no SOI marker)".into()));
        }
        let (mut comps, mut css) = (0 as c_int, 0 as c_int);
        let (mut w, mut h) = ([0 as c_int; 4], [0 as c_int; 4]);
        // SAFETY: `jpeg` is a valid slice of `len` bytes; the out arrays have the 4
        // entries (NVJPEG_MAX_COMPONENT) nvJPEG writes.
        check("nvjpegGetImageInfo", unsafe {
            (self.api.get_image_info)(
                self.handle,
                jpeg.as_ptr(),
                jpeg.len(),
                &mut comps,
                &mut css,
                w.as_mut_ptr(),
                h.as_mut_ptr(),
            )
        })?;
        let (width, height) = (w[0].max(0) as u32, h[0].max(0) as u32);
        if width == 0 || height == 0 {
            return Err(GpuError::Jpeg(format!("jpeg of {width}x{height}")));
        }
        if width > self.max_width || height > self.max_height {
            return Err(GpuError::Jpeg(format!(
                "jpeg of {width}x{height} over the {}x{} limit",
                self.max_width, self.max_height
            )));
        }
        if css == CSS_UNKNOWN {
            return Err(GpuError::Jpeg("unknown chroma subsampling".into()));
        }
        let components = if css == CSS_GRAY {
            1
        } else {
            comps.max(0) as u32
        };
        Ok((
            JpegInfo {
                width,
                height,
                components,
            },
            css,
        ))
    }

    /// Whether the bitstreams are first packed into a pinned host buffer, so nvJPEG's own
    /// upload of them is a DMA rather than a staged pageable copy. Off by default: on an
    /// H100 it measured slower (11.3k vs 13.2k frames/s, bench-results/
    /// 2026-11-24-h100-pinned-input-bench.txt): the extra host copy costs more than it saves.
    pub fn set_pinned_input(&mut self, on: bool) {
        self.pinned_input = on;
    }

    /// What the GPU backend writes per frame ([`JpegOutput`]); interleaved RGB by default.
    pub fn set_output(&mut self, output: JpegOutput) {
        if self.output != output {
            self.output = output;
            self.batch_size = None;
        }
    }

    /// Frames of each batch (among those the GPU backend could take) decoded by CPU
    /// threads (zune-jpeg, one thread per frame) while the JPEG engines work on the rest,
    /// then copied into the same device buffer. 0 (the default) turns the assist off. On an
    /// H100 the in-call assist is slower than the engines alone (NOTES.md): keep it off
    /// except to spread load where the engines are absent or busy.
    pub fn set_cpu_assist(&mut self, frames: usize) {
        self.cpu_assist = frames;
    }

    /// Decodes `jpegs` into `out` as interleaved RGB (rows tight, each frame at a
    /// [`FRAME_ALIGN`]-byte offset), asynchronously on `stream`. Returns one result per
    /// input: the frame's place in `out`, or why that frame was refused (bad header, too
    /// large, does not fit, CPU decode failed); refused frames do not stop the others.
    /// Frames the GPU backend cannot take (progressive or lossless coding, 4:1:0 / 4:1:1 on
    /// the hardware backend) are decoded on the CPU instead, as are the
    /// [`Self::set_cpu_assist`] frames. An error of the batch call itself (nvJPEG refusing
    /// the whole batch) is returned as the outer error.
    pub fn decode_batch(
        &mut self,
        stream: &Arc<CudaStream>,
        jpegs: &[&[u8]],
        out: &mut CudaSlice<u8>,
    ) -> Result<Vec<Result<FrameRef, GpuError>>, GpuError> {
        stream.context().bind_to_thread()?;
        let capacity = out.len();
        let mut results = Vec::with_capacity(jpegs.len());
        let mut on_cpu = Vec::new();
        let mut end = 0usize;
        for (i, j) in jpegs.iter().enumerate() {
            let r = self.probe(j).and_then(|(info, gpu_ok)| {
                let offset = end.next_multiple_of(FRAME_ALIGN);
                let pitch = 3 * info.width as usize;
                let size = pitch * info.height as usize;
                if offset + size > capacity {
                    return Err(GpuError::InvalidInput(format!(
                        "decoded batch needs more than the {capacity}-byte buffer"
                    )));
                }
                end = offset + size;
                if !gpu_ok {
                    on_cpu.push(i);
                }
                Ok(FrameRef {
                    offset: offset as u64,
                    width: info.width,
                    height: info.height,
                    pitch: pitch as u32,
                })
            });
            results.push(r);
        }
        let mut on_gpu: Vec<(usize, FrameRef)> = results
            .iter()
            .enumerate()
            .filter(|(i, _)| !on_cpu.contains(i))
            .filter_map(|(i, r)| r.as_ref().ok().map(|f| (i, *f)))
            .collect();
        let assist = self.cpu_assist.min(on_gpu.len().saturating_sub(1));
        for (i, _) in on_gpu.drain(on_gpu.len() - assist..) {
            on_cpu.push(i);
        }
        let base = {
            let (ptr, _sync) = out.device_ptr_mut(stream);
            ptr
        };
        let cpu_jobs: Vec<(usize, FrameRef)> = on_cpu
            .iter()
            .filter_map(|&i| results[i].as_ref().ok().map(|f| (i, *f)))
            .collect();
        let (gpu_status, cpu_out) = std::thread::scope(|sc| {
            let workers: Vec<_> = cpu_jobs
                .iter()
                .map(|&(i, f)| {
                    let jpeg = jpegs[i];
                    sc.spawn(move || cpu_decode(jpeg, f.width, f.height))
                })
                .collect();
            let gpu_status = if on_gpu.is_empty() {
                Ok(())
            } else {
                self.decode_on_gpu(stream, jpegs, &on_gpu, base)
            };
            let cpu_out: Vec<Result<Vec<u8>, GpuError>> = workers
                .into_iter()
                .map(|w| {
                    w.join()
                        .unwrap_or_else(|_| Err(GpuError::Jpeg("cpu decode panicked".into())))
                })
                .collect();
            (gpu_status, cpu_out)
        });
        gpu_status?;
        for ((i, f), rgb) in cpu_jobs.into_iter().zip(cpu_out) {
            match rgb {
                Ok(rgb) => {
                    let start = f.offset as usize;
                    let mut dst = out.slice_mut(start..start + rgb.len());
                    stream.memcpy_htod(&rgb, &mut dst)?;
                }
                Err(e) => results[i] = Err(e),
            }
        }
        Ok(results)
    }

    /// Header info and whether the GPU backend can decode the frame.
    fn probe(&self, jpeg: &[u8]) -> Result<(JpegInfo, bool), GpuError> {
        let (info, css) = self.header(jpeg)?;
        let hw_refuses =
            self.backend == JpegBackend::Hardware && (css == CSS_410 || css == CSS_411);
        Ok((info, !hw_refuses && is_baseline_huffman(jpeg)))
    }

    fn decode_on_gpu(
        &mut self,
        stream: &CudaStream,
        jpegs: &[&[u8]],
        frames: &[(usize, FrameRef)],
        base: u64,
    ) -> Result<(), GpuError> {
        if self.batch_size != Some(frames.len()) {
            // SAFETY: live handle and state; batch size > 0; one CPU thread.
            check("nvjpegDecodeBatchedInitialize", unsafe {
                (self.api.batched_init)(
                    self.handle,
                    self.state,
                    frames.len() as c_int,
                    1,
                    match self.output {
                        JpegOutput::InterleavedRgb => OUTPUT_RGBI,
                        JpegOutput::PlanarYuv => OUTPUT_YUV,
                    },
                )
            })?;
            self.batch_size = Some(frames.len());
        }
        let lengths: Vec<usize> = frames.iter().map(|&(i, _)| jpegs[i].len()).collect();
        let data: Vec<*const u8> = if self.pinned_input {
            let total: usize = lengths.iter().sum();
            // The previous batch's reads of the staging buffer must be over.
            if let Some(ev) = self.staging_free.take() {
                ev.synchronize()?;
            }
            if self.staging.as_ref().is_none_or(|p| p.len() < total) {
                // SAFETY: pinned host memory, written (below) before nvJPEG reads it.
                self.staging = Some(unsafe {
                    stream
                        .context()
                        .alloc_pinned::<u8>(total.next_power_of_two())
                }?);
            }
            let staging = self
                .staging
                .as_mut()
                .ok_or_else(|| GpuError::Jpeg("no staging buffer".into()))?
                .as_mut_slice()?;
            let mut at = 0usize;
            let mut ptrs = Vec::with_capacity(frames.len());
            for &(i, _) in frames {
                let j = jpegs[i];
                staging[at..at + j.len()].copy_from_slice(j);
                ptrs.push(staging[at..].as_ptr());
                at += j.len();
            }
            ptrs
        } else {
            frames.iter().map(|&(i, _)| jpegs[i].as_ptr()).collect()
        };
        let mut images: Vec<Image> = Vec::with_capacity(frames.len());
        for &(i, f) in frames {
            let at = base + f.offset;
            let image = match self.output {
                JpegOutput::InterleavedRgb => Image {
                    channel: [at as *mut u8, null(), null(), null()],
                    pitch: [f.pitch as usize, 0, 0, 0],
                },
                JpegOutput::PlanarYuv => {
                    let (_, css) = self.header(jpegs[i])?;
                    let (w, h) = (f.width as usize, f.height as usize);
                    let (cw, ch) = chroma_size(css, w, h);
                    let (u, v) = (at + (w * h) as u64, at + (w * h + cw * ch) as u64);
                    Image {
                        channel: [at as *mut u8, u as *mut u8, v as *mut u8, null()],
                        pitch: [w, cw, cw, 0],
                    }
                }
            };
            images.push(image);
        }
        // SAFETY: data/lengths/images hold batch_size entries each; every input pointer is
        // a live slice of the stated length (the caller's borrowed slices, or the pinned
        // staging buffer, which is not rewritten before the event recorded after this call
        // has completed); every output region lies inside the caller's device
        // buffer starting at `base` (checked against its length in decode_batch) and is
        // pitch * height bytes of RGBI, or the Y plane plus two chroma planes of at most
        // width * height bytes each (chroma_size) inside that same region; the stream
        // belongs to the current context.
        let s = unsafe {
            (self.api.decode_batched)(
                self.handle,
                self.state,
                data.as_ptr(),
                lengths.as_ptr(),
                images.as_mut_ptr(),
                stream.cu_stream(),
            )
        };
        if self.pinned_input {
            self.staging_free =
                Some(stream.record_event(Some(CUevent_flags::CU_EVENT_DISABLE_TIMING))?);
        }
        if let Err(e) = check("nvjpegDecodeBatched", s) {
            // The state must be re-initialised after a failed batch.
            self.batch_size = None;
            return Err(e);
        }
        Ok(())
    }
}

fn null() -> *mut u8 {
    std::ptr::null_mut()
}

/// Width and height of each chroma plane for nvJPEG's subsampling code `css`; the full
/// size where the code is unknown or the frame is grey (never larger than the frame).
fn chroma_size(css: c_int, w: usize, h: usize) -> (usize, usize) {
    let (sx, sy) = match css {
        CSS_444 => (1, 1),
        CSS_422 => (2, 1),
        CSS_420 => (2, 2),
        CSS_440 => (1, 2),
        CSS_411 => (4, 1),
        CSS_410 => (4, 2),
        _ => (1, 1),
    };
    (w.div_ceil(sx), h.div_ceil(sy))
}

/// Whether the frame header says baseline or extended sequential Huffman (SOF0 / SOF1),
/// the codings nvJPEG's batched GPU paths take; walks the marker segments up to the first
/// SOF or SOS.
pub fn is_baseline_huffman(jpeg: &[u8]) -> bool {
    let mut i = 2usize;
    while i + 4 <= jpeg.len() {
        if jpeg[i] != 0xFF {
            return false;
        }
        let marker = jpeg[i + 1];
        match marker {
            0xFF => {
                i += 1;
                continue;
            }
            0xC0 | 0xC1 => return true,
            0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF | 0xDA => return false,
            _ => {}
        }
        let len = usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        i += 2 + len;
    }
    false
}

/// Decodes one JPEG on the CPU (zune-jpeg) to tight RGB of the expected size.
fn cpu_decode(jpeg: &[u8], width: u32, height: u32) -> Result<Vec<u8>, GpuError> {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(jpeg, opts);
    let data = dec
        .decode()
        .map_err(|e| GpuError::Jpeg(format!("cpu decode: {e}")))?;
    let data = match dec.get_output_colorspace() {
        Some(ColorSpace::RGB) => data,
        Some(ColorSpace::Luma) => data.iter().flat_map(|&v| [v, v, v]).collect(),
        other => {
            return Err(GpuError::Jpeg(format!(
                "cpu decode produced {other:?} instead of rgb"
            )));
        }
    };
    if data.len() != 3 * width as usize * height as usize {
        return Err(GpuError::Jpeg(format!(
            "cpu decode gave {} bytes for {width}x{height}",
            data.len()
        )));
    }
    Ok(data)
}
