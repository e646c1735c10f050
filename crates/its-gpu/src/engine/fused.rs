//! One convolution with its bias and activation (and, where the plan fused one, the residual
//! added after the activation) as a single cuDNN operation graph (the backend API:
//! convolution -> add bias -> activation [-> add residual], the intermediates virtual FP32), for
//! the channels-last FP16 engine. cuDNN compiles or picks one kernel for the graph, so the
//! convolution's output is written once, already biased and activated, instead of being
//! written by cuDNN and then read and written again by `bias_act`.
//!
//! The executor ([`super::cuda`]) asks cuDNN's heuristic for engine configurations, times up
//! to a few of them against the separate convolution + `bias_act` pair, and keeps whichever is
//! faster, per layer. Any step cuDNN refuses (an unsupported shape, grouped convolutions on
//! some versions) leaves that layer on the separate pair, with the reason in the build log.

use std::ffi::c_void;

use cudarc::cudnn::sys as dnn;
use dnn::cudnnBackendAttributeName_t as A;
use dnn::cudnnBackendAttributeType_t as T;
use dnn::cudnnBackendDescriptorType_t as D;

use super::plan::Act;

/// Tensor ids in the variant pack.
const UID_X: i64 = 1;
const UID_W: i64 = 2;
const UID_B: i64 = 3;
const UID_Y: i64 = 4;
const UID_CONV: i64 = 10;
const UID_BIASED: i64 = 11;
const UID_R: i64 = 5;
/// The virtual intermediates of the pointwise chain, in order.
const VIRTUAL_UIDS: [i64; 2] = [UID_BIASED, 12];

/// One backend descriptor, destroyed on drop.
pub(super) struct Desc(dnn::cudnnBackendDescriptor_t);

impl Desc {
    fn new(kind: D) -> Result<Self, String> {
        let mut d: dnn::cudnnBackendDescriptor_t = std::ptr::null_mut();
        // SAFETY: writes one descriptor handle.
        check(
            unsafe { dnn::cudnnBackendCreateDescriptor(kind, &mut d) },
            || format!("create {kind:?}"),
        )?;
        Ok(Self(d))
    }

    fn set<V>(&self, name: A, ty: T, values: &[V]) -> Result<&Self, String> {
        // SAFETY: `values` holds `values.len()` elements of the type `ty` names (the callers
        // pair them: i64 with INT64, f32 with FLOAT, descriptors with BACKEND_DESCRIPTOR...).
        check(
            unsafe {
                dnn::cudnnBackendSetAttribute(
                    self.0,
                    name,
                    ty,
                    values.len() as i64,
                    values.as_ptr().cast(),
                )
            },
            || format!("set {name:?}"),
        )?;
        Ok(self)
    }

    /// Reads attribute `name` into `out` (room for `capacity` elements of the type `ty`
    /// names); returns how many cuDNN wrote.
    ///
    /// # Safety
    /// `out` must hold `capacity` elements of that type (or be null with capacity 0).
    unsafe fn get<V>(&self, name: A, ty: T, capacity: i64, out: *mut V) -> Result<i64, String> {
        let mut n = 0i64;
        // SAFETY: the caller's promise about `out`.
        check(
            unsafe {
                dnn::cudnnBackendGetAttribute(self.0, name, ty, capacity, &mut n, out.cast())
            },
            || format!("get {name:?}"),
        )?;
        Ok(n)
    }

    fn finalize(self) -> Result<Self, String> {
        // SAFETY: a descriptor with its attributes set.
        check(unsafe { dnn::cudnnBackendFinalize(self.0) }, || {
            "finalize".to_owned()
        })?;
        Ok(self)
    }
}

impl Drop for Desc {
    fn drop(&mut self) {
        // SAFETY: created by cudnnBackendCreateDescriptor, dropped once.
        unsafe {
            let _ = dnn::cudnnBackendDestroyDescriptor(self.0);
        }
    }
}

fn check(status: dnn::cudnnStatus_t, what: impl FnOnce() -> String) -> Result<(), String> {
    if status == dnn::cudnnStatus_t::CUDNN_STATUS_SUCCESS {
        Ok(())
    } else {
        Err(format!("{}: {status:?}", what()))
    }
}

/// The shapes of one channels-last FP16 convolution layer (cuDNN's logical `[n, c, h, w]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct FusedShape {
    /// Input `[n, c, h, w]`.
    pub x: [i64; 4],
    /// Output `[n, k, p, q]`.
    pub y: [i64; 4],
    /// Filter `[k, c / group, r, s]`.
    pub w: [i64; 4],
    pub pad: [i64; 2],
    pub stride: [i64; 2],
    pub dilation: [i64; 2],
    pub act: Act,
    /// A residual of the output's shape is added after the activation.
    pub residual: bool,
    /// Elements from one pixel to the next of the input, the output and the residual: their
    /// channel counts, or a wider concatenation's when the tensor is a slice of one.
    pub pitch: [i64; 3],
}

/// Channels-last strides of logical `[n, c, h, w]` dims whose pixels lie `pitch` elements
/// apart (`c` when packed).
fn nhwc_strides(d: [i64; 4], pitch: i64) -> [i64; 4] {
    [pitch * d[2] * d[3], 1, d[3] * pitch, pitch]
}

fn tensor(uid: i64, dims: [i64; 4], ty: dnn::cudnnDataType_t, virt: bool) -> Result<Desc, String> {
    strided(uid, dims, dims[1], ty, virt)
}

fn strided(
    uid: i64,
    dims: [i64; 4],
    pitch: i64,
    ty: dnn::cudnnDataType_t,
    virt: bool,
) -> Result<Desc, String> {
    let t = Desc::new(D::CUDNN_BACKEND_TENSOR_DESCRIPTOR)?;
    t.set(
        A::CUDNN_ATTR_TENSOR_DATA_TYPE,
        T::CUDNN_TYPE_DATA_TYPE,
        &[ty],
    )?
    .set(A::CUDNN_ATTR_TENSOR_DIMENSIONS, T::CUDNN_TYPE_INT64, &dims)?
    .set(
        A::CUDNN_ATTR_TENSOR_STRIDES,
        T::CUDNN_TYPE_INT64,
        &nhwc_strides(dims, pitch),
    )?
    .set(A::CUDNN_ATTR_TENSOR_UNIQUE_ID, T::CUDNN_TYPE_INT64, &[uid])?
    .set(
        A::CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT,
        T::CUDNN_TYPE_INT64,
        &[16i64],
    )?
    .set(
        A::CUDNN_ATTR_TENSOR_IS_VIRTUAL,
        T::CUDNN_TYPE_BOOLEAN,
        &[virt],
    )?;
    t.finalize()
}

fn pointwise_op(
    mode: dnn::cudnnPointwiseMode_t,
    act: Option<Act>,
    x: &Desc,
    b: Option<&Desc>,
    y: &Desc,
) -> Result<(Desc, Desc), String> {
    let pw = Desc::new(D::CUDNN_BACKEND_POINTWISE_DESCRIPTOR)?;
    pw.set(
        A::CUDNN_ATTR_POINTWISE_MODE,
        T::CUDNN_TYPE_POINTWISE_MODE,
        &[mode],
    )?
    .set(
        A::CUDNN_ATTR_POINTWISE_MATH_PREC,
        T::CUDNN_TYPE_DATA_TYPE,
        &[dnn::cudnnDataType_t::CUDNN_DATA_FLOAT],
    )?;
    if let Some(Act::LeakyRelu(alpha)) = act {
        pw.set(
            A::CUDNN_ATTR_POINTWISE_RELU_LOWER_CLIP_SLOPE,
            T::CUDNN_TYPE_DOUBLE,
            &[f64::from(alpha)],
        )?;
    }
    let pw = pw.finalize()?;
    let op = Desc::new(D::CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR)?;
    op.set(
        A::CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &[pw.0],
    )?
    .set(
        A::CUDNN_ATTR_OPERATION_POINTWISE_XDESC,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &[x.0],
    )?;
    if let Some(b) = b {
        op.set(
            A::CUDNN_ATTR_OPERATION_POINTWISE_BDESC,
            T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
            &[b.0],
        )?;
    }
    op.set(
        A::CUDNN_ATTR_OPERATION_POINTWISE_YDESC,
        T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
        &[y.0],
    )?;
    Ok((pw, op.finalize()?))
}

/// The pointwise mode of an activation, `None` for the identity; `Err` for one cuDNN's
/// pointwise graph has no mode for here.
fn act_mode(act: Act) -> Result<Option<dnn::cudnnPointwiseMode_t>, String> {
    use dnn::cudnnPointwiseMode_t as P;
    Ok(match act {
        Act::None => None,
        Act::Silu => Some(P::CUDNN_POINTWISE_SWISH_FWD),
        Act::Sigmoid => Some(P::CUDNN_POINTWISE_SIGMOID_FWD),
        Act::Relu | Act::LeakyRelu(_) => Some(P::CUDNN_POINTWISE_RELU_FWD),
        Act::Exp => return Err("exp activation is not fused".into()),
    })
}

/// The finalized operation graph of one layer (its descriptors kept alive with it).
pub(super) struct FusedGraph {
    graph: Desc,
    _parts: Vec<Desc>,
}

impl FusedGraph {
    /// Builds and finalizes the graph conv -> add bias -> activation for `shape`.
    pub(super) fn new(handle: dnn::cudnnHandle_t, shape: &FusedShape) -> Result<Self, String> {
        let half = dnn::cudnnDataType_t::CUDNN_DATA_HALF;
        let float = dnn::cudnnDataType_t::CUDNN_DATA_FLOAT;
        let act = act_mode(shape.act)?;
        let x = strided(UID_X, shape.x, shape.pitch[0], half, false)?;
        let w = tensor(UID_W, shape.w, half, false)?;
        let b = tensor(UID_B, [1, shape.y[1], 1, 1], half, false)?;
        let conv_out = tensor(UID_CONV, shape.y, float, true)?;
        let y = strided(UID_Y, shape.y, shape.pitch[1], half, false)?;
        let conv = Desc::new(D::CUDNN_BACKEND_CONVOLUTION_DESCRIPTOR)?;
        conv.set(
            A::CUDNN_ATTR_CONVOLUTION_COMP_TYPE,
            T::CUDNN_TYPE_DATA_TYPE,
            &[float],
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_CONV_MODE,
            T::CUDNN_TYPE_CONVOLUTION_MODE,
            &[dnn::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION],
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_SPATIAL_DIMS,
            T::CUDNN_TYPE_INT64,
            &[2i64],
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_DILATIONS,
            T::CUDNN_TYPE_INT64,
            &shape.dilation,
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_FILTER_STRIDES,
            T::CUDNN_TYPE_INT64,
            &shape.stride,
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_PRE_PADDINGS,
            T::CUDNN_TYPE_INT64,
            &shape.pad,
        )?
        .set(
            A::CUDNN_ATTR_CONVOLUTION_POST_PADDINGS,
            T::CUDNN_TYPE_INT64,
            &shape.pad,
        )?;
        let conv = conv.finalize()?;
        let conv_op = Desc::new(D::CUDNN_BACKEND_OPERATION_CONVOLUTION_FORWARD_DESCRIPTOR)?;
        conv_op
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_X,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &[x.0],
            )?
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_W,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &[w.0],
            )?
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_Y,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &[conv_out.0],
            )?
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_CONV_DESC,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &[conv.0],
            )?
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_ALPHA,
                T::CUDNN_TYPE_FLOAT,
                &[1.0f32],
            )?
            .set(
                A::CUDNN_ATTR_OPERATION_CONVOLUTION_FORWARD_BETA,
                T::CUDNN_TYPE_FLOAT,
                &[0.0f32],
            )?;
        let conv_op = conv_op.finalize()?;
        let mut ops = vec![conv_op];
        // The chain after the convolution: + bias, the activation, + the residual; each
        // stage but the last writes a virtual FP32 tensor, the last writes y.
        let add = dnn::cudnnPointwiseMode_t::CUDNN_POINTWISE_ADD;
        let residual = shape
            .residual
            .then(|| strided(UID_R, shape.y, shape.pitch[2], half, false))
            .transpose()?;
        let mut stages: Vec<(dnn::cudnnPointwiseMode_t, Option<Act>, Option<&Desc>)> =
            vec![(add, None, Some(&b))];
        if let Some(mode) = act {
            stages.push((mode, Some(shape.act), None));
        }
        if let Some(r) = &residual {
            stages.push((add, None, Some(r)));
        }
        let mut keep = Vec::new();
        let mut input = conv_out;
        let last = stages.len() - 1;
        for (k, (mode, stage_act, operand)) in stages.into_iter().enumerate() {
            let out = if k == last {
                None
            } else {
                Some(tensor(VIRTUAL_UIDS[k], shape.y, float, true)?)
            };
            let (pw, op) =
                pointwise_op(mode, stage_act, &input, operand, out.as_ref().unwrap_or(&y))?;
            ops.push(op);
            keep.push(pw);
            if let Some(o) = out {
                keep.push(std::mem::replace(&mut input, o));
            }
        }
        keep.push(input);
        let mut parts = vec![x, w, b, y, conv];
        parts.extend(residual);
        parts.extend(keep);
        let graph = Desc::new(D::CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR)?;
        let op_ptrs: Vec<dnn::cudnnBackendDescriptor_t> = ops.iter().map(|o| o.0).collect();
        graph
            .set(
                A::CUDNN_ATTR_OPERATIONGRAPH_OPS,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &op_ptrs,
            )?
            .set(
                A::CUDNN_ATTR_OPERATIONGRAPH_HANDLE,
                T::CUDNN_TYPE_HANDLE,
                &[handle],
            )?;
        let graph = graph.finalize()?;
        parts.extend(ops);
        Ok(Self {
            graph,
            _parts: parts,
        })
    }

    /// Up to `max` execution plans, in the order of cuDNN's heuristic (mode A), each with its
    /// position in that order; engine configurations that fail to finalize are skipped.
    /// Also returns how many configurations the heuristic offered and why the skipped ones
    /// failed (the first few reasons).
    pub(super) fn plans(
        &self,
        handle: dnn::cudnnHandle_t,
        max: usize,
        only: Option<usize>,
    ) -> Result<(Vec<FusedPlan>, usize, Vec<String>), String> {
        let heur = Desc::new(D::CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR)?;
        heur.set(
            A::CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH,
            T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
            &[self.graph.0],
        )?
        .set(
            A::CUDNN_ATTR_ENGINEHEUR_MODE,
            T::CUDNN_TYPE_HEUR_MODE,
            &[dnn::cudnnBackendHeurMode_t::CUDNN_HEUR_MODE_A],
        )?;
        let heur = heur.finalize()?;
        let results = |capacity: i64, out: *mut dnn::cudnnBackendDescriptor_t| {
            // SAFETY: `out` is null with capacity 0 (a count query), or holds `capacity`
            // created ENGINECFG descriptors for cuDNN to fill.
            unsafe {
                heur.get(
                    A::CUDNN_ATTR_ENGINEHEUR_RESULTS,
                    T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                    capacity,
                    out,
                )
            }
        };
        let count = results(0, std::ptr::null_mut())?;
        let cfgs: Vec<Desc> = (0..count.max(0))
            .map(|_| Desc::new(D::CUDNN_BACKEND_ENGINECFG_DESCRIPTOR))
            .collect::<Result<_, _>>()?;
        let mut raw: Vec<dnn::cudnnBackendDescriptor_t> = cfgs.iter().map(|c| c.0).collect();
        let got = if raw.is_empty() {
            0
        } else {
            results(count, raw.as_mut_ptr())?
        };
        let mut plans = Vec::new();
        let mut why = Vec::new();
        for (i, cfg) in cfgs.iter().enumerate().take(got.max(0) as usize) {
            if plans.len() >= max {
                break;
            }
            if only.is_some_and(|o| o != i) {
                continue;
            }
            match FusedPlan::new(handle, cfg, i) {
                Ok(p) => plans.push(p),
                Err(e) if why.len() < 3 => why.push(format!("config {i}: {e}")),
                Err(_) => {}
            }
        }
        Ok((plans, got.max(0) as usize, why))
    }
}

/// A finalized execution plan of a [`FusedGraph`], with its variant pack once bound.
pub(super) struct FusedPlan {
    plan: Desc,
    pack: Option<Desc>,
    /// Position in the heuristic's order (what the engine cache keeps).
    pub index: usize,
    /// Workspace bytes the plan takes.
    pub workspace: usize,
}

impl FusedPlan {
    fn new(handle: dnn::cudnnHandle_t, cfg: &Desc, index: usize) -> Result<Self, String> {
        Self::finalized(
            Self::described(
                handle,
                A::CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG,
                T::CUDNN_TYPE_BACKEND_DESCRIPTOR,
                &[cfg.0],
            )?,
            index,
        )
    }

    /// A plan descriptor on `handle` with its one defining attribute set: the engine
    /// configuration, or the serialized plan.
    fn described<V>(
        handle: dnn::cudnnHandle_t,
        name: A,
        ty: T,
        values: &[V],
    ) -> Result<Desc, String> {
        let plan = Desc::new(D::CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR)?;
        plan.set(
            A::CUDNN_ATTR_EXECUTION_PLAN_HANDLE,
            T::CUDNN_TYPE_HANDLE,
            &[handle],
        )?
        .set(name, ty, values)?;
        Ok(plan)
    }

    /// Finalizes `plan` (cuDNN compiles a runtime-fusion kernel here) and reads its workspace.
    fn finalized(plan: Desc, index: usize) -> Result<Self, String> {
        let plan = plan.finalize()?;
        let mut ws = 0i64;
        // SAFETY: room for the one int64 asked for.
        unsafe {
            plan.get(
                A::CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE,
                T::CUDNN_TYPE_INT64,
                1,
                &mut ws,
            )
        }?;
        Ok(Self {
            plan,
            pack: None,
            index,
            workspace: ws.max(0) as usize,
        })
    }

    /// Restores a plan from what [`Self::json`] wrote (for a plan of the same graph, made on
    /// the same GPU, driver and cuDNN: the engine cache key checks those). cuDNN takes the
    /// compiled kernel from the text instead of compiling it again.
    pub(super) fn from_json(
        handle: dnn::cudnnHandle_t,
        json: &str,
        index: usize,
    ) -> Result<Self, String> {
        Self::finalized(
            Self::described(
                handle,
                A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                T::CUDNN_TYPE_CHAR,
                json.as_bytes(),
            )?,
            index,
        )
    }

    /// The plan serialized by cuDNN (`CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION`); `Err`
    /// for engines cuDNN cannot serialize (only its runtime-compiled ones can be).
    pub(super) fn json(&self) -> Result<String, String> {
        // SAFETY: a count query (null output, capacity 0).
        let n = unsafe {
            self.plan.get::<u8>(
                A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                T::CUDNN_TYPE_CHAR,
                0,
                std::ptr::null_mut(),
            )
        }?;
        if n <= 0 {
            return Err("cuDNN returned an empty plan serialization".into());
        }
        let mut buf = vec![0u8; n as usize];
        // SAFETY: `buf` holds `n` bytes.
        let got = unsafe {
            self.plan.get(
                A::CUDNN_ATTR_EXECUTION_PLAN_JSON_REPRESENTATION,
                T::CUDNN_TYPE_CHAR,
                n,
                buf.as_mut_ptr(),
            )
        }?;
        buf.truncate(got.clamp(0, n) as usize);
        while buf.last() == Some(&0) {
            buf.pop();
        }
        String::from_utf8(buf).map_err(|_| "plan serialization is not UTF-8".to_owned())
    }

    /// Binds the device pointers (input, weights, FP16 bias, output, residual, workspace);
    /// a residual of 0 is none (for a graph built without one).
    pub(super) fn bind(&mut self, [x, w, b, y, r]: [u64; 5], workspace: u64) -> Result<(), String> {
        let pack = Desc::new(D::CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR)?;
        let mut uids = vec![UID_X, UID_W, UID_B, UID_Y];
        let mut ptrs: Vec<*mut c_void> = [x, w, b, y].map(|p| p as *mut c_void).to_vec();
        if r != 0 {
            uids.push(UID_R);
            ptrs.push(r as *mut c_void);
        }
        pack.set(
            A::CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS,
            T::CUDNN_TYPE_INT64,
            &uids,
        )?
        .set(
            A::CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS,
            T::CUDNN_TYPE_VOID_PTR,
            &ptrs,
        )?
        .set(
            A::CUDNN_ATTR_VARIANT_PACK_WORKSPACE,
            T::CUDNN_TYPE_VOID_PTR,
            &[workspace as *mut c_void],
        )?;
        self.pack = Some(pack.finalize()?);
        Ok(())
    }

    /// Enqueues the layer on the handle's stream (after [`Self::bind`]).
    pub(super) fn execute(&self, handle: dnn::cudnnHandle_t) -> Result<(), String> {
        let pack = self.pack.as_ref().ok_or("fused plan not bound")?;
        // SAFETY: the plan and pack were finalized with pointers that stay valid while the
        // engine that owns them lives.
        check(
            unsafe { dnn::cudnnBackendExecute(handle, self.plan.0, pack.0) },
            || "execute".to_owned(),
        )
    }
}

// SAFETY: the descriptors are plain cuDNN objects used from one thread at a time (the engine
// that owns them is Send, not Sync, like the handle).
unsafe impl Send for Desc {}

/// A cuDNN handle lent to the build threads of [`prepare_all`].
struct LentHandle(dnn::cudnnHandle_t);

impl LentHandle {
    /// The handle (a method, so that closures capture the whole `Sync` wrapper).
    fn get(&self) -> dnn::cudnnHandle_t {
        self.0
    }
}

// SAFETY: the threads only finalize descriptors against the handle (what cuDNN's own frontend
// does from several threads to build plans in parallel); nothing is enqueued on its stream.
unsafe impl Send for LentHandle {}
// SAFETY: as above.
unsafe impl Sync for LentHandle {}

/// One layer to prepare: its shape, the engine configuration the cache names (if any) and
/// that configuration's serialized plan (if the cache holds one).
pub(super) struct FusedJob {
    pub op: usize,
    pub shape: FusedShape,
    pub only: Option<usize>,
    pub json: Option<String>,
}

/// What preparing one layer gave: the graph (absent when the plan came from its
/// serialization), its finalized plans, and notes on what failed.
pub(super) struct Prepared {
    pub op: usize,
    pub graph: Option<FusedGraph>,
    pub plans: Vec<FusedPlan>,
    pub notes: Vec<String>,
    /// Whether the plan was restored from its serialization.
    pub restored: bool,
}

/// Prepares one layer with up to `max` candidate plans.
fn prepare(handle: dnn::cudnnHandle_t, job: FusedJob, max: usize) -> Prepared {
    let mut out = Prepared {
        op: job.op,
        graph: None,
        plans: Vec::new(),
        notes: Vec::new(),
        restored: false,
    };
    if let (Some(json), Some(index)) = (job.json.as_deref(), job.only) {
        match FusedPlan::from_json(handle, json, index) {
            Ok(p) => {
                out.plans.push(p);
                out.restored = true;
                return out;
            }
            Err(e) => out
                .notes
                .push(format!("cached plan not restored, finalizing again: {e}")),
        }
    }
    let graph = match FusedGraph::new(handle, &job.shape) {
        Ok(g) => g,
        Err(e) => {
            out.notes.push(format!("graph: {e}"));
            return out;
        }
    };
    match graph.plans(handle, max, job.only) {
        Ok((plans, offered, why)) => {
            if plans.is_empty() {
                out.notes.push(format!(
                    "{offered} engine configs offered, none finalized ({})",
                    why.join("; ")
                ));
            }
            out.plans = plans;
        }
        Err(e) => out.notes.push(format!("heuristic: {e}")),
    }
    out.graph = Some(graph);
    out
}

/// Prepares every job (up to `max` candidate plans each) on up to `threads` threads (cuDNN's
/// kernel compilation in `finalize` is host work and dominates a cold build), each thread
/// bound to `ctx` first; results in job order.
pub(super) fn prepare_all(
    handle: dnn::cudnnHandle_t,
    ctx: &std::sync::Arc<cudarc::driver::CudaContext>,
    jobs: Vec<FusedJob>,
    max: usize,
    threads: usize,
) -> Vec<Prepared> {
    let n = jobs.len();
    let threads = threads.clamp(1, n.max(1));
    if threads == 1 {
        return jobs.into_iter().map(|j| prepare(handle, j, max)).collect();
    }
    let lent = LentHandle(handle);
    let queue = std::sync::Mutex::new(jobs.into_iter().enumerate().collect::<Vec<_>>());
    let done = std::sync::Mutex::new(Vec::with_capacity(n));
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                if let Err(e) = ctx.bind_to_thread() {
                    tracing::warn!(error = %e, "fused build thread could not bind the CUDA context");
                }
                loop {
                    let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                    let Some((k, job)) = next else { break };
                    let p = prepare(lent.get(), job, max);
                    if let Ok(mut d) = done.lock() {
                        d.push((k, p));
                    }
                }
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_default();
    done.sort_by_key(|(k, _)| *k);
    done.into_iter().map(|(_, p)| p).collect()
}
