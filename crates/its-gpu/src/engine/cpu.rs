//! The CPU reference executor of a [`Plan`]: plain loops, f32 with f32 accumulation, the
//! semantics every CUDA kernel of `kernels/engine.cu` is checked against.

use std::borrow::Cow;

use super::EngineBuildError;
use super::memory::MemoryPlan;
use super::plan::{Conv, Op, Plan};
use super::slices;
use super::tensor::{broadcast_index, strides, transpose_index};

/// Runs `plan` on `input` (the input tensor's elements) and returns every graph output.
pub fn run(plan: &Plan, input: &[f32]) -> Result<Vec<Vec<f32>>, EngineBuildError> {
    let st = Separate(plan.storage_len.iter().map(|&n| vec![0.0; n]).collect());
    execute(plan, input, st)
}

/// Runs `plan` like [`run`], but with every storage at its planned place in one arena (`mem`,
/// offsets in bytes of `mem.elem_bytes`), the way the CUDA executor lays memory out. The arena
/// starts as NaN everywhere but the constants and the input, so a value read after another
/// storage overwrote it, or read before it was written, changes the outputs.
pub fn run_in_arena(
    plan: &Plan,
    input: &[f32],
    mem: &MemoryPlan,
) -> Result<Vec<Vec<f32>>, EngineBuildError> {
    let n = plan.storage_len.len();
    if mem.offsets.len() != n
        || mem.elem_bytes == 0
        || mem
            .offsets
            .iter()
            .any(|o| !o.is_multiple_of(mem.elem_bytes))
    {
        return Err(EngineBuildError::Shape(
            "memory plan does not fit the plan".into(),
        ));
    }
    let at: Vec<usize> = mem.offsets.iter().map(|o| o / mem.elem_bytes).collect();
    let len = mem.arena_bytes / mem.elem_bytes;
    let st = Arena {
        buf: vec![f32::NAN; len],
        at,
        len: plan.storage_len.clone(),
    };
    execute(plan, input, st)
}

/// Where the executor keeps storages.
trait Storages {
    /// Storage `s`, all of it.
    fn get(&self, s: usize) -> &[f32];
    /// A buffer for an op to write storage `s` into (its old contents, or scratch).
    fn take(&mut self, s: usize) -> Vec<f32>;
    /// Puts back what an op wrote into storage `s`.
    fn put(&mut self, s: usize, v: Vec<f32>);
    /// Storage `s` as it is now, to write a slice of it and put it back.
    fn current(&mut self, s: usize) -> Vec<f32>;
}

/// One buffer per storage.
struct Separate(Vec<Vec<f32>>);

impl Storages for Separate {
    fn get(&self, s: usize) -> &[f32] {
        &self.0[s]
    }
    fn take(&mut self, s: usize) -> Vec<f32> {
        std::mem::take(&mut self.0[s])
    }
    fn put(&mut self, s: usize, v: Vec<f32>) {
        self.0[s] = v;
    }
    fn current(&mut self, s: usize) -> Vec<f32> {
        std::mem::take(&mut self.0[s])
    }
}

/// Every storage at its offset (elements) in one buffer.
struct Arena {
    buf: Vec<f32>,
    at: Vec<usize>,
    len: Vec<usize>,
}

impl Storages for Arena {
    fn get(&self, s: usize) -> &[f32] {
        &self.buf[self.at[s]..self.at[s] + self.len[s]]
    }
    fn take(&mut self, s: usize) -> Vec<f32> {
        vec![f32::NAN; self.len[s]]
    }
    fn put(&mut self, s: usize, v: Vec<f32>) {
        self.buf[self.at[s]..self.at[s] + self.len[s]].copy_from_slice(&v);
    }
    fn current(&mut self, s: usize) -> Vec<f32> {
        self.get(s).to_vec()
    }
}

fn execute(
    plan: &Plan,
    input: &[f32],
    mut st: impl Storages,
) -> Result<Vec<Vec<f32>>, EngineBuildError> {
    let expected = plan.tensors[plan.input].numel();
    if input.len() != expected {
        return Err(EngineBuildError::Shape(format!(
            "input has {} values, the plan takes {expected}",
            input.len()
        )));
    }
    for (s, v) in &plan.constants {
        let mut b = st.take(*s);
        b.copy_from_slice(v);
        st.put(*s, b);
    }
    let s_in = plan.tensors[plan.input].storage;
    let mut b = st.take(s_in);
    b[..input.len()].copy_from_slice(input);
    st.put(s_in, b);
    for op in &plan.ops {
        let y_info = &plan.tensors[op.output()];
        let ys = y_info.storage;
        // An output that is a view (a concatenation's slice) is computed packed, then
        // written into its place.
        // A concatenation whose producers wrote some inputs in place keeps those.
        let placed = match op {
            Op::Concat { xs, y, .. } => slices::in_place(plan, xs, *y),
            _ => Vec::new(),
        };
        let mut out = match y_info.view {
            Some(_) => vec![0.0; y_info.numel()],
            None if placed.contains(&true) => st.current(ys),
            None => st.take(ys),
        };
        let get = |t: usize| -> Cow<'_, [f32]> {
            let info = &plan.tensors[t];
            let s = st.get(info.storage);
            match info.view {
                None => Cow::Borrowed(s),
                Some(_) => Cow::Owned((0..info.numel()).map(|k| s[info.element(k)]).collect()),
            }
        };
        match op {
            Op::Conv(c) if c.nhwc => {
                // The reference computes in NCHW; the layout only changes where values live.
                let (xs, x) = nchw(plan.shape(c.x), &get(c.x));
                let ys = permuted(plan.shape(c.y), &TO_NCHW);
                let mut y = vec![0.0; out.len()];
                conv(c, &xs, &ys, &x, &mut y);
                out.copy_from_slice(&nhwc(&ys, &y));
                add_residual(c, get, &mut out);
            }
            Op::Conv(c) => {
                conv(c, plan.shape(c.x), plan.shape(c.y), &get(c.x), &mut out);
                add_residual(c, get, &mut out);
            }
            Op::MaxPool { nhwc: true, .. } | Op::Upsample { nhwc: true, .. } => {
                let x = op.inputs()[0];
                let (xs, xv) = nchw(plan.shape(x), &get(x));
                let ys = permuted(plan.shape(op.output()), &TO_NCHW);
                let y = pool_or_upsample(op, &xs, &ys, &xv);
                out.copy_from_slice(&nhwc(&ys, &y));
            }
            Op::Act { x, act, .. } => {
                for (o, &v) in out.iter_mut().zip(get(*x).iter()) {
                    *o = act.apply(v);
                }
            }
            Op::Binary {
                op,
                a,
                b,
                y,
                a_strides,
                b_strides,
            } => {
                let ys = plan.shape(*y);
                let ia = broadcast_index(ys, a_strides);
                let ib = broadcast_index(ys, b_strides);
                let (va, vb) = (get(*a), get(*b));
                for (k, o) in out.iter_mut().enumerate() {
                    *o = op.apply(va[ia[k]], vb[ib[k]]);
                }
            }
            Op::Concat { xs, y, axis } => {
                let yshape = plan.shape(*y);
                let outer: usize = yshape[..*axis].iter().product();
                let ychunk: usize = yshape[*axis..].iter().product();
                let mut off = 0;
                for (k, &x) in xs.iter().enumerate() {
                    let chunk: usize = plan.shape(x)[*axis..].iter().product();
                    if placed.get(k) == Some(&true) {
                        off += chunk;
                        continue;
                    }
                    let v = get(x);
                    for o in 0..outer {
                        out[o * ychunk + off..o * ychunk + off + chunk]
                            .copy_from_slice(&v[o * chunk..(o + 1) * chunk]);
                    }
                    off += chunk;
                }
            }
            Op::Narrow {
                x,
                y,
                axis,
                start,
                step,
            } => {
                let xs = plan.shape(*x);
                let outer: usize = xs[..*axis].iter().product();
                let inner: usize = xs[*axis + 1..].iter().product();
                let (dim, len) = (xs[*axis], plan.shape(*y)[*axis]);
                let v = get(*x);
                let mut k = 0;
                for o in 0..outer {
                    for j in 0..len {
                        let src = (o * dim + start + j * step) * inner;
                        out[k..k + inner].copy_from_slice(&v[src..src + inner]);
                        k += inner;
                    }
                }
            }
            Op::MaxPool { x, y, .. } | Op::Upsample { x, y, .. } => {
                let r = pool_or_upsample(op, plan.shape(*x), plan.shape(*y), &get(*x));
                out.copy_from_slice(&r);
            }
            Op::Transpose { x, perm, .. } => {
                let (_, idx) = transpose_index(plan.shape(*x), perm);
                let v = get(*x);
                for (o, &i) in out.iter_mut().zip(&idx) {
                    *o = v[i];
                }
            }
            Op::MatMul { a, b, y } => {
                let ash = plan.shape(*a);
                let r = ash.len();
                let (m, k) = (ash[r - 2], ash[r - 1]);
                let n = plan.shape(*b)[r - 1];
                let batch: usize = plan.shape(*y)[..r - 2].iter().product();
                let (va, vb) = (get(*a), get(*b));
                for bi in 0..batch {
                    for i in 0..m {
                        for j in 0..n {
                            let mut acc = 0.0f32;
                            for p in 0..k {
                                acc += va[(bi * m + i) * k + p] * vb[(bi * k + p) * n + j];
                            }
                            out[(bi * m + i) * n + j] = acc;
                        }
                    }
                }
            }
            Op::Softmax { x, axis, .. } => {
                let xs = plan.shape(*x);
                let outer: usize = xs[..*axis].iter().product();
                let inner: usize = xs[*axis + 1..].iter().product();
                let len = xs[*axis];
                let v = get(*x);
                for o in 0..outer {
                    for i in 0..inner {
                        let at = |j: usize| (o * len + j) * inner + i;
                        let mx = (0..len).map(|j| v[at(j)]).fold(f32::NEG_INFINITY, f32::max);
                        let mut sum = 0.0f32;
                        for j in 0..len {
                            let e = (v[at(j)] - mx).exp();
                            out[at(j)] = e;
                            sum += e;
                        }
                        for j in 0..len {
                            out[at(j)] /= sum;
                        }
                    }
                }
            }
        }
        match y_info.view {
            Some(_) => {
                let mut whole = st.current(ys);
                for (k, v) in out.into_iter().enumerate() {
                    whole[y_info.element(k)] = v;
                }
                st.put(ys, whole);
            }
            None => st.put(ys, out),
        }
    }
    Ok(plan
        .outputs
        .iter()
        .map(|(_, t)| {
            let s = plan.tensors[*t].storage;
            st.get(s)[..plan.tensors[*t].numel()].to_vec()
        })
        .collect())
}

const TO_NCHW: [usize; 4] = [0, 3, 1, 2];
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];

fn permuted(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p]).collect()
}

/// An `[n, h, w, c]` tensor as `[n, c, h, w]`.
fn nchw(shape: &[usize], v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let (s, idx) = transpose_index(shape, &TO_NCHW);
    (s, idx.iter().map(|&i| v[i]).collect())
}

/// An `[n, c, h, w]` tensor as `[n, h, w, c]`.
fn nhwc(shape: &[usize], v: &[f32]) -> Vec<f32> {
    let (_, idx) = transpose_index(shape, &TO_NHWC);
    idx.iter().map(|&i| v[i]).collect()
}

/// MaxPool or Upsample over NCHW shapes.
fn pool_or_upsample(op: &Op, xs: &[usize], yshape: &[usize], v: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; yshape.iter().product()];
    match op {
        Op::MaxPool {
            kernel,
            stride,
            pad,
            ..
        } => {
            let (h, w, oh, ow) = (xs[2], xs[3], yshape[2], yshape[3]);
            for p in 0..xs[0] * xs[1] {
                for i in 0..oh {
                    for j in 0..ow {
                        let mut m = f32::NEG_INFINITY;
                        for ki in 0..kernel[0] {
                            let r = (i * stride[0] + ki) as isize - pad[0] as isize;
                            if r < 0 || r >= h as isize {
                                continue;
                            }
                            for kj in 0..kernel[1] {
                                let c = (j * stride[1] + kj) as isize - pad[1] as isize;
                                if c < 0 || c >= w as isize {
                                    continue;
                                }
                                m = m.max(v[(p * h + r as usize) * w + c as usize]);
                            }
                        }
                        out[(p * oh + i) * ow + j] = m;
                    }
                }
            }
        }
        Op::Upsample { factor, .. } => {
            let (h, w) = (xs[2], xs[3]);
            let (oh, ow) = (h * factor[0], w * factor[1]);
            for p in 0..xs[0] * xs[1] {
                for i in 0..oh {
                    for j in 0..ow {
                        out[(p * oh + i) * ow + j] = v[(p * h + i / factor[0]) * w + j / factor[1]];
                    }
                }
            }
        }
        _ => unreachable!("pool_or_upsample takes MaxPool or Upsample"),
    }
    out
}

/// `y += residual` after the activation (the residual has `y`'s shape and layout).
fn add_residual<'a>(c: &Conv, get: impl Fn(usize) -> Cow<'a, [f32]>, out: &mut [f32]) {
    if let Some(r) = c.residual {
        for (o, &v) in out.iter_mut().zip(get(r).iter()) {
            *o += v;
        }
    }
}

fn conv(c: &Conv, xs: &[usize], ys: &[usize], x: &[f32], out: &mut [f32]) {
    let (n, cin, h, w) = (xs[0], xs[1], xs[2], xs[3]);
    let (oh, ow) = (ys[2], ys[3]);
    let cg = cin / c.group;
    let mg = c.m / c.group;
    let [kh, kw] = c.kernel;
    let ws = strides(&[c.m, cg, kh, kw]);
    let mut acc = vec![0.0f32; ow];
    for b in 0..n {
        for m in 0..c.m {
            let g = m / mg;
            for i in 0..oh {
                acc.fill(c.bias[m]);
                for ci in 0..cg {
                    let plane = &x[((b * cin) + g * cg + ci) * h * w..][..h * w];
                    for ki in 0..kh {
                        let r = (i * c.stride[0] + ki * c.dilation[0]) as isize - c.pad[0] as isize;
                        if r < 0 || r >= h as isize {
                            continue;
                        }
                        let row = &plane[r as usize * w..][..w];
                        for kj in 0..kw {
                            let wv = c.weight[m * ws[0] + ci * ws[1] + ki * ws[2] + kj];
                            let off = (kj * c.dilation[1]) as isize - c.pad[1] as isize;
                            for (j, a) in acc.iter_mut().enumerate() {
                                let col = (j * c.stride[1]) as isize + off;
                                if col >= 0 && col < w as isize {
                                    *a += wv * row[col as usize];
                                }
                            }
                        }
                    }
                }
                let dst = &mut out[((b * c.m + m) * oh + i) * ow..][..ow];
                for (d, &a) in dst.iter_mut().zip(&acc) {
                    *d = c.act.apply(a);
                }
            }
        }
    }
}
