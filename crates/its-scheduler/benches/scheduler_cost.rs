//! Scheduler cost per frame: intake message -> breaker -> queue -> batch -> worker -> reorder
//! buffer -> DetectionMsg encoded and published to a real nats-server -> accounted. The worker is a no-op (returns no
//! detections at once), so what is measured is the scheduler and publication path only.
//!
//! Run: `cargo bench -p its-scheduler --bench scheduler_cost` (needs nats-server on PATH;
//! `source scripts/env.sh` puts .venv's there). Prints a table; CPU time is this process's
//! user+system time from /proc/self/stat (the nats-server process is not counted).

use std::time::{Duration, Instant};

use actix::prelude::*;
use its_proto::{Encoding, FrameMsg, ModelRef, Priority, SCHEMA_VERSION};
use its_scheduler::{Accounting, Enqueue, SchedulerActor, SchedulerOptions, WorkerHandle, now_ns};
use its_worker::{BatchOutcome, JobResult, RunBatch, WorkerInfo};

struct NullWorker;
impl Actor for NullWorker {
    type Context = SyncContext<Self>;
}
impl Handler<RunBatch> for NullWorker {
    type Result = MessageResult<RunBatch>;
    fn handle(&mut self, msg: RunBatch, _: &mut SyncContext<Self>) -> Self::Result {
        let results = msg
            .jobs
            .into_iter()
            .map(|j| {
                let (w, h) = (j.frame.width, j.frame.height);
                (
                    j,
                    JobResult::Done {
                        detections: Vec::new(),
                        frame_width: w,
                        frame_height: h,
                        preprocess_ns: 0,
                        infer_ns: 0,
                        postprocess_ns: 0,
                    },
                )
            })
            .collect();
        MessageResult(BatchOutcome {
            results,
            service_ns: 1_000,
            model: None,
        })
    }
}

fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

fn frame(cam: usize, seq: u64) -> FrameMsg {
    FrameMsg {
        v: SCHEMA_VERSION,
        camera_id: format!("bench-{cam}"),
        seq,
        captured_at_ns: now_ns(),
        priority: Priority::Normal,
        deadline_ns: None,
        width: 1280,
        height: 720,
        encoding: Encoding::Jpeg,
        data: vec![0u8; 2048],
    }
}

async fn run(
    rate: Option<f64>,
    frames: u64,
    sched: Addr<SchedulerActor>,
    acct: &Accounting,
) -> (Duration, Duration) {
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    for i in 0..frames {
        if let Some(r) = rate {
            let due = t0 + Duration::from_secs_f64(i as f64 / r);
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        acct.received();
        sched
            .send(Enqueue {
                frame: frame(i as usize % 200, i / 200),
                received_at: Instant::now(),
                span: tracing::Span::none(),
            })
            .await
            .unwrap();
    }
    acct.wait_settled().await;
    (t0.elapsed(), cpu_time() - cpu0)
}

fn main() {
    actix::System::new().block_on(async {
        let nats = its_testkit::TestNats::start();
        let bus = nats.bus().await;
        // Something must consume the results, as in production.
        let _sub = bus
            .subscribe(its_proto::subjects::RESULTS_ALL)
            .await
            .unwrap();
        let acct = Accounting::new("bench", bus.clone());
        let worker = SyncArbiter::start(2, || NullWorker);
        let info = WorkerInfo {
            id: "null".into(),
            device: "none".into(),
            engine: "none".into(),
            slots: 2,
            model: ModelRef {
                name: "none".into(),
                version: "0".into(),
            },
            gpu: None,
            pools: None,
        };
        let sched = SchedulerActor::new(
            SchedulerOptions {
                deadlines: [Duration::from_secs(60); 4],
                queue_capacity: 100_000,
                ..SchedulerOptions::with_defaults()
            },
            acct.clone(),
            vec![WorkerHandle {
                info,
                addr: worker.recipient(),
            }],
        )
        .start();
        // Warm-up.
        run(None, 5_000, sched.clone(), &acct).await;
        eprintln!("| load | frames | wall s | frames/s | CPU µs per frame |");
        eprintln!("| --- | --- | --- | --- | --- |");
        for (label, rate, frames) in [
            ("paced 10,000 fps", Some(10_000.0), 30_000u64),
            ("unpaced", None, 100_000),
        ] {
            let (wall, cpu) = run(rate, frames, sched.clone(), &acct).await;
            eprintln!(
                "| {label} | {frames} | {:.2} | {:.0} | {:.1} |",
                wall.as_secs_f64(),
                frames as f64 / wall.as_secs_f64(),
                cpu.as_secs_f64() * 1e6 / frames as f64
            );
        }
        let s = acct.status(false);
        eprintln!(
            "settled: received {} published {} drops {:?}",
            s.frames_received, s.results_published, s.drops
        );
    });
}
