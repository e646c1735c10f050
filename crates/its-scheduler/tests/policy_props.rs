//! Property tests of the scheduling policy under a simulated clock: the queues, the batcher and
//! the reorder buffer driven as the scheduler actor drives them (expiry, then batches while a
//! worker is free; routing simplified to the free worker with the lowest predicted cost), with
//! simulated workers whose batches take a known time. No real time passes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use its_proto::Priority;
use its_scheduler::batcher::{Batcher, CostModel, Decision, QueueView};
use its_scheduler::queues::{Queued, Queues};
use its_scheduler::reorder::ReorderBuffer;
use proptest::prelude::*;

const MS: Duration = Duration::from_millis(1);
const DEADLINES_MS: [u64; 4] = [20, 50, 100, 500];

#[derive(Debug, Clone)]
struct Arrival {
    /// Gap after the previous arrival, microseconds.
    gap_us: u64,
    camera: usize,
    class: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id {
    camera: usize,
    seq: u64,
}

#[derive(Debug, Default)]
struct Outcome {
    published: Vec<(Id, bool)>,
    /// Results in the order their batches completed (before the reorder buffer).
    completed: Vec<Id>,
    dropped: Vec<Id>,
    deadline_drops: usize,
    late_results: usize,
    /// Every batch as the classes of its frames, in batch order.
    batches: Vec<Vec<usize>>,
    /// For every batch: the classes still queued right after it was taken.
    left_after: Vec<[usize; 4]>,
}

/// A batch in flight: completion time, worker, frames with their deadlines, cost, bucket.
type Running = (Instant, usize, Vec<(Id, Instant)>, Duration, usize);

struct SimWorker {
    /// Cost of a batch of n frames: fixed + n * per_frame.
    fixed: Duration,
    per_frame: Duration,
    slots: usize,
    busy: usize,
    cost: CostModel,
}

/// Runs the policy over `arrivals` with `workers` (fixed, per-frame cost in µs, slots).
fn simulate(arrivals: &[Arrival], workers: &[(u64, u64, usize)], capacity: usize) -> Outcome {
    let t0 = Instant::now();
    let sizes = vec![1, 4, 8, 16, 32];
    let mut batcher = Batcher::new(sizes, 2 * MS, 50 * MS);
    let mut queues: Queues<Id> = Queues::new(capacity);
    let mut reorder: ReorderBuffer<Id> = ReorderBuffer::new(30 * MS, 8);
    let mut ws: Vec<SimWorker> = workers
        .iter()
        .map(|(f, p, s)| SimWorker {
            fixed: Duration::from_micros(*f),
            per_frame: Duration::from_micros(*p),
            slots: *s,
            busy: 0,
            cost: CostModel::default(),
        })
        .collect();
    let mut running: Vec<Running> = Vec::new();
    let mut out = Outcome::default();
    let mut released = Vec::new();
    let mut seqs: HashMap<usize, u64> = HashMap::new();
    let mut next_arrival = 0usize;
    let mut at = t0;
    let mut arrival_times = Vec::with_capacity(arrivals.len());
    for a in arrivals {
        at += Duration::from_micros(a.gap_us);
        arrival_times.push(at);
    }
    let mut wake: Option<Instant> = None;
    let mut now = t0;
    loop {
        // The next event: an arrival, a batch completion, a batcher wake-up, a reorder expiry.
        let candidates = [
            arrival_times.get(next_arrival).copied(),
            running.iter().map(|r| r.0).min(),
            wake,
            reorder.next_expiry(),
        ];
        let Some(next) = candidates.into_iter().flatten().min() else {
            break;
        };
        now = now.max(next);
        // Completions due.
        running.sort_by_key(|r| r.0);
        while running.first().is_some_and(|r| r.0 <= now) {
            let (_, w, frames, cost, n) = running.remove(0);
            ws[w].busy -= 1;
            ws[w].cost.observe(n, cost);
            for (id, deadline) in frames {
                if now > deadline {
                    out.late_results += 1;
                }
                out.completed.push(id);
                reorder.ready(&id.camera.to_string(), id.seq, id, now, &mut released);
            }
        }
        // Arrivals due.
        while arrival_times.get(next_arrival).is_some_and(|t| *t <= now) {
            let a = &arrivals[next_arrival];
            let arrived = arrival_times[next_arrival];
            next_arrival += 1;
            let seq = seqs.entry(a.camera).or_default();
            *seq += 1;
            let id = Id {
                camera: a.camera,
                seq: *seq,
            };
            batcher.on_arrival(arrived);
            let q = Queued {
                item: id,
                arrived,
                deadline: arrived + Duration::from_millis(DEADLINES_MS[a.class]),
            };
            match queues.push(Priority::ALL[a.class], q) {
                Ok(()) => reorder.expect(&id.camera.to_string(), id.seq),
                Err((_, back)) => out.dropped.push(back.item),
            }
        }
        reorder.expire(now, &mut released);
        // The actor's pump: expired frames go, then batches while a worker is free.
        for q in queues.take_expired(now) {
            out.dropped.push(q.item);
            out.deadline_drops += 1;
            reorder.settled(&q.item.camera.to_string(), q.item.seq, &mut released);
        }
        wake = None;
        loop {
            let n = queues.len().max(1);
            let bucket = batcher.bucket(n);
            let Some(w) = (0..ws.len())
                .filter(|i| ws[*i].busy < ws[*i].slots)
                .min_by_key(|i| ws[*i].cost.predict(bucket))
            else {
                break;
            };
            let view = (|| {
                Some(QueueView {
                    queued: queues.len(),
                    oldest_arrival: queues.oldest_arrival()?,
                    earliest_deadline: queues.earliest_deadline()?,
                    has_emergency: queues.depth(Priority::Emergency) > 0,
                })
            })();
            match batcher.decide(now, view, &ws[w].cost, false) {
                Decision::Idle => break,
                Decision::WaitUntil(t) => {
                    wake = Some(t);
                    break;
                }
                Decision::Now(n) => {
                    let taken = queues.take(n);
                    out.batches
                        .push(taken.iter().map(|q| class_of(&queues, q)).collect());
                    out.left_after.push(Priority::ALL.map(|p| queues.depth(p)));
                    let cost = ws[w].fixed + ws[w].per_frame * taken.len() as u32;
                    ws[w].busy += 1;
                    let bucket = batcher.bucket(taken.len());
                    running.push((
                        now + cost,
                        w,
                        taken.iter().map(|q| (q.item, q.deadline)).collect(),
                        cost,
                        bucket,
                    ));
                }
            }
        }
        for r in released.drain(..) {
            out.published.push((r.item, r.out_of_order));
        }
    }
    for r in released.drain(..) {
        out.published.push((r.item, r.out_of_order));
    }
    out
}

/// The class of a taken frame, from its deadline offset (classes have distinct deadlines).
fn class_of(_: &Queues<Id>, q: &Queued<Id>) -> usize {
    let ms = q.deadline.saturating_duration_since(q.arrived).as_millis() as u64;
    DEADLINES_MS
        .iter()
        .position(|d| *d == ms)
        .expect("a class deadline")
}

fn arrivals(max_gap_us: u64, n: usize) -> impl Strategy<Value = Vec<Arrival>> {
    prop::collection::vec(
        (0..max_gap_us, 0..4usize, 0..4usize).prop_map(|(gap_us, camera, class)| Arrival {
            gap_us,
            camera,
            class,
        }),
        1..n,
    )
}

fn workers() -> impl Strategy<Value = Vec<(u64, u64, usize)>> {
    prop::collection::vec((200..3_000u64, 50..1_000u64, 1..4usize), 1..4)
}

/// The reorder buffer is exercised: a slow and a fast worker finish one camera's frames out of
/// order, and they still leave in order.
#[test]
fn out_of_order_completions_leave_in_order() {
    let a: Vec<Arrival> = (0..40)
        .map(|i| Arrival {
            gap_us: 1_500,
            camera: 0,
            class: if i % 2 == 0 { 0 } else { 2 },
        })
        .collect();
    let out = simulate(&a, &[(12_000, 100, 1), (300, 100, 1)], 1024);
    let completed: Vec<u64> = out.completed.iter().map(|id| id.seq).collect();
    assert!(
        completed.windows(2).any(|w| w[0] > w[1]),
        "completions in order: {completed:?}"
    );
    let published: Vec<u64> = out
        .published
        .iter()
        .filter(|(_, ooo)| !ooo)
        .map(|(id, _)| id.seq)
        .collect();
    assert!(published.windows(2).all(|w| w[0] < w[1]), "{published:?}");
    assert_eq!(out.published.len() + out.dropped.len(), a.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every input ends as exactly one result or one counted drop, whatever the load.
    #[test]
    fn no_frame_is_lost_or_duplicated(a in arrivals(3_000, 300), w in workers(), cap in 1..64usize) {
        let out = simulate(&a, &w, cap);
        let mut seen = HashSet::new();
        for id in out.published.iter().map(|(id, _)| *id).chain(out.dropped.iter().copied()) {
            prop_assert!(seen.insert(id), "{id:?} settled twice");
        }
        prop_assert_eq!(seen.len(), a.len());
    }

    /// A batch takes higher classes first, and never a lower class while a higher one waits.
    #[test]
    fn priority_order_holds(a in arrivals(1_000, 300), w in workers()) {
        let out = simulate(&a, &w, 1024);
        for (batch, left) in out.batches.iter().zip(&out.left_after) {
            prop_assert!(batch.windows(2).all(|p| p[0] <= p[1]), "batch {batch:?}");
            let lowest = *batch.iter().max().expect("non-empty");
            for (c, n) in left.iter().enumerate().take(lowest) {
                prop_assert_eq!(*n, 0, "class {} left behind a batch reaching class {}", c, lowest);
            }
        }
    }

    /// Results of one camera leave in sequence order; only a result flagged out of order may
    /// leave after a later one.
    #[test]
    fn results_per_camera_leave_in_order(a in arrivals(2_000, 300), w in workers()) {
        let out = simulate(&a, &w, 1024);
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        for (id, out_of_order) in &out.published {
            let prev = last.get(&id.camera).copied().unwrap_or(0);
            if id.seq < prev {
                prop_assert!(*out_of_order, "{id:?} left after seq {prev} unflagged");
            } else {
                prop_assert!(!*out_of_order, "{id:?} flagged although in order");
                last.insert(id.camera, id.seq);
            }
        }
    }

    /// With capacity to spare (arrivals far apart, batches much shorter than the tightest
    /// deadline), no deadline is missed.
    #[test]
    fn deadlines_are_met_when_capacity_allows(
        a in prop::collection::vec(
            (2_000..5_000u64, 0..4usize, 0..4usize)
                .prop_map(|(gap_us, camera, class)| Arrival { gap_us, camera, class }),
            1..200,
        ),
        w in prop::collection::vec((200..2_000u64, 50..500u64, 1..3usize), 1..3),
    ) {
        let out = simulate(&a, &w, 1024);
        prop_assert_eq!(out.deadline_drops, 0);
        prop_assert_eq!(out.late_results, 0);
        prop_assert_eq!(out.published.len(), a.len());
    }
}
