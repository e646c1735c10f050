//! Activation memory planned by liveness: every storage of a [`Plan`] gets a byte offset in
//! one arena per execution context, so that two storages live at the same time never share
//! bytes and storages whose lives do not overlap reuse the same memory.
//!
//! A storage is live from the first op that touches it (its write) to the last op that reads
//! it, both inclusive: an op's inputs and its output are live together, so no kernel ever runs
//! in place. Constants, the plan input and the plan outputs are live for the whole run (the
//! input is written before a launch, the outputs are read after it). Aliases (reshapes) share
//! their storage and so its life. Storages no op touches (left behind by fusion) take no bytes.
//!
//! Offsets come from greedy best-fit by size (storages in decreasing size, each put in the
//! smallest gap between the storages already placed whose lives overlap its own, else above
//! them), every offset [`ALIGN`]-byte aligned. Host-only: the CPU reference runs through the
//! same layout ([`super::cpu::run_in_arena`]), so the plan is tested without a GPU.

use super::plan::Plan;

/// Alignment of every offset, bytes (cuDNN and vector loads want 256 at most).
pub const ALIGN: usize = 256;

/// The ops during which a storage holds a value: `first..=last` in plan order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// First op that touches the storage (0 for the whole-run storages).
    pub first: usize,
    /// Last op that touches it (the last op for the whole-run storages).
    pub last: usize,
}

impl Lifetime {
    /// Whether the two lives share an op.
    pub fn overlaps(&self, o: &Lifetime) -> bool {
        self.first <= o.last && o.first <= self.last
    }
}

/// Where every storage lives in the arena.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes of one element.
    pub elem_bytes: usize,
    /// Byte offset of each storage in the arena (0 for storages that take no bytes).
    pub offsets: Vec<usize>,
    /// Bytes of each storage (`storage_len * elem_bytes`; 0 where no op touches it).
    pub bytes: Vec<usize>,
    /// Life of each storage; `None` where no op, input or output touches it.
    pub lifetimes: Vec<Option<Lifetime>>,
    /// Bytes of the arena (the end of the highest storage, rounded up to [`ALIGN`]).
    pub arena_bytes: usize,
    /// Bytes of every storage a tensor refers to, side by side, as one buffer per storage
    /// would take.
    pub unplanned_bytes: usize,
}

impl MemoryPlan {
    /// Byte range of storage `s` in the arena.
    pub fn range(&self, s: usize) -> std::ops::Range<usize> {
        self.offsets[s]..self.offsets[s] + self.bytes[s]
    }
}

fn align(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// The life of every storage of `plan` over its op sequence.
pub fn lifetimes(plan: &Plan) -> Vec<Option<Lifetime>> {
    let n = plan.storage_len.len();
    let last_op = plan.ops.len().saturating_sub(1);
    let mut life: Vec<Option<Lifetime>> = vec![None; n];
    let mut touch = |s: usize, i: usize| {
        let l = life[s].get_or_insert(Lifetime { first: i, last: i });
        l.first = l.first.min(i);
        l.last = l.last.max(i);
    };
    for (i, op) in plan.ops.iter().enumerate() {
        touch(plan.tensors[op.output()].storage, i);
        for t in op.inputs() {
            touch(plan.tensors[t].storage, i);
        }
    }
    let whole = Lifetime {
        first: 0,
        last: last_op,
    };
    let mut pinned: Vec<usize> = plan.constants.iter().map(|(s, _)| *s).collect();
    pinned.push(plan.tensors[plan.input].storage);
    pinned.extend(plan.outputs.iter().map(|(_, t)| plan.tensors[*t].storage));
    for s in pinned {
        life[s] = Some(whole);
    }
    // A storage read before any op writes it holds a value from before the run: whole run.
    let mut written = vec![false; n];
    for (s, _) in &plan.constants {
        written[*s] = true;
    }
    written[plan.tensors[plan.input].storage] = true;
    for op in &plan.ops {
        for t in op.inputs() {
            let s = plan.tensors[t].storage;
            if !written[s] {
                life[s] = Some(whole);
            }
        }
        written[plan.tensors[op.output()].storage] = true;
    }
    life
}

/// Plans the arena of `plan` for elements of `elem_bytes` bytes.
pub fn plan_memory(plan: &Plan, elem_bytes: usize) -> MemoryPlan {
    let lifetimes = lifetimes(plan);
    let n = lifetimes.len();
    let bytes: Vec<usize> = (0..n)
        .map(|s| match lifetimes[s] {
            Some(_) => plan.storage_len[s] * elem_bytes,
            None => 0,
        })
        .collect();
    // A storage no tensor refers to any more (its tensor became a view of another) would get
    // no buffer either.
    let mut referred = vec![false; n];
    for t in &plan.tensors {
        referred[t.storage] = true;
    }
    let unplanned_bytes = (0..n)
        .filter(|&s| referred[s])
        .map(|s| plan.storage_len[s] * elem_bytes)
        .sum();
    let mut order: Vec<usize> = (0..n).filter(|&s| bytes[s] > 0).collect();
    // Largest first; ties in op order, so the result does not depend on storage numbering.
    order.sort_by_key(|&s| {
        (
            std::cmp::Reverse(bytes[s]),
            lifetimes[s].map_or(0, |l| l.first),
            s,
        )
    });
    let mut offsets = vec![0usize; n];
    let mut placed: Vec<usize> = Vec::with_capacity(order.len());
    let mut arena_bytes = 0usize;
    for &s in &order {
        let life = lifetimes[s].expect("only live storages are placed");
        let size = align(bytes[s]);
        let mut busy: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&p| lifetimes[p].is_some_and(|l| l.overlaps(&life)))
            .map(|&p| (offsets[p], offsets[p] + align(bytes[p])))
            .collect();
        busy.sort_unstable();
        // Best fit: the smallest gap between busy ranges that holds `size`.
        let mut best: Option<(usize, usize)> = None; // (gap, offset)
        let mut cursor = 0usize;
        for &(start, end) in &busy {
            if start > cursor {
                let gap = start - cursor;
                if gap >= size && best.is_none_or(|(g, _)| gap < g) {
                    best = Some((gap, cursor));
                }
            }
            cursor = cursor.max(end);
        }
        let off = best.map_or(cursor, |(_, o)| o);
        offsets[s] = off;
        arena_bytes = arena_bytes.max(off + size);
        placed.push(s);
    }
    MemoryPlan {
        elem_bytes,
        offsets,
        bytes,
        lifetimes,
        arena_bytes,
        unplanned_bytes,
    }
}

/// Checks `mem` against `plan` from the op list alone: at every op, the storages that hold a
/// value needed then or later (written at or before the op and read at or after it, or pinned
/// for the whole run) must occupy disjoint, aligned byte ranges inside the arena. Returns the
/// first conflict found.
pub fn verify(plan: &Plan, mem: &MemoryPlan) -> Result<(), String> {
    let n = plan.storage_len.len();
    if mem.offsets.len() != n || mem.bytes.len() != n {
        return Err(format!(
            "memory plan has {} storages, the plan {n}",
            mem.offsets.len()
        ));
    }
    let mut pinned = vec![false; n];
    for (s, _) in &plan.constants {
        pinned[*s] = true;
    }
    pinned[plan.tensors[plan.input].storage] = true;
    for (_, t) in &plan.outputs {
        pinned[plan.tensors[*t].storage] = true;
    }
    let mut writes: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut reads: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, op) in plan.ops.iter().enumerate() {
        writes[plan.tensors[op.output()].storage].push(i);
        for t in op.inputs() {
            reads[plan.tensors[t].storage].push(i);
        }
    }
    let need = |s: usize| mem.bytes[s] >= plan.storage_len[s] * mem.elem_bytes;
    for s in 0..n {
        let touched = pinned[s] || !writes[s].is_empty() || !reads[s].is_empty();
        if touched && !need(s) {
            return Err(format!(
                "storage {s} is used but has {} bytes",
                mem.bytes[s]
            ));
        }
        if !mem.offsets[s].is_multiple_of(ALIGN) {
            return Err(format!(
                "storage {s} at unaligned offset {}",
                mem.offsets[s]
            ));
        }
        if mem.offsets[s] + mem.bytes[s] > mem.arena_bytes {
            return Err(format!("storage {s} ends past the arena"));
        }
    }
    for i in 0..plan.ops.len() {
        let live: Vec<usize> = (0..n)
            .filter(|&s| {
                pinned[s]
                    || writes[s].contains(&i)
                    || reads[s].contains(&i)
                    || (writes[s].iter().any(|&w| w < i) && reads[s].iter().any(|&r| r > i))
            })
            .filter(|&s| mem.bytes[s] > 0)
            .collect();
        for (k, &a) in live.iter().enumerate() {
            for &b in &live[k + 1..] {
                let (ra, rb) = (mem.range(a), mem.range(b));
                if ra.start < rb.end && rb.start < ra.end {
                    return Err(format!(
                        "op {i} ({}): storages {a} {ra:?} and {b} {rb:?} are both live and overlap",
                        plan.ops[i].kind()
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::plan::{Act, Op, TensorInfo};

    /// A chain x -> a -> b -> c -> y of activations, each of `len` elements.
    fn chain(len: usize, steps: usize) -> Plan {
        let tensors = (0..=steps)
            .map(|s| TensorInfo {
                shape: vec![len],
                storage: s,
                view: None,
            })
            .collect();
        let ops = (0..steps)
            .map(|i| Op::Act {
                x: i,
                y: i + 1,
                act: Act::Silu,
            })
            .collect();
        Plan {
            tensors,
            storage_len: vec![len; steps + 1],
            constants: vec![],
            ops,
            input: 0,
            outputs: vec![("y".into(), steps)],
        }
    }

    #[test]
    fn a_chain_needs_two_buffers_besides_input_and_output() {
        let plan = chain(1000, 6);
        let mem = plan_memory(&plan, 4);
        verify(&plan, &mem).unwrap();
        // input + output pinned, the 5 intermediates alternate between two slots.
        assert_eq!(mem.arena_bytes, 4 * align(4000));
        assert_eq!(mem.unplanned_bytes, 7 * 4000);
        for s in 0..7 {
            assert!(mem.offsets[s].is_multiple_of(ALIGN));
        }
    }

    #[test]
    fn a_storage_no_tensor_refers_to_counts_nowhere() {
        let mut plan = chain(1000, 6);
        let before = plan_memory(&plan, 4).unplanned_bytes;
        // Tensor 3 moves into a storage of its own (as a view would), leaving storage 3 empty.
        plan.storage_len.push(1000);
        plan.tensors[3].storage = 7;
        let mem = plan_memory(&plan, 4);
        verify(&plan, &mem).unwrap();
        assert_eq!(mem.unplanned_bytes, before, "storage 7 replaces storage 3");
        assert_eq!(mem.bytes[3], 0);
    }

    #[test]
    fn inputs_and_output_of_one_op_never_share() {
        let plan = chain(10, 2);
        let life = lifetimes(&plan);
        assert_eq!(life[1], Some(Lifetime { first: 0, last: 1 }));
        let mem = plan_memory(&plan, 2);
        verify(&plan, &mem).unwrap();
        let (a, b) = (mem.range(0), mem.range(1));
        assert!(a.end <= b.start || b.end <= a.start);
    }

    #[test]
    fn verify_catches_an_overlap() {
        let plan = chain(100, 4);
        let mut mem = plan_memory(&plan, 4);
        // Put storage 2 on top of storage 1 (live together during op 1).
        mem.offsets[2] = mem.offsets[1];
        let err = verify(&plan, &mem).unwrap_err();
        assert!(err.contains("overlap"), "{err}");
    }

    #[test]
    fn untouched_storages_take_no_bytes() {
        let mut plan = chain(64, 2);
        plan.storage_len.push(1 << 20);
        plan.tensors.push(TensorInfo {
            shape: vec![1 << 20],
            storage: 3,
            view: None,
        });
        let mem = plan_memory(&plan, 4);
        assert_eq!(mem.bytes[3], 0);
        assert_eq!(mem.lifetimes[3], None);
        assert!(mem.arena_bytes < 4096);
        verify(&plan, &mem).unwrap();
    }
}
