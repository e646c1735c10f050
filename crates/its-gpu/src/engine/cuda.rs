//! The CUDA executor of a [`Plan`]: one execution context (stream, cuDNN handle, one
//! activation arena planned by liveness ([`super::memory`]), workspace) per [`CudaEngine`];
//! convolutions on cuDNN with the algorithm chosen by timing every one cuDNN offers for the
//! layer (or loaded from the engine cache file, [`super::cache`]), everything else on
//! `kernels/engine.cu`. After the build, the whole plan is captured once into a CUDA graph
//! and replayed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::Instant;

use cudarc::cublas::sys as blas;
use cudarc::cudnn::{result as dnn, sys as dnn_sys};
use cudarc::driver::{
    CudaFunction, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr, DeviceRepr,
    LaunchConfig, PushKernelArg,
};

use super::EngineBuildError;
use super::cache::{self, CacheFile, CacheKey, CacheMiss, CacheOutcome, CachedConv, EngineCache};
use super::fused::{self, FusedGraph, FusedJob, FusedPlan, FusedShape};
use super::memory::{MemoryPlan, plan_memory};
use super::plan::{Conv, Op, Plan, Tid};
use super::tensor::strides;
use crate::context::SharedBuffer;
use crate::context::{ENGINE_F16_SRC, ENGINE_SRC};
use crate::{GpuContext, GpuError};

/// Arithmetic of the convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvMath {
    /// Plain FP32 FMA (the reference mode).
    Fp32,
    /// FP32 storage, TF32 tensor cores allowed inside cuDNN.
    Tf32,
    /// FP16 activations and weights, FP32 accumulation (tensor cores); biases stay FP32.
    Fp16,
}

impl ConvMath {
    /// `fp32`, `tf32` or `fp16`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConvMath::Fp32 => "fp32",
            ConvMath::Tf32 => "tf32",
            ConvMath::Fp16 => "fp16",
        }
    }

    /// Bytes of one activation element.
    pub fn elem_bytes(self) -> usize {
        match self {
            ConvMath::Fp16 => 2,
            ConvMath::Fp32 | ConvMath::Tf32 => 4,
        }
    }
}

/// Host floats to device elements of `math`'s storage type, as bytes.
pub fn to_elems(v: &[f32], math: ConvMath) -> Vec<u8> {
    match math {
        ConvMath::Fp16 => v
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
    }
}

/// Device elements (bytes) back to host floats.
pub fn from_elems(b: &[u8], math: ConvMath) -> Vec<f32> {
    match math {
        ConvMath::Fp16 => b
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => b
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    }
}

/// How to build an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Convolution arithmetic.
    pub math: ConvMath,
    /// Time every cuDNN algorithm per layer and keep the fastest (else cuDNN's heuristic).
    pub time_algorithms: bool,
    /// Capture the plan into a CUDA graph and replay it.
    pub cuda_graph: bool,
    /// Store the activations between convolutions channels-last ([`super::layout`]) in FP16
    /// mode (measured on an H200: 10.9 ms vs 12.1 ms per YOLO11n batch of 32; in FP32 and
    /// TF32 cuDNN's NHWC convolutions were slower, so those modes stay NCHW).
    pub nhwc: bool,
    /// In channels-last FP16 mode, try each convolution with its bias and activation as one
    /// cuDNN operation graph ([`super::fused`]) and keep it where it times faster than the
    /// convolution followed by our `bias_act` kernel.
    pub fused: bool,
    /// In channels-last FP16 mode, run the network's first convolution (3 channels, 3x3,
    /// read from the NCHW input) as our direct kernel, which also removes the input
    /// transpose, instead of the transpose followed by cuDNN.
    pub direct_stem: bool,
    /// In channels-last mode, run depthwise convolutions (groups == channels, a multiple of
    /// 8 of them) on our `conv_dw3x3_nhwc` kernel instead of cuDNN's grouped kernels.
    pub direct_depthwise: bool,
    /// In channels-last FP16 mode with fused convolutions, let the producers of channel
    /// concatenations write their slices in place ([`super::slices`]) instead of the
    /// concatenation copying them. `ITS_ENGINE_CONCAT_IN_PLACE=0` turns it off.
    pub concat_in_place: bool,
}

/// How many of cuDNN's heuristic engine configurations a fused layer times (each is
/// compiled on the host first, most of a cold build's time); `ITS_ENGINE_FUSED_CANDIDATES`
/// (1 to 8) overrides it, for measuring what fewer candidates cost and save.
const FUSED_CANDIDATES: usize = 3;

/// [`FUSED_CANDIDATES`], or the valid value of `ITS_ENGINE_FUSED_CANDIDATES`.
fn fused_candidates() -> usize {
    std::env::var("ITS_ENGINE_FUSED_CANDIDATES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| (1..=8).contains(n))
        .unwrap_or(FUSED_CANDIDATES)
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            math: ConvMath::Fp32,
            time_algorithms: true,
            cuda_graph: true,
            nhwc: true,
            fused: true,
            direct_stem: true,
            direct_depthwise: true,
            concat_in_place: std::env::var("ITS_ENGINE_CONCAT_IN_PLACE").map_or(true, |v| v != "0"),
        }
    }
}

/// What the build did, for logs and the bench.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BuildReport {
    /// Wall time of the build (compile, uploads, algorithm timing, graph capture), ms.
    pub build_ms: f64,
    /// Convolution layers.
    pub convs: usize,
    /// Kernel launches plus cuDNN calls per run.
    pub launches: usize,
    /// Bytes of the activation arena (every storage of the plan, constants, input and
    /// outputs included, at its liveness-planned offset).
    pub activation_bytes: usize,
    /// Bytes one buffer per storage would take (what the arena saves against).
    pub unplanned_activation_bytes: usize,
    /// Bytes of the cuDNN workspace (the largest the chosen algorithms take).
    pub workspace_bytes: usize,
    /// Wall time spent timing cuDNN algorithms, ms (0 on a cache hit).
    pub timing_ms: f64,
    /// What the build did with the engine cache file.
    pub cache: CacheOutcome,
    /// Whether the run replays a CUDA graph.
    pub cuda_graph: bool,
    /// Why graph capture was not used, when it was asked for and failed.
    pub graph_fallback: Option<String>,
    /// Convolutions that run as one fused cuDNN graph (convolution, bias, activation).
    pub fused_convs: usize,
    /// Convolutions a fused graph was tried for.
    pub fused_tried: usize,
    /// Wall time spent building and timing the fused graphs, ms.
    pub fused_ms: f64,
    /// Why layers stayed unfused (the first few distinct reasons).
    pub fused_notes: Vec<String>,
    /// Fused layers whose plan was restored from the engine cache's serialization rather
    /// than finalized (compiled) again.
    pub fused_restored: usize,
    /// Bytes of convolution weights this context runs with.
    pub weight_bytes: usize,
    /// Of those, bytes already on the GPU for another context of the same model, shared
    /// rather than uploaded again.
    pub weight_bytes_shared: usize,
    /// Wall time of each build phase, ms, in order.
    pub phases: Vec<(&'static str, f64)>,
    /// The first convolution runs as the direct stem kernel (input transpose removed).
    pub direct_stem: bool,
    /// Depthwise convolutions that run on our `conv_dw3x3_nhwc` kernel.
    pub depthwise_convs: usize,
    /// Concatenation inputs their producers write in place ([`super::slices`]).
    pub concat_inputs_in_place: usize,
    /// Channel narrows read in place by their consumers instead of copied.
    pub narrows_viewed: usize,
}

/// The first convolution run by `conv_stem_3x3` straight from the NCHW input.
struct Stem {
    /// The input transpose it replaces (skipped).
    transpose: usize,
    /// The convolution op.
    conv: usize,
    /// FP32 weights `[m][3][3][3]`, as bytes.
    weight: Arc<CudaSlice<u8>>,
}

/// Largest `m * 27` the stem kernel keeps in shared memory (`STEM_MAXW` in engine.cu).
const STEM_MAX_WEIGHTS: usize = 2048;

/// The input transpose and first convolution the stem kernel can replace: the plan's NCHW
/// input transposed to channels-last and read only by a 3-channel, 3x3, ungrouped, undilated
/// convolution with symmetric padding and a multiple of 8 output channels.
fn find_stem(plan: &Plan) -> Option<(usize, usize)> {
    let readers = |t: Tid| plan.ops.iter().filter(|o| o.inputs().contains(&t)).count();
    let (ti, tt) = plan.ops.iter().enumerate().find_map(|(i, o)| match o {
        Op::Transpose { x, y, perm } if *x == plan.input && perm[..] == [0, 2, 3, 1] => {
            Some((i, *y))
        }
        _ => None,
    })?;
    if readers(tt) != 1 || plan.outputs.iter().any(|(_, o)| *o == tt) {
        return None;
    }
    let (ci, c) = plan.ops.iter().enumerate().find_map(|(i, o)| match o {
        Op::Conv(c) if c.x == tt => Some((i, c)),
        _ => None,
    })?;
    let xs = plan.shape(plan.input);
    let ok = c.nhwc
        && xs.len() == 4
        && xs[1] == 3
        && c.group == 1
        && c.kernel == [3, 3]
        && c.dilation == [1, 1]
        && c.pad[0] == c.pad[2]
        && c.pad[1] == c.pad[3]
        && c.m % 8 == 0
        && c.m * 27 <= STEM_MAX_WEIGHTS
        && plan.shape(c.y).len() == 4
        && ci > ti;
    ok.then_some((ti, ci))
}

struct Kernels {
    conv_stem: CudaFunction,
    conv1x1_few: CudaFunction,
    /// `conv_dw3x3_nhwc`, compiled for FP16 only (channels-last plans are FP16).
    conv_dw: Option<CudaFunction>,
    act_vec: CudaFunction,
    bias_act: CudaFunction,
    bias_act_vec: CudaFunction,
    add_into: CudaFunction,
    binary_same_vec: CudaFunction,
    copy_runs_vec: CudaFunction,
    transpose_tiles: CudaFunction,
    transpose_small: CudaFunction,
    concat_vec: CudaFunction,
    transpose_rows_vec: CudaFunction,
    softmax_rows: CudaFunction,
    upsample_nhwc_vec: CudaFunction,
    act: CudaFunction,
    binary: CudaFunction,
    permute: CudaFunction,
    copy_rows: CudaFunction,
    maxpool2d: CudaFunction,
    upsample: CudaFunction,
    maxpool2d_nhwc: CudaFunction,
    maxpool2d_nhwc_vec: CudaFunction,
    upsample_nhwc: CudaFunction,
    matmul: CudaFunction,
    softmax: CudaFunction,
}

/// Matches `struct Strides` in `kernels/engine.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct KStrides {
    rank: i32,
    shape: [i64; 6],
    a: [i64; 6],
    b: [i64; 6],
}

// SAFETY: plain-old-data with the C layout the kernel declares.
unsafe impl DeviceRepr for KStrides {}

impl KStrides {
    fn new(shape: &[usize], a: &[usize], b: &[usize]) -> Result<Self, EngineBuildError> {
        if shape.len() > 6 {
            return Err(EngineBuildError::Shape(format!("rank {} > 6", shape.len())));
        }
        let mut s = Self {
            rank: shape.len() as i32,
            shape: [1; 6],
            a: [0; 6],
            b: [0; 6],
        };
        for i in 0..shape.len() {
            s.shape[i] = shape[i] as i64;
            s.a[i] = a[i] as i64;
            s.b[i] = b.get(i).copied().unwrap_or(0) as i64;
        }
        Ok(s)
    }
}

/// Matches `struct ConcatIn` in `kernels/engine.cu`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
struct KConcat {
    x: [u64; CONCAT_MAX],
    run: [u32; CONCAT_MAX],
    off: [u32; CONCAT_MAX],
    n: i32,
    total: u32,
}

/// Inputs `concat_vec` takes in one launch.
const CONCAT_MAX: usize = 8;

// SAFETY: plain-old-data with the C layout the kernel declares.
unsafe impl DeviceRepr for KConcat {}

struct ConvLayer {
    x_desc: dnn_sys::cudnnTensorDescriptor_t,
    y_desc: dnn_sys::cudnnTensorDescriptor_t,
    w_desc: dnn_sys::cudnnFilterDescriptor_t,
    conv_desc: dnn_sys::cudnnConvolutionDescriptor_t,
    algo: dnn_sys::cudnnConvolutionFwdAlgo_t,
    /// Workspace bytes `algo` takes.
    workspace: usize,
    /// Timed device time of `algo`, ms (0 when not timed).
    ms: f32,
    /// Shared with every other context of the same model on this GPU.
    weight: Arc<CudaSlice<u8>>,
    bias: CudaSlice<f32>,
    /// The bias as FP16 elements, for the fused graph.
    bias_h: Option<CudaSlice<u8>>,
    /// The layer as one fused cuDNN graph, when chosen.
    fused: Option<FusedLayer>,
    /// FP32 weights `[m][cin]` when the layer runs on `conv1x1_few` instead of cuDNN (see
    /// [`few_outputs_1x1`]).
    few: Option<Arc<CudaSlice<u8>>>,
    /// FP32 weights `[kh * kw][c]` when the layer runs on `conv_dw3x3_nhwc` instead of cuDNN
    /// (see [`depthwise_nhwc`]).
    dw: Option<Arc<CudaSlice<u8>>>,
}

impl ConvLayer {
    /// Workspace bytes cuDNN says `algo` takes for this layer.
    fn workspace_of(
        &self,
        handle: dnn_sys::cudnnHandle_t,
        algo: dnn_sys::cudnnConvolutionFwdAlgo_t,
    ) -> Result<usize, dnn::CudnnError> {
        // SAFETY: the layer's descriptors are live and describe its tensors.
        unsafe {
            dnn::get_convolution_forward_workspace_size(
                handle,
                self.x_desc,
                self.w_desc,
                self.conv_desc,
                self.y_desc,
                algo,
            )
        }
    }
}

/// Most output channels `conv1x1_few` computes per thread (its `acc[4]`).
const FEW_MAX_OUT: usize = 4;

/// Whether convolution `c` (input channels `cin`) runs on our `conv1x1_few` kernel: NCHW,
/// 1x1, stride 1, no padding, ungrouped, at most [`FEW_MAX_OUT`] outputs and 64 inputs
/// (YOLO's DFL head), where cuDNN's kernels are slow for so little work.
fn few_outputs_1x1(c: &Conv, cin: usize) -> bool {
    !c.nhwc
        && c.kernel == [1, 1]
        && c.stride == [1, 1]
        && c.pad == [0, 0, 0, 0]
        && c.group == 1
        && c.m <= FEW_MAX_OUT
        && cin <= 64
}

/// Output pixels one thread of `conv_dw3x3_nhwc` computes (`DW_PX` in engine.cu).
const DW_PX: usize = 4;

/// Whether convolution `c` (input channels `cin`) runs on our `conv_dw3x3_nhwc` kernel:
/// channels-last, one 3x3 filter per channel (groups == input == output channels, a
/// multiple of 8 so that every thread's 16-byte vector stays inside one pixel in FP16 and
/// FP32), stride 1, undilated, symmetric padding: YOLO11's depthwise layers.
fn depthwise_nhwc(c: &Conv, cin: usize) -> bool {
    c.nhwc
        && c.kernel == [3, 3]
        && c.stride == [1, 1]
        && c.group == cin
        && c.m == cin
        && cin.is_multiple_of(8)
        && c.dilation == [1, 1]
        && c.pad[0] == c.pad[2]
        && c.pad[1] == c.pad[3]
}

/// A convolution run as one fused cuDNN graph.
struct FusedLayer {
    plan: FusedPlan,
    /// Timed device time of the fused plan, ms (0 when not timed).
    ms: f32,
    /// The operation graph the plan was made from (absent for a plan restored from the
    /// engine cache's serialization).
    _graph: Option<FusedGraph>,
}

/// One execution context of a model on one GPU.
pub struct CudaEngine {
    gpu: GpuContext,
    plan: Plan,
    stream: Arc<CudaStream>,
    kernels: Kernels,
    handle: dnn_sys::cudnnHandle_t,
    /// cuBLAS for the matrix products (our tiled kernel when cuBLAS cannot be loaded), with
    /// its own workspace so that nothing is allocated during graph capture.
    blas: Option<(blas::cublasHandle_t, CudaSlice<u8>)>,
    convs: Vec<Option<ConvLayer>>,
    /// Every storage of the plan at its [`MemoryPlan`] offset.
    arena: CudaSlice<u8>,
    memory: MemoryPlan,
    math: ConvMath,
    ptrs: Vec<u64>,
    workspace: Option<CudaSlice<u8>>,
    workspace_ptr: u64,
    graph: Option<cudarc::driver::CudaGraph>,
    report: BuildReport,
    stem: Option<Stem>,
}

impl std::fmt::Debug for CudaEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaEngine")
            .field("ops", &self.plan.ops.len())
            .field("report", &self.report)
            .finish_non_exhaustive()
    }
}

fn dnn_err(what: &str) -> impl FnOnce(dnn::CudnnError) -> EngineBuildError + '_ {
    move |e| EngineBuildError::Gpu(GpuError::InvalidInput(format!("cudnn {what}: {e:?}")))
}

fn grid(n: usize) -> LaunchConfig {
    let threads = 256u32;
    let blocks = n.div_ceil(threads as usize).clamp(1, 65_535 * 8) as u32;
    LaunchConfig {
        grid_dim: (blocks, 1, 1),
        block_dim: (threads, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn dims4(s: &[usize]) -> [i32; 4] {
    [s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32]
}

/// Events that can be timed (cudarc's default event disables timing).
const TIMED: Option<cudarc::driver::sys::CUevent_flags> =
    Some(cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT);

const ALGOS: [dnn_sys::cudnnConvolutionFwdAlgo_t; 8] = [
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_FFT,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
    dnn_sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
];

/// Whether cuDNN can be loaded here (never panics).
pub fn cudnn_available() -> Result<(), GpuError> {
    // SAFETY: only tries to dlopen the library by name.
    let present = catch_unwind(|| unsafe { dnn_sys::is_culib_present() }).unwrap_or(false);
    if present {
        Ok(())
    } else {
        Err(GpuError::NoDriver(
            "libcudnn.so.9 could not be loaded (install cuDNN 9 or set LD_LIBRARY_PATH)".into(),
        ))
    }
}

impl CudaEngine {
    /// Builds an execution context for `plan` on `gpu`, on a new stream.
    pub fn build(
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
    ) -> Result<Self, EngineBuildError> {
        let stream = gpu.new_stream()?;
        Self::build_on(gpu, plan, opts, stream)
    }

    /// Builds an execution context for `plan` on `gpu` that runs on `stream` (a GPU worker
    /// stream shares its stream between decode, preprocessing, this context and NMS, so the
    /// stages order without events).
    pub fn build_on(
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
        stream: Arc<CudaStream>,
    ) -> Result<Self, EngineBuildError> {
        Self::build_with(gpu, plan, opts, stream, None)
    }

    /// [`Self::build`] with the engine cache file: the cuDNN algorithm choices come from
    /// `cache` when its file for this GPU, driver, cuDNN, model, options and profile matches,
    /// else they are timed and written there. [`BuildReport::cache`] says which.
    pub fn build_cached(
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
        cache: &EngineCache,
    ) -> Result<Self, EngineBuildError> {
        let stream = gpu.new_stream()?;
        Self::build_with(gpu, plan, opts, stream, Some(cache))
    }

    /// One execution context per plan (the batch profiles of one model), each on a new
    /// stream, in the order given. When `cache` holds a file for every profile, written under
    /// the key this build has ([`cache::key_matches`]: not of another format, GPU, driver or
    /// cuDNN), all of them restore at the same time, on one thread each: restoring is host
    /// work (the serialized
    /// cuDNN plans) and no layer is timed, so the builds do not disturb one another's
    /// measurements. Otherwise the first is built on this thread; when its cuDNN choices came
    /// from the cache, the rest restore theirs together as above, and else (no cache, or a
    /// miss that times every layer) they are built one after another. A profile whose file
    /// is refused while others restore is timed beside them, so its choices may be slower
    /// ones; removing the cache directory gives a clean timing. The first error ends the
    /// build.
    pub fn build_all(
        gpu: &GpuContext,
        plans: Vec<Plan>,
        opts: EngineOptions,
        cache: Option<&EngineCache>,
    ) -> Result<Vec<Self>, EngineBuildError> {
        let build = |plan: Plan| -> Result<Self, EngineBuildError> {
            let stream = gpu.new_stream()?;
            Self::build_with(gpu, plan, opts, stream, cache)
        };
        /// An engine moving from the thread that built it to this one; CUDA, cuDNN and
        /// cuBLAS objects belong to the context, not to a thread, and the builder thread
        /// does not touch it again.
        struct Built(Result<CudaEngine, EngineBuildError>);
        // SAFETY: see above; the engine is used by one thread at a time.
        unsafe impl Send for Built {}
        let together = |plans: Vec<Plan>| -> Result<Vec<Self>, EngineBuildError> {
            let built: Vec<Built> = std::thread::scope(|sc| {
                let handles: Vec<_> = plans
                    .into_iter()
                    .map(|plan| {
                        sc.spawn(|| {
                            Built(
                                gpu.cuda()
                                    .bind_to_thread()
                                    .map_err(|e| EngineBuildError::Gpu(e.into()))
                                    .and_then(|()| build(plan)),
                            )
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Built(Err(EngineBuildError::Gpu(GpuError::InvalidInput(
                                "an engine build thread panicked".into(),
                            ))))
                        })
                    })
                    .collect()
            });
            built.into_iter().map(|Built(r)| r).collect()
        };
        // Each file is read on its own thread (a few MB each for YOLO11n's fused plans).
        let all_cached = cache.is_some_and(|c| {
            opts.time_algorithms
                && plans.len() > 1
                && std::thread::scope(|sc| {
                    let checks: Vec<_> = plans
                        .iter()
                        .map(|p| {
                            sc.spawn(move || {
                                cache::key_matches(c, &Self::cache_key_of(gpu, c, opts, p))
                            })
                        })
                        .collect();
                    // Unjoined threads (after a miss) are joined when the scope ends.
                    checks.into_iter().all(|h| h.join().unwrap_or(false))
                })
        });
        if all_cached {
            return together(plans);
        }
        let mut plans = plans.into_iter();
        let Some(first) = plans.next() else {
            return Ok(Vec::new());
        };
        let first = build(first)?;
        let restoring = matches!(first.report.cache, CacheOutcome::Hit(_));
        let mut out = vec![first];
        if restoring {
            out.extend(together(plans.collect())?);
        } else {
            for plan in plans {
                out.push(build(plan)?);
            }
        }
        Ok(out)
    }

    /// The engine cache key of a build of `plan` (before the channels-last rewrite) with
    /// `opts` on `gpu`.
    fn cache_key_of(
        gpu: &GpuContext,
        cache: &EngineCache,
        opts: EngineOptions,
        plan: &Plan,
    ) -> CacheKey {
        let nhwc = opts.nhwc && opts.math == ConvMath::Fp16;
        cache_key(gpu, cache, opts, nhwc, input_shape_of(plan))
    }

    /// [`Self::build_on`] with an optional engine cache (see [`Self::build_cached`]).
    pub fn build_with(
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
        stream: Arc<CudaStream>,
        cache: Option<&EngineCache>,
    ) -> Result<Self, EngineBuildError> {
        if !opts.concat_in_place {
            return Self::build_once(gpu, plan, opts, stream, cache)?
                .map_err(EngineBuildError::Shape);
        }
        let copies = EngineOptions {
            concat_in_place: false,
            ..opts
        };
        // A refusal is recorded beside the cache file this build would have written, with its
        // full key, so that later starts on the same GPU, driver and cuDNN go straight to the
        // build with copies (and its cache file).
        let key = cache.map(|c| (c, Self::cache_key_of(gpu, c, opts, &plan)));
        if let Some(why) = key.as_ref().and_then(|(c, k)| c.refusal(k)) {
            tracing::info!(reason = %why, "concatenation slices refused before with this key; building with copies");
            return Self::build_once(gpu, plan, copies, stream, cache)?
                .map_err(EngineBuildError::Shape);
        }
        match Self::build_once(gpu, plan.clone(), opts, stream.clone(), cache)? {
            Ok(engine) => Ok(engine),
            Err(why) => {
                tracing::warn!(reason = %why, "concatenation slices refused; building with copies");
                if let Some((c, k)) = &key {
                    match c.remember_refusal(k, &why) {
                        Ok(m) => tracing::info!(record = %m.display(), "refusal recorded"),
                        Err(e) => tracing::warn!(error = %e, "refusal not recorded"),
                    }
                }
                Self::build_once(gpu, plan, copies, stream, cache)?.map_err(EngineBuildError::Shape)
            }
        }
    }

    /// One build; `Ok(Err(why))` when a convolution that reads or writes a concatenation's
    /// slice found no fused cuDNN graph (the only path that takes a channel pitch), or when
    /// an op that cannot take a view meets one ([`super::slices::check_views`]).
    fn build_once(
        gpu: &GpuContext,
        plan: Plan,
        opts: EngineOptions,
        stream: Arc<CudaStream>,
        cache: Option<&EngineCache>,
    ) -> Result<Result<Self, String>, EngineBuildError> {
        let started = Instant::now();
        cudnn_available()?;
        let input_shape = input_shape_of(&plan);
        let nhwc = opts.nhwc && opts.math == ConvMath::Fp16;
        let mut plan = if nhwc {
            super::layout::to_nhwc(&plan)
        } else {
            plan
        };
        let (mut in_place, mut narrows_viewed) = (0, 0);
        if nhwc && opts.fused && opts.concat_in_place {
            // The convolution our stem kernel runs takes no view (its index moves as ops go).
            let stem = |plan: &Plan| -> Vec<usize> {
                find_stem(plan)
                    .filter(|_| opts.direct_stem)
                    .map(|(_, conv)| conv)
                    .into_iter()
                    .collect()
            };
            let excluded = stem(&plan);
            in_place = super::slices::place_concat_inputs(&mut plan, &excluded);
            let excluded = stem(&plan);
            narrows_viewed = super::slices::view_narrows(&mut plan, &excluded);
            if let Err(why) = super::slices::check_views(&plan, &stem(&plan)) {
                return Ok(Err(why));
            }
        }
        let module = gpu.module(if opts.math == ConvMath::Fp16 {
            ENGINE_F16_SRC
        } else {
            ENGINE_SRC
        })?;
        let elem = opts.math.elem_bytes();
        let f = |name: &str| {
            module
                .load_function(name)
                .map_err(|e| EngineBuildError::Gpu(e.into()))
        };
        let kernels = Kernels {
            conv_stem: f("conv_stem_3x3")?,
            conv1x1_few: f("conv1x1_few")?,
            conv_dw: (opts.math == ConvMath::Fp16)
                .then(|| f("conv_dw3x3_nhwc"))
                .transpose()?,
            act_vec: f("act_vec")?,
            bias_act: f("bias_act")?,
            bias_act_vec: f("bias_act_vec")?,
            add_into: f("add_into")?,
            binary_same_vec: f("binary_same_vec")?,
            copy_runs_vec: f("copy_runs_vec")?,
            transpose_tiles: f("transpose_tiles")?,
            transpose_small: f("transpose_small")?,
            concat_vec: f("concat_vec")?,
            transpose_rows_vec: f("transpose_rows_vec")?,
            softmax_rows: f("softmax_rows")?,
            upsample_nhwc_vec: f("upsample_nearest_nhwc_vec")?,
            act: f("act")?,
            binary: f("binary")?,
            permute: f("permute")?,
            copy_rows: f("copy_rows")?,
            maxpool2d: f("maxpool2d")?,
            upsample: f("upsample_nearest")?,
            maxpool2d_nhwc: f("maxpool2d_nhwc")?,
            maxpool2d_nhwc_vec: f("maxpool2d_nhwc_vec")?,
            upsample_nhwc: f("upsample_nearest_nhwc")?,
            matmul: f("matmul")?,
            softmax: f("softmax")?,
        };
        let handle = catch_unwind(AssertUnwindSafe(dnn::create_handle))
            .map_err(|_| EngineBuildError::Gpu(GpuError::NoDriver("cuDNN failed to load".into())))?
            .map_err(dnn_err("create handle"))?;
        // SAFETY: the handle was just created; the stream outlives it (both owned by self).
        unsafe { dnn::set_stream(handle, stream.cu_stream() as dnn_sys::cudaStream_t) }
            .map_err(dnn_err("set stream"))?;

        let mut phases = vec![("kernels and handles", started.elapsed().as_secs_f64() * 1e3)];
        let mut mark = Instant::now();
        let mut phase = |name: &'static str, phases: &mut Vec<(&'static str, f64)>| {
            phases.push((name, mark.elapsed().as_secs_f64() * 1e3));
            mark = Instant::now();
        };
        // One arena for every storage, each at its liveness-planned offset.
        let memory = plan_memory(&plan, elem);
        let mut arena = stream.alloc_zeros::<u8>(memory.arena_bytes.max(super::memory::ALIGN))?;
        let base = arena.device_ptr(&stream).0;
        let ptrs: Vec<u64> = memory.offsets.iter().map(|&o| base + o as u64).collect();
        for (s, v) in &plan.constants {
            let r = memory.range(*s);
            stream.memcpy_htod(to_elems(v, opts.math).as_slice(), &mut arena.slice_mut(r))?;
        }

        // The engine cache: the algorithm choices and the fused layers' compiled plans.
        let mut key = None;
        let mut cached = None;
        let mut miss = None;
        if let Some(c) = cache.filter(|_| opts.time_algorithms) {
            let k = cache_key(gpu, c, opts, nhwc, input_shape);
            match cache::load(c, &k, &plan) {
                Ok(file) => cached = Some(file),
                Err(m) => miss = Some(m),
            }
            key = Some(k);
        }

        let blas = if plan.ops.iter().any(|o| matches!(o, Op::MatMul { .. })) {
            cublas_on(&stream)
        } else {
            None
        };
        phase("arena, constants, cache file, cuBLAS", &mut phases);
        let mut engine = Self {
            gpu: gpu.clone(),
            stream,
            kernels,
            handle,
            blas,
            convs: Vec::new(),
            arena,
            report: BuildReport {
                activation_bytes: memory.arena_bytes,
                unplanned_activation_bytes: memory.unplanned_bytes,
                ..BuildReport::default()
            },
            memory,
            math: opts.math,
            ptrs,
            workspace: None,
            workspace_ptr: 0,
            graph: None,
            stem: None,
            plan,
        };
        if opts.direct_stem && nhwc {
            engine.stem = engine.stem_for()?;
            engine.report.direct_stem = engine.stem.is_some();
        }
        if let Some(rejected) = engine.build_convs(opts, cached.as_ref())? {
            miss = Some(rejected);
        }
        if let Some(why) = engine.unfused_view() {
            return Ok(Err(why));
        }
        engine.report.concat_inputs_in_place = in_place;
        engine.report.narrows_viewed = narrows_viewed;
        phase("convolutions (fused included)", &mut phases);
        engine.report.depthwise_convs = engine
            .convs
            .iter()
            .flatten()
            .filter(|l| l.dw.is_some())
            .count();
        if let (Some(c), Some(k)) = (cache, key) {
            engine.report.cache = match miss {
                None => {
                    let path = c.file(&k);
                    tracing::info!(file = %path.display(), "engine cache hit: cuDNN algorithms loaded, timing skipped");
                    CacheOutcome::Hit(path)
                }
                Some(m) => {
                    tracing::info!(reason = %m, "engine cache miss: cuDNN algorithms timed");
                    let file = engine.cache_file(k);
                    let written = cache::store(c, &file).map_err(|e| e.to_string());
                    if let Err(e) = &written {
                        tracing::warn!(error = %e, dir = %c.dir.display(), "engine cache file not written");
                    }
                    CacheOutcome::Miss {
                        reason: m.to_string(),
                        written,
                    }
                }
            };
        }
        engine.report.launches = engine.launches();
        phase("cache write", &mut phases);
        if opts.cuda_graph {
            match engine.capture() {
                Ok(()) => engine.report.cuda_graph = true,
                Err(e) => {
                    tracing::warn!(error = %e, "cuda graph capture failed; running the plan eagerly");
                    engine.report.graph_fallback = Some(e.to_string());
                }
            }
        }
        engine.stream.synchronize()?;
        phase("graph capture", &mut phases);
        engine.report.phases = phases;
        engine.report.build_ms = started.elapsed().as_secs_f64() * 1e3;
        Ok(Ok(engine))
    }

    /// A convolution with a strided input, output or residual that is not a fused cuDNN
    /// graph (cuDNN's separate convolution, `bias_act` and our kernels take packed tensors).
    fn unfused_view(&self) -> Option<String> {
        self.plan.ops.iter().enumerate().find_map(|(i, o)| match o {
            Op::Conv(c)
                if self.conv_views(c)
                    && self.convs[i].as_ref().is_none_or(|l| l.fused.is_none()) =>
            {
                Some(format!(
                    "no fused cuDNN graph for op {i} ({})",
                    cache::conv_signature(&self.plan, c)
                ))
            }
            _ => None,
        })
    }

    /// Whether convolution `c` reads or writes a view.
    fn conv_views(&self, c: &Conv) -> bool {
        let view = |t: Tid| self.plan.tensors[t].view.is_some();
        view(c.x) || view(c.y) || c.residual.is_some_and(view)
    }

    /// Kernel launches and cuDNN calls of one run of the plan.
    fn launches(&self) -> usize {
        let stem = self.stem.as_ref();
        self.plan
            .ops
            .iter()
            .enumerate()
            .map(|(i, o)| match (o, self.convs[i].as_ref()) {
                _ if stem.is_some_and(|s| s.transpose == i) => 0,
                (Op::Conv(_), Some(l)) if l.fused.is_some() => 1,
                // Our kernels (stem, few outputs, depthwise), then the residual's add.
                (Op::Conv(c), l)
                    if stem.is_some_and(|s| s.conv == i)
                        || l.is_some_and(|l| l.dw.is_some() || l.few.is_some()) =>
                {
                    1 + usize::from(c.residual.is_some())
                }
                // cuDNN's convolution, then bias_act (which adds the residual).
                (Op::Conv(_), _) => 2,
                (Op::Concat { xs, y, .. }, _) => {
                    let placed = super::slices::in_place(&self.plan, xs, *y);
                    let copied = placed.iter().filter(|&&p| !p).count();
                    if copied < xs.len() || xs.len() > CONCAT_MAX {
                        copied
                    } else {
                        1
                    }
                }
                _ => 1,
            })
            .sum()
    }

    /// What this build decided, as a cache file for `key`.
    fn cache_file(&self, key: CacheKey) -> CacheFile {
        let convs = self
            .plan
            .ops
            .iter()
            .zip(&self.convs)
            .enumerate()
            .filter_map(|(i, (op, l))| match (op, l) {
                (Op::Conv(c), Some(l)) => Some(CachedConv {
                    op: i,
                    signature: cache::conv_signature(&self.plan, c),
                    algo: l.algo as i32,
                    workspace: l.workspace,
                    ms: l.fused.as_ref().map_or(l.ms, |f| f.ms),
                    fused: l.fused.as_ref().map(|f| f.plan.index),
                    fused_plan: l.fused.as_ref().and_then(|f| f.plan.json().ok()),
                }),
                _ => None,
            })
            .collect();
        CacheFile {
            key,
            convs,
            timing_ms: self.report.timing_ms,
        }
    }

    /// Where every storage lives in the activation arena.
    pub fn memory(&self) -> &MemoryPlan {
        &self.memory
    }

    /// The plan this context runs.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// What the build did.
    pub fn report(&self) -> &BuildReport {
        &self.report
    }

    /// The context's stream.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Arithmetic (and so the element type of the input and output buffers).
    pub fn math(&self) -> ConvMath {
        self.math
    }

    /// The input tensor's device buffer (NCHW, elements of [`Self::math`]'s storage type, as
    /// bytes), for a producer on this context's stream to write into before [`Self::launch`].
    pub fn input_view_mut(&mut self) -> CudaViewMut<'_, u8> {
        let r = self.tensor_bytes(self.plan.input);
        self.arena.slice_mut(r)
    }

    /// Byte range of tensor `t` in the arena.
    fn tensor_bytes(&self, t: usize) -> std::ops::Range<usize> {
        let info = &self.plan.tensors[t];
        let off = self.memory.offsets[info.storage];
        off..off + info.numel() * self.math.elem_bytes()
    }

    /// Output `i`'s device buffer (elements of [`Self::math`]'s storage type, as bytes) and
    /// its shape; valid after [`Self::launch`] on this context's stream.
    pub fn output_view(&self, i: usize) -> Option<(CudaView<'_, u8>, &[usize])> {
        let (_, t) = self.plan.outputs.get(i)?;
        Some((self.arena.slice(self.tensor_bytes(*t)), self.plan.shape(*t)))
    }

    /// The cuDNN layers: algorithms from `cached` when cuDNN accepts every one of them
    /// (returns `None`), else timed (or cuDNN's heuristic without timing); returns why a
    /// cached file was refused.
    fn build_convs(
        &mut self,
        opts: EngineOptions,
        cached: Option<&CacheFile>,
    ) -> Result<Option<CacheMiss>, EngineBuildError> {
        // The ops are taken out while the layers (and the report) are built from them.
        let ops = std::mem::take(&mut self.plan.ops);
        let mut layers = Vec::with_capacity(ops.len());
        let mut built = Ok(());
        for op in &ops {
            let Op::Conv(c) = op else {
                layers.push(None);
                continue;
            };
            match self.conv_layer(c, opts) {
                Ok(l) => layers.push(Some(l)),
                Err(e) => {
                    built = Err(e);
                    break;
                }
            }
        }
        self.plan.ops = ops;
        built?;
        self.report.convs = layers.iter().flatten().count();
        self.convs = layers;
        let mut rejected = None;
        if let Some(file) = cached {
            let heuristic: Vec<_> = self
                .convs
                .iter()
                .map(|l| l.as_ref().map(|l| (l.algo, l.workspace)))
                .collect();
            match self.apply_cached(file) {
                Ok(()) => {
                    self.finish_convs(opts, Some(file))?;
                    return Ok(None);
                }
                Err(why) => {
                    tracing::warn!(reason = %why, "engine cache file refused; timing again");
                    rejected = Some(CacheMiss::PlanMismatch(why));
                    for (l, h) in self.convs.iter_mut().zip(heuristic) {
                        if let (Some(l), Some((algo, ws))) = (l.as_mut(), h) {
                            (l.algo, l.workspace, l.ms) = (algo, ws, 0.0);
                        }
                    }
                }
            }
        }
        if opts.time_algorithms {
            // Asked only here, not per layer at set-up: a cached build never times, and these
            // cuDNN queries were most of its time per layer.
            let cap = self
                .convs
                .iter()
                .flatten()
                .map(|l| self.candidate_workspace(l))
                .max();
            self.alloc_workspace(cap.unwrap_or(0))?;
            let t = Instant::now();
            self.time_algorithms()?;
            self.report.timing_ms = t.elapsed().as_secs_f64() * 1e3;
        }
        self.finish_convs(opts, None)?;
        Ok(rejected)
    }

    /// After the algorithms are chosen: the fused graphs where they are faster (their
    /// choices from `cached` when given), then the workspace the chosen layers take, and the
    /// fused layers bound to it.
    fn finish_convs(
        &mut self,
        opts: EngineOptions,
        cached: Option<&CacheFile>,
    ) -> Result<(), EngineBuildError> {
        if opts.fused && self.math == ConvMath::Fp16 {
            let t = Instant::now();
            self.try_fused(opts, cached)?;
            self.report.fused_ms = t.elapsed().as_secs_f64() * 1e3;
        }
        // Keep only the workspace the chosen algorithms take.
        let need = self
            .convs
            .iter()
            .flatten()
            .map(|l| l.fused.as_ref().map_or(l.workspace, |f| f.plan.workspace))
            .max();
        self.alloc_workspace(need.unwrap_or(0))?;
        self.bind_fused()
    }

    /// Pointers of a fused layer: input, weights, FP16 bias, output, residual (0: none).
    fn fused_ptrs(&self, c: &Conv, l: &ConvLayer) -> Result<[u64; 5], EngineBuildError> {
        let b = l
            .bias_h
            .as_ref()
            .ok_or_else(|| EngineBuildError::Shape("fused layer without an FP16 bias".into()))?;
        Ok([
            self.ptr(c.x),
            l.weight.device_ptr(&self.stream).0,
            b.device_ptr(&self.stream).0,
            self.ptr(c.y),
            c.residual.map_or(0, |r| self.ptr(r)),
        ])
    }

    /// Binds every chosen fused layer to the current workspace.
    fn bind_fused(&mut self) -> Result<(), EngineBuildError> {
        let ws = self.workspace_ptr;
        for i in 0..self.plan.ops.len() {
            let Op::Conv(c) = &self.plan.ops[i] else {
                continue;
            };
            let Some(l) = self.convs[i].as_ref() else {
                continue;
            };
            if l.fused.is_none() {
                continue;
            }
            let ptrs = self.fused_ptrs(c, l)?;
            if let Some(f) = self.convs[i].as_mut().and_then(|l| l.fused.as_mut()) {
                f.plan.bind(ptrs, ws).map_err(|e| {
                    EngineBuildError::Gpu(GpuError::InvalidInput(format!(
                        "cudnn fused op {i}: {e}"
                    )))
                })?;
            }
        }
        Ok(())
    }

    /// Device time of `f`, ms: the best of two runs after one warm-up.
    fn time_call(
        &self,
        f: &dyn Fn() -> Result<(), EngineBuildError>,
    ) -> Result<f32, EngineBuildError> {
        let mut ms = f32::INFINITY;
        for rep in 0..3 {
            let start = self.stream.record_event(TIMED)?;
            f()?;
            let end = self.stream.record_event(TIMED)?;
            end.synchronize()?;
            if rep > 0 {
                ms = ms.min(start.elapsed_ms(&end)?);
            }
        }
        Ok(ms)
    }

    /// For each channels-last convolution: builds the fused graph, times up to
    /// [`fused_candidates`] of cuDNN's engine configurations for it against the separate
    /// convolution + `bias_act` pair, and keeps the fused plan when it is faster (with
    /// `cached`, takes the cached choice without timing).
    fn try_fused(
        &mut self,
        opts: EngineOptions,
        cached: Option<&CacheFile>,
    ) -> Result<(), EngineBuildError> {
        // The ops and layers are taken out while the workspace may grow under them.
        let ops = std::mem::take(&mut self.plan.ops);
        let mut convs = std::mem::take(&mut self.convs);
        let r = self.try_fused_in(&ops, &mut convs, opts, cached);
        self.plan.ops = ops;
        self.convs = convs;
        r
    }

    fn try_fused_in(
        &mut self,
        ops: &[Op],
        convs: &mut [Option<ConvLayer>],
        opts: EngineOptions,
        cached: Option<&CacheFile>,
    ) -> Result<(), EngineBuildError> {
        let by_op: std::collections::HashMap<usize, &CachedConv> = cached
            .map(|f| f.convs.iter().map(|c| (c.op, c)).collect())
            .unwrap_or_default();
        let note = |notes: &mut Vec<String>, why: String| {
            if notes.len() < 8 && !notes.contains(&why) {
                notes.push(why);
            }
        };
        let mut notes = Vec::new();
        // 1. Graphs and plans for every layer, on several threads: cuDNN compiles the fused
        //    kernels while finalizing, on the host.
        let mut jobs = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let Op::Conv(c) = op else {
                continue;
            };
            // A depthwise layer on our kernel tries a fused graph only where the two are
            // timed against each other (or the cache says which won).
            let dw = convs[i].as_ref().is_some_and(|l| l.dw.is_some());
            if !c.nhwc
                || convs[i].is_none()
                || (dw && cached.is_none() && !opts.time_algorithms)
                || self.stem.as_ref().is_some_and(|s| s.conv == i)
            {
                continue;
            }
            let (only, json) = match (cached, by_op.get(&i)) {
                (Some(_), Some(cc)) if cc.fused.is_none() => continue,
                (Some(_), Some(cc)) => (cc.fused, cc.fused_plan.clone()),
                _ => (None, None),
            };
            jobs.push(FusedJob {
                op: i,
                shape: fused_shape(&self.plan, c),
                only,
                json,
            });
        }
        self.report.fused_tried = jobs.len();
        // ITS_ENGINE_BUILD_THREADS=1 builds them one at a time (to rule the threads out).
        let threads = std::env::var("ITS_ENGINE_BUILD_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(16)));
        let ctx = self.stream.context().clone();
        let prepared = fused::prepare_all(self.handle, &ctx, jobs, fused_candidates(), threads);
        // 2. Timing, one layer at a time on the stream.
        for p in prepared {
            for n in p.notes {
                note(&mut notes, n);
            }
            let i = p.op;
            let (Op::Conv(c), Some(l)) = (&ops[i], convs[i].as_mut()) else {
                continue;
            };
            if p.plans.is_empty() {
                continue;
            }
            if p.restored {
                self.report.fused_restored += 1;
            }
            let need = p.plans.iter().map(|p| p.workspace).max().unwrap_or(0);
            if need > self.report.workspace_bytes {
                if need > 256 << 20 {
                    note(&mut notes, format!("workspace {need} bytes"));
                    continue;
                }
                self.alloc_workspace(need)?;
            }
            let ptrs = self.fused_ptrs(c, l)?;
            let ws = self.workspace_ptr;
            let timing = opts.time_algorithms && !by_op.contains_key(&i);
            // What the fused graph must beat: our depthwise kernel where the layer has it,
            // else cuDNN's convolution followed by `bias_act`.
            // A layer that reads or writes a concatenation's slice has no other path.
            let pair_ms = if timing && !self.conv_views(c) {
                match &l.dw {
                    Some(w) => self.time_call(&|| {
                        self.dw_call(c, l, w)?;
                        self.residual_after(c)
                    })?,
                    None => self.time_call(&|| {
                        self.conv_call(l, l.algo, ptrs[0], ptrs[3])?;
                        self.conv_epilogue(c, l)
                    })?,
                }
            } else {
                f32::INFINITY
            };
            let mut best: Option<(f32, FusedPlan)> = None;
            for mut plan in p.plans {
                if let Err(e) = plan.bind(ptrs, ws) {
                    note(&mut notes, format!("bind: {e}"));
                    continue;
                }
                let ms = if timing {
                    let r = self.time_call(&|| {
                        plan.execute(self.handle).map_err(|e| {
                            EngineBuildError::Gpu(GpuError::InvalidInput(format!("cudnn {e}")))
                        })
                    });
                    match r {
                        Ok(ms) => ms,
                        Err(e) => {
                            note(&mut notes, format!("run: {e}"));
                            continue;
                        }
                    }
                } else {
                    // A cached choice runs once, so that one cuDNN accepts but cannot run
                    // fails here and the layer stays on the pair.
                    if let Err(e) = plan.execute(self.handle) {
                        note(&mut notes, format!("cached plan does not run: {e}"));
                        continue;
                    }
                    by_op.get(&i).map_or(0.0, |cc| cc.ms)
                };
                if best.as_ref().is_none_or(|(b, _)| ms < *b) {
                    best = Some((ms, plan));
                }
            }
            self.stream.synchronize()?;
            match best {
                Some((ms, plan)) if ms < pair_ms => {
                    l.fused = Some(FusedLayer {
                        plan,
                        ms,
                        _graph: p.graph,
                    });
                    self.report.fused_convs += 1;
                    l.dw = None;
                }
                Some((ms, _)) => note(
                    &mut notes,
                    format!("slower fused ({ms:.4} ms vs {pair_ms:.4} ms) at op {i}"),
                ),
                None => {}
            }
        }
        if !notes.is_empty() {
            tracing::info!(notes = ?notes, fused = self.report.fused_convs, tried = self.report.fused_tried, "fused convolutions: layers left unfused");
        }
        self.report.fused_notes = notes;
        Ok(())
    }

    /// (Re)allocates the cuDNN workspace to `bytes`.
    fn alloc_workspace(&mut self, bytes: usize) -> Result<(), EngineBuildError> {
        if self.workspace.is_some() && self.report.workspace_bytes == bytes {
            return Ok(());
        }
        self.stream.synchronize()?;
        self.workspace = None;
        self.workspace_ptr = 0;
        self.report.workspace_bytes = 0;
        if bytes > 0 {
            let ws = self.stream.alloc_zeros::<u8>(bytes)?;
            self.workspace_ptr = ws.device_ptr(&self.stream).0;
            self.workspace = Some(ws);
            self.report.workspace_bytes = bytes;
        }
        Ok(())
    }

    /// Takes the algorithms of `file` (checked against the plan by [`cache::load`]): each
    /// must be one cuDNN offers for its layer and must run once.
    fn apply_cached(&mut self, file: &CacheFile) -> Result<(), String> {
        let mut by_op = std::collections::HashMap::new();
        for c in &file.convs {
            by_op.insert(c.op, c);
        }
        for (i, l) in self.convs.iter_mut().enumerate() {
            let Some(l) = l.as_mut() else { continue };
            let c = by_op
                .get(&i)
                .ok_or_else(|| format!("no cached choice for op {i}"))?;
            let algo = ALGOS
                .into_iter()
                .find(|a| *a as i32 == c.algo)
                .ok_or_else(|| format!("op {i}: unknown cuDNN algorithm {}", c.algo))?;
            let ws = l
                .workspace_of(self.handle, algo)
                .map_err(|e| format!("op {i}: cuDNN refuses {algo:?}: {e:?}"))?;
            l.algo = algo;
            l.workspace = ws;
            l.ms = c.ms;
        }
        let need = self.convs.iter().flatten().map(|l| l.workspace).max();
        self.alloc_workspace(need.unwrap_or(0))
            .map_err(|e| e.to_string())?;
        // One call each: an algorithm cuDNN takes but cannot run is a refusal, not a failed
        // build later.
        for (i, op) in self.plan.ops.iter().enumerate() {
            let (Op::Conv(c), Some(l)) = (op, self.convs[i].as_ref()) else {
                continue;
            };
            self.conv_call(l, l.algo, self.ptr(c.x), self.ptr(c.y))
                .map_err(|e| format!("op {i}: {e}"))?;
        }
        self.stream.synchronize().map_err(|e| e.to_string())?;
        Ok(())
    }

    fn conv_layer(&mut self, c: &Conv, opts: EngineOptions) -> Result<ConvLayer, EngineBuildError> {
        // cuDNN takes [n, c, h, w] dims whatever the format.
        let logical = |s: &[usize]| -> Vec<usize> {
            if c.nhwc {
                vec![s[0], s[3], s[1], s[2]]
            } else {
                s.to_vec()
            }
        };
        let xs = &logical(self.plan.shape(c.x));
        let ys = &logical(self.plan.shape(c.y));
        let f32t = dnn_sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let data_t = if opts.math == ConvMath::Fp16 {
            dnn_sys::cudnnDataType_t::CUDNN_DATA_HALF
        } else {
            f32t
        };
        let nchw = if c.nhwc {
            dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
        } else {
            dnn_sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
        };
        let x_desc = dnn::create_tensor_descriptor().map_err(dnn_err("tensor desc"))?;
        let y_desc = dnn::create_tensor_descriptor().map_err(dnn_err("tensor desc"))?;
        let w_desc = dnn::create_filter_descriptor().map_err(dnn_err("filter desc"))?;
        let conv_desc = dnn::create_convolution_descriptor().map_err(dnn_err("conv desc"))?;
        if c.pad[0] != c.pad[2] || c.pad[1] != c.pad[3] {
            return Err(EngineBuildError::Shape(format!(
                "asymmetric convolution padding {:?} is not supported on cuDNN",
                c.pad
            )));
        }
        let math = match opts.math {
            ConvMath::Fp32 => dnn_sys::cudnnMathType_t::CUDNN_FMA_MATH,
            ConvMath::Tf32 => dnn_sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION,
            ConvMath::Fp16 => dnn_sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        };
        // SAFETY: descriptors were just created; the values describe the plan's tensors.
        unsafe {
            dnn::set_tensor4d_descriptor(x_desc, nchw, data_t, dims4(xs)).map_err(dnn_err("x"))?;
            dnn::set_tensor4d_descriptor(y_desc, nchw, data_t, dims4(ys)).map_err(dnn_err("y"))?;
            dnn::set_filter4d_descriptor(
                w_desc,
                data_t,
                nchw,
                [
                    c.m as i32,
                    (xs[1] / c.group) as i32,
                    c.kernel[0] as i32,
                    c.kernel[1] as i32,
                ],
            )
            .map_err(dnn_err("w"))?;
            dnn::set_convolution2d_descriptor(
                conv_desc,
                c.pad[0] as i32,
                c.pad[1] as i32,
                c.stride[0] as i32,
                c.stride[1] as i32,
                c.dilation[0] as i32,
                c.dilation[1] as i32,
                dnn_sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                f32t,
            )
            .map_err(dnn_err("conv"))?;
            dnn::set_convolution_group_count(conv_desc, c.group as i32)
                .map_err(dnn_err("group"))?;
            dnn::set_convolution_math_type(conv_desc, math).map_err(dnn_err("math"))?;
        }
        // Heuristic choice first; timing or the cache may replace it.
        let mut algo = ALGOS[1];
        let mut workspace = usize::MAX;
        for a in [ALGOS[1], ALGOS[0]] {
            // SAFETY: valid descriptors.
            if let Ok(ws) = unsafe {
                dnn::get_convolution_forward_workspace_size(
                    self.handle,
                    x_desc,
                    w_desc,
                    conv_desc,
                    y_desc,
                    a,
                )
            } {
                algo = a;
                workspace = ws;
                break;
            }
        }
        if workspace == usize::MAX {
            return Err(EngineBuildError::Shape(format!(
                "cuDNN offers no algorithm for convolution {xs:?} -> {ys:?}"
            )));
        }
        let host = to_elems(
            &if c.nhwc {
                // [m, c/g, kh, kw] -> [m, kh, kw, c/g] (cuDNN's NHWC filter order).
                let (_, idx) = super::tensor::transpose_index(
                    &[c.m, xs[1] / c.group, c.kernel[0], c.kernel[1]],
                    &[0, 2, 3, 1],
                );
                idx.iter().map(|&i| c.weight[i]).collect()
            } else {
                c.weight.clone()
            },
            opts.math,
        );
        let (weight, how) = self.gpu.shared_buffer(&self.stream, &host)?;
        let few = if few_outputs_1x1(c, xs[1]) && !self.conv_views(c) {
            let bytes: Vec<u8> = c.weight.iter().flat_map(|v| v.to_ne_bytes()).collect();
            Some(self.gpu.shared_buffer(&self.stream, &bytes)?.0)
        } else {
            None
        };
        let dw = if opts.direct_depthwise
            && self.kernels.conv_dw.is_some()
            && depthwise_nhwc(c, xs[1])
            && !self.conv_views(c)
        {
            // ONNX's [c][1][kh][kw] to tap-major [kh * kw][c].
            let taps = c.kernel[0] * c.kernel[1];
            let bytes: Vec<u8> = (0..taps * c.m)
                .map(|i| c.weight[(i % c.m) * taps + i / c.m])
                .flat_map(|v| v.to_ne_bytes())
                .collect();
            Some(self.gpu.shared_buffer(&self.stream, &bytes)?.0)
        } else {
            None
        };
        self.report.weight_bytes += host.len();
        if how == SharedBuffer::Reused {
            self.report.weight_bytes_shared += host.len();
        }
        Ok(ConvLayer {
            x_desc,
            y_desc,
            w_desc,
            conv_desc,
            algo,
            workspace,
            ms: 0.0,
            weight,
            bias: self.stream.clone_htod(&c.bias)?,
            bias_h: if c.nhwc && opts.math == ConvMath::Fp16 {
                Some(self.stream.clone_htod(&to_elems(&c.bias, ConvMath::Fp16))?)
            } else {
                None
            },
            fused: None,
            few,
            dw,
        })
    }

    /// The workspace the layer's timed candidates take: the most any algorithm needs, of
    /// those that need at most 256 MiB, and at least what its heuristic choice needs.
    fn candidate_workspace(&self, l: &ConvLayer) -> usize {
        ALGOS
            .iter()
            .filter_map(|&a| l.workspace_of(self.handle, a).ok())
            .filter(|&ws| ws <= 256 << 20)
            .fold(l.workspace, usize::max)
    }

    fn time_algorithms(&mut self) -> Result<(), EngineBuildError> {
        let ws_cap = self.report.workspace_bytes;
        for i in 0..self.plan.ops.len() {
            let Op::Conv(c) = &self.plan.ops[i] else {
                continue;
            };
            let (x, y) = (self.ptr(c.x), self.ptr(c.y));
            // A layer on our depthwise kernel never calls cuDNN: nothing to time.
            let Some(layer) = self.convs[i].as_ref().filter(|l| l.dw.is_none()) else {
                continue;
            };
            let mut best = (f32::INFINITY, layer.algo, layer.workspace);
            for a in ALGOS {
                let Ok(ws) = layer.workspace_of(self.handle, a) else {
                    continue;
                };
                if ws > ws_cap {
                    continue;
                }
                // An algorithm cuDNN takes but cannot run is skipped.
                if let Ok(ms) = self.time_call(&|| self.conv_call(layer, a, x, y))
                    && ms < best.0
                {
                    best = (ms, a, ws);
                }
            }
            if let Some(layer) = self.convs[i].as_mut() {
                layer.algo = best.1;
                layer.workspace = best.2;
                layer.ms = if best.0.is_finite() { best.0 } else { 0.0 };
            }
        }
        Ok(())
    }

    /// Device address of tensor `t`'s first element.
    fn ptr(&self, t: usize) -> u64 {
        let info = &self.plan.tensors[t];
        let off = info.view.map_or(0, |v| v.offset * self.math.elem_bytes());
        self.ptrs[info.storage] + off as u64
    }

    fn conv_call(
        &self,
        l: &ConvLayer,
        algo: dnn_sys::cudnnConvolutionFwdAlgo_t,
        x: u64,
        y: u64,
    ) -> Result<(), EngineBuildError> {
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (wp, _s) = l.weight.device_ptr(&self.stream);
        // SAFETY: descriptors match the buffers (built from the same plan shapes), the
        // workspace is at least the size cuDNN asked for every algorithm used.
        unsafe {
            dnn::convolution_forward(
                self.handle,
                (&alpha as *const f32).cast(),
                l.x_desc,
                x as *const std::ffi::c_void,
                l.w_desc,
                wp as *const std::ffi::c_void,
                l.conv_desc,
                algo,
                self.workspace_ptr as *mut std::ffi::c_void,
                self.report.workspace_bytes,
                (&beta as *const f32).cast(),
                l.y_desc,
                y as *mut std::ffi::c_void,
            )
        }
        .map_err(dnn_err("convolution forward"))
    }

    /// Enqueues every op of the plan on the stream.
    fn enqueue(&self) -> Result<(), EngineBuildError> {
        for (i, op) in self.plan.ops.iter().enumerate() {
            self.enqueue_op(i, op)?;
        }
        Ok(())
    }

    /// Enqueues op `i` of the plan.
    fn enqueue_op(&self, i: usize, op: &Op) -> Result<(), EngineBuildError> {
        let s = &self.stream;
        let takes_views = match op {
            Op::Conv(c) => c.nhwc,
            Op::MaxPool { nhwc, .. } | Op::Upsample { nhwc, .. } => *nhwc,
            Op::Narrow { .. } | Op::Concat { .. } => true,
            _ => false,
        };
        let view = |t: Tid| self.plan.tensors[t].view.is_some();
        if !takes_views && (view(op.output()) || op.inputs().into_iter().any(view)) {
            return Err(EngineBuildError::Shape(format!(
                "op {i} ({}) cannot read or write a concatenation's slice",
                op.kind()
            )));
        }
        if let (Some(stem), Op::Conv(c)) = (&self.stem, op)
            && stem.conv == i
        {
            self.stem_call(stem, c)?;
            return self.residual_after(c);
        }
        if self.stem.as_ref().is_some_and(|st| st.transpose == i) {
            return Ok(());
        }
        {
            match op {
                Op::Conv(c) => {
                    let l = self.convs[i].as_ref().ok_or_else(|| {
                        EngineBuildError::Shape("convolution without a cuDNN layer".into())
                    })?;
                    if let Some(w) = &l.few {
                        self.few_call(c, l, w)?;
                        self.residual_after(c)?;
                    } else if let Some(w) = &l.dw {
                        self.dw_call(c, l, w)?;
                        self.residual_after(c)?;
                    } else if let Some(f) = &l.fused {
                        f.plan.execute(self.handle).map_err(|e| {
                            EngineBuildError::Gpu(GpuError::InvalidInput(format!(
                                "cudnn fused op {i}: {e}"
                            )))
                        })?;
                    } else {
                        self.conv_call(l, l.algo, self.ptr(c.x), self.ptr(c.y))?;
                        self.conv_epilogue(c, l)?;
                    }
                }
                Op::Act { x, y, act } => {
                    let n = self.plan.tensors[*y].numel() as i64;
                    let (xp, yp) = (self.ptr(*x), self.ptr(*y));
                    let (code, alpha) = (act.code(), act.alpha());
                    let vec = 16 / self.math.elem_bytes() as i64;
                    if n % vec == 0 && n / vec <= u32::MAX as i64 {
                        let nvec = (n / vec) as u32;
                        let mut b = s.launch_builder(&self.kernels.act_vec);
                        b.arg(&xp).arg(&yp).arg(&nvec).arg(&code).arg(&alpha);
                        // SAFETY: x and y hold n elements each, 256-byte aligned (arena).
                        unsafe { b.launch(grid(nvec as usize)) }?;
                    } else {
                        let mut b = s.launch_builder(&self.kernels.act);
                        b.arg(&xp).arg(&yp).arg(&n).arg(&code).arg(&alpha);
                        // SAFETY: x and y hold n elements.
                        unsafe { b.launch(grid(n as usize)) }?;
                    }
                }
                Op::Binary {
                    op,
                    a,
                    b: bb,
                    y,
                    a_strides,
                    b_strides,
                } => {
                    let ys = self.plan.shape(*y);
                    let n = ys.iter().product::<usize>();
                    let (ap, bp, yp) = (self.ptr(*a), self.ptr(*bb), self.ptr(*y));
                    let code = op.code();
                    let dense = strides(ys);
                    let same = |st: &[usize]| {
                        st.len() == ys.len()
                            && (0..ys.len()).all(|d| ys[d] == 1 || st[d] == dense[d])
                    };
                    let vec = 16 / self.math.elem_bytes();
                    if same(a_strides)
                        && same(b_strides)
                        && n % vec == 0
                        && n / vec <= u32::MAX as usize
                    {
                        let nvec = (n / vec) as u32;
                        let mut b = s.launch_builder(&self.kernels.binary_same_vec);
                        b.arg(&ap).arg(&bp).arg(&yp).arg(&nvec).arg(&code);
                        // SAFETY: a, b and y hold n elements each, 256-byte aligned (arena).
                        unsafe { b.launch(grid(nvec as usize)) }?;
                    } else {
                        let st = KStrides::new(ys, a_strides, b_strides)?;
                        let n = n as i64;
                        let mut b = s.launch_builder(&self.kernels.binary);
                        b.arg(&ap).arg(&bp).arg(&yp).arg(&n).arg(&code).arg(&st);
                        // SAFETY: the strides address inside a and b (built from their shapes).
                        unsafe { b.launch(grid(n as usize)) }?;
                    }
                }
                Op::Concat { xs, y, axis } => {
                    let yshape = self.plan.shape(*y);
                    let outer = yshape[..*axis].iter().product::<usize>() as i64;
                    let inner = yshape[*axis + 1..].iter().product::<usize>() as i64;
                    let y_rows = yshape[*axis] as i64;
                    let yp = self.ptr(*y);
                    let placed = super::slices::in_place(&self.plan, xs, *y);
                    if xs.iter().zip(&placed).any(|(&x, &here)| !here && view(x)) {
                        return Err(EngineBuildError::Shape(format!(
                            "concatenation op {i} copies from a strided input"
                        )));
                    }
                    let any_placed = placed.iter().any(|&p| p);
                    if !any_placed && self.concat_one_launch(xs, yp, outer, inner, *axis)? {
                        return Ok(());
                    }
                    // Copy each input that its producer did not write in place into its slice.
                    let mut off = 0i64;
                    for (&x, here) in xs.iter().zip(placed) {
                        let rows = self.plan.shape(x)[*axis] as i64;
                        if !here {
                            self.copy_into_slice(
                                self.ptr(x),
                                yp,
                                outer,
                                inner,
                                rows,
                                [y_rows, off],
                            )?;
                        }
                        off += rows;
                    }
                }
                Op::Narrow {
                    x,
                    y,
                    axis,
                    start,
                    step,
                } => {
                    let xs = self.plan.shape(*x);
                    let outer = xs[..*axis].iter().product::<usize>() as i64;
                    let inner = xs[*axis + 1..].iter().product::<usize>() as i64;
                    let rows = self.plan.shape(*y)[*axis] as i64;
                    let e = self.math.elem_bytes() as i64;
                    // A view's rows (of the last axis) lie its pitch apart.
                    let x_rows = match self.plan.tensors[*x].view {
                        Some(v) if *axis + 1 == xs.len() => v.pitch as i64,
                        Some(_) => {
                            return Err(EngineBuildError::Shape(format!(
                                "narrow op {i}: a strided input narrowed on axis {axis}"
                            )));
                        }
                        None => xs[*axis] as i64,
                    };
                    if *step == 1
                        && self.copy_runs(
                            self.ptr(*x),
                            self.ptr(*y),
                            outer,
                            [
                                rows * inner * e,
                                x_rows * inner * e,
                                *start as i64 * inner * e,
                            ],
                            [rows * inner * e, 0],
                        )?
                    {
                        return Ok(());
                    }
                    self.copy_rows(
                        self.ptr(*x),
                        self.ptr(*y),
                        outer,
                        rows,
                        x_rows,
                        rows,
                        inner,
                        *start as i64,
                        *step as i64,
                        0,
                    )?;
                }
                Op::MaxPool {
                    x,
                    y,
                    kernel,
                    stride,
                    pad,
                    nhwc,
                } => {
                    let xs = self.plan.shape(*x);
                    let ys = self.plan.shape(*y);
                    let (xp, yp) = (self.ptr(*x), self.ptr(*y));
                    let n = self.plan.tensors[*y].numel();
                    let vec = 16 / self.math.elem_bytes();
                    let (xpitch, ypitch) =
                        (self.plan.tensors[*x].pitch(), self.plan.tensors[*y].pitch());
                    let fits = |v: usize| v <= u32::MAX as usize;
                    if *nhwc
                        && [xs[3], xpitch, ypitch]
                            .iter()
                            .all(|v| v.is_multiple_of(vec))
                        && xp.is_multiple_of(16)
                        && yp.is_multiple_of(16)
                        && fits(xs[0] * xs[1] * xs[2] * xpitch / vec)
                        && fits(ys[0] * ys[1] * ys[2] * ypitch.max(ys[3]) / vec)
                    {
                        // 16 bytes of channels a thread.
                        let (n_img, cu, xpu, ypu) = (
                            xs[0] as u32,
                            (xs[3] / vec) as u32,
                            (xpitch / vec) as u32,
                            (ypitch / vec) as u32,
                        );
                        let ints: Vec<i32> = [xs[1], xs[2]].iter().map(|&v| v as i32).collect();
                        let tail: Vec<i32> = [
                            ys[1], ys[2], kernel[0], kernel[1], stride[0], stride[1], pad[0],
                            pad[1],
                        ]
                        .iter()
                        .map(|&v| v as i32)
                        .collect();
                        let mut b = s.launch_builder(&self.kernels.maxpool2d_nhwc_vec);
                        b.arg(&xp)
                            .arg(&yp)
                            .arg(&n_img)
                            .arg(&ints[0])
                            .arg(&ints[1])
                            .arg(&cu);
                        for a in &tail {
                            b.arg(a);
                        }
                        b.arg(&xpu).arg(&ypu);
                        // SAFETY: sizes from the plan's shapes; whole 16-byte units of channels,
                        // 16-byte aligned; every index fits 32 bits (checked above).
                        unsafe { b.launch(grid(n / vec)) }?;
                        return Ok(());
                    }
                    let mut tail = vec![kernel[0], kernel[1], stride[0], stride[1], pad[0], pad[1]];
                    if *nhwc {
                        tail.extend([self.plan.tensors[*x].pitch(), self.plan.tensors[*y].pitch()]);
                    }
                    let (func, count, dims) = if *nhwc {
                        let d = [xs[1], xs[2], xs[3], ys[1], ys[2]];
                        (&self.kernels.maxpool2d_nhwc, xs[0] as i64, d.to_vec())
                    } else {
                        let d = [xs[2], xs[3], ys[2], ys[3]];
                        (&self.kernels.maxpool2d, (xs[0] * xs[1]) as i64, d.to_vec())
                    };
                    let v: Vec<i32> = dims.iter().chain(&tail).map(|&v| v as i32).collect();
                    let mut b = s.launch_builder(func);
                    b.arg(&xp).arg(&yp).arg(&count);
                    for a in &v {
                        b.arg(a);
                    }
                    // SAFETY: sizes from the plan's shapes.
                    unsafe { b.launch(grid(n)) }?;
                }
                Op::Upsample { x, y, factor, nhwc } => {
                    let xs = self.plan.shape(*x);
                    let (xp, yp) = (self.ptr(*x), self.ptr(*y));
                    let vec = 16 / self.math.elem_bytes();
                    let n = self.plan.tensors[*y].numel();
                    let (xpitch, ypitch) =
                        (self.plan.tensors[*x].pitch(), self.plan.tensors[*y].pitch());
                    if *nhwc
                        && xs[3].is_multiple_of(vec)
                        && xpitch.is_multiple_of(vec)
                        && ypitch.is_multiple_of(vec)
                        && n / xs[3] * ypitch.max(xpitch) / vec <= u32::MAX as usize
                    {
                        let v = [
                            xs[0] as u32,
                            xs[1] as u32,
                            xs[2] as u32,
                            (xs[3] / vec) as u32,
                            factor[0] as u32,
                            factor[1] as u32,
                            (xpitch / vec) as u32,
                            (ypitch / vec) as u32,
                        ];
                        let mut b = s.launch_builder(&self.kernels.upsample_nhwc_vec);
                        b.arg(&xp).arg(&yp);
                        for a in &v {
                            b.arg(a);
                        }
                        // SAFETY: sizes from the plan's shapes; whole 16-byte pixels' channels.
                        unsafe { b.launch(grid(n / vec)) }?;
                        return Ok(());
                    }
                    let (func, count, dims, pitches) = if *nhwc {
                        (
                            &self.kernels.upsample_nhwc,
                            xs[0] as i64,
                            vec![xs[1], xs[2], xs[3]],
                            vec![xpitch, ypitch],
                        )
                    } else {
                        (
                            &self.kernels.upsample,
                            (xs[0] * xs[1]) as i64,
                            vec![xs[2], xs[3]],
                            vec![],
                        )
                    };
                    let v: Vec<i32> = dims
                        .iter()
                        .chain(factor.iter())
                        .chain(&pitches)
                        .map(|&v| v as i32)
                        .collect();
                    let mut b = s.launch_builder(func);
                    b.arg(&xp).arg(&yp).arg(&count);
                    for a in &v {
                        b.arg(a);
                    }
                    let n = self.plan.tensors[*y].numel();
                    // SAFETY: sizes from the plan's shapes.
                    unsafe { b.launch(grid(n)) }?;
                }
                Op::Transpose { x, y, perm } => {
                    let xs = self.plan.shape(*x);
                    if self.transpose_fast(self.ptr(*x), self.ptr(*y), xs, perm)? {
                        return Ok(());
                    }
                    let in_s = strides(xs);
                    let st: Vec<usize> = perm.iter().map(|&p| in_s[p]).collect();
                    let ks = KStrides::new(self.plan.shape(*y), &st, &[])?;
                    let n = self.plan.tensors[*y].numel() as i64;
                    let (xp, yp) = (self.ptr(*x), self.ptr(*y));
                    let mut b = s.launch_builder(&self.kernels.permute);
                    b.arg(&xp).arg(&yp).arg(&n).arg(&ks);
                    // SAFETY: a permutation reads every input element once.
                    unsafe { b.launch(grid(n as usize)) }?;
                }
                Op::MatMul { a, b: bm, y } => {
                    let ash = self.plan.shape(*a);
                    let r = ash.len();
                    let (m, k) = (ash[r - 2] as i32, ash[r - 1] as i32);
                    let n = self.plan.shape(*bm)[r - 1] as i32;
                    let batch = self.plan.shape(*y)[..r - 2].iter().product::<usize>() as u32;
                    let (ap, bp, yp) = (self.ptr(*a), self.ptr(*bm), self.ptr(*y));
                    if let Some((h, _)) = &self.blas {
                        return self.gemm(*h, [ap, bp, yp], [m, n, k], batch as i32);
                    }
                    let cfg = LaunchConfig {
                        grid_dim: (
                            (n as u32).div_ceil(16),
                            (m as u32).div_ceil(16),
                            batch.max(1),
                        ),
                        block_dim: (16, 16, 1),
                        shared_mem_bytes: 0,
                    };
                    let mut b = s.launch_builder(&self.kernels.matmul);
                    b.arg(&ap).arg(&bp).arg(&yp).arg(&m).arg(&n).arg(&k);
                    // SAFETY: shapes from the plan; the kernel bounds-checks the tiles.
                    unsafe { b.launch(cfg) }?;
                }
                Op::Softmax { x, y, axis } => {
                    let xs = self.plan.shape(*x);
                    let outer = xs[..*axis].iter().product::<usize>() as i64;
                    let inner = xs[*axis + 1..].iter().product::<usize>() as i64;
                    let len = xs[*axis] as i32;
                    let (xp, yp) = (self.ptr(*x), self.ptr(*y));
                    if inner == 1 && outer <= u32::MAX as i64 {
                        // One warp per row of the last axis.
                        let (rows, len) = (outer as u32, len as u32);
                        let mut b = s.launch_builder(&self.kernels.softmax_rows);
                        b.arg(&xp).arg(&yp).arg(&rows).arg(&len);
                        // SAFETY: x and y hold rows * len elements.
                        unsafe { b.launch(grid(rows as usize * 32)) }?;
                        return Ok(());
                    }
                    let mut b = s.launch_builder(&self.kernels.softmax);
                    b.arg(&xp).arg(&yp).arg(&outer).arg(&len).arg(&inner);
                    // SAFETY: sizes from the plan's shapes.
                    unsafe { b.launch(grid((outer * inner) as usize)) }?;
                }
            }
        }
        Ok(())
    }

    /// Bias and activation after the cuDNN call of `c`, in place on its output: 16 bytes a
    /// thread where no vector crosses a channel, else one element a thread.
    /// The stem of this plan, its weights uploaded (shared per GPU), when [`find_stem`]
    /// finds one.
    fn stem_for(&self) -> Result<Option<Stem>, EngineBuildError> {
        let Some((transpose, conv)) = find_stem(&self.plan) else {
            return Ok(None);
        };
        let Op::Conv(c) = &self.plan.ops[conv] else {
            return Ok(None);
        };
        let bytes: Vec<u8> = c.weight.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let (weight, _) = self.gpu.shared_buffer(&self.stream, &bytes)?;
        Ok(Some(Stem {
            transpose,
            conv,
            weight,
        }))
    }

    /// Launches `conv1x1_few` for convolution `c` (layer `l`, FP32 weights `w`).
    fn few_call(
        &self,
        c: &Conv,
        l: &ConvLayer,
        w: &Arc<CudaSlice<u8>>,
    ) -> Result<(), EngineBuildError> {
        let xs = self.plan.shape(c.x);
        let (n, cin, hw, m) = (
            xs[0] as u32,
            xs[1] as u32,
            xs[2..].iter().product::<usize>() as u32,
            c.m as u32,
        );
        let (x, y) = (self.ptr(c.x), self.ptr(c.y));
        let (wp, _w) = w.device_ptr(&self.stream);
        let (bp, _b) = l.bias.device_ptr(&self.stream);
        let (code, alpha) = (c.act.code(), c.act.alpha());
        let mut b = self.stream.launch_builder(&self.kernels.conv1x1_few);
        b.arg(&x)
            .arg(&y)
            .arg(&wp)
            .arg(&bp)
            .arg(&n)
            .arg(&cin)
            .arg(&hw)
            .arg(&m)
            .arg(&code)
            .arg(&alpha);
        // SAFETY: x is [n, cin, hw], y [n, m, hw] (1x1, stride 1, no padding), w holds m * cin
        // floats and the bias m floats, m <= 4 (few_outputs_1x1).
        unsafe { b.launch(grid(n as usize * hw as usize)) }?;
        Ok(())
    }

    /// Launches `conv_dw3x3_nhwc` for depthwise convolution `c` (layer `l`, FP32 tap-major
    /// weights `w`).
    fn dw_call(
        &self,
        c: &Conv,
        l: &ConvLayer,
        w: &Arc<CudaSlice<u8>>,
    ) -> Result<(), EngineBuildError> {
        let (xs, ys) = (self.plan.shape(c.x), self.plan.shape(c.y));
        let u = |v: usize| v as u32;
        let (n, h, wd, ch) = (u(xs[0]), u(xs[1]), u(xs[2]), u(xs[3]));
        let (p, q) = (u(ys[1]), u(ys[2]));
        let (ph, pw) = (u(c.pad[0]), u(c.pad[1]));
        let (x, y) = (self.ptr(c.x), self.ptr(c.y));
        let (wp, _w) = w.device_ptr(&self.stream);
        let (bp, _b) = l.bias.device_ptr(&self.stream);
        let (code, alpha) = (c.act.code(), c.act.alpha());
        let kernel = self.kernels.conv_dw.as_ref().ok_or_else(|| {
            EngineBuildError::Shape("a depthwise layer without the FP16 kernel".into())
        })?;
        let mut b = self.stream.launch_builder(kernel);
        b.arg(&x)
            .arg(&y)
            .arg(&wp)
            .arg(&bp)
            .arg(&n)
            .arg(&h)
            .arg(&wd)
            .arg(&ch)
            .arg(&p)
            .arg(&q)
            .arg(&ph)
            .arg(&pw)
            .arg(&code)
            .arg(&alpha);
        let vec = 16 / self.math.elem_bytes();
        let threads = ys[0] * ys[1] * ys[2].div_ceil(DW_PX) * (ys[3] / vec);
        // SAFETY: x is [n, h, wd, ch] and y [n, p, q, ch] channels-last in 16-byte aligned
        // arena slots, ch % 8 == 0 (depthwise_nhwc, so each thread's vectors stay in their
        // pixels), w holds 9 * ch floats (16-byte aligned rows: ch % 8 == 0) and the bias ch
        // floats.
        unsafe { b.launch(grid(threads)) }?;
        Ok(())
    }

    /// Launches the stem kernel for convolution `c` (input: the plan's NCHW input).
    fn stem_call(&self, stem: &Stem, c: &Conv) -> Result<(), EngineBuildError> {
        let l = self.convs[stem.conv]
            .as_ref()
            .ok_or_else(|| EngineBuildError::Shape("stem without its layer".into()))?;
        let xs = self.plan.shape(self.plan.input);
        let ys = self.plan.shape(c.y);
        let u = |v: usize| v as u32;
        let (n, h, w) = (u(xs[0]), u(xs[2]), u(xs[3]));
        let (p, q, m) = (u(ys[1]), u(ys[2]), u(ys[3]));
        let (sh, sw, ph, pw) = (u(c.stride[0]), u(c.stride[1]), u(c.pad[0]), u(c.pad[1]));
        let (x, y) = (self.ptr(self.plan.input), self.ptr(c.y));
        let (wp, _w) = stem.weight.device_ptr(&self.stream);
        let (bp, _b) = l.bias.device_ptr(&self.stream);
        let (code, alpha) = (c.act.code(), c.act.alpha());
        let mut b = self.stream.launch_builder(&self.kernels.conv_stem);
        b.arg(&x)
            .arg(&y)
            .arg(&wp)
            .arg(&bp)
            .arg(&n)
            .arg(&h)
            .arg(&w)
            .arg(&m)
            .arg(&p)
            .arg(&q)
            .arg(&sh)
            .arg(&sw)
            .arg(&ph)
            .arg(&pw)
            .arg(&code)
            .arg(&alpha);
        let cfg = grid(n as usize * p as usize * q as usize);
        // SAFETY: x is the [n, 3, h, w] input, y the [n, p, q, m] output (16-byte aligned
        // arena slots, m a multiple of 8), w holds m * 27 floats and the bias m floats
        // (m * 27 <= STEM_MAXW, checked by find_stem).
        unsafe { b.launch(cfg) }?;
        Ok(())
    }

    fn conv_epilogue(&self, c: &Conv, l: &ConvLayer) -> Result<(), EngineBuildError> {
        let s = &self.stream;
        let y = self.ptr(c.y);
        let ys = self.plan.shape(c.y);
        let total = ys.iter().product::<usize>();
        // Channel of element i: (i / hw) % ch; channels-last is hw = 1.
        let (ch, hw) = if c.nhwc {
            (ys[3], 1)
        } else {
            (ys[1], ys[2] * ys[3])
        };
        let (code, alpha) = (c.act.code(), c.act.alpha());
        let (bp, _s) = l.bias.device_ptr(s);
        // The residual, or null.
        let rp = c.residual.map_or(0u64, |r| self.ptr(r));
        let vec = 16 / self.math.elem_bytes();
        let aligned = if c.nhwc { ch % vec == 0 } else { hw % vec == 0 };
        if aligned && total % vec == 0 && total / vec <= u32::MAX as usize {
            let (nvec, ch, hw) = ((total / vec) as u32, ch as u32, hw as u32);
            let mut b = s.launch_builder(&self.kernels.bias_act_vec);
            b.arg(&y)
                .arg(&bp)
                .arg(&rp)
                .arg(&nvec)
                .arg(&ch)
                .arg(&hw)
                .arg(&code)
                .arg(&alpha);
            // SAFETY: y (and the residual, of y's shape) hold `total` elements (256-byte
            // aligned arena slots), no vector crosses a channel, bias holds `ch` floats.
            unsafe { b.launch(grid(nvec as usize)) }?;
            return Ok(());
        }
        let (total, ch, hw) = (total as i64, ch as i32, hw as i32);
        let mut b = s.launch_builder(&self.kernels.bias_act);
        b.arg(&y)
            .arg(&bp)
            .arg(&rp)
            .arg(&total)
            .arg(&ch)
            .arg(&hw)
            .arg(&code)
            .arg(&alpha);
        // SAFETY: y and the residual hold `total` elements, bias `ch`.
        unsafe { b.launch(grid(total as usize)) }?;
        Ok(())
    }

    /// `y += residual` for a convolution whose kernel (stem, few-outputs, depthwise) does
    /// not add the residual itself; nothing without one.
    fn residual_after(&self, c: &Conv) -> Result<(), EngineBuildError> {
        let Some(r) = c.residual else {
            return Ok(());
        };
        let (y, rp) = (self.ptr(c.y), self.ptr(r));
        let n = self.plan.tensors[c.y].numel() as i64;
        let mut b = self.stream.launch_builder(&self.kernels.add_into);
        b.arg(&y).arg(&rp).arg(&n);
        // SAFETY: y and the residual have one shape (plan::fuse_residuals), n elements each,
        // in different arena slots (both live at the convolution).
        unsafe { b.launch(grid(n as usize)) }?;
        Ok(())
    }

    /// Row-major `y[b] = a[b] (m x k) * bm[b] (k x n)` on cuBLAS: column-major
    /// `y^T = bm^T a^T`, FP32 accumulation.
    fn gemm(
        &self,
        h: blas::cublasHandle_t,
        [a, b, y]: [u64; 3],
        [m, n, k]: [i32; 3],
        batch: i32,
    ) -> Result<(), EngineBuildError> {
        let ty = if self.math == ConvMath::Fp16 {
            blas::cudaDataType::CUDA_R_16F
        } else {
            blas::cudaDataType::CUDA_R_32F
        };
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (m64, n64, k64) = (i64::from(m), i64::from(n), i64::from(k));
        let op = blas::cublasOperation_t::CUBLAS_OP_N;
        // SAFETY: the pointers hold `batch` row-major matrices of the plan's shapes, the
        // handle runs on this engine's stream with its own workspace.
        let status = unsafe {
            blas::cublasGemmStridedBatchedEx(
                h,
                op,
                op,
                n,
                m,
                k,
                (&alpha as *const f32).cast(),
                b as *const std::ffi::c_void,
                ty,
                n,
                k64 * n64,
                a as *const std::ffi::c_void,
                ty,
                k,
                m64 * k64,
                (&beta as *const f32).cast(),
                y as *mut std::ffi::c_void,
                ty,
                n,
                m64 * n64,
                batch.max(1),
                blas::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        };
        if status == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS {
            Ok(())
        } else {
            Err(EngineBuildError::Gpu(GpuError::InvalidInput(format!(
                "cublas gemm {m}x{n}x{k} batch {batch}: {status:?}"
            ))))
        }
    }

    /// A concatenation in one launch of `concat_vec` when every input's slice of a row is
    /// whole 16-byte units and there are at most [`CONCAT_MAX`] inputs; returns false
    /// (nothing launched) otherwise.
    fn concat_one_launch(
        &self,
        xs: &[Tid],
        y: u64,
        outer: i64,
        inner: i64,
        axis: usize,
    ) -> Result<bool, EngineBuildError> {
        let e = self.math.elem_bytes() as i64;
        if xs.len() > CONCAT_MAX || !y.is_multiple_of(16) {
            return Ok(false);
        }
        let mut k = KConcat {
            n: xs.len() as i32,
            ..KConcat::default()
        };
        let mut total = 0i64;
        for (i, &x) in xs.iter().enumerate() {
            let bytes = self.plan.shape(x)[axis] as i64 * inner * e;
            let p = self.ptr(x);
            if bytes % 16 != 0 || !p.is_multiple_of(16) {
                return Ok(false);
            }
            k.x[i] = p;
            k.run[i] = (bytes / 16) as u32;
            k.off[i] = total as u32;
            total += bytes / 16;
        }
        if outer * total > u32::MAX as i64 {
            return Ok(false);
        }
        k.total = total as u32;
        let outer = outer as u32;
        let mut b = self.stream.launch_builder(&self.kernels.concat_vec);
        b.arg(&y).arg(&outer).arg(&k);
        // SAFETY: every input holds outer rows of its run; y holds outer rows of total.
        unsafe { b.launch(grid(outer as usize * total as usize)) }?;
        Ok(true)
    }

    /// A permutation that swaps two adjacent groups of dimensions (NCHW <-> NHWC, or two
    /// middle dimensions over a contiguous inner block) by the tiled or row kernels; returns
    /// false (nothing launched) for any other permutation or sizes that do not fit.
    fn transpose_fast(
        &self,
        x: u64,
        y: u64,
        shape: &[usize],
        perm: &[usize],
    ) -> Result<bool, EngineBuildError> {
        let Some((batch, r, s, inner)) = swap_form(shape, perm) else {
            return Ok(false);
        };
        let fits = |v: usize| v <= u32::MAX as usize;
        if !fits(batch * r * s * inner) {
            return Ok(false);
        }
        let e = self.math.elem_bytes();
        if inner == 1 && r.min(s) <= SMALL_TRANSPOSE_DIM {
            // One thread per element of the long dimension (a 3-channel image: 32x32 tiles
            // would leave 29 of every 32 threads idle).
            let small_r = i32::from(r <= s);
            let long = if r <= s { s } else { r };
            let (bt, r, s) = (batch as u32, r as u32, s as u32);
            let mut b = self.stream.launch_builder(&self.kernels.transpose_small);
            b.arg(&x).arg(&y).arg(&bt).arg(&r).arg(&s).arg(&small_r);
            // SAFETY: x and y hold batch * r * s elements.
            unsafe { b.launch(grid(batch * long)) }?;
            return Ok(true);
        }
        if inner == 1 && batch <= 65_535 && r.div_ceil(32) <= 65_535 {
            let cfg = LaunchConfig {
                grid_dim: (s.div_ceil(32) as u32, r.div_ceil(32) as u32, batch as u32),
                block_dim: (32, 8, 1),
                shared_mem_bytes: 0,
            };
            let (r, s) = (r as u32, s as u32);
            let mut b = self.stream.launch_builder(&self.kernels.transpose_tiles);
            b.arg(&x).arg(&y).arg(&r).arg(&s);
            // SAFETY: x and y hold batch * r * s elements; the kernel bounds-checks the tiles.
            unsafe { b.launch(cfg) }?;
            return Ok(true);
        }
        if (inner * e).is_multiple_of(16) {
            let ku = (inner * e / 16) as u32;
            let (bt, r, s) = (batch as u32, r as u32, s as u32);
            let mut b = self.stream.launch_builder(&self.kernels.transpose_rows_vec);
            b.arg(&x).arg(&y).arg(&bt).arg(&r).arg(&s).arg(&ku);
            // SAFETY: x and y hold batch * r * s rows of ku 16-byte units, 256-byte aligned.
            unsafe { b.launch(grid((bt * r * s * ku) as usize)) }?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Copies `outer` runs of `run` bytes from `x + o * x_pitch + x_off` to
    /// `y + o * y_pitch + y_off` (`[run, x_pitch, x_off]`, `[y_pitch, y_off]`) 16 bytes a
    /// thread, when every size and offset is a multiple of 16 and the units fit 32 bits;
    /// returns false (nothing launched) otherwise.
    fn copy_runs(
        &self,
        x: u64,
        y: u64,
        outer: i64,
        [run, x_pitch, x_off]: [i64; 3],
        [y_pitch, y_off]: [i64; 2],
    ) -> Result<bool, EngineBuildError> {
        let all = [run, x_pitch, x_off, y_pitch, y_off];
        let units = |b: i64| b / 16;
        let fits = (outer * x_pitch.max(y_pitch) / 16) <= u32::MAX as i64;
        if !fits
            || all.iter().any(|&b| b % 16 != 0)
            || !x.is_multiple_of(16)
            || !y.is_multiple_of(16)
        {
            return Ok(false);
        }
        let v: [u32; 6] = [
            outer as u32,
            units(run) as u32,
            units(x_pitch) as u32,
            units(x_off) as u32,
            units(y_pitch) as u32,
            units(y_off) as u32,
        ];
        let mut b = self.stream.launch_builder(&self.kernels.copy_runs_vec);
        b.arg(&x).arg(&y);
        for a in &v {
            b.arg(a);
        }
        // SAFETY: the runs lie inside x and y (sizes from the plan's shapes), 16-byte aligned.
        unsafe { b.launch(grid((v[0] * v[1]) as usize)) }?;
        Ok(true)
    }

    /// Copies a packed `[outer, rows, inner]` tensor at `x` into rows `off..off + rows` of
    /// the `[outer, y_rows, inner]` tensor at `y` (`[y_rows, off]`): in 16-byte runs where
    /// they allow it, else element by element.
    fn copy_into_slice(
        &self,
        x: u64,
        y: u64,
        outer: i64,
        inner: i64,
        rows: i64,
        [y_rows, off]: [i64; 2],
    ) -> Result<(), EngineBuildError> {
        let e = self.math.elem_bytes() as i64;
        let run = rows * inner * e;
        if self.copy_runs(
            x,
            y,
            outer,
            [run, run, 0],
            [y_rows * inner * e, off * inner * e],
        )? {
            return Ok(());
        }
        self.copy_rows(x, y, outer, rows, rows, y_rows, inner, 0, 1, off)
    }

    #[allow(clippy::too_many_arguments)]
    fn copy_rows(
        &self,
        x: u64,
        y: u64,
        outer: i64,
        rows: i64,
        x_rows: i64,
        y_rows: i64,
        inner: i64,
        start: i64,
        step: i64,
        y_off: i64,
    ) -> Result<(), EngineBuildError> {
        let mut b = self.stream.launch_builder(&self.kernels.copy_rows);
        b.arg(&x)
            .arg(&y)
            .arg(&outer)
            .arg(&rows)
            .arg(&x_rows)
            .arg(&y_rows)
            .arg(&inner)
            .arg(&start)
            .arg(&step)
            .arg(&y_off);
        // SAFETY: row ranges from the plan's shapes stay inside x and y.
        unsafe { b.launch(grid((outer * rows * inner) as usize)) }?;
        Ok(())
    }

    fn capture(&mut self) -> Result<(), EngineBuildError> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        // One eager run first: cuDNN may allocate or tune on first use, which capture forbids.
        self.enqueue()?;
        self.stream.synchronize()?;
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let enq = self.enqueue();
        let graph = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(|e| EngineBuildError::Gpu(e.into()));
        enq?;
        let graph = graph?.ok_or_else(|| {
            EngineBuildError::Gpu(GpuError::InvalidInput("empty cuda graph".into()))
        })?;
        graph.upload()?;
        self.graph = Some(graph);
        Ok(())
    }

    /// Enqueues one inference over what the input buffer holds (graph replay or eager).
    pub fn launch(&self) -> Result<(), EngineBuildError> {
        match &self.graph {
            Some(g) => Ok(g.launch()?),
            None => self.enqueue(),
        }
    }

    /// Copies `input` in, runs, and returns every output (synchronous).
    pub fn run(&mut self, input: &[f32]) -> Result<Vec<Vec<f32>>, EngineBuildError> {
        let t = self.plan.input;
        let expected = self.plan.tensors[t].numel();
        if input.len() != expected {
            return Err(EngineBuildError::Shape(format!(
                "input has {} values, the plan takes {expected}",
                input.len()
            )));
        }
        let r = self.tensor_bytes(t);
        self.stream.memcpy_htod(
            to_elems(input, self.math).as_slice(),
            &mut self.arena.slice_mut(r),
        )?;
        self.launch()?;
        let mut raw = Vec::new();
        for (_, o) in &self.plan.outputs {
            raw.push(
                self.stream
                    .clone_dtoh(&self.arena.slice(self.tensor_bytes(*o)))?,
            );
        }
        self.stream.synchronize()?;
        Ok(raw.iter().map(|b| from_elems(b, self.math)).collect())
    }

    /// Times `iters` launches with CUDA events (input left as it is); median ms per run.
    pub fn time(&self, iters: usize) -> Result<f64, EngineBuildError> {
        let mut v = Vec::with_capacity(iters);
        for _ in 0..3 {
            self.launch()?;
        }
        for _ in 0..iters.max(1) {
            let start = self.stream.record_event(TIMED)?;
            self.launch()?;
            let end = self.stream.record_event(TIMED)?;
            end.synchronize()?;
            v.push(f64::from(start.elapsed_ms(&end)?));
        }
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    }

    /// Per-op device time of one eager run, ms, in plan order (for finding the slow ops);
    /// a convolution is two entries, the cuDNN call (`conv`) and its bias and activation
    /// (`conv_epilogue`).
    pub fn profile(&self) -> Result<Vec<OpTime>, EngineBuildError> {
        let mut out = Vec::with_capacity(self.plan.ops.len() * 2);
        let mut timed = |kind: &'static str,
                         op: usize,
                         f: &dyn Fn() -> Result<(), EngineBuildError>|
         -> Result<(), EngineBuildError> {
            let start = self.stream.record_event(TIMED)?;
            f()?;
            let end = self.stream.record_event(TIMED)?;
            end.synchronize()?;
            let op_ref = &self.plan.ops[op];
            let shapes = |t: &[usize]| {
                t.iter()
                    .map(|&t| format!("{:?}", self.plan.shape(t)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            out.push(OpTime {
                op,
                kind,
                detail: format!(
                    "{} -> {}",
                    shapes(&op_ref.inputs()),
                    shapes(&[op_ref.output()])
                ),
                ms: f64::from(start.elapsed_ms(&end)?),
            });
            Ok(())
        };
        for (i, op) in self.plan.ops.iter().enumerate() {
            if let Some(st) = &self.stem {
                if st.transpose == i {
                    continue;
                }
                if st.conv == i {
                    timed("conv_stem", i, &|| self.enqueue_op(i, op))?;
                    continue;
                }
            }
            match (op, self.convs[i].as_ref()) {
                (Op::Conv(_), Some(l)) if l.few.is_some() => {
                    timed("conv_1x1_few", i, &|| self.enqueue_op(i, op))?
                }
                (Op::Conv(_), Some(l)) if l.dw.is_some() => {
                    timed("conv_dw", i, &|| self.enqueue_op(i, op))?
                }
                (Op::Conv(_), Some(l)) if l.fused.is_some() => {
                    timed("conv_fused", i, &|| self.enqueue_op(i, op))?
                }
                (Op::Conv(c), Some(l)) => {
                    timed("conv", i, &|| {
                        self.conv_call(l, l.algo, self.ptr(c.x), self.ptr(c.y))
                    })?;
                    timed("conv_epilogue", i, &|| self.conv_epilogue(c, l))?;
                }
                _ => timed(op.kind(), i, &|| self.enqueue_op(i, op))?,
            }
        }
        Ok(out)
    }
}

/// One entry of [`CudaEngine::profile`].
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// Index of the op in the plan.
    pub op: usize,
    /// What ran (the op's kind, or `conv` / `conv_epilogue`).
    pub kind: &'static str,
    /// Input and output shapes.
    pub detail: String,
    /// Device time, ms.
    pub ms: f64,
}

impl Drop for CudaEngine {
    fn drop(&mut self) {
        let _ = self.stream.synchronize();
        // SAFETY: every descriptor and the handle were created by this engine and are not
        // used after this point.
        unsafe {
            for l in self.convs.iter().flatten() {
                let _ = dnn::destroy_tensor_descriptor(l.x_desc);
                let _ = dnn::destroy_tensor_descriptor(l.y_desc);
                let _ = dnn::destroy_filter_descriptor(l.w_desc);
                let _ = dnn::destroy_convolution_descriptor(l.conv_desc);
            }
            let _ = dnn::destroy_handle(self.handle);
            if let Some((h, _)) = self.blas.take() {
                let _ = cudarc::cublas::result::destroy_handle(h);
            }
        }
    }
}

/// Transposes with a dimension at most this long take `transpose_small`.
const SMALL_TRANSPOSE_DIM: usize = 16;

/// Bytes of the workspace each engine gives cuBLAS.
const CUBLAS_WORKSPACE: usize = 8 << 20;

/// A cuBLAS handle on `stream` with its own workspace, or `None` (logged) when cuBLAS cannot
/// be loaded or set up: the matrix products then run on our kernel.
fn cublas_on(stream: &Arc<CudaStream>) -> Option<(blas::cublasHandle_t, CudaSlice<u8>)> {
    // SAFETY: only tries to dlopen the library by name.
    let present = catch_unwind(|| unsafe { blas::is_culib_present() }).unwrap_or(false);
    if !present {
        tracing::info!("cuBLAS not loadable: matrix products on the engine's own kernel");
        return None;
    }
    let h = catch_unwind(cudarc::cublas::result::create_handle)
        .ok()?
        .ok()?;
    let ws = stream.alloc_zeros::<u8>(CUBLAS_WORKSPACE).ok()?;
    let wp = ws.device_ptr(stream).0;
    // SAFETY: a new handle, the engine's stream and a workspace the engine keeps with it.
    let ok = unsafe {
        blas::cublasSetStream_v2(h, stream.cu_stream() as blas::cudaStream_t)
            == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS
            && blas::cublasSetWorkspace_v2(h, wp as *mut std::ffi::c_void, CUBLAS_WORKSPACE)
                == blas::cublasStatus_t::CUBLAS_STATUS_SUCCESS
    };
    if !ok {
        // SAFETY: created above, not used after.
        let _ = unsafe { cudarc::cublas::result::destroy_handle(h) };
        tracing::warn!("cuBLAS handle setup failed: matrix products on the engine's own kernel");
        return None;
    }
    Some((h, ws))
}

/// `perm` as `[batch.., R.., S.., inner..] -> [batch.., S.., R.., inner..]`: the products
/// (batch, R, S, inner) of `shape` over those groups, or `None` for another permutation.
fn swap_form(shape: &[usize], perm: &[usize]) -> Option<(usize, usize, usize, usize)> {
    let a = (0..perm.len()).find(|&i| perm[i] != i)?;
    let e = (0..perm.len()).rev().find(|&i| perm[i] != i)?;
    let m = perm[a];
    // perm[a..=e] = m, m+1, .., e, a, a+1, .., m-1
    let want: Vec<usize> = (m..=e).chain(a..m).collect();
    if m <= a || perm[a..=e] != want[..] {
        return None;
    }
    let p = |r: std::ops::Range<usize>| shape[r].iter().product::<usize>();
    Some((p(0..a), p(a..m), p(m..e + 1), p(e + 1..shape.len())))
}

/// The cuDNN logical shapes of channels-last convolution `c` (`x` and `y` stored NHWC).
fn fused_shape(plan: &Plan, c: &Conv) -> FusedShape {
    let (x, y) = (plan.shape(c.x), plan.shape(c.y));
    let i = |v: usize| v as i64;
    let pitch = |t: Tid| i(plan.tensors[t].pitch());
    FusedShape {
        x: [i(x[0]), i(x[3]), i(x[1]), i(x[2])],
        y: [i(y[0]), i(y[3]), i(y[1]), i(y[2])],
        w: [i(c.m), i(x[3] / c.group), i(c.kernel[0]), i(c.kernel[1])],
        pad: [i(c.pad[0]), i(c.pad[1])],
        stride: [i(c.stride[0]), i(c.stride[1])],
        dilation: [i(c.dilation[0]), i(c.dilation[1])],
        act: c.act,
        residual: c.residual.is_some(),
        pitch: [pitch(c.x), pitch(c.y), c.residual.map_or(i(y[3]), pitch)],
    }
}

/// The plan's input shape as four dimensions (missing ones 1).
fn input_shape_of(plan: &Plan) -> [usize; 4] {
    let s = plan.shape(plan.input);
    [
        s[0],
        s.get(1).copied().unwrap_or(1),
        s.get(2).copied().unwrap_or(1),
        s.get(3).copied().unwrap_or(1),
    ]
}

/// The cache key of a build of this plan on `gpu`.
fn cache_key(
    gpu: &GpuContext,
    cache: &EngineCache,
    opts: EngineOptions,
    nhwc: bool,
    input_shape: [usize; 4],
) -> CacheKey {
    CacheKey {
        format: cache::CACHE_FORMAT,
        gpu: gpu.device_name().to_owned(),
        compute_capability: gpu.compute_capability(),
        driver: driver_version(),
        cudnn: dnn::get_version(),
        model_sha256: cache.model_sha256.clone(),
        math: opts.math.as_str().to_owned(),
        nhwc,
        direct_depthwise: opts.direct_depthwise,
        concat_in_place: nhwc && opts.fused && opts.concat_in_place,
        input_shape,
    }
}

/// The CUDA driver API version and the kernel module's version (Linux), e.g.
/// `cuda 13.0, module 580.159.04`.
fn driver_version() -> String {
    let mut v: std::ffi::c_int = 0;
    // SAFETY: writes one int; the driver is loaded (a GpuContext exists).
    let ok = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) }
        .result()
        .is_ok();
    let cuda = if ok {
        format!("cuda {}.{}", v / 1000, (v % 1000) / 10)
    } else {
        "cuda unknown".to_owned()
    };
    // "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build ..."
    let module = std::fs::read_to_string("/proc/driver/nvidia/version")
        .ok()
        .and_then(|t| module_version(&t))
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cuda}, module {module}")
}

/// The first dotted number (`580.159.04`) of the NVRM line of `/proc/driver/nvidia/version`.
fn module_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM"))?;
    line.split_whitespace()
        .find(|w| {
            w.contains('.')
                && w.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Op, Plan};
    use its_model::synth::{Arch, SynthSpec, build};

    fn plan(arch: Arch) -> Plan {
        plan_with(arch, 3)
    }

    fn plan_with(arch: Arch, classes: usize) -> Plan {
        let spec = SynthSpec {
            arch,
            seed: 1,
            imgsz: 64,
            classes,
        };
        Plan::build(&build(&spec).unwrap(), [2, 3, 64, 64]).unwrap()
    }

    #[test]
    fn the_stem_kernel_takes_the_first_convolution_of_a_channels_last_yolo_plan() {
        for arch in [Arch::Yolo11n, Arch::Yolov8n] {
            let nchw = plan(arch);
            assert_eq!(
                super::find_stem(&nchw),
                None,
                "{arch:?}: no transpose to remove"
            );
            let nhwc = super::super::layout::to_nhwc(&nchw);
            let (t, c) = super::find_stem(&nhwc).expect("a stem");
            assert!(
                matches!(&nhwc.ops[t], Op::Transpose { x, .. } if *x == nhwc.input),
                "{arch:?}: op {t} is the input transpose"
            );
            let Op::Conv(conv) = &nhwc.ops[c] else {
                panic!("{arch:?}: op {c} is not a convolution")
            };
            assert_eq!((conv.kernel, conv.group, conv.nhwc), ([3, 3], 1, true));
            assert_eq!(nhwc.shape(nhwc.input)[1], 3);
            // The transposed input has no other reader.
            let Op::Transpose { y, .. } = &nhwc.ops[t] else {
                unreachable!()
            };
            let readers = nhwc.ops.iter().filter(|o| o.inputs().contains(y)).count();
            assert_eq!(readers, 1);
        }
    }

    #[test]
    fn only_the_dfl_convolution_runs_on_the_few_outputs_kernel() {
        // 80 classes: the class heads' last convolutions have 80 outputs, the box heads' 64.
        for arch in [Arch::Yolo11n, Arch::Yolov8n] {
            let nchw = plan_with(arch, 80);
            let nhwc = super::super::layout::to_nhwc(&nchw);
            for p in [&nchw, &nhwc] {
                let few: Vec<_> = p
                    .ops
                    .iter()
                    .filter_map(|o| match o {
                        Op::Conv(c) if super::few_outputs_1x1(c, p.shape(c.x)[1]) => Some(c),
                        _ => None,
                    })
                    .collect();
                assert_eq!(few.len(), 1, "{arch:?}: one DFL convolution");
                assert_eq!((few[0].m, p.shape(few[0].x)[1]), (1, 16), "{arch:?}");
            }
        }
    }

    #[test]
    fn the_depthwise_kernel_takes_yolo11s_depthwise_convolutions_in_channels_last_plans() {
        // Input channels: the last dimension channels-last, the second otherwise.
        let cin = |p: &Plan, c: &super::Conv| {
            let x = p.shape(c.x);
            if c.nhwc { x[3] } else { x[1] }
        };
        let count = |p: &Plan| {
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::Conv(c) if super::depthwise_nhwc(c, cin(p, c))))
                .count()
        };
        // YOLO11: the attention's positional convolution, and two in each of the three
        // levels' class branches. YOLOv8 has none.
        for (arch, expected) in [(Arch::Yolo11n, 7), (Arch::Yolov8n, 0)] {
            let nchw = plan_with(arch, 80);
            assert_eq!(count(&nchw), 0, "{arch:?}: NCHW plans keep cuDNN");
            let nhwc = super::super::layout::to_nhwc(&nchw);
            assert_eq!(count(&nhwc), expected, "{arch:?}");
            for o in &nhwc.ops {
                if let Op::Conv(c) = o
                    && super::depthwise_nhwc(c, cin(&nhwc, c))
                {
                    assert_eq!(c.group, c.m, "{arch:?}: one filter per channel");
                    assert_eq!(nhwc.shape(c.x)[3], nhwc.shape(c.y)[3]);
                }
            }
        }
    }

    #[test]
    fn layout_permutations_are_recognised_as_a_swap_of_two_groups() {
        let s = [2, 3, 5, 7];
        // NCHW -> NHWC: [n, c, hw] -> [n, hw, c].
        assert_eq!(super::swap_form(&s, &[0, 2, 3, 1]), Some((2, 3, 35, 1)));
        // NHWC -> NCHW.
        assert_eq!(super::swap_form(&s, &[0, 3, 1, 2]), Some((2, 15, 7, 1)));
        // Two middle dimensions over an inner block.
        assert_eq!(super::swap_form(&s, &[0, 2, 1, 3]), Some((2, 3, 5, 7)));
        assert_eq!(super::swap_form(&s, &[1, 0, 2, 3]), Some((1, 2, 3, 35)));
        // Not a swap of two groups, or no permutation at all.
        assert_eq!(super::swap_form(&s, &[0, 3, 2, 1]), None);
        assert_eq!(super::swap_form(&s, &[0, 1, 2, 3]), None);
    }

    #[test]
    fn the_kernel_module_version_is_read_from_the_nvrm_line() {
        let open = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22-I3-AF03-09-1)  Sun May 18 2025\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n";
        assert_eq!(super::module_version(open).as_deref(), Some("580.159.04"));
        let closed = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 19:39:15 UTC 2024\n";
        assert_eq!(super::module_version(closed).as_deref(), Some("535.183.01"));
        assert_eq!(super::module_version("garbage"), None);
    }
}
