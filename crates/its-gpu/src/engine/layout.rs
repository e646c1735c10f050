//! Channels-last rewrite of a [`Plan`]: the 4-D activations between convolutions are stored
//! `[n, h, w, c]`, the layout cuDNN's tensor-core convolutions run on. The rewrite keeps the
//! plan's meaning: tensors in the NHWC region get NHWC shapes, concatenations and narrows move
//! their channel axis to the last dimension, broadcast constants are permuted on the host, and
//! explicit transposes convert at the region's edges (the NCHW graph input, reshapes, matrix
//! products, softmax and the outputs). The CPU reference runs the rewritten plan too, so the
//! rewrite is tested without a GPU.

use std::collections::HashMap;

use super::plan::{Op, Plan, TensorInfo, Tid};
use super::tensor::{broadcast_strides, transpose_index};

/// NCHW -> NHWC.
const TO_NHWC: [usize; 4] = [0, 2, 3, 1];
/// NHWC -> NCHW.
const TO_NCHW: [usize; 4] = [0, 3, 1, 2];

fn permuted(shape: &[usize], perm: &[usize]) -> Vec<usize> {
    perm.iter().map(|&p| shape[p]).collect()
}

/// Whether `op` works on NHWC tensors once rewritten.
fn layout_aware(op: &Op) -> bool {
    matches!(
        op,
        Op::Conv(_)
            | Op::Act { .. }
            | Op::Binary { .. }
            | Op::Concat { .. }
            | Op::Narrow { .. }
            | Op::MaxPool { .. }
            | Op::Upsample { .. }
    )
}

/// The rewritten plan. Storages of the input plan keep their numbers; conversions and permuted
/// constants get new ones.
pub fn to_nhwc(plan: &Plan) -> Plan {
    let n_storage = plan.storage_len.len();
    // Tensors per storage, producers and consumers per storage.
    let mut tensors_of = vec![0usize; n_storage];
    for t in &plan.tensors {
        tensors_of[t.storage] += 1;
    }
    let mut ok = vec![true; n_storage];
    let storage = |t: Tid| plan.tensors[t].storage;
    for (s, _) in &plan.constants {
        ok[*s] = false;
    }
    ok[storage(plan.input)] = false;
    for (_, o) in &plan.outputs {
        ok[storage(*o)] = false;
    }
    for t in &plan.tensors {
        if t.shape.len() != 4 || tensors_of[t.storage] != 1 {
            ok[t.storage] = false;
        }
    }
    for op in &plan.ops {
        if !layout_aware(op) {
            for x in op.inputs() {
                ok[storage(x)] = false;
            }
            ok[storage(op.output())] = false;
        }
    }
    let original = plan.tensors.len();
    // Tensors added by the rewrite (padded aliases) are NCHW-ordered; conversions never come
    // back through here.
    let nhwc = |t: Tid| t < original && ok[plan.tensors[t].storage];

    let mut out = Plan {
        tensors: plan
            .tensors
            .iter()
            .enumerate()
            .map(|(t, info)| TensorInfo {
                shape: if nhwc(t) {
                    permuted(&info.shape, &TO_NHWC)
                } else {
                    info.shape.clone()
                },
                storage: info.storage,
                view: None,
            })
            .collect(),
        storage_len: plan.storage_len.clone(),
        constants: plan.constants.clone(),
        ops: Vec::with_capacity(plan.ops.len() + 8),
        input: plan.input,
        outputs: plan.outputs.clone(),
    };
    let const_data: HashMap<usize, Vec<f32>> = plan.constants.iter().cloned().collect();
    // (tensor, wants nhwc) -> tensor holding it in that layout.
    let mut converted: HashMap<(Tid, bool), Tid> = HashMap::new();

    // The tensor `t` in the layout `want` (a converted copy where needed).
    let mut in_layout = |out: &mut Plan, t: Tid, want: bool| -> Tid {
        let is = nhwc(t);
        if is == want || out.tensors[t].shape.len() != 4 {
            return t;
        }
        if let Some(&c) = converted.get(&(t, want)) {
            return c;
        }
        let src_shape = out.tensors[t].shape.clone();
        let perm = if want { TO_NHWC } else { TO_NCHW };
        let c = if let Some(data) = const_data.get(&out.tensors[t].storage) {
            let (shape, idx) = transpose_index(&src_shape, &perm);
            let v: Vec<f32> = idx.iter().map(|&i| data[i]).collect();
            let c = new_tensor(out, shape);
            out.constants.push((out.tensors[c].storage, v));
            c
        } else {
            let c = new_tensor(out, permuted(&src_shape, &perm));
            out.ops.push(Op::Transpose {
                x: t,
                y: c,
                perm: perm.to_vec(),
            });
            c
        };
        converted.insert((t, want), c);
        c
    };

    for op in &plan.ops {
        let mut op = op.clone();
        match &mut op {
            Op::Conv(c) if nhwc(c.x) && !nhwc(c.y) && out.tensors[c.y].shape.len() == 4 => {
                // A channels-last input feeding an NCHW output (the last convolution of a
                // branch that a reshape reads): convolve channels-last and convert the
                // output, which moves as many bytes as converting the input would and keeps
                // the convolution on cuDNN's channels-last kernels.
                let y = c.y;
                let shape = permuted(&out.tensors[y].shape, &TO_NHWC);
                let t = new_tensor(&mut out, shape);
                c.nhwc = true;
                c.y = t;
                c.residual = c.residual.map(|r| in_layout(&mut out, r, true));
                out.ops.push(op);
                out.ops.push(Op::Transpose {
                    x: t,
                    y,
                    perm: TO_NCHW.to_vec(),
                });
                continue;
            }
            Op::Conv(c) => {
                c.nhwc = nhwc(c.y);
                c.x = in_layout(&mut out, c.x, c.nhwc);
                c.residual = c.residual.map(|r| in_layout(&mut out, r, c.nhwc));
            }
            Op::Act { x, y, .. } => *x = in_layout(&mut out, *x, nhwc(*y)),
            Op::MaxPool { x, y, nhwc: f, .. } | Op::Upsample { x, y, nhwc: f, .. } => {
                *f = nhwc(*y);
                *x = in_layout(&mut out, *x, *f);
            }
            Op::Concat { xs, y, axis } => {
                let want = nhwc(*y);
                for x in xs.iter_mut() {
                    *x = in_layout(&mut out, *x, want);
                }
                if want {
                    *axis = TO_NCHW[*axis];
                }
            }
            Op::Narrow { x, y, axis, .. } => {
                let want = nhwc(*y);
                *x = in_layout(&mut out, *x, want);
                if want {
                    *axis = TO_NCHW[*axis];
                }
            }
            Op::Binary {
                a,
                b,
                y,
                a_strides,
                b_strides,
                ..
            } => {
                let want = nhwc(*y);
                for t in [&mut *a, &mut *b] {
                    let r = out.tensors[*t].shape.len();
                    if want && r < 4 {
                        // Lower ranks broadcast from the right against [n, c, h, w]: give
                        // the operand 4 dims (an alias, same data), then permute it.
                        let mut shape = vec![1; 4 - r];
                        shape.extend_from_slice(&out.tensors[*t].shape);
                        let storage = out.tensors[*t].storage;
                        out.tensors.push(TensorInfo {
                            shape,
                            storage,
                            view: None,
                        });
                        *t = out.tensors.len() - 1;
                    }
                    *t = in_layout(&mut out, *t, want);
                }
                let ys = out.tensors[*y].shape.clone();
                *a_strides = broadcast_strides(&out.tensors[*a].shape, &ys);
                *b_strides = broadcast_strides(&out.tensors[*b].shape, &ys);
            }
            Op::Transpose { x, .. } | Op::Softmax { x, .. } => {
                *x = in_layout(&mut out, *x, false);
            }
            Op::MatMul { a, b, .. } => {
                *a = in_layout(&mut out, *a, false);
                *b = in_layout(&mut out, *b, false);
            }
        }
        out.ops.push(op);
    }
    out
}

fn new_tensor(out: &mut Plan, shape: Vec<usize>) -> Tid {
    out.storage_len.push(shape.iter().product());
    out.tensors.push(TensorInfo {
        shape,
        storage: out.storage_len.len() - 1,
        view: None,
    });
    out.tensors.len() - 1
}
