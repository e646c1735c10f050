//! From an ONNX graph to a [`Plan`]: every shape fixed for one batch profile, every value that
//! does not depend on the input folded to a constant (the Shape/Gather/Range arithmetic of
//! exported graphs), the rest lowered to a short list of [`Op`]s over numbered tensors, with
//! Sigmoid·Mul recognised as SiLU and activations fused into the convolution before them.
//!
//! The CPU reference ([`super::cpu`]) and the CUDA executor ([`super::cuda`]) both run a
//! `Plan`, so the lowering is tested on machines without a GPU against ONNX Runtime.

use std::collections::HashMap;

use its_model::onnx::{AttributeProto, ModelProto, NodeProto, TensorProto};

use super::EngineBuildError;
use super::tensor::{
    Data, HostTensor, broadcast_index, broadcast_shape, broadcast_strides, norm_axis,
    transpose_index,
};

/// A tensor of the plan.
pub type Tid = usize;

/// Element-wise activation, alone or fused into a convolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Act {
    /// Identity.
    None,
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    /// `x * sigmoid(x)`.
    Silu,
    /// `max(x, 0)`.
    Relu,
    /// `x` if `x >= 0`, else `alpha * x`.
    LeakyRelu(f32),
    /// `exp(x)` (Darknet box sizes).
    Exp,
}

impl Act {
    /// The code the kernels take (`ACT_*` in `kernels/engine.cu`).
    pub fn code(self) -> i32 {
        match self {
            Act::None => 0,
            Act::Sigmoid => 1,
            Act::Silu => 2,
            Act::Relu => 3,
            Act::LeakyRelu(_) => 4,
            Act::Exp => 5,
        }
    }

    /// The LeakyRelu slope (0 for the others).
    pub fn alpha(self) -> f32 {
        match self {
            Act::LeakyRelu(a) => a,
            _ => 0.0,
        }
    }

    /// The activation of one value (the reference the kernels follow).
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Act::None => x,
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Silu => x / (1.0 + (-x).exp()),
            Act::Relu => x.max(0.0),
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::Exp => x.exp(),
        }
    }
}

/// Element-wise binary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `a + b`.
    Add,
    /// `a - b`.
    Sub,
    /// `a * b`.
    Mul,
    /// `a / b`.
    Div,
}

impl BinOp {
    /// The code the kernels take (`BIN_*` in `kernels/engine.cu`).
    pub fn code(self) -> i32 {
        match self {
            BinOp::Add => 0,
            BinOp::Sub => 1,
            BinOp::Mul => 2,
            BinOp::Div => 3,
        }
    }

    /// The operator on one pair.
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
        }
    }
}

/// A 2-D convolution (NCHW, weights `[out, in / group, kh, kw]`), with bias and a fused
/// activation.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv {
    /// Input `[n, c, h, w]`.
    pub x: Tid,
    /// Output `[n, m, oh, ow]`.
    pub y: Tid,
    /// Weights, `m * (c / group) * kh * kw` values.
    pub weight: Vec<f32>,
    /// Bias, `m` values (zeros when the graph has none).
    pub bias: Vec<f32>,
    /// Output channels.
    pub m: usize,
    /// Kernel height and width.
    pub kernel: [usize; 2],
    /// Strides (h, w).
    pub stride: [usize; 2],
    /// Padding (top, left, bottom, right).
    pub pad: [usize; 4],
    /// Dilations (h, w).
    pub dilation: [usize; 2],
    /// Groups.
    pub group: usize,
    /// Activation applied after the bias.
    pub act: Act,
    /// A tensor of the output's shape added after the activation (a residual connection:
    /// `y = act(conv(x) + bias) + residual`).
    pub residual: Option<Tid>,
    /// Input and output are stored `[n, h, w, c]` (see [`super::layout`]).
    pub nhwc: bool,
}

/// One step of a plan. Every op reads and writes whole tensors of the plan.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Convolution with bias and activation.
    Conv(Conv),
    /// `y = act(x)`.
    Act {
        /// Input.
        x: Tid,
        /// Output, same shape.
        y: Tid,
        /// Activation.
        act: Act,
    },
    /// `y = a op b` with numpy broadcasting; the strides read each input at `y`'s shape.
    Binary {
        /// Operator.
        op: BinOp,
        /// Left input.
        a: Tid,
        /// Right input.
        b: Tid,
        /// Output.
        y: Tid,
        /// Strides of `a` over `y`'s dimensions (0 where broadcast).
        a_strides: Vec<usize>,
        /// Strides of `b` over `y`'s dimensions.
        b_strides: Vec<usize>,
    },
    /// Concatenation along `axis`.
    Concat {
        /// Inputs in order.
        xs: Vec<Tid>,
        /// Output.
        y: Tid,
        /// Axis.
        axis: usize,
    },
    /// `y = x[.., start::step, ..]` along `axis` (Split and Slice), `y.shape[axis]` long.
    Narrow {
        /// Input.
        x: Tid,
        /// Output.
        y: Tid,
        /// Axis.
        axis: usize,
        /// First index read.
        start: usize,
        /// Step (>= 1).
        step: usize,
    },
    /// 2-D max pooling over `[n, c, h, w]`, padding never selected.
    MaxPool {
        /// Input.
        x: Tid,
        /// Output.
        y: Tid,
        /// Window (h, w).
        kernel: [usize; 2],
        /// Strides (h, w).
        stride: [usize; 2],
        /// Padding (top, left, bottom, right).
        pad: [usize; 4],
        /// Tensors are `[n, h, w, c]`.
        nhwc: bool,
    },
    /// Nearest-neighbour upsampling of `[n, c, h, w]` by integer factors.
    Upsample {
        /// Input.
        x: Tid,
        /// Output.
        y: Tid,
        /// Factors (h, w).
        factor: [usize; 2],
        /// Tensors are `[n, h, w, c]`.
        nhwc: bool,
    },
    /// Permutation of dimensions.
    Transpose {
        /// Input.
        x: Tid,
        /// Output.
        y: Tid,
        /// `y.shape[i] = x.shape[perm[i]]`.
        perm: Vec<usize>,
    },
    /// Batched matrix product `[.., m, k] x [.., k, n]`.
    MatMul {
        /// Left.
        a: Tid,
        /// Right.
        b: Tid,
        /// Output `[.., m, n]`.
        y: Tid,
    },
    /// Softmax along `axis`.
    Softmax {
        /// Input.
        x: Tid,
        /// Output.
        y: Tid,
        /// Axis.
        axis: usize,
    },
}

impl Op {
    /// The tensors the op reads.
    pub fn inputs(&self) -> Vec<Tid> {
        match self {
            Op::Conv(c) => std::iter::once(c.x).chain(c.residual).collect(),
            Op::Act { x, .. }
            | Op::Narrow { x, .. }
            | Op::MaxPool { x, .. }
            | Op::Upsample { x, .. }
            | Op::Transpose { x, .. }
            | Op::Softmax { x, .. } => vec![*x],
            Op::Binary { a, b, .. } | Op::MatMul { a, b, .. } => vec![*a, *b],
            Op::Concat { xs, .. } => xs.clone(),
        }
    }

    /// The tensor the op writes.
    pub fn output(&self) -> Tid {
        match self {
            Op::Conv(c) => c.y,
            Op::Act { y, .. }
            | Op::Binary { y, .. }
            | Op::Concat { y, .. }
            | Op::Narrow { y, .. }
            | Op::MaxPool { y, .. }
            | Op::Upsample { y, .. }
            | Op::Transpose { y, .. }
            | Op::MatMul { y, .. }
            | Op::Softmax { y, .. } => *y,
        }
    }

    /// A short name for profiles and errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Conv(_) => "conv",
            Op::Act { .. } => "act",
            Op::Binary { .. } => "binary",
            Op::Concat { .. } => "concat",
            Op::Narrow { .. } => "narrow",
            Op::MaxPool { .. } => "maxpool",
            Op::Upsample { .. } => "upsample",
            Op::Transpose { .. } => "transpose",
            Op::MatMul { .. } => "matmul",
            Op::Softmax { .. } => "softmax",
        }
    }
}

/// A tensor of the plan: its shape and the storage it lives in (a reshape shares its input's).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Storage index.
    pub storage: usize,
    /// Where the elements lie in the storage when not packed from its start: a slice of a
    /// concatenation that its producer writes in place (see [`super::slices`]).
    pub view: Option<View>,
}

/// A tensor stored as rows of its last dimension inside a wider storage: row `r` (the
/// dimensions before the last, flattened) starts at element `offset + r * pitch`, and its
/// `shape.last()` elements are contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// First element, counted from the storage's start.
    pub offset: usize,
    /// Elements from one row's start to the next's.
    pub pitch: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Elements from the start of one row of the last dimension to the next (the last
    /// dimension for a packed tensor).
    pub fn pitch(&self) -> usize {
        self.view
            .map_or_else(|| self.shape.last().copied().unwrap_or(1), |v| v.pitch)
    }

    /// The storage element holding element `flat` of the packed (row-major) tensor.
    pub fn element(&self, flat: usize) -> usize {
        match self.view {
            None => flat,
            Some(v) => {
                let inner = self.shape.last().copied().unwrap_or(1).max(1);
                v.offset + (flat / inner) * v.pitch + flat % inner
            }
        }
    }
}

/// A model lowered for one input shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Every tensor.
    pub tensors: Vec<TensorInfo>,
    /// Elements of every storage.
    pub storage_len: Vec<usize>,
    /// Storages filled once at build time (folded constants that ops read).
    pub constants: Vec<(usize, Vec<f32>)>,
    /// The steps, in order.
    pub ops: Vec<Op>,
    /// The graph input.
    pub input: Tid,
    /// The graph outputs, by name.
    pub outputs: Vec<(String, Tid)>,
}

impl Plan {
    /// Lowers `model` for an input of `[batch, channels, height, width]`. Dimensions the graph
    /// fixes must agree; dynamic ones take these values.
    pub fn build(model: &ModelProto, input_shape: [usize; 4]) -> Result<Self, EngineBuildError> {
        Lowering::run(model, input_shape)
    }

    /// The shape of tensor `t`.
    pub fn shape(&self, t: Tid) -> &[usize] {
        &self.tensors[t].shape
    }

    /// Multiply-accumulates of the convolutions and matrix products, for a GFLOP figure.
    pub fn macs(&self) -> u64 {
        let mut total = 0u64;
        for op in &self.ops {
            match op {
                Op::Conv(c) => {
                    let x = self.shape(c.x);
                    let y = self.shape(c.y);
                    let cin = if c.nhwc { x[3] } else { x[1] };
                    let per_out = (cin / c.group * c.kernel[0] * c.kernel[1]) as u64;
                    total += y.iter().product::<usize>() as u64 * per_out;
                }
                Op::MatMul { a, y, .. } => {
                    let k = *self.shape(*a).last().unwrap_or(&1) as u64;
                    total += self.shape(*y).iter().product::<usize>() as u64 * k;
                }
                _ => {}
            }
        }
        total
    }
}

#[derive(Debug, Clone)]
enum Val {
    Const(HostTensor),
    Rt(Tid),
}

struct Lowering {
    tensors: Vec<TensorInfo>,
    storage_len: Vec<usize>,
    constants: Vec<(usize, Vec<f32>)>,
    ops: Vec<Op>,
    env: HashMap<String, Val>,
}

fn attr<'a>(node: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    node.attribute.iter().find(|a| a.name == name)
}

fn attr_i(node: &NodeProto, name: &str, default: i64) -> i64 {
    attr(node, name).and_then(|a| a.i).unwrap_or(default)
}

fn attr_f(node: &NodeProto, name: &str, default: f32) -> f32 {
    attr(node, name).and_then(|a| a.f).unwrap_or(default)
}

fn attr_ints(node: &NodeProto, name: &str) -> Option<Vec<i64>> {
    attr(node, name).map(|a| a.ints.clone())
}

fn attr_s(node: &NodeProto, name: &str) -> Option<String> {
    attr(node, name)
        .and_then(|a| a.s.as_ref())
        .map(|s| String::from_utf8_lossy(s).into_owned())
}

fn unsupported(node: &NodeProto, what: impl std::fmt::Display) -> EngineBuildError {
    EngineBuildError::Unsupported {
        op: node.op_type.clone(),
        node: node.name.clone(),
        detail: what.to_string(),
    }
}

fn tensor_from_proto(t: &TensorProto) -> Result<HostTensor, EngineBuildError> {
    let shape: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let bad = |why: &str| EngineBuildError::Model(format!("tensor `{}`: {why}", t.name));
    // Hostile dims can overflow the element count: refused, not wrapped.
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad("its dims overflow the element count"))?;
    match t.data_type {
        1 => {
            let v = t.to_f32().map_err(|e| bad(&e.to_string()))?;
            if v.len() != n {
                return Err(bad("element count does not match its dims"));
            }
            Ok(HostTensor::f32(shape, v))
        }
        // int64, int32, bool
        7 | 6 | 9 => {
            let v: Vec<i64> = if !t.raw_data.is_empty() {
                let width = match t.data_type {
                    7 => 8,
                    6 => 4,
                    _ => 1,
                };
                if t.raw_data.len() != n * width {
                    return Err(bad("raw data length does not match its dims"));
                }
                t.raw_data
                    .chunks_exact(width)
                    .map(|c| match width {
                        8 => i64::from_le_bytes(c.try_into().unwrap_or([0; 8])),
                        4 => i64::from(i32::from_le_bytes(c.try_into().unwrap_or([0; 4]))),
                        _ => i64::from(c[0]),
                    })
                    .collect()
            } else {
                return Err(bad("integer data outside raw_data is not supported"));
            };
            Ok(HostTensor::i64(shape, v))
        }
        other => Err(bad(&format!("data type {other} is not supported"))),
    }
}

impl Lowering {
    fn run(model: &ModelProto, input_shape: [usize; 4]) -> Result<Plan, EngineBuildError> {
        let graph = model
            .graph
            .as_ref()
            .ok_or_else(|| EngineBuildError::Model("the model has no graph".into()))?;
        let mut l = Lowering {
            tensors: Vec::new(),
            storage_len: Vec::new(),
            constants: Vec::new(),
            ops: Vec::new(),
            env: HashMap::new(),
        };
        for init in &graph.initializer {
            l.env
                .insert(init.name.clone(), Val::Const(tensor_from_proto(init)?));
        }
        let inputs: Vec<_> = graph
            .input
            .iter()
            .filter(|i| !l.env.contains_key(&i.name))
            .collect();
        let [input] = inputs.as_slice() else {
            return Err(EngineBuildError::Model(format!(
                "expected one graph input, found {}",
                inputs.len()
            )));
        };
        if let Some(dims) = input.dims() {
            if dims.len() != 4 {
                return Err(EngineBuildError::Model(format!(
                    "input `{}` has rank {}, expected 4 (NCHW)",
                    input.name,
                    dims.len()
                )));
            }
            for (i, d) in dims.iter().enumerate() {
                if let Some(d) = d
                    && *d as usize != input_shape[i]
                {
                    return Err(EngineBuildError::Model(format!(
                        "input `{}` fixes dimension {i} to {d}, the profile asks for {}",
                        input.name, input_shape[i]
                    )));
                }
            }
        }
        let input_tid = l.new_tensor(input_shape.to_vec());
        l.env.insert(input.name.clone(), Val::Rt(input_tid));

        for node in &graph.node {
            l.node(node)?;
        }

        let mut outputs = Vec::new();
        for o in &graph.output {
            match l.env.get(&o.name) {
                Some(Val::Rt(t)) => outputs.push((o.name.clone(), *t)),
                Some(Val::Const(_)) => {
                    return Err(EngineBuildError::Model(format!(
                        "output `{}` does not depend on the input",
                        o.name
                    )));
                }
                None => {
                    return Err(EngineBuildError::Model(format!(
                        "output `{}` is produced by no node",
                        o.name
                    )));
                }
            }
        }
        let mut plan = Plan {
            tensors: l.tensors,
            storage_len: l.storage_len,
            constants: l.constants,
            ops: l.ops,
            input: input_tid,
            outputs,
        };
        fuse(&mut plan);
        push_narrows_through_concats(&mut plan);
        fold_split_concats(&mut plan);
        drop_unread(&mut plan);
        Ok(plan)
    }

    fn new_tensor(&mut self, shape: Vec<usize>) -> Tid {
        self.storage_len.push(shape.iter().product());
        self.tensors.push(TensorInfo {
            shape,
            storage: self.storage_len.len() - 1,
            view: None,
        });
        self.tensors.len() - 1
    }

    fn alias(&mut self, of: Tid, shape: Vec<usize>) -> Tid {
        let storage = self.tensors[of].storage;
        self.tensors.push(TensorInfo {
            shape,
            storage,
            view: None,
        });
        self.tensors.len() - 1
    }

    /// A runtime tensor for a value: constants become storages filled at build time.
    fn tensor_of(&mut self, v: &Val) -> Tid {
        match v {
            Val::Rt(t) => *t,
            Val::Const(c) => {
                let t = self.new_tensor(c.shape.clone());
                self.constants.push((self.tensors[t].storage, c.as_f32()));
                t
            }
        }
    }

    fn shape_of(&self, v: &Val) -> Vec<usize> {
        match v {
            Val::Rt(t) => self.tensors[*t].shape.clone(),
            Val::Const(c) => c.shape.clone(),
        }
    }

    fn node(&mut self, node: &NodeProto) -> Result<(), EngineBuildError> {
        let mut ins: Vec<Option<Val>> = Vec::with_capacity(node.input.len());
        for name in &node.input {
            if name.is_empty() {
                ins.push(None);
            } else {
                let v = self.env.get(name).cloned().ok_or_else(|| {
                    EngineBuildError::Model(format!(
                        "node `{}` reads `{name}`, which nothing produced",
                        node.name
                    ))
                })?;
                ins.push(Some(v));
            }
        }
        let all_const = ins.iter().flatten().all(|v| matches!(v, Val::Const(_)));
        let outs: Vec<Val> = if node.op_type == "Shape" {
            let x = ins
                .first()
                .cloned()
                .flatten()
                .ok_or_else(|| unsupported(node, "no input"))?;
            let shape = self.shape_of(&x);
            let rank = shape.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let start = clamp(attr_i(node, "start", 0));
            let end = clamp(attr_i(node, "end", rank));
            let dims: Vec<i64> = shape[start..end.max(start)]
                .iter()
                .map(|&d| d as i64)
                .collect();
            vec![Val::Const(HostTensor::i64(vec![dims.len()], dims))]
        } else if all_const {
            let consts: Vec<Option<HostTensor>> = ins
                .into_iter()
                .map(|v| match v {
                    Some(Val::Const(c)) => Some(c),
                    _ => None,
                })
                .collect();
            fold(node, &consts)?.into_iter().map(Val::Const).collect()
        } else {
            self.lower(node, &ins)?
        };
        if outs.len() < node.output.iter().filter(|o| !o.is_empty()).count() {
            return Err(unsupported(
                node,
                "fewer outputs produced than the node declares",
            ));
        }
        for (name, v) in node.output.iter().zip(outs) {
            if !name.is_empty() {
                self.env.insert(name.clone(), v);
            }
        }
        Ok(())
    }

    fn lower(
        &mut self,
        node: &NodeProto,
        ins: &[Option<Val>],
    ) -> Result<Vec<Val>, EngineBuildError> {
        let input = |i: usize| -> Result<Val, EngineBuildError> {
            ins.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| unsupported(node, format!("input {i} is missing")))
        };
        let konst = |i: usize| -> Result<HostTensor, EngineBuildError> {
            match input(i)? {
                Val::Const(c) => Ok(c),
                Val::Rt(_) => Err(unsupported(
                    node,
                    format!("input {i} must be a constant (after folding)"),
                )),
            }
        };
        // An optional constant input's values.
        let konst_opt = |i: usize| -> Result<Option<Vec<i64>>, EngineBuildError> {
            match ins.get(i).cloned().flatten() {
                Some(_) => Ok(Some(konst(i)?.as_i64())),
                None => Ok(None),
            }
        };
        let x = input(0)?;
        let xs = self.shape_of(&x);
        match node.op_type.as_str() {
            "Identity" => Ok(vec![x]),
            "Conv" => {
                let w = konst(1)?;
                let b = match ins.get(2).cloned().flatten() {
                    Some(Val::Const(b)) => Some(b),
                    Some(Val::Rt(_)) => return Err(unsupported(node, "runtime bias")),
                    None => None,
                };
                if xs.len() != 4 || w.shape.len() != 4 {
                    return Err(unsupported(node, "only 2-D convolutions"));
                }
                if let Some(p) = attr_s(node, "auto_pad")
                    && p != "NOTSET"
                {
                    return Err(unsupported(node, format!("auto_pad={p}")));
                }
                let group = attr_i(node, "group", 1).max(1) as usize;
                let m = w.shape[0];
                if !xs[1].is_multiple_of(group)
                    || w.shape[1].checked_mul(group) != Some(xs[1])
                    || !m.is_multiple_of(group)
                {
                    return Err(unsupported(
                        node,
                        format!("channels {} / group {group} / weight {:?}", xs[1], w.shape),
                    ));
                }
                let kernel = [w.shape[2], w.shape[3]];
                let two = |name: &str| -> Result<[usize; 2], EngineBuildError> {
                    match attr_ints(node, name).as_deref() {
                        None | Some([]) => Ok([1, 1]),
                        Some([a, b]) if *a >= 1 && *b >= 1 => Ok([*a as usize, *b as usize]),
                        Some(v) => Err(unsupported(node, format!("{name}={v:?}"))),
                    }
                };
                let stride = two("strides")?;
                let dilation = two("dilations")?;
                let pad = pads4(node)?;
                let oh = conv_out(
                    xs[2],
                    kernel[0],
                    stride[0],
                    pad[0].saturating_add(pad[2]),
                    dilation[0],
                )
                .ok_or_else(|| unsupported(node, "kernel larger than the padded input"))?;
                let ow = conv_out(
                    xs[3],
                    kernel[1],
                    stride[1],
                    pad[1].saturating_add(pad[3]),
                    dilation[1],
                )
                .ok_or_else(|| unsupported(node, "kernel larger than the padded input"))?;
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(vec![xs[0], m, oh, ow]);
                let bias = b.map(|b| b.as_f32()).unwrap_or_else(|| vec![0.0; m]);
                if bias.len() != m {
                    return Err(unsupported(
                        node,
                        "bias length differs from output channels",
                    ));
                }
                self.ops.push(Op::Conv(Conv {
                    x: xt,
                    y,
                    weight: w.as_f32(),
                    bias,
                    m,
                    kernel,
                    stride,
                    pad,
                    dilation,
                    group,
                    act: Act::None,
                    residual: None,
                    nhwc: false,
                }));
                Ok(vec![Val::Rt(y)])
            }
            "Sigmoid" | "Relu" | "LeakyRelu" | "Exp" => {
                let act = match node.op_type.as_str() {
                    "Sigmoid" => Act::Sigmoid,
                    "Relu" => Act::Relu,
                    "Exp" => Act::Exp,
                    _ => Act::LeakyRelu(attr_f(node, "alpha", 0.01)),
                };
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(xs);
                self.ops.push(Op::Act { x: xt, y, act });
                Ok(vec![Val::Rt(y)])
            }
            "Add" | "Sub" | "Mul" | "Div" => {
                let op = match node.op_type.as_str() {
                    "Add" => BinOp::Add,
                    "Sub" => BinOp::Sub,
                    "Mul" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                let bv = input(1)?;
                let bs = self.shape_of(&bv);
                let ys = broadcast_shape(&xs, &bs)?;
                let a = self.tensor_of(&x);
                let b = self.tensor_of(&bv);
                let y = self.new_tensor(ys.clone());
                self.ops.push(Op::Binary {
                    op,
                    a,
                    b,
                    y,
                    a_strides: broadcast_strides(&xs, &ys),
                    b_strides: broadcast_strides(&bs, &ys),
                });
                Ok(vec![Val::Rt(y)])
            }
            "Concat" => {
                let axis = norm_axis(attr_i(node, "axis", 0), xs.len())?;
                let mut tids = Vec::new();
                let mut ys = xs.clone();
                ys[axis] = 0;
                for v in ins.iter().flatten() {
                    let s = self.shape_of(v);
                    if s.len() != xs.len()
                        || s.iter().enumerate().any(|(i, &d)| i != axis && d != xs[i])
                    {
                        return Err(unsupported(
                            node,
                            format!("mismatched shapes {s:?} and {xs:?}"),
                        ));
                    }
                    ys[axis] += s[axis];
                    tids.push(self.tensor_of(v));
                }
                let y = self.new_tensor(ys);
                self.ops.push(Op::Concat { xs: tids, y, axis });
                Ok(vec![Val::Rt(y)])
            }
            "Split" => {
                let axis = norm_axis(attr_i(node, "axis", 0), xs.len())?;
                let sizes = split_sizes(node, konst_opt(1)?, xs[axis])?;
                let xt = self.tensor_of(&x);
                let mut outs = Vec::new();
                let mut start = 0;
                for s in sizes {
                    let mut ys = xs.clone();
                    ys[axis] = s;
                    let y = self.new_tensor(ys);
                    self.ops.push(Op::Narrow {
                        x: xt,
                        y,
                        axis,
                        start,
                        step: 1,
                    });
                    start += s;
                    outs.push(Val::Rt(y));
                }
                Ok(outs)
            }
            "Slice" => {
                let parts = slice_axes(
                    node,
                    xs.len(),
                    konst(1)?.as_i64(),
                    konst(2)?.as_i64(),
                    konst_opt(3)?,
                    konst_opt(4)?,
                )?;
                let mut cur = self.tensor_of(&x);
                for (axis, start, end, step) in parts {
                    let (start, len, step) =
                        slice_range(self.tensors[cur].shape[axis], start, end, step)
                            .ok_or_else(|| unsupported(node, "negative or zero steps"))?;
                    let mut ys = self.tensors[cur].shape.clone();
                    if len == ys[axis] && step == 1 {
                        continue;
                    }
                    ys[axis] = len;
                    let y = self.new_tensor(ys);
                    self.ops.push(Op::Narrow {
                        x: cur,
                        y,
                        axis,
                        start,
                        step,
                    });
                    cur = y;
                }
                Ok(vec![Val::Rt(cur)])
            }
            "MaxPool" => {
                if attr_i(node, "ceil_mode", 0) != 0 {
                    return Err(unsupported(node, "ceil_mode=1"));
                }
                if let Some(d) = attr_ints(node, "dilations")
                    && d.iter().any(|&v| v != 1)
                {
                    return Err(unsupported(node, "dilations"));
                }
                if let Some(p) = attr_s(node, "auto_pad")
                    && p != "NOTSET"
                {
                    return Err(unsupported(node, format!("auto_pad={p}")));
                }
                let k = attr_ints(node, "kernel_shape").unwrap_or_default();
                let [kh, kw] = k.as_slice() else {
                    return Err(unsupported(node, "only 2-D pooling"));
                };
                if *kh < 1 || *kw < 1 {
                    return Err(unsupported(node, format!("kernel_shape={k:?}")));
                }
                let stride = match attr_ints(node, "strides").as_deref() {
                    None | Some([]) => [1, 1],
                    Some([a, b]) => [(*a).max(1) as usize, (*b).max(1) as usize],
                    Some(v) => return Err(unsupported(node, format!("strides={v:?}"))),
                };
                let pad = pads4(node)?;
                let kernel = [*kh as usize, *kw as usize];
                let oh = conv_out(
                    xs[2],
                    kernel[0],
                    stride[0],
                    pad[0].saturating_add(pad[2]),
                    1,
                )
                .ok_or_else(|| unsupported(node, "window larger than the padded input"))?;
                let ow = conv_out(
                    xs[3],
                    kernel[1],
                    stride[1],
                    pad[1].saturating_add(pad[3]),
                    1,
                )
                .ok_or_else(|| unsupported(node, "window larger than the padded input"))?;
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(vec![xs[0], xs[1], oh, ow]);
                self.ops.push(Op::MaxPool {
                    x: xt,
                    y,
                    kernel,
                    stride,
                    pad,
                    nhwc: false,
                });
                Ok(vec![Val::Rt(y)])
            }
            "Resize" | "Upsample" => {
                let mode = attr_s(node, "mode").unwrap_or_else(|| "nearest".into());
                if mode != "nearest" {
                    return Err(unsupported(node, format!("mode={mode}")));
                }
                let ctm = attr_s(node, "coordinate_transformation_mode")
                    .unwrap_or_else(|| "half_pixel".into());
                let nearest =
                    attr_s(node, "nearest_mode").unwrap_or_else(|| "round_prefer_floor".into());
                // Integer factors: asymmetric/floor picks src = dst / f exactly.
                let ok_mode =
                    ctm == "asymmetric" && (nearest == "floor" || node.op_type == "Upsample");
                let scales_idx = if node.op_type == "Upsample" { 1 } else { 2 };
                let out: Vec<usize> = match ins.get(scales_idx).cloned().flatten() {
                    Some(Val::Const(s)) if s.numel() == xs.len() => s
                        .as_f32()
                        .iter()
                        .zip(&xs)
                        .map(|(f, &d)| (d as f32 * f).floor() as usize)
                        .collect(),
                    _ => match ins.get(3).cloned().flatten() {
                        Some(Val::Const(s)) => s.as_i64().iter().map(|&v| v as usize).collect(),
                        _ => return Err(unsupported(node, "scales or sizes must be constant")),
                    },
                };
                if out.len() != 4 || out[0] != xs[0] || out[1] != xs[1] {
                    return Err(unsupported(node, format!("resize {xs:?} to {out:?}")));
                }
                if !out[2].is_multiple_of(xs[2]) || !out[3].is_multiple_of(xs[3]) || !ok_mode {
                    return Err(unsupported(
                        node,
                        format!(
                            "only integer nearest upsampling (asymmetric, floor); got {xs:?} -> {out:?}, {ctm}/{nearest}"
                        ),
                    ));
                }
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(out.clone());
                self.ops.push(Op::Upsample {
                    x: xt,
                    y,
                    factor: [out[2] / xs[2], out[3] / xs[3]],
                    nhwc: false,
                });
                Ok(vec![Val::Rt(y)])
            }
            "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => {
                let numel: usize = xs.iter().product();
                let ys = match node.op_type.as_str() {
                    "Reshape" => {
                        reshape_dims(&xs, &konst(1)?.as_i64(), attr_i(node, "allowzero", 0) != 0)
                            .ok_or_else(|| {
                                unsupported(node, "shape does not fit the element count")
                            })?
                    }
                    "Flatten" => {
                        let axis = norm_axis(attr_i(node, "axis", 1), xs.len() + 1)?;
                        vec![xs[..axis].iter().product(), xs[axis..].iter().product()]
                    }
                    "Squeeze" => {
                        let axes = axes_input(node, ins, 1)?;
                        squeeze_dims(&xs, axes.as_deref())?
                    }
                    _ => {
                        let axes = axes_input(node, ins, 1)?
                            .ok_or_else(|| unsupported(node, "no axes"))?;
                        unsqueeze_dims(&xs, &axes)?
                    }
                };
                if ys.iter().product::<usize>() != numel {
                    return Err(unsupported(node, format!("reshape {xs:?} to {ys:?}")));
                }
                let xt = self.tensor_of(&x);
                Ok(vec![Val::Rt(self.alias(xt, ys))])
            }
            "Transpose" => {
                let perm = transpose_perm(node, xs.len())?;
                let ys: Vec<usize> = perm.iter().map(|&p| xs[p]).collect();
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(ys);
                self.ops.push(Op::Transpose { x: xt, y, perm });
                Ok(vec![Val::Rt(y)])
            }
            "MatMul" => {
                let bv = input(1)?;
                let bs = self.shape_of(&bv);
                if xs.len() < 2 || bs.len() != xs.len() || xs[..xs.len() - 2] != bs[..bs.len() - 2]
                {
                    return Err(unsupported(
                        node,
                        format!("only equal-rank batched products, got {xs:?} x {bs:?}"),
                    ));
                }
                let r = xs.len();
                if xs[r - 1] != bs[r - 2] {
                    return Err(unsupported(node, format!("inner dims {xs:?} x {bs:?}")));
                }
                let mut ys = xs.clone();
                ys[r - 1] = bs[r - 1];
                let a = self.tensor_of(&x);
                let b = self.tensor_of(&bv);
                let y = self.new_tensor(ys);
                self.ops.push(Op::MatMul { a, b, y });
                Ok(vec![Val::Rt(y)])
            }
            "Softmax" => {
                let axis = norm_axis(attr_i(node, "axis", -1), xs.len())?;
                let xt = self.tensor_of(&x);
                let y = self.new_tensor(xs);
                self.ops.push(Op::Softmax { x: xt, y, axis });
                Ok(vec![Val::Rt(y)])
            }
            other => Err(unsupported(
                node,
                format!("operator `{other}` on a runtime input"),
            )),
        }
    }
}

/// Output length of a convolution or pooling window; `None` for a window that does not fit
/// or hostile attributes (a zero kernel, stride or dilation, or sizes that overflow).
fn conv_out(input: usize, k: usize, s: usize, pad: usize, d: usize) -> Option<usize> {
    if k == 0 || s == 0 || d == 0 {
        return None;
    }
    let span = d.checked_mul(k - 1)?.checked_add(1)?;
    input.checked_add(pad)?.checked_sub(span).map(|v| v / s + 1)
}

fn pads4(node: &NodeProto) -> Result<[usize; 4], EngineBuildError> {
    match attr_ints(node, "pads").as_deref() {
        None | Some([]) => Ok([0; 4]),
        Some([a, b, c, d]) if [*a, *b, *c, *d].iter().all(|v| *v >= 0) => {
            Ok([*a as usize, *b as usize, *c as usize, *d as usize])
        }
        Some(v) => Err(unsupported(node, format!("pads={v:?}"))),
    }
}

fn axes_input(
    node: &NodeProto,
    ins: &[Option<Val>],
    i: usize,
) -> Result<Option<Vec<i64>>, EngineBuildError> {
    match ins.get(i).cloned().flatten() {
        Some(Val::Const(c)) => Ok(Some(c.as_i64())),
        Some(Val::Rt(_)) => Err(unsupported(node, "runtime axes")),
        None => Ok(attr_ints(node, "axes")),
    }
}

fn squeeze_dims(xs: &[usize], axes: Option<&[i64]>) -> Result<Vec<usize>, EngineBuildError> {
    let drop: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&v| norm_axis(v, xs.len()))
            .collect::<Result<_, _>>()?,
        None => (0..xs.len()).filter(|&i| xs[i] == 1).collect(),
    };
    Ok(xs
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, &d)| d)
        .collect())
}

fn unsqueeze_dims(xs: &[usize], axes: &[i64]) -> Result<Vec<usize>, EngineBuildError> {
    let rank = xs.len() + axes.len();
    let mut add: Vec<usize> = axes
        .iter()
        .map(|&v| norm_axis(v, rank))
        .collect::<Result<_, _>>()?;
    add.sort_unstable();
    let mut out = Vec::with_capacity(rank);
    let mut it = xs.iter();
    for i in 0..rank {
        if add.contains(&i) {
            out.push(1);
        } else {
            out.push(*it.next().unwrap_or(&1));
        }
    }
    Ok(out)
}

fn reshape_dims(xs: &[usize], shape: &[i64], allowzero: bool) -> Option<Vec<usize>> {
    let numel: usize = xs.iter().product();
    let mut out = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &d) in shape.iter().enumerate() {
        if d == -1 {
            if infer.is_some() {
                return None;
            }
            infer = Some(i);
            out.push(1);
        } else if d == 0 && !allowzero {
            out.push(*xs.get(i)?);
        } else if d < 0 {
            return None;
        } else {
            out.push(d as usize);
        }
    }
    // Products of hostile dimensions can overflow: such a shape is refused, not wrapped.
    let product = |v: &[usize]| v.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if let Some(i) = infer {
        let known = product(&out)?;
        if known == 0 || !numel.is_multiple_of(known) {
            return None;
        }
        out[i] = numel / known;
    }
    (product(&out)? == numel).then_some(out)
}

/// (start, len, step) of an ONNX slice of a dimension of `dim`; None for steps < 1.
fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> Option<(usize, usize, usize)> {
    if step < 1 {
        return None;
    }
    let d = dim as i64;
    let clamp = |v: i64| (if v < 0 { v + d } else { v }).clamp(0, d);
    let s = clamp(start);
    let e = clamp(end);
    let len = if e > s { (e - s + step - 1) / step } else { 0 };
    Some((s as usize, len as usize, step as usize))
}

/// A Slice node's inputs for an input of `rank` dimensions, as `(axis, start, end, step)` per
/// sliced axis (`axes` default to `0..`, `steps` to 1), for the runtime and the constant-folded
/// Slice alike. Refused unless `ends`, `axes` and `steps` have one entry per start and every
/// axis is in range.
fn slice_axes(
    node: &NodeProto,
    rank: usize,
    starts: Vec<i64>,
    ends: Vec<i64>,
    axes: Option<Vec<i64>>,
    steps: Option<Vec<i64>>,
) -> Result<Vec<(usize, i64, i64, i64)>, EngineBuildError> {
    let n = starts.len();
    let axes = axes.unwrap_or_else(|| (0..n as i64).collect());
    let steps = steps.unwrap_or_else(|| vec![1; n]);
    if ends.len() != n || axes.len() != n || steps.len() != n {
        return Err(unsupported(
            node,
            format!(
                "{n} starts, {} ends, {} axes, {} steps",
                ends.len(),
                axes.len(),
                steps.len()
            ),
        ));
    }
    (0..n)
        .map(|i| Ok((norm_axis(axes[i], rank)?, starts[i], ends[i], steps[i])))
        .collect()
}

/// A Transpose node's `perm` for an input of `rank` dimensions (reversed when absent): refused
/// unless it is a permutation of `0..rank`.
fn transpose_perm(node: &NodeProto, rank: usize) -> Result<Vec<usize>, EngineBuildError> {
    let perm: Vec<i64> = match attr_ints(node, "perm") {
        Some(p) => p,
        None => (0..rank as i64).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if !seen.iter().copied().eq(0..rank as i64) {
        return Err(unsupported(
            node,
            format!("perm {perm:?} is not a permutation of rank {rank}"),
        ));
    }
    Ok(perm.iter().map(|&v| v as usize).collect())
}

/// The part sizes of a Split node along an axis of `dim` elements: its `split` input (`given`),
/// else its `split` attribute, else one part per output (ONNX's equal parts, the last one
/// shorter). Refused unless they add up to `dim`, or when `num_outputs` disagrees with the
/// node's outputs.
fn split_sizes(
    node: &NodeProto,
    given: Option<Vec<i64>>,
    dim: usize,
) -> Result<Vec<usize>, EngineBuildError> {
    let listed = given.or_else(|| attr_ints(node, "split").filter(|v| !v.is_empty()));
    let sizes: Vec<usize> = match listed {
        Some(v) => v.iter().map(|&v| v.max(0) as usize).collect(),
        None => {
            let n = node.output.len().max(1);
            if attr(node, "num_outputs").is_some() && attr_i(node, "num_outputs", 0) != n as i64 {
                return Err(unsupported(node, format!("num_outputs for {n} outputs")));
            }
            let chunk = dim.div_ceil(n);
            (0..n)
                .map(|i| chunk.min(dim.saturating_sub(i * chunk)))
                .collect()
        }
    };
    let total = sizes.iter().try_fold(0usize, |a, &s| a.checked_add(s));
    if total != Some(dim) {
        return Err(unsupported(node, format!("split sizes {sizes:?} of {dim}")));
    }
    Ok(sizes)
}

/// The most elements a constant-folded tensor may have. Detector graphs fold shape
/// arithmetic and anchor grids, far smaller than this; a node whose folded result would be
/// larger is refused instead of allocated (found by the onnx_model fuzz target: a Range of
/// 2^60 elements).
const MAX_FOLDED: usize = 1 << 24;

/// The element count of a folded result of `shape`, refused past [`MAX_FOLDED`] or on
/// overflow.
fn folded_len(node: &NodeProto, shape: &[usize]) -> Result<usize, EngineBuildError> {
    shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .filter(|&n| n <= MAX_FOLDED)
        .ok_or_else(|| {
            unsupported(
                node,
                format!("a folded constant of shape {shape:?} (more than {MAX_FOLDED} elements)"),
            )
        })
}

/// The first value of a folded scalar input, refused when it has none.
fn scalar<T: Copy>(node: &NodeProto, v: &[T]) -> Result<T, EngineBuildError> {
    v.first()
        .copied()
        .ok_or_else(|| unsupported(node, "an empty scalar input"))
}

/// Evaluates a node whose inputs are all constant.
fn fold(node: &NodeProto, ins: &[Option<HostTensor>]) -> Result<Vec<HostTensor>, EngineBuildError> {
    let input = |i: usize| -> Result<&HostTensor, EngineBuildError> {
        ins.get(i)
            .and_then(|v| v.as_ref())
            .ok_or_else(|| unsupported(node, format!("input {i} is missing")))
    };
    let one = |t: HostTensor| Ok(vec![t]);
    match node.op_type.as_str() {
        "Constant" => {
            if let Some(t) = attr(node, "value").and_then(|a| a.t.as_ref()) {
                return one(tensor_from_proto(t)?);
            }
            if let Some(f) = attr(node, "value_float").and_then(|a| a.f) {
                return one(HostTensor::f32(vec![], vec![f]));
            }
            if let Some(i) = attr(node, "value_int").and_then(|a| a.i) {
                return one(HostTensor::i64(vec![], vec![i]));
            }
            if let Some(v) = attr_ints(node, "value_ints") {
                return one(HostTensor::i64(vec![v.len()], v));
            }
            Err(unsupported(
                node,
                "constant without a value this engine reads",
            ))
        }
        "Identity" => one(input(0)?.clone()),
        "Cast" => {
            let x = input(0)?;
            match attr_i(node, "to", 1) {
                1 => one(HostTensor::f32(x.shape.clone(), x.as_f32())),
                6 | 7 => one(HostTensor::i64(x.shape.clone(), x.as_i64())),
                9 => one(HostTensor::i64(
                    x.shape.clone(),
                    x.as_f32().iter().map(|&v| i64::from(v != 0.0)).collect(),
                )),
                t => Err(unsupported(node, format!("cast to type {t}"))),
            }
        }
        "Gather" => {
            let x = input(0)?;
            let idx = input(1)?;
            let axis = norm_axis(attr_i(node, "axis", 0), x.shape.len())?;
            let dim = x.shape[axis] as i64;
            let outer: usize = x.shape[..axis].iter().product();
            let inner: usize = x.shape[axis + 1..].iter().product();
            let mut shape = x.shape[..axis].to_vec();
            shape.extend_from_slice(&idx.shape);
            shape.extend_from_slice(&x.shape[axis + 1..]);
            let len = folded_len(node, &shape)?;
            let ids = idx.as_i64();
            let mut src = Vec::with_capacity(len);
            for o in 0..outer {
                for &i in &ids {
                    let i = if i < 0 { i + dim } else { i };
                    if i < 0 || i >= dim {
                        return Err(unsupported(node, format!("index {i} out of range {dim}")));
                    }
                    for k in 0..inner {
                        src.push((o * dim as usize + i as usize) * inner + k);
                    }
                }
            }
            one(x.gather_flat(shape, &src))
        }
        "Unsqueeze" | "Squeeze" | "Reshape" | "Flatten" => {
            let x = input(0)?;
            let shape = match node.op_type.as_str() {
                "Unsqueeze" => {
                    let axes = match ins.get(1).and_then(|v| v.as_ref()) {
                        Some(a) => a.as_i64(),
                        None => attr_ints(node, "axes").unwrap_or_default(),
                    };
                    unsqueeze_dims(&x.shape, &axes)?
                }
                "Squeeze" => {
                    let axes = match ins.get(1).and_then(|v| v.as_ref()) {
                        Some(a) => Some(a.as_i64()),
                        None => attr_ints(node, "axes"),
                    };
                    squeeze_dims(&x.shape, axes.as_deref())?
                }
                "Flatten" => {
                    let axis = norm_axis(attr_i(node, "axis", 1), x.shape.len() + 1)?;
                    vec![
                        x.shape[..axis].iter().product(),
                        x.shape[axis..].iter().product(),
                    ]
                }
                _ => reshape_dims(
                    &x.shape,
                    &input(1)?.as_i64(),
                    attr_i(node, "allowzero", 0) != 0,
                )
                .ok_or_else(|| unsupported(node, "shape does not fit"))?,
            };
            let mut t = x.clone();
            t.shape = shape;
            one(t)
        }
        "Concat" => {
            let parts: Vec<&HostTensor> = ins.iter().flatten().collect();
            let first = parts
                .first()
                .ok_or_else(|| unsupported(node, "no inputs"))?;
            let axis = norm_axis(attr_i(node, "axis", 0), first.shape.len())?;
            let outer: usize = first.shape[..axis].iter().product();
            let shapes: Vec<&[usize]> = parts.iter().map(|p| p.shape.as_slice()).collect();
            let shape = concat_shape(&shapes, axis).ok_or_else(|| {
                unsupported(node, "inputs differ in rank or outside the concat axis")
            })?;
            let any_f32 = parts.iter().any(|p| matches!(p.data, Data::F32(_)));
            let mut f = Vec::new();
            let mut i = Vec::new();
            for o in 0..outer {
                for p in &parts {
                    let chunk: usize = p.shape[axis..].iter().product();
                    if any_f32 {
                        f.extend_from_slice(&p.as_f32()[o * chunk..(o + 1) * chunk]);
                    } else {
                        i.extend_from_slice(&p.as_i64()[o * chunk..(o + 1) * chunk]);
                    }
                }
            }
            one(if any_f32 {
                HostTensor::f32(shape, f)
            } else {
                HostTensor::i64(shape, i)
            })
        }
        "Range" => {
            let (s, l, d) = (input(0)?, input(1)?, input(2)?);
            if matches!(s.data, Data::F32(_)) {
                let (s, l, d) = (
                    scalar(node, &s.as_f32())?,
                    scalar(node, &l.as_f32())?,
                    scalar(node, &d.as_f32())?,
                );
                let count = ((l - s) / d).ceil();
                if d == 0.0 || !count.is_finite() || count > MAX_FOLDED as f32 {
                    return Err(unsupported(
                        node,
                        format!(
                            "range {s}..{l} by {d} (more than {MAX_FOLDED} elements, or none defined)"
                        ),
                    ));
                }
                let n = count.max(0.0) as usize;
                one(HostTensor::f32(
                    vec![n],
                    (0..n).map(|i| s + i as f32 * d).collect(),
                ))
            } else {
                let (s, l, d) = (
                    scalar(node, &s.as_i64())?,
                    scalar(node, &l.as_i64())?,
                    scalar(node, &d.as_i64())?,
                );
                if d == 0 {
                    return Err(unsupported(node, "zero delta"));
                }
                // In i128, where no i64 start, limit and delta overflow.
                let (s128, l128, d128) = (i128::from(s), i128::from(l), i128::from(d));
                let count = ((l128 - s128 + d128 - d128.signum()) / d128).max(0);
                if count > MAX_FOLDED as i128 {
                    return Err(unsupported(
                        node,
                        format!("range {s}..{l} by {d} (more than {MAX_FOLDED} elements)"),
                    ));
                }
                let n = count as usize;
                one(HostTensor::i64(
                    vec![n],
                    (0..n as i64).map(|i| s + i * d).collect(),
                ))
            }
        }
        "ConstantOfShape" => {
            let shape: Vec<usize> = input(0)?
                .as_i64()
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            let n = folded_len(node, &shape)?;
            let value = match attr(node, "value").and_then(|a| a.t.as_ref()) {
                Some(t) => tensor_from_proto(t)?,
                None => HostTensor::f32(vec![1], vec![0.0]),
            };
            one(match value.data {
                Data::F32(v) => HostTensor::f32(shape, vec![v.first().copied().unwrap_or(0.0); n]),
                Data::I64(v) => HostTensor::i64(shape, vec![v.first().copied().unwrap_or(0); n]),
            })
        }
        "Expand" => {
            let x = input(0)?;
            let target: Vec<usize> = input(1)?
                .as_i64()
                .iter()
                .map(|&v| v.max(0) as usize)
                .collect();
            let shape = broadcast_shape(&x.shape, &target)?;
            folded_len(node, &shape)?;
            let idx = broadcast_index(&shape, &broadcast_strides(&x.shape, &shape));
            one(x.gather_flat(shape, &idx))
        }
        "Add" | "Sub" | "Mul" | "Div" | "Equal" | "Pow" => {
            let (a, b) = (input(0)?, input(1)?);
            let shape = broadcast_shape(&a.shape, &b.shape)?;
            folded_len(node, &shape)?;
            let ia = broadcast_index(&shape, &broadcast_strides(&a.shape, &shape));
            let ib = broadcast_index(&shape, &broadcast_strides(&b.shape, &shape));
            let floats = matches!(a.data, Data::F32(_)) || matches!(b.data, Data::F32(_));
            if node.op_type == "Equal" {
                let (va, vb) = (a.as_f32(), b.as_f32());
                let v = ia
                    .iter()
                    .zip(&ib)
                    .map(|(&i, &j)| i64::from(va[i] == vb[j]))
                    .collect();
                return one(HostTensor::i64(shape, v));
            }
            if floats {
                let (va, vb) = (a.as_f32(), b.as_f32());
                let f = |x: f32, y: f32| match node.op_type.as_str() {
                    "Add" => x + y,
                    "Sub" => x - y,
                    "Mul" => x * y,
                    "Div" => x / y,
                    _ => x.powf(y),
                };
                let v = ia.iter().zip(&ib).map(|(&i, &j)| f(va[i], vb[j])).collect();
                one(HostTensor::f32(shape, v))
            } else {
                let (va, vb) = (a.as_i64(), b.as_i64());
                let mut v = Vec::with_capacity(ia.len());
                for (&i, &j) in ia.iter().zip(&ib) {
                    let (x, y) = (va[i], vb[j]);
                    v.push(match node.op_type.as_str() {
                        "Add" => x + y,
                        "Sub" => x - y,
                        "Mul" => x * y,
                        "Div" if y != 0 => x.div_euclid(y),
                        "Pow" => x.pow(y.clamp(0, 62) as u32),
                        _ => return Err(unsupported(node, "integer division by zero")),
                    });
                }
                one(HostTensor::i64(shape, v))
            }
        }
        "Sigmoid" | "Sqrt" | "Exp" | "Neg" | "Floor" | "Ceil" => {
            let x = input(0)?;
            let v = x
                .as_f32()
                .iter()
                .map(|&v| match node.op_type.as_str() {
                    "Sigmoid" => Act::Sigmoid.apply(v),
                    "Sqrt" => v.sqrt(),
                    "Exp" => v.exp(),
                    "Neg" => -v,
                    "Floor" => v.floor(),
                    _ => v.ceil(),
                })
                .collect();
            one(HostTensor::f32(x.shape.clone(), v))
        }
        "Transpose" => {
            let x = input(0)?;
            let perm = transpose_perm(node, x.shape.len())?;
            let (shape, idx) = transpose_index(&x.shape, &perm);
            one(x.gather_flat(shape, &idx))
        }
        "Slice" => {
            let x = input(0)?;
            let given = |i: usize| ins.get(i).and_then(|v| v.as_ref()).map(|t| t.as_i64());
            let parts = slice_axes(
                node,
                x.shape.len(),
                input(1)?.as_i64(),
                input(2)?.as_i64(),
                given(3),
                given(4),
            )?;
            let mut cur = x.clone();
            for (axis, start, end, step) in parts {
                let (start, len, step) = slice_range(cur.shape[axis], start, end, step)
                    .ok_or_else(|| unsupported(node, "negative or zero steps"))?;
                cur = narrow_host(&cur, axis, start, len, step);
            }
            one(cur)
        }
        "Split" => {
            let x = input(0)?;
            let axis = norm_axis(attr_i(node, "axis", 0), x.shape.len())?;
            let given = ins.get(1).and_then(|v| v.as_ref()).map(|t| t.as_i64());
            let sizes = split_sizes(node, given, x.shape[axis])?;
            let mut start = 0;
            let mut outs = Vec::new();
            for s in sizes {
                outs.push(narrow_host(x, axis, start, s, 1));
                start += s;
            }
            Ok(outs)
        }
        other => Err(unsupported(
            node,
            format!("operator `{other}` (constant inputs)"),
        )),
    }
}

fn narrow_host(x: &HostTensor, axis: usize, start: usize, len: usize, step: usize) -> HostTensor {
    let outer: usize = x.shape[..axis].iter().product();
    let inner: usize = x.shape[axis + 1..].iter().product();
    let dim = x.shape[axis];
    let mut idx = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        for j in 0..len {
            let src = start + j * step;
            for k in 0..inner {
                idx.push((o * dim + src) * inner + k);
            }
        }
    }
    let mut shape = x.shape.clone();
    shape[axis] = len;
    x.gather_flat(shape, &idx)
}

/// How many times ops and plan outputs read `t`'s storage (`t` or any alias of it).
fn storage_readers(plan: &Plan, t: Tid) -> usize {
    let s = plan.tensors[t].storage;
    let in_ops = plan
        .ops
        .iter()
        .flat_map(|o| o.inputs())
        .filter(|&i| plan.tensors[i].storage == s)
        .count();
    let in_outs = plan
        .outputs
        .iter()
        .filter(|(_, o)| plan.tensors[*o].storage == s)
        .count();
    in_ops + in_outs
}

/// Sigmoid·Mul → SiLU, then activations into the convolution that feeds them.
fn fuse(plan: &mut Plan) {
    // SiLU: s = Sigmoid(x); y = Mul(x, s) or Mul(s, x), s read only by that Mul.
    let mut i = 0;
    while i < plan.ops.len() {
        if let Op::Act {
            x,
            y: s,
            act: Act::Sigmoid,
        } = plan.ops[i].clone()
            && storage_readers(plan, s) == 1
            && let Some(j) = plan.ops.iter().position(|o| {
                matches!(o, Op::Binary { op: BinOp::Mul, a, b, .. }
                    if (*a == x && *b == s) || (*a == s && *b == x))
            })
            && plan.shape(x) == plan.shape(s)
            && plan.shape(plan.ops[j].output()) == plan.shape(x)
        {
            let y = plan.ops[j].output();
            plan.ops[j] = Op::Act {
                x,
                y,
                act: Act::Silu,
            };
            plan.ops.remove(i);
            continue;
        }
        i += 1;
    }
    // Activation into the conv: conv writes x, x read only by the activation.
    let mut i = 0;
    while i < plan.ops.len() {
        if let Op::Act { x, y, act } = plan.ops[i].clone()
            && storage_readers(plan, x) == 1
            && let Some(j) = plan.ops[..i]
                .iter()
                .position(|o| matches!(o, Op::Conv(c) if c.y == x && c.act == Act::None))
            && let Op::Conv(c) = &mut plan.ops[j]
        {
            c.act = act;
            c.y = y;
            plan.ops.remove(i);
            continue;
        }
        i += 1;
    }
    fuse_residuals(plan);
}

/// Residual additions into the convolution that feeds them: `y = Add(t, r)` of three tensors
/// of one shape, where `t` is written by a convolution (without a residual yet) and read only
/// by this Add, and `r` is ready before that convolution runs, becomes the convolution
/// writing `y` with `residual: r` (cuDNN's fused graph adds it in the convolution's epilogue,
/// so `t` is never stored and read back). Returns how many were fused.
fn fuse_residuals(plan: &mut Plan) -> usize {
    let storage = |plan: &Plan, t: Tid| plan.tensors[t].storage;
    // The index of the op that writes `t`'s storage; None for the input and constants.
    let writer = |plan: &Plan, t: Tid| {
        let s = storage(plan, t);
        plan.ops.iter().position(|o| storage(plan, o.output()) == s)
    };
    let mut fused = 0;
    let mut i = 0;
    while i < plan.ops.len() {
        let Op::Binary {
            op: BinOp::Add,
            a,
            b,
            y,
            ..
        } = plan.ops[i]
        else {
            i += 1;
            continue;
        };
        let same = plan.shape(a) == plan.shape(y) && plan.shape(b) == plan.shape(y);
        let candidate = [(a, b), (b, a)].into_iter().find_map(|(t, r)| {
            let j = plan.ops[..i]
                .iter()
                .position(|o| matches!(o, Op::Conv(c) if c.y == t && c.residual.is_none()))?;
            let ready = writer(plan, r).is_none_or(|k| k < j);
            (ready && storage(plan, r) != storage(plan, t) && storage_readers(plan, t) == 1)
                .then_some((j, r))
        });
        if let (true, Some((j, r))) = (same, candidate)
            && let Op::Conv(c) = &mut plan.ops[j]
        {
            c.residual = Some(r);
            c.y = y;
            plan.ops.remove(i);
            fused += 1;
            continue;
        }
        i += 1;
    }
    fused
}

/// A concatenation that reads, one after another along its own axis, step-1 narrows that
/// together are the whole of one tensor (YOLO's C2f and C3k2: a Split into halves, both
/// concatenated again after the bottlenecks) reads that tensor instead; [`drop_unread`] then
/// drops the narrows no other op reads, which saves a copy in and out of each such half.
/// Returns how many concatenation inputs were replaced.
fn fold_split_concats(plan: &mut Plan) -> usize {
    // Step-1 narrows by output tensor: (op index, source, axis, start, length).
    let narrow_of = |plan: &Plan, t: Tid| {
        plan.ops.iter().enumerate().find_map(|(i, o)| match o {
            Op::Narrow {
                x,
                y,
                axis,
                start,
                step: 1,
            } if *y == t => Some((i, *x, *axis, *start, plan.shape(t)[*axis])),
            _ => None,
        })
    };
    let mut replaced = 0;
    for i in 0..plan.ops.len() {
        let Op::Concat { xs, axis, .. } = &plan.ops[i] else {
            continue;
        };
        let axis = *axis;
        let mut folded = Vec::with_capacity(xs.len());
        let mut k = 0;
        while k < xs.len() {
            // The longest run from k of narrows of one source along `axis`, from 0 on.
            let mut run = None;
            if let Some((at, src, a, 0, _)) = narrow_of(plan, xs[k])
                && a == axis
                && at < i
            {
                let full = plan.shape(src)[axis];
                let (mut next, mut j) = (0, k);
                while j < xs.len()
                    && let Some((at, s2, a2, start, len)) = narrow_of(plan, xs[j])
                    && (s2, a2, start) == (src, axis, next)
                    && at < i
                    && next < full
                {
                    next += len;
                    j += 1;
                }
                if next == full && j > k {
                    run = Some((src, j));
                }
            }
            match run {
                Some((src, j)) => {
                    folded.push(src);
                    replaced += j - k;
                    k = j;
                }
                None => {
                    folded.push(xs[k]);
                    k += 1;
                }
            }
        }
        if let Op::Concat { xs, .. } = &mut plan.ops[i] {
            *xs = folded;
        }
    }
    replaced
}

/// A step-1 narrow of a concatenation along another axis is the concatenation of its inputs'
/// narrows. YOLO's head concatenates each level's box and class outputs along the channels,
/// the levels along the anchors, and splits the result into box and class again: each
/// level's narrow is then one of its two parts, unchanged, and the level concatenations, the
/// large one and the narrows are no longer needed. A narrow is rewritten only when every
/// input's part is found that way, with no copy (an input that is, or is a reshape that
/// keeps the dimensions up to the narrowed axis of, a concatenation along the narrowed axis
/// whose part is exactly the narrowed range, or that the range covers whole). Returns how
/// many narrows were rewritten; [`drop_unread`] removes what they left unread.
fn push_narrows_through_concats(plan: &mut Plan) -> usize {
    let mut rewritten = 0;
    for i in 0..plan.ops.len() {
        let Op::Narrow {
            x,
            y,
            axis: b,
            start,
            step: 1,
        } = plan.ops[i]
        else {
            continue;
        };
        let Some(Op::Concat { xs, axis: a, .. }) = plan.ops[..i]
            .iter()
            .find(|o| matches!(o, Op::Concat { y: cy, .. } if *cy == x))
            .cloned()
        else {
            continue;
        };
        if a == b {
            continue;
        }
        let len = plan.shape(y)[b];
        let parts: Option<Vec<Tid>> = xs
            .iter()
            .map(|&t| part_without_copy(plan, &plan.ops[..i], t, b, start, len))
            .collect();
        let Some(parts) = parts else {
            continue;
        };
        // Views made only now: tensors are added, the op list keeps its length.
        let parts = parts
            .into_iter()
            .zip(&xs)
            .map(|(p, &t)| {
                let mut shape = plan.shape(t).to_vec();
                shape[b] = len;
                if plan.shape(p) == shape.as_slice() {
                    p
                } else {
                    plan.tensors.push(TensorInfo {
                        shape,
                        storage: plan.tensors[p].storage,
                        view: None,
                    });
                    plan.tensors.len() - 1
                }
            })
            .collect();
        plan.ops[i] = Op::Concat {
            xs: parts,
            y,
            axis: a,
        };
        rewritten += 1;
    }
    rewritten
}

/// Elements `start..start + len` along axis `b` of tensor `t`, as a tensor already computed
/// by `before` (to be viewed in `t`'s shape with `len` on axis `b`), when there is one.
fn part_without_copy(
    plan: &Plan,
    before: &[Op],
    t: Tid,
    b: usize,
    start: usize,
    len: usize,
) -> Option<Tid> {
    let shape = plan.shape(t);
    if b >= shape.len() {
        return None;
    }
    if start == 0 && len == shape[b] {
        return Some(t);
    }
    let st = plan.tensors[t].storage;
    let Some(Op::Concat { xs, y, axis }) = before
        .iter()
        .find(|o| plan.tensors[o.output()].storage == st)
    else {
        return None;
    };
    let ys = plan.shape(*y);
    if *axis != b || ys.len() <= b || ys[..=b] != shape[..=b] {
        return None;
    }
    let mut off = 0;
    for &p in xs {
        let pl = plan.shape(p)[b];
        if off == start && pl == len {
            return Some(p);
        }
        off += pl;
    }
    None
}

/// Drops the ops whose output nothing reads (no later op, no graph output), until none is
/// left: what the rewrites above made redundant. Every op is pure.
fn drop_unread(plan: &mut Plan) {
    loop {
        let mut read = vec![false; plan.storage_len.len()];
        for t in plan
            .ops
            .iter()
            .flat_map(|o| o.inputs())
            .chain(plan.outputs.iter().map(|(_, o)| *o))
        {
            read[plan.tensors[t].storage] = true;
        }
        let before = plan.ops.len();
        plan.ops.retain(|o| read[plan.tensors[o.output()].storage]);
        if plan.ops.len() == before {
            return;
        }
    }
}

/// The shape of `shapes` concatenated along `axis`: `None` unless all have the same rank
/// (above `axis`) and the same size on every other axis, or the sum overflows.
fn concat_shape(shapes: &[&[usize]], axis: usize) -> Option<Vec<usize>> {
    let first = shapes.first()?;
    if axis >= first.len() {
        return None;
    }
    let mut out = first.to_vec();
    out[axis] = 0;
    for s in shapes {
        let same_elsewhere = s.len() == first.len()
            && s.iter()
                .zip(first.iter())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_elsewhere {
            return None;
        }
        out[axis] = out[axis].checked_add(s[axis])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::{Act, Op, Plan, TensorInfo, Tid, concat_shape, conv_out, reshape_dims};
    use super::{BinOp, Conv, fuse_residuals};
    use super::{drop_unread, fold_split_concats, push_narrows_through_concats, tensor_from_proto};

    /// input [1, 4, 2, 2] -> conv A (t1) -> conv B of t1 (t2); y = Add(t2, `other`) with
    /// `other` one of: 0 the input, 1 t1, 3 conv C of the input, written after B (t3);
    /// `extra_reader`: t2 is also a plan output.
    fn residual_plan(other: usize, extra_reader: bool) -> Plan {
        let shape = vec![1, 4, 2, 2];
        let tensors: Vec<TensorInfo> = (0..5)
            .map(|storage| TensorInfo {
                shape: shape.clone(),
                storage,
                view: None,
            })
            .collect();
        let conv = |x: Tid, y: Tid| {
            Op::Conv(Conv {
                x,
                y,
                weight: vec![0.5; 16],
                bias: vec![0.0; 4],
                m: 4,
                kernel: [1, 1],
                stride: [1, 1],
                pad: [0; 4],
                dilation: [1, 1],
                group: 1,
                act: Act::Silu,
                residual: None,
                nhwc: false,
            })
        };
        let mut ops = vec![conv(0, 1), conv(1, 2)];
        if other == 3 {
            ops.push(conv(0, 3));
        }
        let full = vec![16, 4, 2, 1];
        ops.push(Op::Binary {
            op: BinOp::Add,
            a: 2,
            b: other,
            y: 4,
            a_strides: full.clone(),
            b_strides: full,
        });
        let mut outputs = vec![("y".to_string(), 4)];
        if extra_reader {
            outputs.push(("t2".to_string(), 2));
        }
        Plan {
            storage_len: vec![16; 5],
            tensors,
            constants: vec![],
            ops,
            input: 0,
            outputs,
        }
    }

    #[test]
    fn a_residual_add_goes_into_the_convolution_that_feeds_it() {
        for other in [0, 1] {
            let mut p = residual_plan(other, false);
            assert_eq!(fuse_residuals(&mut p), 1, "residual {other}");
            assert_eq!(p.ops.len(), 2);
            let Op::Conv(c) = &p.ops[1] else {
                panic!("{:?}", p.ops[1])
            };
            assert_eq!((c.x, c.y, c.residual), (1, 4, Some(other)));
        }
    }

    #[test]
    fn a_residual_add_stays_when_its_conv_output_is_read_again_or_the_residual_comes_later() {
        // t2 is also an output: the Add's operand must be stored.
        let mut p = residual_plan(0, true);
        assert_eq!(fuse_residuals(&mut p), 0);
        assert_eq!(p.ops.len(), 3);
        // The other operand is written by a convolution after B: B cannot read it. That
        // later convolution (C) takes B's output as its residual instead.
        let mut p = residual_plan(3, false);
        assert_eq!(fuse_residuals(&mut p), 1);
        let Op::Conv(c) = &p.ops[2] else {
            panic!("{:?}", p.ops[2])
        };
        assert_eq!((c.x, c.y, c.residual), (0, 4, Some(2)));
        let Op::Conv(b) = &p.ops[1] else {
            panic!("{:?}", p.ops[1])
        };
        assert_eq!((b.y, b.residual), (2, None));
    }

    /// input [2, 6, 3, 3]; two narrows of it along the channels (`parts`: start, length, step),
    /// an activation of the last narrow, and a concatenation of `order` (indices into the
    /// narrows, then the activation's output).
    fn split_concat(parts: &[(usize, usize, usize)], order: &[usize]) -> Plan {
        let mut tensors = vec![TensorInfo {
            shape: vec![2, 6, 3, 3],
            storage: 0,
            view: None,
        }];
        let mut ops = Vec::new();
        let add = |tensors: &mut Vec<TensorInfo>, shape: Vec<usize>| -> Tid {
            tensors.push(TensorInfo {
                storage: tensors.len(),
                shape,
                view: None,
            });
            tensors.len() - 1
        };
        let mut outs = Vec::new();
        for &(start, len, step) in parts {
            let y = add(&mut tensors, vec![2, len, 3, 3]);
            ops.push(Op::Narrow {
                x: 0,
                y,
                axis: 1,
                start,
                step,
            });
            outs.push(y);
        }
        let last = *outs.last().unwrap();
        let z = add(&mut tensors, vec![2, parts.last().unwrap().1, 3, 3]);
        ops.push(Op::Act {
            x: last,
            y: z,
            act: Act::Sigmoid,
        });
        outs.push(z);
        let xs: Vec<Tid> = order.iter().map(|&i| outs[i]).collect();
        let c = xs.iter().map(|&t| tensors[t].shape[1]).sum();
        let y = add(&mut tensors, vec![2, c, 3, 3]);
        ops.push(Op::Concat { xs, y, axis: 1 });
        Plan {
            storage_len: tensors.iter().map(|t| t.shape.iter().product()).collect(),
            tensors,
            constants: vec![],
            ops,
            input: 0,
            outputs: vec![("y".into(), y)],
        }
    }

    fn narrows(p: &Plan) -> usize {
        p.ops
            .iter()
            .filter(|o| matches!(o, Op::Narrow { .. }))
            .count()
    }

    #[test]
    fn a_split_concatenated_again_in_order_is_read_whole_and_computes_the_same() {
        let x = super::super::tensor::sample_input(2 * 6 * 9, 4);
        // C2f / C3k2: halves 0..3 and 3..6, both concatenated, the second also activated.
        let before = split_concat(&[(0, 3, 1), (3, 3, 1)], &[0, 1, 2]);
        let mut after = before.clone();
        assert_eq!(fold_split_concats(&mut after), 2);
        drop_unread(&mut after);
        let Some(Op::Concat { xs, .. }) = after.ops.last() else {
            panic!("the concatenation stays last")
        };
        assert_eq!(
            xs[0], before.input,
            "the concatenation reads the split's input"
        );
        assert_eq!(xs.len(), 2);
        assert_eq!(narrows(&after), 1, "the half nothing else reads is dropped");
        let cpu = super::super::cpu::run;
        assert_eq!(cpu(&before, &x).unwrap(), cpu(&after, &x).unwrap());
    }

    /// A plan built op by op, for the rewrites' tests.
    struct Build(Plan);

    impl Build {
        fn new(input: Vec<usize>) -> Self {
            Build(Plan {
                storage_len: vec![input.iter().product()],
                tensors: vec![TensorInfo {
                    shape: input,
                    storage: 0,
                    view: None,
                }],
                constants: vec![],
                ops: vec![],
                input: 0,
                outputs: vec![],
            })
        }
        fn tensor(&mut self, shape: Vec<usize>) -> Tid {
            self.0.storage_len.push(shape.iter().product());
            self.0.tensors.push(TensorInfo {
                shape,
                storage: self.0.storage_len.len() - 1,
                view: None,
            });
            self.0.tensors.len() - 1
        }
        fn view(&mut self, of: Tid, shape: Vec<usize>) -> Tid {
            let storage = self.0.tensors[of].storage;
            self.0.tensors.push(TensorInfo {
                shape,
                storage,
                view: None,
            });
            self.0.tensors.len() - 1
        }
        fn narrow(&mut self, x: Tid, axis: usize, start: usize, len: usize) -> Tid {
            let mut shape = self.0.shape(x).to_vec();
            shape[axis] = len;
            let y = self.tensor(shape);
            self.0.ops.push(Op::Narrow {
                x,
                y,
                axis,
                start,
                step: 1,
            });
            y
        }
        fn sigmoid(&mut self, x: Tid) -> Tid {
            let y = self.tensor(self.0.shape(x).to_vec());
            self.0.ops.push(Op::Act {
                x,
                y,
                act: Act::Sigmoid,
            });
            y
        }
        fn concat(&mut self, xs: Vec<Tid>, axis: usize) -> Tid {
            let mut shape = self.0.shape(xs[0]).to_vec();
            shape[axis] = xs.iter().map(|&t| self.0.shape(t)[axis]).sum();
            let y = self.tensor(shape);
            self.0.ops.push(Op::Concat { xs, y, axis });
            y
        }
    }

    /// YOLO's head in small: two levels, each a 3-channel box and a 5-channel class part
    /// concatenated along the channels, viewed as [n, 8, cells], the levels concatenated along
    /// the cells, and the result narrowed to channels `box` and `cls` (start, length).
    fn head(box_: (usize, usize), cls: (usize, usize)) -> Plan {
        let mut g = Build::new(vec![2, 8, 4, 4]);
        let b0 = g.narrow(0, 1, 0, 3);
        let b0 = g.sigmoid(b0);
        let c0 = g.narrow(0, 1, 3, 5);
        let c0 = g.sigmoid(c0);
        let l0 = g.concat(vec![b0, c0], 1);
        let r0 = g.view(l0, vec![2, 8, 16]);
        let b1 = g.narrow(b0, 2, 0, 2);
        let b1 = g.sigmoid(b1);
        let c1 = g.narrow(c0, 2, 1, 2);
        let c1 = g.sigmoid(c1);
        let l1 = g.concat(vec![b1, c1], 1);
        let r1 = g.view(l1, vec![2, 8, 8]);
        let all = g.concat(vec![r0, r1], 2);
        let yb = g.narrow(all, 1, box_.0, box_.1);
        let yc = g.narrow(all, 1, cls.0, cls.1);
        g.0.outputs = vec![("box".into(), yb), ("cls".into(), yc)];
        g.0
    }

    #[test]
    fn narrows_of_the_heads_concatenation_read_the_levels_parts_and_compute_the_same() {
        let x = super::super::tensor::sample_input(2 * 8 * 16, 6);
        let before = head((0, 3), (3, 5));
        let mut after = before.clone();
        assert_eq!(push_narrows_through_concats(&mut after), 2);
        drop_unread(&mut after);
        let count = |p: &Plan, axis: usize| {
            p.ops
                .iter()
                .filter(|o| matches!(o, Op::Concat { axis: a, .. } if *a == axis))
                .count()
        };
        assert_eq!((count(&before, 1), count(&before, 2)), (2, 1));
        assert_eq!(
            (count(&after, 1), count(&after, 2)),
            (0, 2),
            "box and class concatenated along the cells, the level concatenations gone: {:?}",
            after.ops
        );
        // The graph's own narrows (the two levels' parts) remain; the two of the big
        // concatenation are gone.
        assert_eq!(narrows(&before) - narrows(&after), 2);
        let cpu = super::super::cpu::run;
        assert_eq!(cpu(&before, &x).unwrap(), cpu(&after, &x).unwrap());
    }

    #[test]
    fn a_narrow_across_the_levels_parts_is_kept() {
        // Channels 0..4 are the box part and one class channel: no part is the range.
        for (box_, cls) in [((0, 4), (4, 4)), ((1, 2), (3, 5))] {
            let before = head(box_, cls);
            let mut after = before.clone();
            let n = push_narrows_through_concats(&mut after);
            drop_unread(&mut after);
            let x = super::super::tensor::sample_input(2 * 8 * 16, 6);
            let cpu = super::super::cpu::run;
            assert_eq!(cpu(&before, &x).unwrap(), cpu(&after, &x).unwrap());
            // Only the class narrow of the second case is a part.
            assert_eq!(n, usize::from(cls == (3, 5)), "{box_:?} {cls:?}");
        }
    }

    #[test]
    fn narrows_that_are_not_the_whole_tensor_in_order_are_kept() {
        for (parts, order) in [
            // Out of order.
            (&[(0, 3, 1), (3, 3, 1)][..], &[1, 0, 2][..]),
            // Not the whole tensor.
            (&[(0, 2, 1), (2, 2, 1)], &[0, 1, 2]),
            // Not from the start.
            (&[(1, 2, 1), (3, 3, 1)], &[0, 1, 2]),
            // Strided.
            (&[(0, 3, 2), (3, 3, 1)], &[0, 1, 2]),
        ] {
            let before = split_concat(parts, order);
            let mut after = before.clone();
            assert_eq!(fold_split_concats(&mut after), 0, "{parts:?} {order:?}");
            drop_unread(&mut after);
            assert_eq!(after, before);
        }
    }

    /// Found by the onnx_model fuzz target: a Slice with fewer axes than starts was indexed
    /// past its axes.
    #[test]
    fn slice_inputs_of_other_lengths_are_refused() {
        let node = its_model::onnx::NodeProto {
            op_type: "Slice".into(),
            name: "s".into(),
            ..Default::default()
        };
        let axes = |ends: &[i64], axes: Option<&[i64]>, steps: Option<&[i64]>| {
            super::slice_axes(
                &node,
                3,
                vec![0, 1],
                ends.to_vec(),
                axes.map(<[i64]>::to_vec),
                steps.map(<[i64]>::to_vec),
            )
        };
        // Defaults: axes from 0, steps of 1; negative axes count from the last.
        assert_eq!(
            axes(&[2, 3], None, None).unwrap(),
            vec![(0, 0, 2, 1), (1, 1, 3, 1)]
        );
        assert_eq!(
            axes(&[2, 3], Some(&[-1, 1]), Some(&[2, 1])).unwrap(),
            vec![(2, 0, 2, 2), (1, 1, 3, 1)]
        );
        // The fuzzer's case (one axis for two starts), and the other lengths.
        for (ends, ax, steps) in [
            (&[2, 3][..], Some(&[0][..]), None),
            (&[2][..], None, None),
            (&[2, 3][..], None, Some(&[1][..])),
        ] {
            let err = axes(ends, ax, steps).unwrap_err();
            assert!(err.to_string().contains("2 starts"), "{err}");
        }
        assert!(
            axes(&[2, 3], Some(&[0, 3]), None).is_err(),
            "axis 3 of rank 3"
        );
    }

    /// Found by the onnx_model fuzz target: a constant-folded Range over most of i64 asked
    /// for a 2^60-element allocation. Folded results past `MAX_FOLDED` elements are refused
    /// before anything is allocated, for every folded op whose output can outgrow its inputs.
    #[test]
    fn folded_constants_past_the_size_limit_are_refused() {
        use super::{MAX_FOLDED, fold};
        use crate::engine::tensor::HostTensor;
        let node = |op: &str| its_model::onnx::NodeProto {
            op_type: op.into(),
            name: "n".into(),
            output: vec!["y".into()],
            ..Default::default()
        };
        let i = |v: i64| Some(HostTensor::i64(vec![], vec![v]));
        let f = |v: f32| Some(HostTensor::f32(vec![], vec![v]));
        let range = node("Range");
        // What the limit leaves alone.
        let small = fold(&range, &[i(0), i(5), i(2)]).unwrap();
        assert_eq!(small[0].as_i64(), vec![0, 2, 4]);
        let down = fold(&range, &[i(3), i(0), i(-1)]).unwrap();
        assert_eq!(down[0].as_i64(), vec![3, 2, 1]);
        let quarters = fold(&range, &[f(0.0), f(1.0), f(0.25)]).unwrap();
        assert_eq!(quarters[0].as_f32(), vec![0.0, 0.25, 0.5, 0.75]);
        let limit = MAX_FOLDED as i64;
        assert_eq!(
            fold(&range, &[i(0), i(limit), i(1)]).unwrap()[0].shape,
            vec![MAX_FOLDED]
        );
        // Too many elements, an overflowing count, no defined count, an empty scalar.
        for ins in [
            [i(0), i(limit + 1), i(1)],
            [i(0), i(i64::MAX), i(1)],
            [i(i64::MIN), i(i64::MAX), i(1)],
            [i(i64::MAX), i(i64::MIN), i(-1)],
            [f(0.0), f(1e30), f(1.0)],
            [f(0.0), f(1.0), f(0.0)],
            [f(0.0), f(f32::INFINITY), f(1.0)],
            [Some(HostTensor::i64(vec![0], vec![])), i(1), i(1)],
        ] {
            let err = fold(&range, &ins).unwrap_err();
            assert!(err.to_string().contains("Range"), "{err}");
        }
        let dims = |v: &[i64]| Some(HostTensor::i64(vec![v.len()], v.to_vec()));
        let big = 1i64 << 13;
        assert!(fold(&node("ConstantOfShape"), &[dims(&[big, big])]).is_err());
        assert!(fold(&node("ConstantOfShape"), &[dims(&[i64::MAX, i64::MAX])]).is_err());
        assert_eq!(
            fold(&node("ConstantOfShape"), &[dims(&[2, 3])]).unwrap()[0].shape,
            vec![2, 3]
        );
        let one_elem = Some(HostTensor::f32(vec![1], vec![1.0]));
        assert!(fold(&node("Expand"), &[one_elem.clone(), dims(&[big, big])]).is_err());
        let column = Some(HostTensor::f32(vec![4096, 1], vec![1.0; 4096]));
        let row = Some(HostTensor::f32(vec![1, 8192], vec![1.0; 8192]));
        assert!(fold(&node("Add"), &[column, row]).is_err());
        let x = Some(HostTensor::f32(vec![2, 4096], vec![0.0; 8192]));
        let idx = Some(HostTensor::i64(vec![8192], vec![0; 8192]));
        assert!(fold(&node("Gather"), &[x, idx]).is_err());
    }

    /// Found by the onnx_model fuzz target: a constant-folded Split whose sizes add up to more
    /// than its axis read past the data (the runtime Split checked the sum, folding did not).
    #[test]
    fn split_sizes_must_add_up_to_the_axis() {
        let node = |outputs: usize, split: Option<Vec<i64>>, num_outputs: Option<i64>| {
            let mut n = its_model::onnx::NodeProto {
                op_type: "Split".into(),
                name: "s".into(),
                output: (0..outputs).map(|i| format!("o{i}")).collect(),
                ..Default::default()
            };
            if let Some(v) = split {
                n.attribute
                    .push(its_model::onnx::AttributeProto::ints("split", &v));
            }
            if let Some(v) = num_outputs {
                n.attribute
                    .push(its_model::onnx::AttributeProto::int("num_outputs", v));
            }
            n
        };
        let sizes = |n: &its_model::onnx::NodeProto, given: Option<Vec<i64>>, dim| {
            super::split_sizes(n, given, dim)
        };
        // Equal parts, the last shorter (ONNX 18).
        assert_eq!(sizes(&node(3, None, None), None, 7).unwrap(), vec![3, 3, 1]);
        assert_eq!(sizes(&node(2, None, Some(2)), None, 8).unwrap(), vec![4, 4]);
        assert_eq!(
            sizes(&node(2, Some(vec![3, 5]), None), None, 8).unwrap(),
            vec![3, 5]
        );
        assert_eq!(
            sizes(&node(2, None, None), Some(vec![6, 2]), 8).unwrap(),
            vec![6, 2]
        );
        // The fuzzer's case: sizes past the axis. Also short sums, overflowing sums, and a
        // num_outputs that is not the node's output count.
        for (n, given, dim) in [
            (node(2, None, None), Some(vec![2, 1]), 2),
            (node(2, None, None), Some(vec![1, 0]), 2),
            (
                node(3, None, None),
                Some(vec![i64::MAX, i64::MAX, i64::MAX]),
                2,
            ),
            (node(2, Some(vec![1, 2]), None), None, 2),
            (node(2, None, Some(1 << 40)), None, 8),
        ] {
            assert!(sizes(&n, given.clone(), dim).is_err(), "{given:?} of {dim}");
        }
    }

    /// Found by the onnx_model fuzz target: a constant-folded Transpose whose `perm` names an
    /// axis its input does not have indexed past the shape (a panic in release builds too).
    #[test]
    fn transpose_perm_refuses_what_is_not_a_permutation_of_the_rank() {
        let node = |perm: Option<Vec<i64>>| {
            let mut n = its_model::onnx::NodeProto {
                op_type: "Transpose".into(),
                name: "t".into(),
                ..Default::default()
            };
            if let Some(p) = perm {
                n.attribute
                    .push(its_model::onnx::AttributeProto::ints("perm", &p));
            }
            n
        };
        assert_eq!(
            super::transpose_perm(&node(None), 3).unwrap(),
            vec![2, 1, 0]
        );
        assert_eq!(
            super::transpose_perm(&node(Some(vec![0, 2, 1])), 3).unwrap(),
            vec![0, 2, 1]
        );
        for bad in [
            vec![1],
            vec![0, 1, 3],
            vec![0, 0, 1],
            vec![0, -1, 1],
            vec![0, 1],
        ] {
            let err = super::transpose_perm(&node(Some(bad.clone())), 3).unwrap_err();
            assert!(
                err.to_string().contains("not a permutation"),
                "{bad:?}: {err}"
            );
        }
        // The fuzzer's case: a rank-1 input and a perm naming axis 1.
        assert!(super::transpose_perm(&node(Some(vec![1])), 1).is_err());
    }

    /// Found by the onnx_model fuzz target: a folded Concat of a rank-1 and a rank-3
    /// constant indexed past the shorter shape.
    #[test]
    fn concat_shape_refuses_inputs_of_other_ranks_or_sizes() {
        assert_eq!(concat_shape(&[&[2, 3], &[2, 5]], 1), Some(vec![2, 8]));
        assert_eq!(concat_shape(&[&[4], &[1]], 0), Some(vec![5]));
        assert_eq!(concat_shape(&[&[1], &[1, 1, 3]], 2), None);
        assert_eq!(concat_shape(&[&[1, 1, 3], &[1]], 2), None);
        assert_eq!(concat_shape(&[&[2, 3], &[4, 3]], 1), None);
        assert_eq!(concat_shape(&[&[2], &[usize::MAX]], 0), None);
        assert_eq!(concat_shape(&[&[2]], 1), None);
        assert_eq!(concat_shape(&[], 0), None);
    }

    #[test]
    fn reshape_dims_refuses_dimensions_whose_product_overflows() {
        // The fuzzer's shape: dimensions whose product wraps around usize.
        let huge = i64::MAX / 2;
        assert_eq!(reshape_dims(&[2, 3], &[huge, huge, 4], false), None);
        assert_eq!(reshape_dims(&[2, 3], &[huge, huge, -1], false), None);
        // Ordinary shapes still resolve.
        assert_eq!(reshape_dims(&[2, 3, 4], &[6, -1], false), Some(vec![6, 4]));
        assert_eq!(reshape_dims(&[2, 3, 4], &[0, 12], false), Some(vec![2, 12]));
    }

    /// Found by the onnx_model fuzz target with overflow checks: a zero kernel size underflowed.
    #[test]
    fn conv_out_refuses_hostile_windows() {
        assert_eq!(conv_out(32, 3, 1, 2, 1), Some(32));
        assert_eq!(conv_out(32, 3, 2, 2, 1), Some(16));
        assert_eq!(conv_out(32, 0, 1, 0, 1), None);
        assert_eq!(conv_out(32, 3, 0, 0, 1), None);
        assert_eq!(conv_out(32, 3, 1, 0, 0), None);
        assert_eq!(conv_out(32, usize::MAX, 1, 0, 2), None);
        assert_eq!(conv_out(usize::MAX, 1, 1, 1, 1), None);
        assert_eq!(conv_out(2, 5, 1, 0, 1), None);
    }

    /// Found by the onnx_model fuzz target with overflow checks: an initializer whose dims
    /// multiply past usize.
    #[test]
    fn an_initializer_whose_dims_overflow_is_refused() {
        let mut t = its_model::onnx::TensorProto::from_f32("w", &[1], &[1.0]);
        t.dims = vec![1 << 40, 1 << 40];
        let err = tensor_from_proto(&t).unwrap_err().to_string();
        assert!(err.contains("overflow"), "{err}");
        let ok = its_model::onnx::TensorProto::from_f32("w", &[2, 1], &[1.0, 2.0]);
        assert!(tensor_from_proto(&ok).is_ok());
    }
}
