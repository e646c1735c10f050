//! Concatenation inputs written in place: in a channels-last plan, a concatenation along the
//! channels whose input is produced by a convolution, max-pool or upsample can have that
//! producer write straight into its slice of the concatenation's storage (a [`View`] with the
//! concatenation's channel count as pitch), so the concatenation no longer copies it. When
//! every input is placed so, the concatenation op goes away.
//!
//! YOLO's C3k2, C3k, SPPF and head concatenations are all of that kind. Readers of a placed
//! input then read it strided, so an input is placed only when its producer and every reader
//! take a channel pitch: cuDNN's fused convolution graphs (input, output and residual
//! strides), our channels-last max-pool and upsample kernels, and step-1 channel narrows
//! (copies of 16-byte runs). The CPU reference reads and writes views too, so the rewrite is
//! tested without a GPU.

use super::plan::{Op, Plan, Tid, View};

/// Channel counts, offsets and pitches of placed inputs are multiples of this many elements:
/// 16 bytes of FP16, what cuDNN's vectorized kernels and our 16-byte loads need.
pub const VIEW_ALIGN: usize = 8;

/// Places every concatenation input it can (see the module docs) and drops concatenations
/// left with nothing to copy. `excluded` are ops that must neither write nor read a view
/// (the convolution the stem kernel runs). Returns how many inputs were placed.
pub fn place_concat_inputs(plan: &mut Plan, excluded: &[usize]) -> usize {
    let mut placed = 0;
    let mut emptied = Vec::new();
    for i in 0..plan.ops.len() {
        let Op::Concat { xs, y, axis } = plan.ops[i].clone() else {
            continue;
        };
        let ys = plan.shape(y).to_vec();
        let y_info = &plan.tensors[y];
        if ys.len() != 4
            || axis != 3
            || y_info.view.is_some()
            || !ys[3].is_multiple_of(VIEW_ALIGN)
            || plan.storage_len[y_info.storage] != y_info.numel()
        {
            continue;
        }
        let mut off = 0;
        let mut all = true;
        for &x in &xs {
            let c = plan.shape(x)[3];
            if xs.iter().filter(|&&o| o == x).count() == 1
                && off % VIEW_ALIGN == 0
                && placeable(plan, i, x, excluded)
            {
                plan.tensors[x].storage = plan.tensors[y].storage;
                plan.tensors[x].view = Some(View {
                    offset: off,
                    pitch: ys[3],
                });
                placed += 1;
            } else {
                all = false;
            }
            off += c;
        }
        if all {
            emptied.push(i);
        }
    }
    for &i in emptied.iter().rev() {
        plan.ops.remove(i);
    }
    placed
}

/// Step-1 narrows along the channels whose readers all take a channel pitch become views of
/// their input (its storage, the narrow's first channel as offset, the input's pitch), and
/// the copy goes: C3k2's bottleneck then reads its half of the first convolution's output in
/// place. Run after [`place_concat_inputs`], so that a narrow of a placed input views the
/// concatenation's storage. `excluded` as there. Returns how many narrows went.
pub fn view_narrows(plan: &mut Plan, excluded: &[usize]) -> usize {
    let mut gone = Vec::new();
    for i in 0..plan.ops.len() {
        let Op::Narrow {
            x,
            y,
            axis: 3,
            start,
            step: 1,
        } = plan.ops[i]
        else {
            continue;
        };
        let (xi, yi) = (&plan.tensors[x], &plan.tensors[y]);
        let s = yi.storage;
        let whole_run = [x, y].iter().any(|&t| {
            let st = plan.tensors[t].storage;
            st == plan.tensors[plan.input].storage
                || plan.constants.iter().any(|(c, _)| *c == st)
                || plan
                    .outputs
                    .iter()
                    .any(|(_, o)| plan.tensors[*o].storage == st)
        });
        let fits = xi.shape.len() == 4
            && yi.shape.len() == 4
            && yi.view.is_none()
            && start.is_multiple_of(VIEW_ALIGN)
            && yi.shape[3].is_multiple_of(VIEW_ALIGN)
            && xi.pitch().is_multiple_of(VIEW_ALIGN)
            && xi.view.is_none_or(|v| v.offset.is_multiple_of(VIEW_ALIGN))
            && plan.tensors.iter().filter(|t| t.storage == s).count() == 1;
        let readers_ok = plan.ops.iter().enumerate().all(|(j, o)| {
            let reads = o.inputs().iter().filter(|&&t| t == y).count();
            reads == 0 || (!excluded.contains(&j) && reads_view(plan, o, y))
        });
        if whole_run || !fits || !readers_ok {
            continue;
        }
        let view = View {
            offset: xi.view.map_or(0, |v| v.offset) + start,
            pitch: xi.pitch(),
        };
        plan.tensors[y].storage = xi.storage;
        plan.tensors[y].view = Some(view);
        gone.push(i);
    }
    for &i in gone.iter().rev() {
        plan.ops.remove(i);
    }
    gone.len()
}

/// For each input of the concatenation `xs -> y` (along the last axis), whether its producer
/// already wrote it in place, in its slice of `y`.
pub fn in_place(plan: &Plan, xs: &[Tid], y: Tid) -> Vec<bool> {
    let y_info = &plan.tensors[y];
    let pitch = y_info.shape.last().copied().unwrap_or(0);
    let mut off = 0;
    xs.iter()
        .map(|&x| {
            let t = &plan.tensors[x];
            let here = y_info.view.is_none()
                && t.storage == y_info.storage
                && t.view == Some(View { offset: off, pitch });
            off += t.shape.last().copied().unwrap_or(0);
            here
        })
        .collect()
}

/// Checks that every op touching a view can take it, so that a plan a later rewrite broke is
/// refused at build (the build then runs with copies) rather than failing at every run:
/// views are written only by the channels-last convolutions, max-pools and upsamples not in
/// `excluded`, read only as [`reads_view`] allows or as a concatenation input already in
/// place, and neither the plan's input nor an output is a view. The reason names the op.
pub fn check_views(plan: &Plan, excluded: &[usize]) -> Result<(), String> {
    let view = |t: Tid| plan.tensors[t].view.is_some();
    if view(plan.input) {
        return Err("the plan's input is a view".into());
    }
    if let Some((name, _)) = plan.outputs.iter().find(|(_, t)| view(*t)) {
        return Err(format!("output {name} is a view"));
    }
    for (j, op) in plan.ops.iter().enumerate() {
        let kept = !excluded.contains(&j);
        if view(op.output()) && !(kept && writes_view(op)) {
            return Err(format!("op {j} ({}) writes a view", op.kind()));
        }
        let placed = match op {
            Op::Concat { xs, y, .. } => in_place(plan, xs, *y),
            _ => Vec::new(),
        };
        for (k, &x) in op.inputs().iter().enumerate() {
            let concat_slice = placed.get(k).copied().unwrap_or(false);
            if view(x) && !concat_slice && !(kept && reads_view(plan, op, x)) {
                return Err(format!("op {j} ({}) reads tensor {x}, a view", op.kind()));
            }
        }
    }
    Ok(())
}

/// Whether input `x` of the concatenation at op `at` can be written in place.
fn placeable(plan: &Plan, at: usize, x: Tid, excluded: &[usize]) -> bool {
    let info = &plan.tensors[x];
    let s = info.storage;
    let whole_run = s == plan.tensors[plan.input].storage
        || plan.constants.iter().any(|(c, _)| *c == s)
        || plan
            .outputs
            .iter()
            .any(|(_, o)| plan.tensors[*o].storage == s);
    if whole_run
        || info.view.is_some()
        || info.shape.len() != 4
        || !info.shape[3].is_multiple_of(VIEW_ALIGN)
        || plan.tensors.iter().filter(|t| t.storage == s).count() != 1
    {
        return false;
    }
    let mut writers = plan
        .ops
        .iter()
        .enumerate()
        .filter(|(_, o)| plan.tensors[o.output()].storage == s);
    let (Some((w, writer)), None) = (writers.next(), writers.next()) else {
        return false;
    };
    let writes = w < at && !excluded.contains(&w) && writes_view(writer);
    writes
        && plan.ops.iter().enumerate().all(|(j, o)| {
            let reads = o.inputs().iter().filter(|&&t| t == x).count();
            reads == 0
                || (j == at && reads == 1)
                || (!excluded.contains(&j) && reads_view(plan, o, x))
        })
}

/// Whether `op` can write its output through a channel pitch: a channels-last convolution,
/// max-pool or upsample.
fn writes_view(op: &Op) -> bool {
    match op {
        Op::Conv(c) => c.nhwc,
        Op::MaxPool { nhwc, .. } | Op::Upsample { nhwc, .. } => *nhwc,
        _ => false,
    }
}

/// Whether `op` can read its input `x` through a channel pitch: a channels-last convolution
/// (as its input or its residual, not both), max-pool or upsample, or a step-1 channel narrow
/// whose start and length are whole 16-byte runs (a copy of runs, or a view itself).
fn reads_view(plan: &Plan, op: &Op, x: Tid) -> bool {
    match op {
        Op::Conv(c) => c.nhwc && (c.x == x) != (c.residual == Some(x)),
        Op::MaxPool { nhwc, .. } | Op::Upsample { nhwc, .. } => *nhwc,
        Op::Narrow {
            y,
            axis: 3,
            step: 1,
            start,
            ..
        } => start.is_multiple_of(VIEW_ALIGN) && plan.shape(*y)[3].is_multiple_of(VIEW_ALIGN),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::plan::{Act, Conv, TensorInfo};
    use super::*;

    fn tensor(plan: &mut Plan, shape: &[usize]) -> Tid {
        plan.storage_len.push(shape.iter().product());
        plan.tensors.push(TensorInfo {
            shape: shape.to_vec(),
            storage: plan.storage_len.len() - 1,
            view: None,
        });
        plan.tensors.len() - 1
    }

    fn conv(x: Tid, y: Tid, cin: usize, m: usize) -> Op {
        Op::Conv(Conv {
            x,
            y,
            weight: vec![0.5; m * cin],
            bias: vec![0.0; m],
            m,
            kernel: [1, 1],
            stride: [1, 1],
            pad: [0; 4],
            dilation: [1, 1],
            group: 1,
            act: Act::Silu,
            residual: None,
            nhwc: true,
        })
    }

    /// in -> a (conv) -> b (conv of a) ; concat(a, b) -> y; y -> out (conv).
    fn two_convs_concatenated(channels: usize) -> (Plan, [Tid; 4]) {
        let mut p = Plan {
            tensors: Vec::new(),
            storage_len: Vec::new(),
            constants: Vec::new(),
            ops: Vec::new(),
            input: 0,
            outputs: Vec::new(),
        };
        let c = channels;
        let input = tensor(&mut p, &[1, 2, 2, c]);
        let a = tensor(&mut p, &[1, 2, 2, c]);
        let b = tensor(&mut p, &[1, 2, 2, c]);
        let y = tensor(&mut p, &[1, 2, 2, 2 * c]);
        let out = tensor(&mut p, &[1, 2, 2, c]);
        p.ops = vec![
            conv(input, a, c, c),
            conv(a, b, c, c),
            Op::Concat {
                xs: vec![a, b],
                y,
                axis: 3,
            },
            conv(y, out, 2 * c, c),
        ];
        p.input = input;
        p.outputs = vec![("out".into(), out)];
        (p, [a, b, y, out])
    }

    #[test]
    fn producers_write_their_slices_and_the_concatenation_goes() {
        let (mut p, [a, b, y, _]) = two_convs_concatenated(8);
        assert_eq!(place_concat_inputs(&mut p, &[]), 2);
        assert_eq!(p.ops.len(), 3, "{:?}", p.ops);
        assert!(!p.ops.iter().any(|o| matches!(o, Op::Concat { .. })));
        let ys = p.tensors[y].storage;
        assert_eq!(p.tensors[a].storage, ys);
        assert_eq!(p.tensors[b].storage, ys);
        assert_eq!(
            p.tensors[a].view,
            Some(View {
                offset: 0,
                pitch: 16
            })
        );
        assert_eq!(
            p.tensors[b].view,
            Some(View {
                offset: 8,
                pitch: 16
            })
        );
        // Row 1 of b: elements 8.. of the second pixel.
        assert_eq!(p.tensors[b].element(8 + 3), 8 + 16 + 3);
    }

    #[test]
    fn a_channel_narrow_read_by_convolutions_becomes_a_view_and_one_read_by_an_add_stays() {
        let (mut p, [a, b, y, out]) = two_convs_concatenated(16);
        // Narrow a's second half, read by a convolution; narrow its first half, read by an Add.
        let (h1, h0, sum) = (
            tensor(&mut p, &[1, 2, 2, 8]),
            tensor(&mut p, &[1, 2, 2, 8]),
            tensor(&mut p, &[1, 2, 2, 8]),
        );
        let c2 = tensor(&mut p, &[1, 2, 2, 8]);
        p.ops.insert(
            1,
            Op::Narrow {
                x: a,
                y: h1,
                axis: 3,
                start: 8,
                step: 1,
            },
        );
        p.ops.insert(
            2,
            Op::Narrow {
                x: a,
                y: h0,
                axis: 3,
                start: 0,
                step: 1,
            },
        );
        p.ops.push(conv(h1, c2, 8, 8));
        p.ops.push(Op::Binary {
            op: super::super::plan::BinOp::Add,
            a: h0,
            b: c2,
            y: sum,
            a_strides: vec![32, 16, 8, 1],
            b_strides: vec![32, 16, 8, 1],
        });
        p.outputs.push(("sum".into(), sum));
        assert_eq!(place_concat_inputs(&mut p, &[]), 2);
        assert_eq!(view_narrows(&mut p, &[]), 1);
        let ys = p.tensors[y].storage;
        assert_eq!(p.tensors[h1].storage, ys, "a is in y, so its half is too");
        assert_eq!(
            p.tensors[h1].view,
            Some(View {
                offset: 8,
                pitch: 32
            })
        );
        assert!(p.tensors[h0].view.is_none());
        assert_eq!(p.ops.iter().filter(|o| o.kind() == "narrow").count(), 1);
        let _ = (b, out);
    }

    #[test]
    fn the_view_check_passes_placed_plans_and_names_an_op_that_cannot_take_a_view() {
        let (mut p, [a, b, y, out]) = two_convs_concatenated(8);
        assert_eq!(check_views(&p, &[]), Ok(()), "no views at all");
        place_concat_inputs(&mut p, &[]);
        assert_eq!(check_views(&p, &[]), Ok(()));
        // The writer of `a` (op 0) run by a kernel that takes no pitch.
        let why = check_views(&p, &[0]).unwrap_err();
        assert!(why.starts_with("op 0 (conv) writes a view"), "{why}");

        // A later element-wise reader of the placed `b`.
        let mut q = p.clone();
        let act = tensor(&mut q, &[1, 2, 2, 8]);
        q.ops.push(Op::Act {
            x: b,
            y: act,
            act: super::super::plan::Act::Silu,
        });
        q.outputs.push(("act".into(), act));
        let why = check_views(&q, &[]).unwrap_err();
        assert!(why.starts_with("op 3 (act) reads tensor"), "{why}");

        // A concatenation still in the plan copies a view it did not place.
        let (mut q, [a2, b2, y2, _]) = two_convs_concatenated(8);
        q.tensors[a2].view = Some(View {
            offset: 8,
            pitch: 16,
        });
        q.tensors[a2].storage = q.tensors[y2].storage;
        assert_eq!(in_place(&q, &[a2, b2], y2), vec![false, false]);
        let why = check_views(&q, &[]).unwrap_err();
        assert!(why.contains("(concat) reads tensor"), "{why}");

        // An output that is a view.
        let mut q = p.clone();
        q.outputs.push(("a".into(), a));
        assert_eq!(check_views(&q, &[]).unwrap_err(), "output a is a view");
        let _ = (y, out);
    }

    #[test]
    fn unaligned_channels_an_excluded_writer_or_a_foreign_reader_keep_the_copy() {
        let (mut p, _) = two_convs_concatenated(4);
        assert_eq!(place_concat_inputs(&mut p, &[]), 0);
        assert_eq!(p.ops.len(), 4);

        let (mut p, [a, b, y, _]) = two_convs_concatenated(8);
        assert_eq!(place_concat_inputs(&mut p, &[0]), 1, "a is written by op 0");
        assert!(p.tensors[a].view.is_none());
        assert_eq!(in_place(&p, &[a, b], y), vec![false, true]);
        assert_eq!(p.ops.len(), 4, "the concatenation still copies a");

        // A narrow of `a` whose length is not whole 16-byte runs could not copy it strided.
        let (mut p, [a, _, _, _]) = two_convs_concatenated(8);
        let part = tensor(&mut p, &[1, 2, 2, 4]);
        let out2 = tensor(&mut p, &[1, 2, 2, 8]);
        p.ops.insert(
            1,
            Op::Narrow {
                x: a,
                y: part,
                axis: 3,
                start: 0,
                step: 1,
            },
        );
        p.ops.push(conv(part, out2, 4, 8));
        p.outputs.push(("out2".into(), out2));
        assert_eq!(place_concat_inputs(&mut p, &[]), 1, "b only");
        assert!(p.tensors[a].view.is_none());
        assert_eq!(view_narrows(&mut p, &[]), 0);

        // A second concatenation reading `a` cannot take a strided input.
        let (mut p, [a, b, _, _]) = two_convs_concatenated(8);
        let z = tensor(&mut p, &[1, 2, 2, 16]);
        p.ops.push(Op::Concat {
            xs: vec![b, a],
            y: z,
            axis: 3,
        });
        p.outputs.push(("z".into(), z));
        place_concat_inputs(&mut p, &[]);
        assert!(p.tensors[a].view.is_none());
        assert!(p.tensors[b].view.is_none());
    }
}
