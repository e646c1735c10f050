//! The scheduler with two real CPU workers (the generated demo model through ONNX Runtime) and
//! a real nats-server: routing by speed, faults mid-batch, overload shedding, run-time control.
//!
//! The slower worker is made slower through its fault hook (`FaultHook::set_delay`): every batch
//! spends that much longer at the engine boundary, in the worker's own thread, exactly where a
//! slower device would. Faults are injected at the same boundary (`panic_next_batches`,
//! `fail_next_batches`), so the real supervision path runs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use its_bus::Bus;
use its_proto::{
    ControlReply, DetectionMsg, DropReason, Encoding, EventKind, EventMsg, FrameMsg, Priority,
    SCHEMA_VERSION, SchedulerControl, SchedulerTuning, subjects,
};
use its_scheduler::breaker::BreakerConfig;
use its_scheduler::{
    AbandonQueued, Accounting, GetSchedulerSnapshot, LatePolicy, SchedulerActor, SchedulerOptions,
    SchedulerSnapshot, WorkerHandle, now_ns,
};
use its_testkit::{TestNats, within};
use its_worker::{FaultHook, Worker, WorkerOptions};

fn jpeg() -> Vec<u8> {
    its_testkit::small_jpeg(128)
}

struct Rig {
    _nats: TestNats,
    bus: Bus,
    acct: Accounting,
    scheduler: Addr<SchedulerActor>,
    faults: Vec<FaultHook>,
    results: Arc<Mutex<Vec<DetectionMsg>>>,
    events: Arc<Mutex<Vec<EventMsg>>>,
    jpeg: Vec<u8>,
    seqs: HashMap<String, u64>,
    sent: u64,
}

impl Rig {
    /// Two CPU workers `a` and `b` (one thread each) with the given extra delay per batch.
    async fn start(opts: SchedulerOptions, delays_ms: [u64; 2]) -> Rig {
        let nats = TestNats::start();
        let bus = nats.bus().await;
        let acct = Accounting::new("node-t", bus.clone());
        let mut workers = Vec::new();
        let mut faults = Vec::new();
        for (id, delay) in ["a", "b"].into_iter().zip(delays_ms) {
            let hook = FaultHook::default();
            hook.set_delay(Duration::from_millis(delay));
            let (addr, info) = Worker::start(&WorkerOptions {
                faults: hook.clone(),
                ..WorkerOptions::cpu(id, its_testkit::demo_model_dir(), 1)
            })
            .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
            workers.push(WorkerHandle {
                info,
                addr: addr.recipient(),
            });
            faults.push(hook);
        }
        let scheduler = SchedulerActor::new(opts, acct.clone(), workers).start();
        let results = Arc::new(Mutex::new(Vec::new()));
        let mut rsub = bus.subscribe(subjects::RESULTS_ALL).await.unwrap();
        let r = results.clone();
        actix::spawn(async move {
            while let Some(m) = rsub.next().await {
                let msg: DetectionMsg = its_proto::decode(&m.payload).expect("a DetectionMsg");
                r.lock().unwrap().push(msg);
            }
        });
        let events = Arc::new(Mutex::new(Vec::new()));
        let mut esub = bus.subscribe(subjects::EVENTS_ALL).await.unwrap();
        let e = events.clone();
        actix::spawn(async move {
            while let Some(m) = esub.next().await {
                let msg: EventMsg = its_proto::decode(&m.payload).expect("an EventMsg");
                e.lock().unwrap().push(msg);
            }
        });
        let sub = bus.subscribe(subjects::FRAMES_ALL).await.unwrap();
        bus.flush().await.unwrap();
        let (_stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        std::mem::forget(_stop_tx);
        actix::spawn(its_scheduler::run_intake(
            sub,
            scheduler.clone(),
            acct.clone(),
            its_scheduler::IntakeOptions::new(1 << 20),
            stop_rx,
        ));
        actix::spawn(its_scheduler::run_control(
            bus.clone(),
            "node-t".into(),
            scheduler.clone(),
        ));
        Rig {
            _nats: nats,
            bus,
            acct,
            scheduler,
            faults,
            results,
            events,
            jpeg: jpeg(),
            seqs: HashMap::new(),
            sent: 0,
        }
    }

    async fn send(&mut self, camera: &str, priority: Priority) {
        let seq = self.seqs.entry(camera.to_owned()).or_default();
        *seq += 1;
        let frame = FrameMsg {
            v: SCHEMA_VERSION,
            camera_id: camera.into(),
            seq: *seq,
            captured_at_ns: now_ns(),
            priority,
            deadline_ns: None,
            width: 64,
            height: 48,
            encoding: Encoding::Jpeg,
            data: self.jpeg.clone(),
        };
        self.bus
            .publish_msg(subjects::frames(camera), &frame)
            .await
            .unwrap();
        self.sent += 1;
    }

    /// Waits until every frame sent was received and settled, and its result delivered.
    async fn settle(&self) {
        within(90, "every frame received and settled", async {
            while self.acct.status(false).frames_received < self.sent {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            self.acct.wait_settled().await;
            let published = self.acct.status(false).results_published as usize;
            while self.results.lock().unwrap().len() < published {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }

    async fn snapshot(&self) -> SchedulerSnapshot {
        self.scheduler
            .send(GetSchedulerSnapshot {
                reset_windows: false,
            })
            .await
            .unwrap()
    }

    /// Sends a control request; retried while the control task has not subscribed yet.
    async fn control(&self, cmd: SchedulerControl) -> ControlReply {
        within(30, "control reply", async {
            loop {
                match self
                    .bus
                    .request_msg::<_, ControlReply>(
                        subjects::control_scheduler("node-t"),
                        &cmd,
                        Duration::from_secs(10),
                    )
                    .await
                {
                    Ok(r) => return r,
                    Err(its_bus::BusError::Request {
                        no_responders: true,
                        ..
                    }) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(e) => panic!("control request: {e}"),
                }
            }
        })
        .await
    }

    /// The ledger balances and every published result arrived once.
    fn assert_ledger(&self) {
        let s = self.acct.status(false);
        let drops: u64 = s.drops.values().sum();
        assert_eq!(s.frames_received, self.sent);
        assert_eq!(s.frames_received, s.results_published + drops, "{s:?}");
        assert_eq!(s.in_flight, 0);
        let results = self.results.lock().unwrap();
        assert_eq!(results.len() as u64, s.results_published);
        let mut seen = std::collections::HashSet::new();
        for r in results.iter() {
            assert!(seen.insert((r.camera_id.clone(), r.seq)), "duplicate {r:?}");
        }
    }

    /// Per camera, results not flagged out of order arrive in sequence order.
    fn assert_ordered(&self) {
        let mut last: HashMap<String, u64> = HashMap::new();
        for r in self.results.lock().unwrap().iter() {
            let prev = last.get(&r.camera_id).copied().unwrap_or(0);
            if r.seq < prev {
                assert!(
                    r.out_of_order,
                    "{} seq {} after {prev} unflagged",
                    r.camera_id, r.seq
                );
            } else {
                last.insert(r.camera_id.clone(), r.seq);
            }
        }
    }
}

/// Deadlines no loaded debug build can miss, and late results delivered rather than dropped,
/// so every frame must come back as a result.
fn relaxed() -> SchedulerOptions {
    SchedulerOptions {
        deadlines: [Duration::from_secs(60); 4],
        batch_sizes: vec![1, 2, 4, 8],
        late_policy: LatePolicy::Deliver,
        ..SchedulerOptions::with_defaults()
    }
}

fn worker<'a>(snap: &'a SchedulerSnapshot, id: &str) -> &'a its_proto::WorkerStatus {
    snap.workers.iter().find(|w| w.worker_id == id).unwrap()
}

#[actix_rt::test]
async fn batches_go_to_the_faster_worker_more() {
    // Worker b spends a second more on every batch than worker a.
    let mut rig = Rig::start(relaxed(), [0, 1000]).await;
    for i in 0..24u64 {
        rig.send(&format!("cam-{}", i % 3), Priority::Normal).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    rig.assert_ordered();
    let s = rig.acct.status(false);
    assert_eq!(s.results_published, rig.sent, "{s:?}");
    let snap = rig.snapshot().await;
    let (fast, slow) = (worker(&snap, "a"), worker(&snap, "b"));
    assert!(
        fast.frames_done > slow.frames_done,
        "fast {} frames, slow {} frames",
        fast.frames_done,
        slow.frames_done
    );
    assert!(fast.capacity_fps.is_some());
}

#[actix_rt::test]
async fn a_worker_failing_mid_batch_loses_nothing() {
    let mut rig = Rig::start(relaxed(), [0, 0]).await;
    // Worker a dies in its first batch (panic mid-batch), then its device fails twice more.
    rig.faults[0].panic_next_batches(1);
    rig.faults[0].fail_next_batches(2);
    for i in 0..16u64 {
        rig.send(&format!("cam-{}", i % 4), Priority::Urgent).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    rig.assert_ordered();
    let s = rig.acct.status(false);
    assert!(
        rig.faults[0].restarts() >= 1,
        "worker a restarted its engine"
    );
    assert_eq!(
        s.results_published, rig.sent,
        "every frame of a failed batch was retried on worker b: {s:?}"
    );
    let snap = rig.snapshot().await;
    assert!(worker(&snap, "a").restarts >= 1);
    assert_eq!(snap.retry_queued, 0);

    // With worker b drained, a device error on a has no other worker: counted as device_error.
    let r = rig
        .control(SchedulerControl::DrainWorker {
            worker_id: "b".into(),
        })
        .await;
    assert!(r.ok, "{r:?}");
    rig.faults[0].fail_next_batches(1);
    rig.send("cam-x", Priority::Emergency).await;
    rig.settle().await;
    rig.assert_ledger();
    assert_eq!(
        rig.acct
            .status(false)
            .drops
            .get(DropReason::DeviceError.as_str()),
        Some(&1)
    );
}

#[actix_rt::test]
async fn a_drain_out_of_time_counts_the_queued_frames_and_waits_for_running_batches() {
    // Both workers spend 1.5 s on every one-frame batch: most of 8 frames wait in the queue.
    let opts = SchedulerOptions {
        batch_sizes: vec![1],
        ..relaxed()
    };
    let mut rig = Rig::start(opts, [1500, 1500]).await;
    for i in 0..8u64 {
        rig.send(&format!("cam-{}", i % 2), Priority::Normal).await;
    }
    within(60, "every frame received, both workers busy", async {
        loop {
            let snap = rig.snapshot().await;
            if rig.acct.status(false).frames_received == rig.sent
                && snap.workers.iter().all(|w| w.slots_busy > 0)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let reason = "not served within the test's drain";
    let left = rig
        .scheduler
        .send(AbandonQueued {
            reason: reason.into(),
        })
        .await
        .unwrap();
    let dropped: u64 = left
        .split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("answer starts with the count: {left}"));
    assert!(dropped >= 1, "{left}");
    assert!(
        left.contains("at workers: a (1 batch(es), 1 frames)"),
        "{left}"
    );
    assert!(left.contains("b (1 batch(es), 1 frames)"), "{left}");
    let s = rig.acct.status(false);
    assert_eq!(s.drops.get(DropReason::Shutdown.as_str()), Some(&dropped));
    assert_eq!(s.in_flight, rig.sent - dropped, "{s:?}");
    assert_eq!(rig.snapshot().await.queue_depth.values().sum::<usize>(), 0);
    // The batches already at the workers still end as results.
    rig.settle().await;
    rig.assert_ledger();
    let s = rig.acct.status(false);
    assert_eq!(s.results_published, rig.sent - dropped, "{s:?}");
    assert!(s.results_published >= 2, "{s:?}");
}

#[actix_rt::test]
async fn control_tunes_and_drains_workers() {
    let mut rig = Rig::start(relaxed(), [0, 0]).await;
    let bad = rig
        .control(SchedulerControl::Tune {
            tuning: SchedulerTuning {
                batch_sizes: Some(vec![8, 4]),
                ..Default::default()
            },
        })
        .await;
    assert!(!bad.ok && bad.message.contains("batch_sizes"), "{bad:?}");
    let ok = rig
        .control(SchedulerControl::Tune {
            tuning: SchedulerTuning {
                batch_sizes: Some(vec![1, 2]),
                late_policy: Some("deliver".into()),
                ..Default::default()
            },
        })
        .await;
    assert!(ok.ok, "{ok:?}");
    let unknown = rig
        .control(SchedulerControl::DrainWorker {
            worker_id: "zz".into(),
        })
        .await;
    assert!(!unknown.ok && unknown.message.contains("zz"), "{unknown:?}");
    let drained = rig
        .control(SchedulerControl::DrainWorker {
            worker_id: "a".into(),
        })
        .await;
    assert!(drained.ok, "{drained:?}");
    let last = rig
        .control(SchedulerControl::DrainWorker {
            worker_id: "b".into(),
        })
        .await;
    assert!(!last.ok, "the last worker cannot be drained: {last:?}");
    for i in 0..12u64 {
        rig.send(&format!("cam-{}", i % 2), Priority::Normal).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    let snap = rig.snapshot().await;
    assert_eq!(worker(&snap, "a").frames_done, 0);
    assert!(worker(&snap, "a").draining);
    assert_eq!(worker(&snap, "b").frames_done, 12);
    assert!(
        snap.batch_sizes.keys().all(|n| *n <= 2),
        "{:?}",
        snap.batch_sizes
    );
    let resumed = rig
        .control(SchedulerControl::ResumeWorker {
            worker_id: "a".into(),
        })
        .await;
    assert!(resumed.ok, "{resumed:?}");
}

#[actix_rt::test]
async fn an_overload_burst_sheds_background_first_and_emergency_meets_its_deadline() {
    let opts = SchedulerOptions {
        // Tight for the flood, generous for Emergency: a debug build on a loaded machine runs
        // a frame in tens to hundreds of milliseconds.
        deadlines: [5000, 5000, 1500, 600].map(Duration::from_millis),
        batch_sizes: vec![1, 2],
        late_policy: LatePolicy::Drop,
        breaker: BreakerConfig {
            window: Duration::from_millis(1000),
            min_samples: 5,
            shed_miss_ratio: 0.2,
            hold: Duration::from_millis(200),
            trickle: 4,
        },
        ..SchedulerOptions::with_defaults()
    };
    // Every batch costs at least 150 ms: the node serves at most ~25 frames/s.
    let mut rig = Rig::start(opts, [150, 150]).await;
    let t0 = Instant::now();
    let mut emergency = 0u64;
    let mut tick = 0u64;
    while t0.elapsed() < Duration::from_millis(2000) {
        // ~40 Background and ~5 Normal frames/s, and 2.5 Emergency frames/s.
        for c in 0..4 {
            rig.send(&format!("bg-{c}"), Priority::Background).await;
        }
        if tick.is_multiple_of(2) {
            rig.send("normal-0", Priority::Normal).await;
        }
        if tick.is_multiple_of(4) {
            rig.send("emergency-0", Priority::Emergency).await;
            emergency += 1;
        }
        tick += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    rig.assert_ordered();
    let s = rig.acct.status(false);
    assert!(s.drops.get("shed").copied().unwrap_or(0) > 0, "{s:?}");
    // Events arrive after the ledger settles: wait for the drop events of every shed frame.
    let shed_total = s.drops["shed"] as usize;
    within(10, "the shed events", async {
        loop {
            let n = rig
                .events
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.reason == Some(DropReason::Shed))
                .count();
            if n >= shed_total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let events = rig.events.lock().unwrap().clone();
    let mut shed_by: BTreeMap<String, u64> = BTreeMap::new();
    for e in events.iter().filter(|e| e.reason == Some(DropReason::Shed)) {
        *shed_by
            .entry(e.camera_id.split('-').next().unwrap().to_owned())
            .or_default() += 1;
    }
    let first = events
        .iter()
        .find(|e| e.reason == Some(DropReason::Shed))
        .unwrap();
    assert!(first.camera_id.starts_with("bg-"), "first shed: {first:?}");
    assert!(
        shed_by.get("bg").copied().unwrap_or(0) > shed_by.get("normal").copied().unwrap_or(0),
        "{shed_by:?}"
    );
    assert!(!shed_by.contains_key("emergency"), "{shed_by:?}");
    assert!(
        events
            .iter()
            .any(|e| e.kind == EventKind::Breaker && e.camera_id == "node-t"),
        "a breaker event"
    );
    let on_time = rig
        .results
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.camera_id == "emergency-0" && !r.late)
        .count() as u64;
    assert_eq!(
        on_time, emergency,
        "every Emergency frame met its deadline: {s:?}"
    );
}

#[actix_rt::test]
async fn late_frames_are_delivered_flagged_or_dropped_by_policy() {
    // Deadlines of 1 ms cannot be met: with `deliver` every frame still comes back, flagged.
    let opts = SchedulerOptions {
        deadlines: [Duration::from_millis(1); 4],
        late_policy: LatePolicy::Deliver,
        breaker: BreakerConfig {
            min_samples: 1_000_000,
            ..Default::default()
        },
        ..SchedulerOptions::with_defaults()
    };
    let mut rig = Rig::start(opts, [0, 0]).await;
    for i in 0..6u64 {
        rig.send(&format!("cam-{}", i % 2), Priority::Normal).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    rig.assert_ordered();
    let results = rig.results.lock().unwrap().clone();
    assert_eq!(results.len(), 6);
    assert!(results.iter().all(|r| r.late), "every result flagged late");

    // Switched to `drop` at run time: the same frames are counted drops, none published.
    let r = rig
        .control(SchedulerControl::Tune {
            tuning: SchedulerTuning {
                late_policy: Some("drop".into()),
                ..Default::default()
            },
        })
        .await;
    assert!(r.ok, "{r:?}");
    for i in 0..6u64 {
        rig.send(&format!("cam-{}", i % 2), Priority::Normal).await;
    }
    rig.settle().await;
    rig.assert_ledger();
    let s = rig.acct.status(false);
    assert_eq!(s.results_published, 6, "{s:?}");
    assert_eq!(s.drops.get("deadline_missed"), Some(&6), "{s:?}");
}

#[actix_rt::test]
async fn every_worker_publishes_its_status_every_half_second() {
    let mut rig = Rig::start(relaxed(), [0, 0]).await;
    let mut sub = rig
        .bus
        .subscribe("its.status.worker.node-t.*")
        .await
        .unwrap();
    rig.bus.flush().await.unwrap();
    actix::spawn(its_scheduler::run_worker_status(
        rig.bus.clone(),
        rig.scheduler.clone(),
        Duration::from_millis(500),
    ));
    for i in 0..4u64 {
        rig.send(&format!("cam-{i}"), Priority::Urgent).await;
    }
    rig.settle().await;
    // Reports may predate the last batch: read until the latest ones account for all frames.
    let mut seen: HashMap<String, Vec<its_proto::WorkerStatus>> = HashMap::new();
    let done = |seen: &HashMap<String, Vec<its_proto::WorkerStatus>>| -> u64 {
        seen.values()
            .map(|v| v.last().map_or(0, |s| s.frames_done))
            .sum()
    };
    within(
        20,
        "two reports from each worker, the latest with every frame",
        async {
            while seen.len() < 2 || seen.values().any(|v| v.len() < 2) || done(&seen) < 4 {
                let m = sub.next().await.expect("subscription open");
                let s: its_proto::WorkerStatus = its_proto::decode(&m.payload).unwrap();
                assert_eq!(
                    m.subject.as_str(),
                    subjects::worker_status("node-t", &s.worker_id)
                );
                seen.entry(s.worker_id.clone()).or_default().push(s);
            }
        },
    )
    .await;
    assert_eq!(done(&seen), 4);
    for reports in seen.values() {
        let s = reports.last().unwrap();
        assert_eq!(s.slots_total, 1);
        assert!(
            s.utilisation.is_some_and(|u| (0.0..=1.0).contains(&u)),
            "{s:?}"
        );
        assert_eq!(s.queue_depth.len(), 4, "every class reported: {s:?}");
        assert!(reports[1].at_ns > reports[0].at_ns);
    }
}
