//! The ledger: every frame sent, and what became of it.
//!
//! A frame is pending from the moment it is registered (just before its publish) until a
//! result or a drop event with its `(camera, seq)` arrives. Settled frames only leave counters
//! and histogram counts behind, so memory stays bounded by the frames in flight, however long
//! a soak runs.
//!
//! Clock: every time here is read from one monotonic clock (`Instant`) of this process. The
//! `captured_at_ns` a frame carries is the unix time of its send instant, computed as a fixed
//! unix anchor plus monotonic time elapsed since the anchor, so a wall-clock step during a run
//! changes neither latencies nor the capture times the node sees relative to each other.
//! Latency = result received (monotonic) - frame sent (monotonic), both in this process, on
//! one host.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use its_proto::{DetectionMsg, EventKind, EventMsg, NodeStatus, Priority, WorkerStatus};

use crate::mix::Resolution;
use crate::report::{
    CameraRow, Fairness, NodeDelta, Percentiles, StepRow, Timeline, Totals, WorkerRow,
};

/// Histogram range: 1 µs to one hour, in microseconds.
const HIST_MAX_US: u64 = 3_600_000_000;

fn hist(sigfig: u8) -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIST_MAX_US, sigfig).expect("valid histogram bounds")
}

/// The monotonic clock with its unix anchor.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor: Instant,
    anchor_unix_ns: u64,
}

impl Clock {
    /// Anchors the clock now.
    pub fn new() -> Self {
        Clock {
            anchor: Instant::now(),
            anchor_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0),
        }
    }

    /// Unix nanoseconds of an instant, on the anchored monotonic scale.
    pub fn unix_ns(&self, at: Instant) -> u64 {
        self.anchor_unix_ns + self.since_ns(at)
    }

    /// Nanoseconds from the anchor to `at`.
    pub fn since_ns(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.anchor).as_nanos() as u64
    }

    /// The anchor instant.
    pub fn anchor(&self) -> Instant {
        self.anchor
    }

    /// Unix nanoseconds of the anchor.
    pub fn anchor_unix_ns(&self) -> u64 {
        self.anchor_unix_ns
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    sent_ns: u64,
    step: u32,
    in_window: bool,
}

struct Cam {
    id: String,
    priority: Priority,
    res: Resolution,
    next_seq: u64,
    answered: u64,
    dropped: u64,
    send_failed: u64,
    pending: BTreeMap<u64, Pending>,
    hist: Histogram<u64>,
}

#[derive(Default, Clone, Copy)]
struct Second {
    sent: u64,
    answered: u64,
    dropped: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

struct Step {
    cameras: u32,
    hist: Histogram<u64>,
    sent: u64,
    answered: u64,
    dropped: u64,
}

#[derive(Default)]
struct WorkerAcc {
    device: String,
    slots_total: u32,
    samples: u64,
    busy_sum: f64,
    util_sum: f64,
    util_samples: u64,
    util_max: f32,
    memory_max: Option<u64>,
    first: Option<(u64, u64)>,
    last: Option<(u64, u64)>,
    batch_p50_ns_sum: u64,
    batch_p50_samples: u64,
    batch_p99_ns_max: u64,
}

struct Inner {
    cams: Vec<Cam>,
    index: std::collections::HashMap<String, usize>,
    overall: Histogram<u64>,
    by_priority: [Histogram<u64>; 4],
    seconds: Vec<Second>,
    cur_sec: usize,
    cur_hist: Histogram<u64>,
    steps: Vec<Step>,
    drops: BTreeMap<String, u64>,
    settled_twice: u64,
    unknown_seq: u64,
    foreign_results: u64,
    unmatched_events: u64,
    late: u64,
    out_of_order: u64,
    batch_size_sum: u64,
    queue_ns_sum: u64,
    nodes: BTreeMap<String, (NodeStatus, NodeStatus)>,
    workers: BTreeMap<(String, String), WorkerAcc>,
    max_lag_ns: u64,
    late_sends: u64,
}

/// Progress figures for the live view.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Frames sent.
    pub sent: u64,
    /// Results matched.
    pub answered: u64,
    /// Drops matched.
    pub dropped: u64,
    /// Frames not settled yet.
    pub pending: u64,
    /// Cameras registered.
    pub cameras: usize,
    /// Latency p99 over every result so far, ms.
    pub p99_ms: f64,
}

/// The verdict figures of a ramp step.
#[derive(Debug, Clone)]
pub struct StepFigures {
    /// Frames of the step's measuring window.
    pub sent: u64,
    /// Of those, answered.
    pub answered: u64,
    /// Of those, dropped.
    pub dropped: u64,
    /// Of those, still pending (counted at their present age, a lower bound, in the latency).
    pub pending: u64,
    /// Latency of the window's answered and pending frames.
    pub latency: Percentiles,
}

/// The shared ledger; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    clock: Clock,
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").finish_non_exhaustive()
    }
}

impl Ledger {
    /// An empty ledger on `clock`.
    pub fn new(clock: Clock) -> Self {
        Ledger {
            clock,
            inner: Arc::new(Mutex::new(Inner {
                cams: Vec::new(),
                index: Default::default(),
                overall: hist(3),
                by_priority: std::array::from_fn(|_| hist(3)),
                seconds: Vec::new(),
                cur_sec: 0,
                cur_hist: hist(2),
                steps: Vec::new(),
                drops: BTreeMap::new(),
                settled_twice: 0,
                unknown_seq: 0,
                foreign_results: 0,
                unmatched_events: 0,
                late: 0,
                out_of_order: 0,
                batch_size_sum: 0,
                queue_ns_sum: 0,
                nodes: BTreeMap::new(),
                workers: BTreeMap::new(),
                max_lag_ns: 0,
                late_sends: 0,
            })),
        }
    }

    /// The ledger's clock.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind: keep counting.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a camera; returns its index.
    pub fn add_camera(&self, id: &str, priority: Priority, res: Resolution) -> usize {
        let mut g = self.lock();
        let i = g.cams.len();
        g.cams.push(Cam {
            id: id.to_owned(),
            priority,
            res,
            next_seq: 0,
            answered: 0,
            dropped: 0,
            send_failed: 0,
            pending: BTreeMap::new(),
            hist: hist(2),
        });
        g.index.insert(id.to_owned(), i);
        i
    }

    /// Opens a ramp step of `cameras` cameras; returns its number.
    pub fn open_step(&self, cameras: u32) -> u32 {
        let mut g = self.lock();
        g.steps.push(Step {
            cameras,
            hist: hist(3),
            sent: 0,
            answered: 0,
            dropped: 0,
        });
        (g.steps.len() - 1) as u32
    }

    /// Registers the next frame of camera `cam`, about to be published at `at`, `lag` after
    /// its scheduled time. Returns its sequence number.
    pub fn register(
        &self,
        cam: usize,
        at: Instant,
        lag: Duration,
        step: u32,
        in_window: bool,
    ) -> u64 {
        let sent_ns = self.clock.since_ns(at);
        let mut g = self.lock();
        let sec = (sent_ns / 1_000_000_000) as usize;
        bucket(&mut g.seconds, sec).sent += 1;
        let lag_ns = lag.as_nanos() as u64;
        g.max_lag_ns = g.max_lag_ns.max(lag_ns);
        if in_window && let Some(s) = g.steps.get_mut(step as usize) {
            s.sent += 1;
        }
        let c = &mut g.cams[cam];
        let seq = c.next_seq;
        c.next_seq += 1;
        c.pending.insert(
            seq,
            Pending {
                sent_ns,
                step,
                in_window,
            },
        );
        seq
    }

    /// Takes back a registered frame whose publish failed (it never reached NATS).
    pub fn send_failed(&self, cam: usize, seq: u64) {
        let mut g = self.lock();
        let c = &mut g.cams[cam];
        if c.pending.remove(&seq).is_some() {
            c.send_failed += 1;
        }
    }

    /// Counts a frame published more than one frame interval after its scheduled time.
    pub fn late_send(&self) {
        self.lock().late_sends += 1;
    }

    /// Settles a frame with its result, received at `at`.
    pub fn result(&self, msg: &DetectionMsg, at: Instant) {
        let now_ns = self.clock.since_ns(at);
        let mut g = self.lock();
        let Some(&ci) = g.index.get(&msg.camera_id) else {
            g.foreign_results += 1;
            return;
        };
        let g = &mut *g;
        let cam = &mut g.cams[ci];
        let Some(p) = cam.pending.remove(&msg.seq) else {
            if msg.seq < cam.next_seq {
                g.settled_twice += 1;
            } else {
                g.unknown_seq += 1;
            }
            return;
        };
        let us = (now_ns.saturating_sub(p.sent_ns) / 1000).max(1);
        cam.answered += 1;
        cam.hist.saturating_record(us);
        let prio = cam.priority.index();
        g.overall.saturating_record(us);
        g.by_priority[prio].saturating_record(us);
        if p.in_window
            && let Some(s) = g.steps.get_mut(p.step as usize)
        {
            s.answered += 1;
            s.hist.saturating_record(us);
        }
        g.late += msg.late as u64;
        g.out_of_order += msg.out_of_order as u64;
        g.batch_size_sum += msg.batch_size as u64;
        g.queue_ns_sum += msg.timings.queue_ns;
        let sec = (now_ns / 1_000_000_000) as usize;
        roll_seconds(g, sec);
        bucket(&mut g.seconds, sec).answered += 1;
        g.cur_hist.saturating_record(us);
    }

    /// Settles a frame with a drop event (other events are ignored).
    pub fn event(&self, ev: &EventMsg, at: Instant) {
        if ev.kind != EventKind::Error {
            return;
        }
        let now_ns = self.clock.since_ns(at);
        let mut g = self.lock();
        let Some(&ci) = g.index.get(&ev.camera_id) else {
            return;
        };
        let g = &mut *g;
        let cam = &mut g.cams[ci];
        let p = ev.seq.and_then(|s| cam.pending.remove(&s));
        let Some(p) = p else {
            match ev.seq {
                Some(s) if s < cam.next_seq => g.settled_twice += 1,
                _ => g.unmatched_events += 1,
            }
            return;
        };
        cam.dropped += 1;
        let reason = ev.reason.map(|r| r.as_str()).unwrap_or("unspecified");
        *g.drops.entry(reason.to_owned()).or_default() += 1;
        if p.in_window
            && let Some(s) = g.steps.get_mut(p.step as usize)
        {
            s.dropped += 1;
        }
        let sec = (now_ns / 1_000_000_000) as usize;
        roll_seconds(g, sec);
        bucket(&mut g.seconds, sec).dropped += 1;
    }

    /// Keeps the first and the latest NodeStatus of each node.
    pub fn node_status(&self, st: NodeStatus) {
        let mut g = self.lock();
        match g.nodes.get_mut(&st.node_id) {
            Some((_, last)) => {
                if st.at_ns >= last.at_ns {
                    *last = st;
                }
            }
            None => {
                g.nodes.insert(st.node_id.clone(), (st.clone(), st));
            }
        }
    }

    /// Accumulates a WorkerStatus sample.
    pub fn worker_status(&self, ws: &WorkerStatus) {
        let mut g = self.lock();
        let w = g
            .workers
            .entry((ws.node_id.clone(), ws.worker_id.clone()))
            .or_default();
        w.device = ws.device.clone();
        w.slots_total = ws.slots_total;
        w.samples += 1;
        w.busy_sum += ws.slots_busy as f64 / ws.slots_total.max(1) as f64;
        if let Some(u) = ws.utilisation {
            w.util_sum += u as f64;
            w.util_samples += 1;
            w.util_max = w.util_max.max(u);
        }
        if let Some(m) = ws.memory_used_bytes {
            w.memory_max = Some(w.memory_max.unwrap_or(0).max(m));
        }
        if w.first.is_none() {
            w.first = Some((ws.at_ns, ws.frames_done));
        }
        w.last = Some((ws.at_ns, ws.frames_done));
        if ws.batch_p50_ns > 0 {
            w.batch_p50_ns_sum += ws.batch_p50_ns;
            w.batch_p50_samples += 1;
        }
        w.batch_p99_ns_max = w.batch_p99_ns_max.max(ws.batch_p99_ns);
    }

    /// Time of the newest NodeStatus seen (unix ns), if any.
    pub fn latest_node_at(&self) -> Option<u64> {
        self.lock().nodes.values().map(|(_, last)| last.at_ns).max()
    }

    /// Whether at least one NodeStatus has been seen.
    pub fn seen_node(&self) -> bool {
        !self.lock().nodes.is_empty()
    }

    /// Figures for the live view.
    pub fn progress(&self) -> Progress {
        let g = self.lock();
        let answered: u64 = g.cams.iter().map(|c| c.answered).sum();
        let dropped: u64 = g.cams.iter().map(|c| c.dropped).sum();
        let pending: u64 = g.cams.iter().map(|c| c.pending.len() as u64).sum();
        Progress {
            sent: answered + dropped + pending,
            answered,
            dropped,
            pending,
            cameras: g.cams.len(),
            p99_ms: if g.overall.is_empty() {
                0.0
            } else {
                g.overall.value_at_quantile(0.99) as f64 / 1e3
            },
        }
    }

    /// Frames not settled yet.
    pub fn pending(&self) -> u64 {
        self.lock()
            .cams
            .iter()
            .map(|c| c.pending.len() as u64)
            .sum()
    }

    /// The figures of ramp step `step`, counting frames still pending at their present age.
    pub fn step_figures(&self, step: u32, now: Instant) -> StepFigures {
        let now_ns = self.clock.since_ns(now);
        let g = self.lock();
        let s = &g.steps[step as usize];
        let mut h = s.hist.clone();
        let mut pending = 0;
        for c in &g.cams {
            for p in c.pending.values() {
                if p.step == step && p.in_window {
                    pending += 1;
                    h.saturating_record((now_ns.saturating_sub(p.sent_ns) / 1000).max(1));
                }
            }
        }
        StepFigures {
            sent: s.sent,
            answered: s.answered,
            dropped: s.dropped,
            pending,
            latency: Percentiles::of(&h),
        }
    }

    /// The cameras of each step so far, for the report.
    pub fn step_rows(&self, now: Instant, passed: &[Option<bool>]) -> Vec<StepRow> {
        let n = self.lock().steps.len();
        (0..n)
            .map(|i| {
                let f = self.step_figures(i as u32, now);
                let cameras = self.lock().steps[i].cameras;
                StepRow {
                    cameras,
                    sent: f.sent,
                    answered: f.answered,
                    dropped: f.dropped,
                    pending: f.pending,
                    latency_ms: f.latency,
                    passed: passed.get(i).copied().flatten(),
                }
            })
            .collect()
    }

    /// Everything the report needs, once the run has ended.
    pub fn summary(&self, duration: Duration) -> Summary {
        let mut g = self.lock();
        let last = g.seconds.len();
        roll_seconds(&mut g, last + 1);
        let secs = duration.as_secs_f64().max(1e-3);
        let send_failed: u64 = g.cams.iter().map(|c| c.send_failed).sum();
        let sent: u64 = g.cams.iter().map(|c| c.next_seq).sum::<u64>() - send_failed;
        let answered: u64 = g.cams.iter().map(|c| c.answered).sum();
        let dropped: u64 = g.cams.iter().map(|c| c.dropped).sum();
        let unaccounted: u64 = g.cams.iter().map(|c| c.pending.len() as u64).sum();
        let totals = Totals {
            sent,
            answered,
            dropped,
            unaccounted,
            send_failed,
            settled_twice: g.settled_twice,
            unknown_seq: g.unknown_seq,
            foreign_results: g.foreign_results,
            unmatched_drop_events: g.unmatched_events,
            flagged_late: g.late,
            flagged_out_of_order: g.out_of_order,
            mean_batch_size: g.batch_size_sum as f64 / answered.max(1) as f64,
            mean_node_queue_ms: g.queue_ns_sum as f64 / answered.max(1) as f64 / 1e6,
            fps_in: sent as f64 / secs,
            fps_out: answered as f64 / secs,
            generator_max_lag_ms: g.max_lag_ns as f64 / 1e6,
            generator_late_sends: g.late_sends,
        };
        let cameras: Vec<CameraRow> = g
            .cams
            .iter()
            .map(|c| CameraRow {
                camera: c.id.clone(),
                priority: c.priority.as_str().into(),
                resolution: c.res.label(),
                sent: c.next_seq - c.send_failed,
                answered: c.answered,
                dropped: c.dropped,
                unaccounted: c.pending.len() as u64,
                latency_ms: Percentiles::of(&c.hist),
            })
            .collect();
        let ratios: Vec<f64> = cameras
            .iter()
            .filter(|c| c.sent > 0)
            .map(|c| c.answered as f64 / c.sent as f64)
            .collect();
        let p99s: Vec<f64> = cameras
            .iter()
            .filter(|c| c.answered > 0)
            .map(|c| c.latency_ms.p99_ms)
            .collect();
        let fairness = Fairness {
            jain_served_ratio: jain(&ratios),
            min_served_ratio: ratios.iter().copied().fold(f64::NAN, f64::min),
            max_served_ratio: ratios.iter().copied().fold(f64::NAN, f64::max),
            jain_p99: jain(&p99s.iter().map(|p| 1.0 / p.max(1e-3)).collect::<Vec<_>>()),
            min_camera_p99_ms: p99s.iter().copied().fold(f64::NAN, f64::min),
            max_camera_p99_ms: p99s.iter().copied().fold(f64::NAN, f64::max),
        };
        let by_priority = Priority::ALL
            .iter()
            .filter(|p| !g.by_priority[p.index()].is_empty())
            .map(|p| {
                (
                    p.as_str().to_owned(),
                    Percentiles::of(&g.by_priority[p.index()]),
                )
            })
            .collect();
        let timeline = Timeline {
            second: (0..g.seconds.len() as u64).collect(),
            sent: g.seconds.iter().map(|s| s.sent).collect(),
            answered: g.seconds.iter().map(|s| s.answered).collect(),
            dropped: g.seconds.iter().map(|s| s.dropped).collect(),
            p50_ms: g.seconds.iter().map(|s| s.p50_us as f64 / 1e3).collect(),
            p99_ms: g.seconds.iter().map(|s| s.p99_us as f64 / 1e3).collect(),
            max_ms: g.seconds.iter().map(|s| s.max_us as f64 / 1e3).collect(),
        };
        let nodes = g
            .nodes
            .values()
            .map(|(first, last)| NodeDelta::between(first, last))
            .collect();
        let workers = g
            .workers
            .iter()
            .map(|((node, worker), w)| {
                let fps = match (w.first, w.last) {
                    (Some((t0, f0)), Some((t1, f1))) if t1 > t0 => {
                        (f1.saturating_sub(f0)) as f64 / ((t1 - t0) as f64 / 1e9)
                    }
                    _ => 0.0,
                };
                WorkerRow {
                    node: node.clone(),
                    worker: worker.clone(),
                    device: w.device.clone(),
                    slots_total: w.slots_total,
                    samples: w.samples,
                    mean_busy_slots_fraction: w.busy_sum / w.samples.max(1) as f64,
                    mean_utilisation: (w.util_samples > 0)
                        .then(|| w.util_sum / w.util_samples as f64),
                    max_utilisation: (w.util_samples > 0).then_some(w.util_max as f64),
                    max_memory_bytes: w.memory_max,
                    frames_per_s: fps,
                    batch_p50_ms_mean: w.batch_p50_ns_sum as f64
                        / w.batch_p50_samples.max(1) as f64
                        / 1e6,
                    batch_p99_ms_max: w.batch_p99_ns_max as f64 / 1e6,
                }
            })
            .collect();
        let unaccounted_frames = g
            .cams
            .iter()
            .flat_map(|c| c.pending.keys().map(move |s| (c.id.clone(), *s)))
            .take(50)
            .collect();
        Summary {
            totals,
            overall: Percentiles::of(&g.overall),
            overall_hist: g.overall.clone(),
            by_priority,
            cameras,
            drops_from_events: g.drops.clone(),
            fairness,
            timeline,
            nodes,
            workers,
            unaccounted_sample: unaccounted_frames,
        }
    }
}

/// What [`Ledger::summary`] returns.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Counts and rates.
    pub totals: Totals,
    /// Latency over every result.
    pub overall: Percentiles,
    /// The histogram behind `overall`, microseconds (for the plot).
    pub overall_hist: Histogram<u64>,
    /// Latency by priority class.
    pub by_priority: BTreeMap<String, Percentiles>,
    /// One row per camera.
    pub cameras: Vec<CameraRow>,
    /// Drops matched to our frames, by reason.
    pub drops_from_events: BTreeMap<String, u64>,
    /// Fairness across cameras.
    pub fairness: Fairness,
    /// Per-second series.
    pub timeline: Timeline,
    /// Node counters over the run.
    pub nodes: Vec<NodeDelta>,
    /// Worker load.
    pub workers: Vec<WorkerRow>,
    /// Up to 50 unaccounted frames, `(camera, seq)`.
    pub unaccounted_sample: Vec<(String, u64)>,
}

fn bucket(seconds: &mut Vec<Second>, sec: usize) -> &mut Second {
    if seconds.len() <= sec {
        seconds.resize(sec + 1, Second::default());
    }
    &mut seconds[sec]
}

/// Closes the latency figures of every second before `sec`.
fn roll_seconds(g: &mut Inner, sec: usize) {
    if sec <= g.cur_sec {
        return;
    }
    if !g.cur_hist.is_empty() {
        let (p50, p99, max) = (
            g.cur_hist.value_at_quantile(0.5),
            g.cur_hist.value_at_quantile(0.99),
            g.cur_hist.max(),
        );
        let cur = g.cur_sec;
        let b = bucket(&mut g.seconds, cur);
        b.p50_us = p50;
        b.p99_us = p99;
        b.max_us = max;
        g.cur_hist.reset();
    }
    g.cur_sec = sec;
}

/// Jain's fairness index of `xs`: (Σx)² / (n·Σx²); 1 when all are equal, 1/n at worst.
pub fn jain(xs: &[f64]) -> f64 {
    let n = xs.len() as f64;
    let sum: f64 = xs.iter().sum();
    let sq: f64 = xs.iter().map(|x| x * x).sum();
    if n == 0.0 || sq == 0.0 {
        return 1.0;
    }
    sum * sum / (n * sq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use its_proto::{DropReason, ModelRef, SCHEMA_VERSION, Timings};

    fn result(cam: &str, seq: u64) -> DetectionMsg {
        DetectionMsg {
            v: SCHEMA_VERSION,
            camera_id: cam.into(),
            seq,
            captured_at_ns: 0,
            published_at_ns: 0,
            frame_width: 1,
            frame_height: 1,
            node_id: "n".into(),
            worker_id: "w".into(),
            model: ModelRef {
                name: "m".into(),
                version: "1".into(),
            },
            batch_size: 4,
            detections: vec![],
            timings: Timings::default(),
            late: false,
            out_of_order: false,
            quality: None,
        }
    }

    fn drop_event(cam: &str, seq: Option<u64>) -> EventMsg {
        EventMsg {
            v: SCHEMA_VERSION,
            kind: EventKind::Error,
            camera_id: cam.into(),
            node_id: "n".into(),
            at_ns: 0,
            seq,
            reason: Some(DropReason::QueueFull),
            message: String::new(),
        }
    }

    #[test]
    fn every_frame_settles_once_and_the_rest_is_unaccounted() {
        let clock = Clock::new();
        let l = Ledger::new(clock);
        let res = Resolution::parse("720p").unwrap();
        let a = l.add_camera("a", Priority::Urgent, res);
        let b = l.add_camera("b", Priority::Normal, res);
        let t0 = clock.anchor();
        for i in 0..4 {
            let at = t0 + Duration::from_millis(i * 10);
            assert_eq!(l.register(a, at, Duration::ZERO, 0, false), i);
            l.register(b, at, Duration::ZERO, 0, false);
        }
        let later = t0 + Duration::from_millis(100);
        l.result(&result("a", 0), later);
        l.result(&result("a", 1), later);
        l.result(&result("a", 1), later); // settled twice
        l.result(&result("a", 9), later); // never sent
        l.result(&result("zz", 0), later); // someone else's camera
        l.event(&drop_event("b", Some(0)), later);
        l.event(&drop_event("b", None), later); // no seq: cannot be matched
        l.result(&result("b", 1), later);
        let s = l.summary(Duration::from_secs(1));
        let t = &s.totals;
        assert_eq!((t.sent, t.answered, t.dropped, t.unaccounted), (8, 3, 1, 4));
        assert_eq!(t.sent, t.answered + t.dropped + t.unaccounted);
        assert_eq!(
            (t.settled_twice, t.unknown_seq, t.foreign_results),
            (1, 1, 1)
        );
        assert_eq!(t.unmatched_drop_events, 1);
        assert_eq!(s.drops_from_events["queue_full"], 1);
        assert_eq!(s.overall.count, 3);
        assert!(s.overall.max_ms >= 89.0 && s.overall.max_ms <= 101.0);
        assert!(s.by_priority.contains_key("urgent"));
        assert_eq!(s.cameras[1].unaccounted, 2);
        assert_eq!(s.unaccounted_sample.len(), 4);
    }

    #[test]
    fn step_figures_count_pending_frames_at_their_age() {
        let clock = Clock::new();
        let l = Ledger::new(clock);
        let c = l.add_camera("c", Priority::Normal, Resolution::parse("720p").unwrap());
        let step = l.open_step(1);
        let t0 = clock.anchor();
        l.register(c, t0, Duration::ZERO, step, false); // warm-up: not measured
        l.register(c, t0, Duration::ZERO, step, true);
        l.register(c, t0, Duration::ZERO, step, true);
        l.result(&result("c", 1), t0 + Duration::from_millis(5));
        let f = l.step_figures(step, t0 + Duration::from_millis(500));
        assert_eq!((f.sent, f.answered, f.pending), (2, 1, 1));
        assert!(
            f.latency.max_ms >= 499.0,
            "pending frame counted at its age"
        );
    }

    #[test]
    fn jain_index_is_one_when_equal_and_low_when_one_camera_gets_everything() {
        assert!((jain(&[1.0, 1.0, 1.0]) - 1.0).abs() < 1e-9);
        assert!((jain(&[1.0, 0.0, 0.0, 0.0]) - 0.25).abs() < 1e-9);
    }
}
