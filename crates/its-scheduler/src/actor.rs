//! The scheduler actor: queues, batch decisions, routing, and result publication.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use its_proto::{
    DetectionMsg, DropReason, FrameMsg, Priority, SCHEMA_VERSION, Timings, WorkerStatus, subjects,
};
use its_worker::{BatchOutcome, FrameJob, JobResult, RunBatch, WorkerInfo};
use serde::Serialize;

use crate::batcher::{Batcher, CostModel, Decision, QueueView};
use crate::queues::{Queued, Queues};
use crate::stats::{Accounting, now_ns};

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
}

/// A worker as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct WorkerHandle {
    /// What it is.
    pub info: WorkerInfo,
    /// Where batches go.
    pub addr: Recipient<RunBatch>,
}

struct WorkerState {
    handle: WorkerHandle,
    busy: u32,
    cost: CostModel,
    frames_done: u64,
    batches_done: u64,
    service: Histogram<u64>,
}

/// A frame that passed the envelope checks.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Enqueue {
    /// The frame.
    pub frame: FrameMsg,
    /// When the node received it.
    pub received_at: Instant,
}

/// Stop waiting for full batches, run everything queued, and answer once every received frame
/// is settled.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Drain;

/// Asks for a [`SchedulerSnapshot`].
#[derive(Debug, Message)]
#[rtype(result = "SchedulerSnapshot")]
pub struct GetSchedulerSnapshot {
    /// Start the per-worker latency windows anew (only the periodic status reporter does).
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
    /// Per-worker status; percentiles over the window since the last reset.
    pub workers: Vec<WorkerStatus>,
}

/// Queues frames by priority and deadline, batches them, and routes batches to workers.
pub struct SchedulerActor {
    opts: SchedulerOptions,
    acct: Accounting,
    queues: Queues<FrameMsg>,
    batcher: Batcher,
    workers: Vec<WorkerState>,
    wake: Option<(Instant, SpawnHandle)>,
    draining: bool,
    batch_sizes: BTreeMap<usize, u64>,
}

impl SchedulerActor {
    /// A scheduler over `workers` (at least one), accounting in `acct`.
    pub fn new(opts: SchedulerOptions, acct: Accounting, workers: Vec<WorkerHandle>) -> Self {
        let batcher = Batcher::new(
            opts.batch_sizes.clone(),
            opts.min_batch_timeout,
            opts.max_batch_timeout,
        );
        SchedulerActor {
            queues: Queues::new(opts.queue_capacity),
            batcher,
            workers: workers
                .into_iter()
                .map(|handle| WorkerState {
                    handle,
                    busy: 0,
                    cost: CostModel::default(),
                    frames_done: 0,
                    batches_done: 0,
                    service: Histogram::new_with_bounds(1_000, 600_000_000_000, 2).expect("bounds"),
                })
                .collect(),
            wake: None,
            draining: false,
            batch_sizes: BTreeMap::new(),
            opts,
            acct,
        }
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

    /// The worker with a free slot that should finish a batch of `n` first.
    fn pick_worker(&self, n: usize) -> Option<usize> {
        let bucket = self.batcher.bucket(n);
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.busy < w.handle.info.slots)
            .min_by_key(|(_, w)| {
                let cost = w.cost.predict(bucket).as_nanos() as u64;
                cost + cost * w.busy as u64 / w.handle.info.slots.max(1) as u64
            })
            .map(|(i, _)| i)
    }

    /// Drops expired frames, then dispatches batches while a worker is free and the policy
    /// says so; otherwise arms a wake-up.
    fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            let now = Instant::now();
            for q in self.queues.take_expired(now) {
                let late = now.saturating_duration_since(q.deadline);
                self.acct.dropped(
                    &q.item.camera_id,
                    Some(q.item.seq),
                    DropReason::DeadlineMissed,
                    format!(
                        "deadline passed {:.1} ms before dispatch",
                        late.as_secs_f64() * 1e3
                    ),
                );
            }
            let Some(w) = self.pick_worker(self.queues.len().max(1)) else {
                break;
            };
            match self
                .batcher
                .decide(now, self.view(), &self.workers[w].cost, self.draining)
            {
                Decision::Idle => break,
                Decision::Now(n) => self.dispatch(w, n, ctx),
                Decision::WaitUntil(at) => {
                    self.arm(at, ctx);
                    break;
                }
            }
        }
        self.publish_depths();
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

    fn dispatch(&mut self, w: usize, n: usize, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let jobs: Vec<FrameJob> = self
            .queues
            .take(n)
            .into_iter()
            .map(|q| FrameJob {
                frame: q.item,
                received_at: q.arrived,
                dispatched_at: now,
            })
            .collect();
        if jobs.is_empty() {
            return;
        }
        let ids: Vec<(String, u64)> = jobs
            .iter()
            .map(|j| (j.frame.camera_id.clone(), j.frame.seq))
            .collect();
        *self.batch_sizes.entry(jobs.len()).or_default() += 1;
        let bucket = self.batcher.bucket(jobs.len());
        let worker = &mut self.workers[w];
        worker.busy += 1;
        let addr = worker.handle.addr.clone();
        ctx.spawn(addr.send(RunBatch { jobs }).into_actor(self).map(
            move |res: Result<BatchOutcome, MailboxError>, act, ctx| {
                let worker = &mut act.workers[w];
                worker.busy -= 1;
                match res {
                    Ok(outcome) => {
                        let service = Duration::from_nanos(outcome.service_ns);
                        worker.cost.observe(bucket, service);
                        worker.batches_done += 1;
                        worker.frames_done += outcome.results.len() as u64;
                        let _ = worker
                            .service
                            .record(outcome.service_ns.clamp(1_000, 600_000_000_000));
                        let info = worker.handle.info.clone();
                        act.settle(outcome, &info);
                    }
                    Err(e) => {
                        for (camera, seq) in ids {
                            act.acct.dropped(
                                &camera,
                                Some(seq),
                                DropReason::WorkerFailed,
                                format!("worker {} is gone: {e}", worker.handle.info.id),
                            );
                        }
                    }
                }
                act.pump(ctx);
            },
        ));
    }

    /// Publishes the results of a batch and settles every frame.
    fn settle(&mut self, outcome: BatchOutcome, info: &WorkerInfo) {
        let batch_size = outcome.results.len() as u32;
        for (job, result) in outcome.results {
            let f = job.frame;
            match result {
                JobResult::Dropped { reason, message } => {
                    self.acct
                        .dropped(&f.camera_id, Some(f.seq), reason, message);
                }
                JobResult::Done {
                    detections,
                    frame_width,
                    frame_height,
                    preprocess_ns,
                    infer_ns,
                    postprocess_ns,
                } => {
                    let published_at_ns = now_ns();
                    let msg = DetectionMsg {
                        v: SCHEMA_VERSION,
                        camera_id: f.camera_id.clone(),
                        seq: f.seq,
                        captured_at_ns: f.captured_at_ns,
                        published_at_ns,
                        frame_width,
                        frame_height,
                        node_id: self.acct.node_id().to_owned(),
                        worker_id: info.id.clone(),
                        model: info.model.clone(),
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
                            total_ns: published_at_ns.saturating_sub(f.captured_at_ns),
                        },
                        late: false,
                        out_of_order: false,
                        quality: None,
                    };
                    let acct = self.acct.clone();
                    actix::spawn(async move {
                        let subject = subjects::results(&msg.camera_id);
                        match acct.bus().publish_msg(subject, &msg).await {
                            Ok(()) => acct.published(msg.timings.total_ns),
                            Err(e) => acct.dropped(
                                &msg.camera_id,
                                Some(msg.seq),
                                DropReason::PublishFailed,
                                e.to_string(),
                            ),
                        }
                    });
                }
            }
        }
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Intake awaits each send, so a full mailbox slows intake instead of growing memory.
        ctx.set_mailbox_capacity(256);
    }
}

impl Handler<Enqueue> for SchedulerActor {
    type Result = ();

    fn handle(&mut self, msg: Enqueue, ctx: &mut Context<Self>) {
        let f = msg.frame;
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
        let queued = Queued {
            item: f,
            arrived: msg.received_at,
            deadline,
        };
        if let Err((_, back)) = self.queues.push(p, queued) {
            self.acct.dropped(
                &back.item.camera_id,
                Some(back.item.seq),
                DropReason::QueueFull,
                format!(
                    "{} queue holds {} frames",
                    p.as_str(),
                    self.opts.queue_capacity
                ),
            );
        }
        self.pump(ctx);
    }
}

impl Handler<Drain> for SchedulerActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: Drain, ctx: &mut Context<Self>) -> Self::Result {
        self.draining = true;
        self.pump(ctx);
        let acct = self.acct.clone();
        Box::pin(async move { acct.wait_settled().await })
    }
}

impl Handler<GetSchedulerSnapshot> for SchedulerActor {
    type Result = MessageResult<GetSchedulerSnapshot>;

    fn handle(&mut self, msg: GetSchedulerSnapshot, _: &mut Context<Self>) -> Self::Result {
        let node_id = self.acct.node_id().to_owned();
        let workers = self
            .workers
            .iter_mut()
            .map(|w| {
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
                    utilisation: None,
                    memory_used_bytes: None,
                };
                if msg.reset_windows {
                    w.service.reset();
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
            workers,
        })
    }
}
