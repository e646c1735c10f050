//! The per-camera rate limit of the frame intake (real nats-server, real CPU worker on the
//! generated demo model): a camera flooding the node is held to its token bucket and its excess
//! counted `rate_limited`, a camera sending within its limit beside it loses nothing, and the
//! ledger balances. Both intakes: `run_intake` (every camera) and `run_intake_assigned`
//! (cluster mode, the cameras assigned to this node).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use its_bus::Bus;
use its_proto::{
    DetectionMsg, DropReason, Encoding, EventKind, EventMsg, FrameMsg, Priority, SCHEMA_VERSION,
    subjects,
};
use its_scheduler::{
    Accounting, CameraRate, IntakeOptions, LatePolicy, SchedulerActor, SchedulerOptions,
    WorkerHandle, now_ns,
};
use its_testkit::{TestNats, within};
use its_worker::{Worker, WorkerOptions};
use tokio::sync::{oneshot, watch};

/// The limit under test: 20 fps, bursts of 10.
const FPS: u32 = 20;
const BURST: u32 = 10;
/// The flooding camera: 300 frames in 30 rounds 50 ms apart, each round of 10 as fast as the
/// client takes them (200 fps, ten times its limit, for 1.5 s).
const ROUNDS: u64 = 30;
const ROUND: u64 = 10;
const ROUND_EVERY: Duration = Duration::from_millis(50);
const FLOOD: u64 = ROUNDS * ROUND;
/// The camera within its limit: 16 frames at 4 fps, a fifth of the rate (its bucket runs dry
/// only if more than 10 of its frames are read at once, after a stall of over 2.5 s).
const STEADY: u64 = 16;
const STEADY_EVERY: Duration = Duration::from_millis(250);
const FLOODING: &str = "flood-cam";
const WITHIN: &str = "steady-cam";
/// Frames that show the intake is reading.
const PROBE: &str = "probe-cam";

/// Which intake runs.
#[derive(Debug, Clone, Copy)]
enum Intake {
    All,
    Assigned,
}

fn frame(camera: &str, seq: u64, data: &[u8]) -> FrameMsg {
    FrameMsg {
        v: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        captured_at_ns: now_ns(),
        priority: Priority::Normal,
        deadline_ns: None,
        width: 64,
        height: 48,
        encoding: Encoding::Jpeg,
        data: data.to_vec(),
    }
}

/// Collects every message of `subject` decoded as `T`.
async fn collect<T: serde::de::DeserializeOwned + 'static>(
    bus: &Bus,
    subject: &str,
) -> Arc<Mutex<Vec<T>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut sub = bus.subscribe(subject).await.unwrap();
    let o = out.clone();
    actix::spawn(async move {
        while let Some(m) = sub.next().await {
            o.lock()
                .unwrap()
                .push(its_proto::decode(&m.payload).expect("decodes"));
        }
    });
    out
}

/// The camera within its limit. `sent` counts each frame before it is published, so it is
/// never below the frames of this camera read.
struct Steady {
    bus: Bus,
    data: Vec<u8>,
    sent: Arc<AtomicU64>,
}

impl Steady {
    async fn send_one(&self) {
        let seq = self.sent.fetch_add(1, SeqCst);
        self.bus
            .publish_msg(subjects::frames(WITHIN), &frame(WITHIN, seq, &self.data))
            .await
            .unwrap();
        self.bus.flush().await.unwrap();
    }
}

async fn flood_beside_a_steady_camera(intake: Intake) {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let acct = Accounting::new("node-r", bus.clone());
    let (addr, info) = Worker::start(&WorkerOptions::cpu("w", its_testkit::demo_model_dir(), 1))
        .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
    let scheduler = SchedulerActor::new(
        SchedulerOptions {
            // Debug builds on a shared 2-core machine are slow: deadlines are not tested here.
            deadlines: [Duration::from_secs(60); 4],
            late_policy: LatePolicy::Deliver,
            ..SchedulerOptions::with_defaults()
        },
        acct.clone(),
        vec![WorkerHandle {
            info,
            addr: addr.recipient(),
        }],
    )
    .start();
    let results = collect::<DetectionMsg>(&bus, subjects::RESULTS_ALL).await;
    let events = collect::<EventMsg>(&bus, subjects::EVENTS_ALL).await;
    bus.flush().await.unwrap();

    let opts = IntakeOptions::new(1 << 20).with_camera_rate(Some(CameraRate {
        fps: FPS,
        burst: BURST,
        max_cameras: 100,
    }));
    let (stop_tx, stop_rx) = oneshot::channel();
    let (_set_tx, set_rx) = watch::channel(BTreeSet::from([
        FLOODING.into(),
        WITHIN.into(),
        PROBE.into(),
    ]));
    let intake_task = match intake {
        Intake::All => {
            let sub = bus.subscribe(subjects::FRAMES_ALL).await.unwrap();
            bus.flush().await.unwrap();
            actix::spawn(its_scheduler::run_intake(
                sub,
                scheduler.clone(),
                acct.clone(),
                opts,
                stop_rx,
            ))
        }
        Intake::Assigned => actix::spawn(its_scheduler::run_intake_assigned(
            bus.clone(),
            set_rx,
            scheduler.clone(),
            acct.clone(),
            opts,
            stop_rx,
        )),
    };

    let steady = Arc::new(Steady {
        bus: bus.clone(),
        data: its_testkit::small_jpeg(70),
        sent: Arc::default(),
    });
    // Probe frames of a third camera until one is counted: then the intake reads every camera
    // (the assigned intake subscribes to all of its set, then flushes, before it reads). One
    // last probe follows every earlier one on the same subscription: once its result is out,
    // every probe that will ever be read was counted (the others were sent too early).
    let probe_data = its_testkit::small_jpeg(10);
    let probes = within(30, "the intake subscribed", async {
        for seq in 0.. {
            bus.publish_msg(subjects::frames(PROBE), &frame(PROBE, seq, &probe_data))
                .await
                .unwrap();
            bus.flush().await.unwrap();
            for _ in 0..20 {
                if acct.status(false).frames_received > 0 {
                    return seq + 1;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        unreachable!()
    })
    .await;
    bus.publish_msg(subjects::frames(PROBE), &frame(PROBE, probes, &probe_data))
        .await
        .unwrap();
    bus.flush().await.unwrap();
    within(60, "the last probe's result", async {
        while !results
            .lock()
            .unwrap()
            .iter()
            .any(|r: &DetectionMsg| r.camera_id == PROBE && r.seq == probes)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let baseline = acct.status(false).frames_received;
    let sender = {
        let steady = steady.clone();
        actix::spawn(async move {
            let mut tick = tokio::time::interval(STEADY_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            for _ in 0..STEADY {
                tick.tick().await;
                steady.send_one().await;
            }
        })
    };
    within(30, "the steady camera under way", async {
        while acct.status(false).frames_received < baseline + 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;

    // The flood.
    let data = its_testkit::small_jpeg(140);
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(ROUND_EVERY);
    for round in 0..ROUNDS {
        tick.tick().await;
        for seq in round * ROUND..(round + 1) * ROUND {
            bus.publish_msg(subjects::frames(FLOODING), &frame(FLOODING, seq, &data))
                .await
                .unwrap();
        }
        bus.flush().await.unwrap();
    }
    // Every flood frame was read once the frames read, less the probes and every steady frame
    // sent so far (loaded after them, so at least the steady frames read), reach FLOOD.
    within(60, "every flood frame read", async {
        loop {
            let received = acct.status(false).frames_received;
            let steady_sent = steady.sent.load(SeqCst);
            if received >= baseline + FLOOD + steady_sent {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    // The intake read the flood between t0 and now: its bucket started full and gained FPS
    // frames of credit per second of that, at most.
    let elapsed = t0.elapsed();
    within(30, "the steady camera's frames sent", sender)
        .await
        .unwrap();

    let total = baseline + FLOOD + STEADY;
    within(60, "every frame read and settled", async {
        while acct.status(false).frames_received < total {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acct.wait_settled().await;
    })
    .await;
    let status = acct.status(false);
    let limited = status.drops.get("rate_limited").copied().unwrap_or(0);
    within(30, "every result and drop event delivered", async {
        while results.lock().unwrap().len() < status.results_published as usize
            || events.lock().unwrap().len() < limited as usize
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    stop_tx.send(()).unwrap();
    within(30, "intake stops", intake_task).await.unwrap();
    within(60, "scheduler drains", scheduler.send(its_scheduler::Drain))
        .await
        .unwrap();

    // The ledger balances, and the only drops are the flood's rate_limited ones.
    assert_eq!(status.frames_received, total, "{status:?}");
    assert_eq!(status.in_flight, 0, "{status:?}");
    assert_eq!(
        status.drops,
        BTreeMap::from([("rate_limited".to_owned(), limited)]),
        "{status:?}"
    );
    assert_eq!(status.frames_received, status.results_published + limited);

    let results = results.lock().unwrap();
    let seqs = |camera: &str| -> BTreeSet<u64> {
        results
            .iter()
            .filter(|r| r.camera_id == camera)
            .map(|r| r.seq)
            .collect()
    };
    // Every frame of the camera within its limit became a result.
    let steady_seqs = seqs(WITHIN);
    assert_eq!(
        steady_seqs,
        (0..STEADY).collect(),
        "the steady camera lost frames"
    );

    // The flood's drops: one error event each, with the frame's seq and a message naming the
    // limit; nobody else's frames are dropped.
    let admitted = seqs(FLOODING);
    let events = events.lock().unwrap();
    let mut limited_at = BTreeMap::new();
    for e in events.iter() {
        assert_eq!(e.kind, EventKind::Error);
        assert_eq!(e.reason, Some(DropReason::RateLimited), "{e:?}");
        assert_eq!(e.camera_id, FLOODING, "only the flood is limited: {e:?}");
        assert!(
            e.message.contains("20 fps")
                && e.message.contains("burst of 10")
                && e.message.contains("scheduler.max_camera_fps"),
            "{e:?}"
        );
        let seq = e.seq.expect("the frame's seq");
        assert!(
            !admitted.contains(&seq),
            "seq {seq} both admitted and dropped"
        );
        assert!(limited_at.insert(seq, e.at_ns).is_none(), "seq {seq} twice");
    }
    assert_eq!(limited_at.len() as u64, limited, "one event per drop");
    assert_eq!(admitted.len() as u64 + limited, FLOOD);

    // How many the bucket let through, from the elapsed time. At most: the full bucket it
    // started with and FPS frames of credit per second between t0 and the last frame read
    // (+1 to spare). At least: the full bucket, and every frame of credit gained
    // between the first and the last refused frame (the node's event times), but one (what is
    // left over at the end) and one for the event times not being the read times exactly. At
    // a refusal the bucket holds less than a frame; it can fill up (and waste credit) only
    // over a pause of (BURST - 1) / FPS s between refusals, so such pauses are left out.
    let at: Vec<u64> = {
        let mut at: Vec<u64> = limited_at.values().copied().collect();
        at.sort_unstable();
        at
    };
    let can_fill_ns = u64::from(BURST - 1) * 1_000_000_000 / u64::from(FPS);
    let credited_ns: u64 = at
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|gap| *gap < can_fill_ns)
        .sum();
    let frames_in = |ns: f64| (f64::from(FPS) * ns / 1e9).floor() as u64;
    let most = u64::from(BURST) + frames_in(elapsed.as_nanos() as f64) + 1;
    let least = (u64::from(BURST) + frames_in(credited_ns as f64)).saturating_sub(2);
    eprintln!(
        "{intake:?}: flood of {FLOOD} read in {elapsed:?} ({credited_ns} ns between refusals \
         credited): {} admitted (from {least} to {most}), {limited} rate_limited",
        admitted.len()
    );
    assert!(
        (0..u64::from(BURST)).all(|s| admitted.contains(&s)),
        "the full bucket admitted the first {BURST} frames: {admitted:?}"
    );
    assert!(
        (least..=most).contains(&(admitted.len() as u64)),
        "{} admitted in {elapsed:?}, not {least} to {most} as {BURST} + {FPS} fps allow",
        admitted.len()
    );
    assert!(
        most < FLOOD,
        "the flood took {elapsed:?}, too long for its limit to show"
    );
}

#[actix_rt::test]
async fn a_flooding_camera_is_held_to_its_rate_and_a_camera_within_it_loses_nothing() {
    flood_beside_a_steady_camera(Intake::All).await;
}

#[actix_rt::test]
async fn the_assigned_intake_holds_each_camera_to_its_rate_too() {
    flood_beside_a_steady_camera(Intake::Assigned).await;
}
