//! The scheduler actor: queues, overload breaker, batch decisions, routing, supervision of
//! failed batches, per-camera ordering and result publication.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use its_proto::{
    ControlReply, DetectionMsg, DropReason, FrameMsg, Priority, SCHEMA_VERSION, SchedulerControl,
    SchedulerTuning, Timings, WorkerStatus, subjects,
};
use its_worker::{BatchOutcome, FrameJob, JobResult, RunBatch, WorkerInfo};
use serde::Serialize;
use tokio::sync::mpsc;
use tracing::Span;

use crate::batcher::{Batcher, CostModel, Decision, QueueView};
use crate::breaker::{Breaker, BreakerConfig, BreakerState};
use crate::control::{LatePolicy, validate_tuning};
use crate::queues::{Queued, Queues};
use crate::reorder::{Released, ReorderBuffer};
use crate::stats::{Accounting, now_ns};
use crate::trace;

/// Scheduler settings (from `its-config`'s `[scheduler]`).
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Deadline after capture per class, Emergency first.
    pub deadlines: [Duration; 4],
    /// Preferred batch sizes, ascending.
    pub batch_sizes: Vec<usize>,
    /// Shortest batch wait.
    pub min_batch_timeout: Duration,
    /// Longest batch wait.
    pub max_batch_timeout: Duration,
    /// Frames per class queue.
    pub queue_capacity: usize,
    /// What happens to a frame whose deadline passed.
    pub late_policy: LatePolicy,
    /// The overload breaker.
    pub breaker: BreakerConfig,
    /// Longest time a result waits in the reorder buffer for an earlier frame of its camera.
    pub reorder_hold: Duration,
    /// Most results held per camera in the reorder buffer.
    pub reorder_capacity: usize,
}

impl SchedulerOptions {
    /// Defaults matching `its-config`'s defaults.
    pub fn with_defaults() -> Self {
        SchedulerOptions {
            deadlines: [20, 50, 100, 500].map(Duration::from_millis),
            batch_sizes: vec![1, 4, 8, 16, 32],
            min_batch_timeout: Duration::from_millis(2),
            max_batch_timeout: Duration::from_millis(50),
            queue_capacity: 1024,
            late_policy: LatePolicy::Drop,
            breaker: BreakerConfig::default(),
            reorder_hold: Duration::from_millis(100),
            reorder_capacity: 64,
        }
    }
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    /// What it is.
    pub info: WorkerInfo,
    /// Where batches go.
    pub addr: Recipient<RunBatch>,
}

/// A queued frame and how often it already ran into a device error.
struct Item {
    frame: FrameMsg,
    attempts: u8,
    /// The frame's `scheduler.frame` span (ends when the frame settles).
    span: Span,
    /// Its `scheduler.queue` span (ends at dispatch).
    queued: Span,
}

impl Item {
    fn new(frame: FrameMsg, attempts: u8, span: Span) -> Self {
        let queued = trace::queue_span(&span, attempts);
        Item {
            frame,
            attempts,
            span,
            queued,
        }
    }
}

/// The spans of a frame given to a worker, until its outcome settles.
struct Dispatched {
    camera: String,
    seq: u64,
    frame: Span,
    worker: Span,
}

impl Dispatched {
    /// The spans of `job`: the one at `i` when it matches (results usually come back in
    /// dispatch order), else the first unclaimed match.
    fn take(all: &mut [Option<Dispatched>], i: usize, job: &FrameJob) -> Option<Dispatched> {
        let is = |d: &Option<Dispatched>| {
            d.as_ref()
                .is_some_and(|d| d.seq == job.frame.seq && d.camera == job.frame.camera_id)
        };
        let at = if all.get(i).is_some_and(is) {
            i
        } else {
            all.iter().position(is)?
        };
        all[at].take()
    }
}

/// A result ready for publication, with its frame's span.
struct Ready {
    msg: DetectionMsg,
    span: Span,
}

struct WorkerState {
    handle: WorkerHandle,
    busy: u32,
    /// Predicted end of each running batch.
    running: Vec<Instant>,
    cost: CostModel,
    frames_done: u64,
    batches_done: u64,
    service: Histogram<u64>,
    /// Drained by request: no new batches.
    drained: bool,
    /// The worker's mailbox is closed: it is gone for good.
    down: bool,
    restarts: u64,
    /// Frames given to it and not yet returned, per class.
    in_flight: [u64; 4],
    /// Busy time summed over slots since `window_start`, ns.
    busy_ns: u64,
    window_start: Instant,
}

impl WorkerState {
    fn usable(&self) -> bool {
        !self.drained && !self.down
    }
}

/// A frame that passed the envelope checks.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    /// The frame.
    pub frame: FrameMsg,
    /// When the node received it.
    pub received_at: Instant,
    /// The frame's `scheduler.frame` span (`its_scheduler::trace::frame_span`;
    /// `Span::none()` for an untraced frame).
    pub span: Span,
}

/// Stop waiting for full batches, run everything queued, and answer once every received frame
/// is settled.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Ends a drain that ran out of time: every frame still queued or waiting for a retry is
/// settled as a [`DropReason::Shutdown`] drop with `reason`, so the ledger stays whole. The
/// answer says what was dropped and what is still out at the workers.
#[derive(Debug, Message)]
#[rtype(result = "String")]
pub struct AbandonQueued {
    /// The drop message each abandoned frame is counted with.
    pub reason: String,
}

/// A control command (tuning, draining or resuming a worker), answered with a [`ControlReply`].
#[derive(Debug, Message)]
#[rtype(result = "ControlReply")]
pub struct Control(pub SchedulerControl);

/// Asks for a [`SchedulerSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "SchedulerSnapshot")]
pub struct GetSchedulerSnapshot {
    /// Start the per-worker latency and utilisation windows anew (only the periodic worker
    /// status task does).
    pub reset_windows: bool,
}

/// The scheduler's observable state.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerSnapshot {
    /// Queued frames per class.
    pub queue_depth: BTreeMap<String, usize>,
    /// Batches dispatched, by size.
    pub batch_sizes: BTreeMap<usize, u64>,
    /// Current batch timeout for one queued frame, ms.
    pub batch_timeout_ms: f64,
    /// Measured arrival rate, frames/s.
    pub arrival_rate: Option<f64>,
    /// The overload breaker's state.
    pub breaker: &'static str,
    /// Results held in the reorder buffer.
    pub reorder_held: usize,
    /// Frames waiting for a retry after a device error.
    pub retry_queued: usize,
    /// Per-worker status; percentiles over the window since the last reset.
    pub workers: Vec<WorkerStatus>,
}

/// Decides, just before publication, whether this node publishes a result: `None` publishes it,
/// `Some(why)` settles it unpublished because another node publishes that frame (a cluster
/// handover) or this node already did (a duplicate). Set with
/// [`SchedulerActor::with_result_filter`]; without one every result is published.
pub type ResultFilter = std::sync::Arc<dyn Fn(&DetectionMsg) -> Option<&'static str> + Send + Sync>;

/// How often the scheduler checks held results and the breaker.
const TICK: Duration = Duration::from_millis(5);

/// Queues frames by priority and deadline, batches them, and routes batches to workers.
pub struct SchedulerActor {
    opts: SchedulerOptions,
    acct: Accounting,
    queues: Queues<Item>,
    /// Frames to run again after a device error, each with the worker to avoid.
    retry: VecDeque<(Queued<Item>, usize)>,
    batcher: Batcher,
    breaker: Breaker,
    reorder: ReorderBuffer<Ready>,
    released: Vec<Released<Ready>>,
    publisher: Option<mpsc::UnboundedSender<Ready>>,
    result_filter: Option<ResultFilter>,
    workers: Vec<WorkerState>,
    wake: Option<(Instant, SpawnHandle)>,
    draining: bool,
    batch_sizes: BTreeMap<usize, u64>,
}

impl SchedulerActor {
    /// A scheduler over `workers` (at least one), accounting in `acct`.
    pub fn new(opts: SchedulerOptions, acct: Accounting, workers: Vec<WorkerHandle>) -> Self {
        let now = Instant::now();
        let batcher = Batcher::new(
            opts.batch_sizes.clone(),
            opts.min_batch_timeout,
            opts.max_batch_timeout,
        );
        SchedulerActor {
            queues: Queues::new(opts.queue_capacity),
            retry: VecDeque::new(),
            batcher,
            breaker: Breaker::new(opts.breaker, now),
            reorder: ReorderBuffer::new(opts.reorder_hold, opts.reorder_capacity),
            released: Vec::new(),
            publisher: None,
            result_filter: None,
            workers: workers
                .into_iter()
                .map(|handle| WorkerState {
                    handle,
                    busy: 0,
                    running: Vec::new(),
                    cost: CostModel::default(),
                    frames_done: 0,
                    batches_done: 0,
                    service: Histogram::new_with_bounds(1_000, 600_000_000_000, 2).expect("bounds"),
                    drained: false,
                    down: false,
                    restarts: 0,
                    in_flight: [0; 4],
                    busy_ns: 0,
                    window_start: now,
                })
                .collect(),
            wake: None,
            draining: false,
            batch_sizes: BTreeMap::new(),
            opts,
            acct,
        }
    }

    /// Filters results before publication (cluster mode: handover and duplicate suppression).
    pub fn with_result_filter(mut self, filter: ResultFilter) -> Self {
        self.result_filter = Some(filter);
        self
    }

    fn publish_depths(&self) {
        for p in Priority::ALL {
            self.acct.set_queue_depth(p, self.queues.depth(p));
        }
    }

    fn view(&self) -> Option<QueueView> {
        Some(QueueView {
            queued: self.queues.len(),
            oldest_arrival: self.queues.oldest_arrival()?,
            earliest_deadline: self.queues.earliest_deadline()?,
            has_emergency: self.queues.depth(Priority::Emergency) > 0,
        })
    }

    /// The usable worker, other than `avoid`, predicted to finish a batch of `n` first: a worker
    /// with a free slot starts now, a busy one when its earliest running batch is predicted to
    /// end. `None` when that worker has no free slot: the batch waits for it (its completion
    /// pumps again) instead of going to a slower worker that would finish later.
    fn pick_worker(&self, n: usize, avoid: Option<usize>) -> Option<usize> {
        let bucket = self.batcher.bucket(n);
        let now = Instant::now();
        let (best, free) = self
            .workers
            .iter()
            .enumerate()
            .filter(|(i, w)| w.usable() && Some(*i) != avoid)
            .map(|(i, w)| {
                let slots = w.handle.info.slots.max(1);
                let cost = w.cost.predict(bucket);
                let free = w.busy < slots;
                let done = if free {
                    // Slots of one worker share its device: more running, slower each.
                    now + cost + cost * w.busy / slots
                } else {
                    // A batch running past its prediction is assumed to need as long again.
                    let end = w.running.iter().min().copied().unwrap_or(now);
                    let end = if end > now { end } else { now + (now - end) };
                    end + cost
                };
                (done, i, free)
            })
            .min_by_key(|(done, i, _)| (*done, *i))
            .map(|(_, i, free)| (i, free))?;
        free.then_some(best)
    }

    /// A frame settled without a result: counted, and no longer holding its camera's order.
    fn drop_frame(&mut self, f: &FrameMsg, span: &Span, reason: DropReason, message: String) {
        span.record("drop_reason", reason.as_str());
        self.acct
            .dropped(&f.camera_id, Some(f.seq), reason, message);
        self.reorder
            .settled(&f.camera_id, f.seq, &mut self.released);
        self.flush_released();
    }

    /// Hands the results the reorder buffer let go to the publisher, in order.
    fn flush_released(&mut self) {
        for r in self.released.drain(..) {
            let mut ready = r.item;
            ready.msg.out_of_order = r.out_of_order;
            match &self.publisher {
                Some(tx) => {
                    if let Err(mpsc::error::SendError(Ready { msg, .. })) = tx.send(ready) {
                        self.acct.dropped(
                            &msg.camera_id,
                            Some(msg.seq),
                            DropReason::Shutdown,
                            "the result publisher has stopped".into(),
                        );
                    }
                }
                None => self.acct.dropped(
                    &ready.msg.camera_id,
                    Some(ready.msg.seq),
                    DropReason::Shutdown,
                    "the scheduler is not running".into(),
                ),
            }
        }
    }

    /// Drops expired frames (drop policy), runs retries, then dispatches batches while a worker
    /// is free and the policy says so; otherwise arms a wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        if self.opts.late_policy == LatePolicy::Drop {
            for q in self.queues.take_expired(now) {
                let late = now.saturating_duration_since(q.deadline);
                self.breaker.record(now, true);
                self.drop_frame(
                    &q.item.frame,
                    &q.item.span,
                    DropReason::DeadlineMissed,
                    format!(
                        "deadline passed {:.1} ms before dispatch",
                        late.as_secs_f64() * 1e3
                    ),
                );
            }
        }
        self.pump_retries(ctx);
        while let Some(w) = self.pick_worker(self.queues.len().max(1), None) {
            let now = Instant::now();
            match self
                .batcher
                .decide(now, self.view(), &self.workers[w].cost, self.draining)
            {
                Decision::Idle => break,
                Decision::Now(n) => {
                    let items = self.queues.take(n);
                    self.dispatch(w, items, ctx);
                }
                Decision::WaitUntil(at) => {
                    self.arm(at, ctx);
                    break;
                }
            }
        }
        self.publish_depths();
    }

    /// Sends frames waiting for a retry to a free worker other than the one that failed them.
    fn pump_retries(&mut self, ctx: &mut Context<Self>) {
        if self.retry.is_empty() {
            return;
        }
        // Frames whose failed worker is the only usable one cannot be retried elsewhere.
        let (stuck, rest): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.retry)
            .into_iter()
            .partition(|(_, avoid)| !self.another_worker(*avoid));
        self.retry = rest;
        for (q, _) in stuck {
            self.drop_frame(
                &q.item.frame,
                &q.item.span,
                DropReason::DeviceError,
                "the device failed and no other worker can retry the frame".into(),
            );
        }
        while let Some((_, avoid)) = self.retry.front() {
            let avoid = *avoid;
            let Some(w) = self.pick_worker(self.retry.len(), Some(avoid)) else {
                return;
            };
            let max = self.batcher.max_batch();
            let mut items = Vec::new();
            let mut keep = VecDeque::new();
            while let Some((q, a)) = self.retry.pop_front() {
                if a != w && items.len() < max {
                    items.push(q);
                } else {
                    keep.push_back((q, a));
                }
            }
            self.retry = keep;
            self.dispatch(w, items, ctx);
        }
    }

    /// Whether a usable worker other than `w` exists.
    fn another_worker(&self, w: usize) -> bool {
        self.workers
            .iter()
            .enumerate()
            .any(|(i, x)| i != w && x.usable())
    }

    fn arm(&mut self, at: Instant, ctx: &mut Context<Self>) {
        if let Some((when, handle)) = self.wake {
            if when <= at {
                return;
            }
            ctx.cancel_future(handle);
        }
        let delay = at.saturating_duration_since(Instant::now());
        let handle = ctx.run_later(delay, |act, ctx| {
            act.wake = None;
            act.pump(ctx);
        });
        self.wake = Some((at, handle));
    }

    fn dispatch(&mut self, w: usize, items: Vec<Queued<Item>>, ctx: &mut Context<Self>) {
        if items.is_empty() {
            return;
        }
        let now = Instant::now();
        let worker = &mut self.workers[w];
        let mut classes = [0u64; 4];
        let size = items.len();
        let mut spans: Vec<Option<Dispatched>> = Vec::with_capacity(size);
        let jobs: Vec<FrameJob> = items
            .into_iter()
            .map(|q| {
                let Item {
                    frame,
                    attempts,
                    span,
                    queued,
                } = q.item;
                drop(queued);
                classes[frame.priority.index()] += 1;
                spans.push(Some(Dispatched {
                    camera: frame.camera_id.clone(),
                    seq: frame.seq,
                    worker: trace::worker_span(&span, &worker.handle.info.id, size),
                    frame: span,
                }));
                FrameJob {
                    frame,
                    received_at: q.arrived,
                    dispatched_at: now,
                    deadline: q.deadline,
                    attempts,
                }
            })
            .collect();
        *self.batch_sizes.entry(jobs.len()).or_default() += 1;
        self.acct.batch_dispatched(jobs.len());
        let bucket = self.batcher.bucket(jobs.len());
        let predicted = now + worker.cost.predict(bucket);
        worker.busy += 1;
        worker.running.push(predicted);
        for (c, n) in worker.in_flight.iter_mut().zip(classes) {
            *c += n;
        }
        let addr = worker.handle.addr.clone();
        ctx.spawn(addr.send(RunBatch { jobs }).into_actor(self).map(
            move |res: Result<BatchOutcome, MailboxError>, act, ctx| {
                let worker = &mut act.workers[w];
                worker.busy -= 1;
                if let Some(i) = worker.running.iter().position(|p| *p == predicted) {
                    worker.running.swap_remove(i);
                }
                for (c, n) in worker.in_flight.iter_mut().zip(classes) {
                    *c -= n;
                }
                match res {
                    Ok(outcome) => {
                        worker.busy_ns += outcome.service_ns;
                        if outcome.device_failed() {
                            worker.restarts += 1;
                        } else {
                            let service = Duration::from_nanos(outcome.service_ns);
                            worker.cost.observe(bucket, service);
                            worker.batches_done += 1;
                            worker.frames_done += outcome.results.len() as u64;
                            let _ = worker
                                .service
                                .record(outcome.service_ns.clamp(1_000, 600_000_000_000));
                        }
                        // A worker that swapped its model reports the one each batch ran on.
                        if let Some(m) = &outcome.model
                            && *m != worker.handle.info.model
                        {
                            worker.handle.info.model = m.clone();
                        }
                        let info = worker.handle.info.clone();
                        act.settle(outcome, w, &info, spans);
                    }
                    Err(e) => {
                        // The frames went with the message: they cannot be retried.
                        worker.down = true;
                        let id = worker.handle.info.id.clone();
                        tracing::error!(worker = %id, error = %e, "worker is gone");
                        for d in spans.into_iter().flatten() {
                            d.worker.record("outcome", "worker_gone");
                            d.frame
                                .record("drop_reason", DropReason::DeviceError.as_str());
                            drop((d.worker, d.frame));
                            act.acct.dropped(
                                &d.camera,
                                Some(d.seq),
                                DropReason::DeviceError,
                                format!("worker {id} is gone: {e}"),
                            );
                            act.reorder.settled(&d.camera, d.seq, &mut act.released);
                        }
                        act.flush_released();
                    }
                }
                act.pump(ctx);
            },
        ));
    }

    /// Settles every frame of a finished batch: results into the reorder buffer, drops counted,
    /// device errors retried once on another worker.
    fn settle(
        &mut self,
        outcome: BatchOutcome,
        w: usize,
        info: &WorkerInfo,
        mut spans: Vec<Option<Dispatched>>,
    ) {
        let batch_size = outcome.results.len() as u32;
        let model = outcome.model.unwrap_or_else(|| info.model.clone());
        let now = Instant::now();
        for (i, (job, result)) in outcome.results.into_iter().enumerate() {
            // The worker's span of this frame ends at the end of this iteration, when its
            // outcome has settled (retry queued, drop counted, or result handed on).
            let (span, _worker_span) = match Dispatched::take(&mut spans, i, &job) {
                Some(d) => {
                    let outcome = match &result {
                        JobResult::Done { .. } => "done",
                        JobResult::Dropped { .. } => "dropped",
                        JobResult::DeviceError { .. } => "device_error",
                    };
                    d.worker.record("outcome", outcome);
                    if let JobResult::Done {
                        preprocess_ns,
                        infer_ns,
                        postprocess_ns,
                        ..
                    } = &result
                    {
                        d.worker.record("preprocess_ns", trace::int(*preprocess_ns));
                        d.worker.record("infer_ns", trace::int(*infer_ns));
                        d.worker
                            .record("postprocess_ns", trace::int(*postprocess_ns));
                    }
                    (d.frame, d.worker)
                }
                None => (Span::none(), Span::none()),
            };
            let f = job.frame;
            match result {
                JobResult::Dropped { reason, message } => {
                    self.drop_frame(&f, &span, reason, message);
                }
                JobResult::DeviceError { message } => {
                    if job.attempts == 0 && self.another_worker(w) {
                        let q = Queued {
                            item: Item::new(f, 1, span),
                            arrived: job.received_at,
                            deadline: job.deadline,
                        };
                        self.retry.push_back((q, w));
                    } else {
                        self.drop_frame(&f, &span, DropReason::DeviceError, message);
                    }
                }
                JobResult::Done {
                    detections,
                    frame_width,
                    frame_height,
                    preprocess_ns,
                    infer_ns,
                    postprocess_ns,
                } => {
                    let late = now > job.deadline;
                    self.breaker.record(now, late);
                    if late && self.opts.late_policy == LatePolicy::Drop {
                        let by = now.saturating_duration_since(job.deadline);
                        self.drop_frame(
                            &f,
                            &span,
                            DropReason::DeadlineMissed,
                            format!(
                                "result ready {:.1} ms after the deadline",
                                by.as_secs_f64() * 1e3
                            ),
                        );
                        continue;
                    }
                    let msg = DetectionMsg {
                        v: SCHEMA_VERSION,
                        camera_id: f.camera_id,
                        seq: f.seq,
                        captured_at_ns: f.captured_at_ns,
                        published_at_ns: 0,
                        frame_width,
                        frame_height,
                        node_id: self.acct.node_id().to_owned(),
                        worker_id: info.id.clone(),
                        model: model.clone(),
                        batch_size,
                        detections,
                        timings: Timings {
                            queue_ns: job
                                .dispatched_at
                                .saturating_duration_since(job.received_at)
                                .as_nanos() as u64,
                            preprocess_ns,
                            infer_ns,
                            postprocess_ns,
                            total_ns: 0,
                        },
                        late,
                        out_of_order: false,
                        quality: None,
                    };
                    let (camera, seq) = (msg.camera_id.clone(), msg.seq);
                    // Ordering never makes a result miss its deadline.
                    self.reorder.ready_until(
                        &camera,
                        seq,
                        Ready { msg, span },
                        now,
                        job.deadline.max(now),
                        &mut self.released,
                    );
                    self.flush_released();
                }
            }
        }
    }

    /// Periodic work: results held too long leave the reorder buffer, the breaker re-evaluates.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        self.reorder.expire(now, &mut self.released);
        self.flush_released();
        if let Some(state) = self.breaker.evaluate(now) {
            self.on_breaker(state);
            self.pump(ctx);
        }
    }

    /// The breaker changed: frames of newly shed classes leave the queues (counted), and the
    /// change is reported.
    fn on_breaker(&mut self, state: BreakerState) {
        let mut shed = 0usize;
        for p in [Priority::Background, Priority::Normal] {
            if self.breaker.sheds(p) {
                for q in self.queues.take_class(p) {
                    shed += 1;
                    self.drop_frame(
                        &q.item.frame,
                        &q.item.span,
                        DropReason::Shed,
                        format!("overload breaker {}", state.as_str()),
                    );
                }
            }
        }
        let ratio = self.breaker.config().shed_miss_ratio;
        let why = match state {
            BreakerState::Closed => format!("deadline misses stayed at or below {}", ratio / 2.0),
            BreakerState::HalfOpen => {
                format!(
                    "deadline misses fell to {} or less; letting a trickle through",
                    ratio / 2.0
                )
            }
            _ => format!("deadline-miss ratio above {ratio}; {shed} queued frames shed"),
        };
        self.acct.breaker_changed(state, why);
    }

    fn tune(&mut self, t: SchedulerTuning) -> Result<String, String> {
        let v = validate_tuning(&t, self.opts.min_batch_timeout, self.opts.max_batch_timeout)?;
        let mut done = Vec::new();
        if let Some(sizes) = v.batch_sizes {
            self.opts.batch_sizes = sizes;
            done.push("batch_sizes");
        }
        if let Some(d) = v.deadlines {
            self.opts.deadlines = d;
            done.push("deadlines_ms");
        }
        if let Some(m) = v.min_batch_timeout {
            self.opts.min_batch_timeout = m;
            done.push("min_batch_timeout_ms");
        }
        if let Some(m) = v.max_batch_timeout {
            self.opts.max_batch_timeout = m;
            done.push("max_batch_timeout_ms");
        }
        if let Some(r) = v.shed_miss_ratio {
            self.opts.breaker.shed_miss_ratio = r;
            self.breaker.set_shed_miss_ratio(r);
            done.push("shed_miss_ratio");
        }
        if let Some(p) = v.late_policy {
            self.opts.late_policy = p;
            done.push("late_policy");
        }
        self.batcher.reconfigure(
            self.opts.batch_sizes.clone(),
            self.opts.min_batch_timeout,
            self.opts.max_batch_timeout,
        );
        tracing::info!(changed = ?done, "scheduler tuned");
        Ok(if done.is_empty() {
            "nothing to change".to_owned()
        } else {
            format!("applied {}", done.join(", "))
        })
    }

    fn worker_index(&self, id: &str) -> Result<usize, String> {
        self.workers
            .iter()
            .position(|w| w.handle.info.id == id)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .workers
                    .iter()
                    .map(|w| w.handle.info.id.as_str())
                    .collect();
                format!(
                    "no worker {id:?} on this node (workers: {})",
                    known.join(", ")
                )
            })
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Intake awaits each send, so a full mailbox slows intake instead of growing memory.
        ctx.set_mailbox_capacity(256);
        // One publisher task keeps each camera's results in the order the reorder buffer
        // released them.
        let (tx, mut rx) = mpsc::unbounded_channel::<Ready>();
        self.publisher = Some(tx);
        let acct = self.acct.clone();
        let filter = self.result_filter.clone();
        actix::spawn(async move {
            while let Some(Ready { mut msg, span }) = rx.recv().await {
                // The filter runs here, after the reorder buffer released the result in order,
                // so a suppressed result has already settled its camera's order like any other.
                // It settles the frame exactly once in the ledger, as `not_published`: neither
                // a publication (this node sent nothing) nor a drop (the frame's result does go
                // out, from the node that owns it); `in_flight` counts it as settled.
                if let Some(why) = filter.as_ref().and_then(|f| f(&msg)) {
                    span.record("not_published", why);
                    drop(span);
                    acct.not_published(&msg.camera_id, msg.seq, why);
                    continue;
                }
                msg.published_at_ns = now_ns();
                msg.timings.total_ns = msg.published_at_ns.saturating_sub(msg.captured_at_ns);
                let subject = subjects::results(&msg.camera_id);
                // The result carries the trace on: its headers hold this span's context.
                let publish = trace::publish_span(&span, &subject);
                let headers = trace::context_headers(&publish);
                let res = acct
                    .bus()
                    .publish_msg_with_headers(subject, &headers, &msg)
                    .await;
                if res.is_err() {
                    span.record("drop_reason", DropReason::PublishFailed.as_str());
                }
                // The frame's spans end before it counts as settled.
                drop((publish, span));
                match res {
                    Ok(()) => acct.published(msg.timings.total_ns),
                    Err(e) => acct.dropped(
                        &msg.camera_id,
                        Some(msg.seq),
                        DropReason::PublishFailed,
                        e.to_string(),
                    ),
                }
            }
        });
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Enqueue> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let f = msg.frame;
        let span = msg.span;
        let p = f.priority;
        let now_wall = now_ns();
        let deadline_ns = f.deadline_ns.unwrap_or(
            f.captured_at_ns
                .saturating_add(self.opts.deadlines[p.index()].as_nanos() as u64),
        );
        // Convert the wall-clock deadline into this process's monotonic clock.
        let deadline = if deadline_ns >= now_wall {
            msg.received_at + Duration::from_nanos(deadline_ns - now_wall)
        } else {
            msg.received_at
                .checked_sub(Duration::from_nanos(now_wall - deadline_ns))
                .unwrap_or(msg.received_at)
        };
        self.batcher.on_arrival(msg.received_at);
        if !self.breaker.admit(p) {
            span.record("drop_reason", DropReason::Shed.as_str());
            drop(span);
            self.acct.dropped(
                &f.camera_id,
                Some(f.seq),
                DropReason::Shed,
                format!(
                    "overload breaker {} sheds {} frames",
                    self.breaker.state().as_str(),
                    p.as_str()
                ),
            );
            return;
        }
        let (camera, seq) = (f.camera_id.clone(), f.seq);
        let queued = Queued {
            item: Item::new(f, 0, span),
            arrived: msg.received_at,
            deadline,
        };
        match self.queues.push(p, queued) {
            Ok(()) => self.reorder.expect(&camera, seq),
            Err((_, back)) => {
                back.item
                    .span
                    .record("drop_reason", DropReason::QueueFull.as_str());
                drop(back.item.queued);
                drop(back.item.span);
                self.acct.dropped(
                    &back.item.frame.camera_id,
                    Some(back.item.frame.seq),
                    DropReason::QueueFull,
                    format!(
                        "{} queue holds {} frames",
                        p.as_str(),
                        self.opts.queue_capacity
                    ),
                );
            }
        }
        self.pump(ctx);
    }
}

impl Handler<Drain> for SchedulerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        if !self.workers.iter().any(WorkerState::usable) {
            // Shutting down with every worker drained would never finish: take them back.
            for w in &mut self.workers {
                w.drained = false;
            }
        }
        self.pump(ctx);
        let acct = self.acct.clone();
        Box::pin(async move { acct.wait_settled().await })
    }
}

impl Handler<AbandonQueued> for SchedulerActor {
    type Result = MessageResult<AbandonQueued>;

    fn handle(&mut self, msg: AbandonQueued, _: &mut Context<Self>) -> Self::Result {
        let queued = self.queues.take(self.queues.len());
        let retries: Vec<_> = self.retry.drain(..).map(|(q, _)| q).collect();
        let dropped = queued.len() + retries.len();
        for q in queued.into_iter().chain(retries) {
            drop(q.item.queued);
            self.drop_frame(
                &q.item.frame,
                &q.item.span,
                DropReason::Shutdown,
                msg.reason.clone(),
            );
        }
        self.publish_depths();
        let out: Vec<String> = self
            .workers
            .iter()
            .filter(|w| w.busy > 0)
            .map(|w| {
                format!(
                    "{} ({} batch(es), {} frames)",
                    w.handle.info.id,
                    w.busy,
                    w.in_flight.iter().sum::<u64>()
                )
            })
            .collect();
        MessageResult(format!(
            "{dropped} queued frame(s) dropped; at workers: {}; {} result(s) held for ordering",
            if out.is_empty() {
                "none".to_owned()
            } else {
                out.join(", ")
            },
            self.reorder.held()
        ))
    }
}

impl Handler<Control> for SchedulerActor {
    type Result = MessageResult<Control>;

    fn handle(&mut self, msg: Control, ctx: &mut Context<Self>) -> Self::Result {
        let r = match msg.0 {
            SchedulerControl::Tune { tuning } => self.tune(tuning),
            SchedulerControl::DrainWorker { worker_id } => {
                self.worker_index(&worker_id).and_then(|i| {
                    if self.workers.iter().filter(|w| w.usable()).count() == 1
                        && self.workers[i].usable()
                    {
                        return Err(format!(
                            "worker {worker_id} is the last one taking batches; resume another first"
                        ));
                    }
                    self.workers[i].drained = true;
                    tracing::info!(worker = %worker_id, "worker drained");
                    Ok(format!(
                        "worker {worker_id} drained; it finishes {} running batch(es)",
                        self.workers[i].busy
                    ))
                })
            }
            SchedulerControl::ResumeWorker { worker_id } => {
                self.worker_index(&worker_id).and_then(|i| {
                    if self.workers[i].down {
                        return Err(format!("worker {worker_id} is gone and cannot resume"));
                    }
                    self.workers[i].drained = false;
                    tracing::info!(worker = %worker_id, "worker resumed");
                    Ok(format!("worker {worker_id} takes batches again"))
                })
            }
            SchedulerControl::SwapModel { .. } => {
                Err("model swaps are served by the control server (run_control_with_models), not the scheduler".to_owned())
            }
        };
        self.pump(ctx);
        MessageResult(match r {
            Ok(message) => ControlReply { ok: true, message },
            Err(message) => ControlReply { ok: false, message },
        })
    }
}

impl Handler<GetSchedulerSnapshot> for SchedulerActor {
    type Result = MessageResult<GetSchedulerSnapshot>;

    fn handle(&mut self, msg: GetSchedulerSnapshot, _: &mut Context<Self>) -> Self::Result {
        let node_id = self.acct.node_id().to_owned();
        let now = Instant::now();
        let max = self.batcher.max_batch();
        let workers = self
            .workers
            .iter_mut()
            .map(|w| {
                let slots = w.handle.info.slots.max(1);
                let window = now.saturating_duration_since(w.window_start).as_nanos() as f64;
                let utilisation = (window > 0.0)
                    .then(|| (w.busy_ns as f64 / (window * slots as f64)).min(1.0) as f32);
                let capacity_fps = (w.batches_done > 0).then(|| {
                    let cost = w.cost.predict(max).as_secs_f64().max(1e-6);
                    (slots as f64 * max as f64 / cost) as f32
                });
                // The device's own figures (NVML) where the worker has a GPU; the busy-time
                // estimate otherwise.
                let gpu = w.handle.info.gpu.as_ref().and_then(|g| g.sample());
                let pools = w.handle.info.pools.as_ref().map(|p| p.total());
                let utilisation = gpu.and_then(|g| g.utilisation).or(utilisation);
                let s = WorkerStatus {
                    v: SCHEMA_VERSION,
                    node_id: node_id.clone(),
                    worker_id: w.handle.info.id.clone(),
                    device: w.handle.info.device.clone(),
                    at_ns: now_ns(),
                    slots_total: w.handle.info.slots,
                    slots_busy: w.busy,
                    frames_done: w.frames_done,
                    batches_done: w.batches_done,
                    batch_p50_ns: w.service.value_at_quantile(0.5),
                    batch_p99_ns: w.service.value_at_quantile(0.99),
                    utilisation,
                    memory_used_bytes: gpu.and_then(|g| g.memory_used_bytes),
                    queue_depth: Priority::ALL
                        .iter()
                        .map(|p| (p.as_str().to_owned(), w.in_flight[p.index()]))
                        .collect(),
                    capacity_fps,
                    draining: w.drained,
                    restarts: w.restarts,
                    gpu_temperature_c: gpu.and_then(|g| g.temperature_c),
                    gpu_power_w: gpu.and_then(|g| g.power_w),
                    gpu_sm_clock_mhz: gpu.and_then(|g| g.sm_clock_mhz),
                    memory_total_bytes: gpu.and_then(|g| g.memory_total_bytes),
                    pool_hits: pools.map(|p| p.hits),
                    pool_misses: pools.map(|p| p.misses),
                    pool_bytes_held: pools.map(|p| p.bytes_held as u64),
                    pool_high_water_bytes: pools.map(|p| p.high_water_bytes as u64),
                };
                if msg.reset_windows {
                    w.service.reset();
                    w.busy_ns = 0;
                    w.window_start = now;
                }
                s
            })
            .collect();
        MessageResult(SchedulerSnapshot {
            queue_depth: Priority::ALL
                .iter()
                .map(|p| (p.as_str().to_owned(), self.queues.depth(*p)))
                .collect(),
            batch_sizes: self.batch_sizes.clone(),
            batch_timeout_ms: self.batcher.timeout(1).as_secs_f64() * 1e3,
            arrival_rate: self.batcher.arrival_rate(),
            breaker: self.breaker.state().as_str(),
            reorder_held: self.reorder.held(),
            retry_queued: self.retry.len(),
            workers,
        })
    }
}
