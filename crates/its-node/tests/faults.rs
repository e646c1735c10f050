//! Fault injection with real processes and a real nats-server (docs/RELIABILITY.md names each
//! test below as the proof of a promise):
//!
//! - the NATS server dies under load and comes back: the node does not crash, every client
//!   reconnects by itself, every frame the node received ends as a result or a counted drop,
//!   and the only frames that vanish are those published around the outage;
//! - one camera floods the node far beyond what it can serve: the excess is counted drops, the
//!   node's own subscription never becomes a NATS slow consumer, and memory does not accumulate
//!   from one flood to the next;
//! - a slow consumer of results (a separate process): NATS reports it as a slow consumer and
//!   drops its messages; the node and a healthy subscriber are not held back.
//!
//! `ITS_SOAK_SECS=600` turns `nats_restarted_every_minute_soak` into the 10-minute run (NATS
//! killed and restarted every minute); without it that test runs one short cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use its_bus::{Bus, Subscriber};
use its_node::Node;
use its_proto::{
    DetectionMsg, Encoding, EventMsg, FrameMsg, NodeStatus, Priority, SCHEMA_VERSION, subjects,
};
use its_testkit::{TestNats, within};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// The tests of this file run one at a time: each measures the memory of this process, which
/// holds its node, and each needs the two cores to itself to keep its timings.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Slack around an outage window for frames that were in sockets and client buffers when it
/// began or ended.
const SLACK_NS: u64 = 2_000_000_000;

fn frame(camera: &str, seq: u64, data: Vec<u8>, w: u32, h: u32) -> FrameMsg {
    FrameMsg {
        v: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        captured_at_ns: its_scheduler::now_ns(),
        priority: Priority::Normal,
        deadline_ns: None,
        width: w,
        height: h,
        encoding: Encoding::Jpeg,
        data,
    }
}

fn scene(width: u32, height: u32, quality: u8) -> its_camera::SyntheticScene {
    its_camera::SyntheticScene::render(&its_camera::SceneSpec {
        width,
        height,
        seed: 5,
        frames: 4,
        jpeg_quality: quality,
    })
    .unwrap()
}

/// Settings of a node on `url` with no cameras of its own and `extra` overrides.
fn node_settings(url: &str, extra: &[&str]) -> its_config::Settings {
    let mut o = vec![
        format!("nats.url={url}"),
        "cameras.synthetic_count=0".into(),
        // Debug builds on a 2-core machine are slow: deadlines are not what is tested here.
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        "status.interval_ms=250".into(),
        // Small batches keep the engine's memory and each batch's time small on 2 cores.
        "scheduler.batch_sizes=1,4".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    its_testkit::settings(&o)
}

/// Resident memory of this process (node, clients and test together), KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// What a watcher saw of one camera: results (with duplicates counted), drop events by seq.
#[derive(Default, Debug)]
struct Seen {
    camera: &'static str,
    results: BTreeSet<u64>,
    duplicates: u64,
    dropped: BTreeSet<u64>,
}

impl Seen {
    fn new(camera: &'static str) -> Self {
        Seen {
            camera,
            ..Default::default()
        }
    }

    fn result(&mut self, payload: &[u8]) -> DetectionMsg {
        let r: DetectionMsg = its_proto::decode(payload).unwrap();
        if r.camera_id == self.camera && !self.results.insert(r.seq) {
            self.duplicates += 1;
        }
        r
    }
}

/// Brings the node to its steady state before memory is measured: a burst of frames from a
/// camera of its own, so the engine has run every batch size it will use.
async fn warm_up(publisher: &Bus, results: &mut Subscriber) {
    let scene = scene(160, 120, 75);
    for seq in 0..12 {
        let f = frame("warm-up", seq, scene.jpegs[0].clone(), 160, 120);
        publisher
            .publish_msg(subjects::frames("warm-up"), &f)
            .await
            .unwrap();
    }
    let mut n = 0;
    while n < 12 {
        let msg = within(60, "warm-up results", results.next()).await.unwrap();
        let r: DetectionMsg = its_proto::decode(&msg.payload).unwrap();
        if r.camera_id == "warm-up" {
            n += 1;
        }
    }
}

/// Waits for the NodeStatus the node published last (equal to its shutdown report), then takes
/// every result and drop event already received. NATS keeps the order of one publisher's
/// messages to one subscriber, and the final status is the node's last message before it
/// drains, so nothing the watcher can still get comes after it.
async fn collect_after_shutdown(
    seen: &mut Seen,
    final_status: &NodeStatus,
    statuses: &mut Subscriber,
    results: &mut Subscriber,
    errors: &mut Subscriber,
) {
    within(30, "the node's final status", async {
        loop {
            let msg = statuses.next().await.expect("status subscription open");
            let st: NodeStatus = its_proto::decode(&msg.payload).unwrap();
            if st.at_ns == final_status.at_ns {
                break;
            }
        }
    })
    .await;
    while let Some(Some(msg)) = results.next().now_or_never() {
        seen.result(&msg.payload);
    }
    while let Some(Some(msg)) = errors.next().now_or_never() {
        let e: EventMsg = its_proto::decode(&msg.payload).unwrap();
        if let Some(seq) = e.seq.filter(|_| e.camera_id == seen.camera) {
            seen.dropped.insert(seq);
        }
    }
}

fn assert_ledger(s: &NodeStatus) {
    let drops: u64 = s.drops.values().sum();
    assert_eq!(s.in_flight, 0, "{s:?}");
    assert_eq!(
        s.frames_received,
        s.results_published + drops,
        "the node's ledger balances: {s:?}"
    );
}

/// A camera publishing from its own client at `fps`, recording what it sent and when. A
/// publish the client refuses (its buffer full while disconnected) is not counted as sent.
struct Load {
    sent: Arc<Mutex<BTreeMap<u64, u64>>>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

fn start_load(publisher: Bus, camera: &'static str, fps: u32) -> Load {
    let scene = scene(160, 120, 75);
    let sent: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let (stop, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = {
        let sent = sent.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / fps);
            let mut seq = 0u64;
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = tick.tick() => {}
                }
                let data = scene.jpegs[seq as usize % scene.jpegs.len()].clone();
                let f = frame(camera, seq, data, scene.width, scene.height);
                let at = f.captured_at_ns;
                if publisher
                    .publish_msg(subjects::frames(camera), &f)
                    .await
                    .is_ok()
                {
                    sent.lock().unwrap().insert(seq, at);
                }
                seq += 1;
            }
        })
    };
    Load { sent, stop, task }
}

/// Runs a node under a 10 fps load, kills and restarts nats-server `cycles` times with
/// `interval` between restarts, then checks that every frame is a result, a counted drop, or
/// was captured within an outage window, and that memory stayed flat.
async fn restart_under_load(cycles: u32, interval: Duration) {
    let _one = ONE_AT_A_TIME.lock().await;
    const CAMERA: &str = "fault-cam";
    let mut nats = TestNats::start();
    let publisher = nats.bus().await;
    let watcher = nats.bus().await;
    let mut results = watcher.subscribe(subjects::RESULTS_ALL).await.unwrap();
    let mut errors = watcher.subscribe("its.events.error.*").await.unwrap();
    let settings = node_settings(&nats.url(), &[]);
    let mut statuses = watcher
        .subscribe(&subjects::node_status(&settings.node.id))
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();
    warm_up(&publisher, &mut results).await;
    let rss_start = rss_kib();
    let load = start_load(publisher.clone(), CAMERA, 5);

    let mut seen = Seen::new(CAMERA);
    let mut next_result = async |seen: &mut Seen| {
        let msg = within(60, "a result", results.next()).await.unwrap();
        seen.result(&msg.payload)
    };
    while seen.results.len() < 5 {
        next_result(&mut seen).await;
    }
    let mut rss_max = rss_start;
    let mut outages: Vec<(u64, u64)> = Vec::new();
    let mut rss_cycles: Vec<u64> = Vec::new();
    for cycle in 1..=cycles as u64 {
        let cycle_start = Instant::now();
        // The outage: kill the server, wait until the node has noticed, start it again.
        let outage_start = its_scheduler::now_ns();
        nats.server.kill();
        within(
            20,
            "the node to notice the outage",
            node.bus().health().wait_for(|h| h.disconnects >= cycle),
        )
        .await;
        nats.server.restart().expect("nats-server restarts");
        for (who, bus) in [
            ("node", node.bus()),
            ("publisher", &publisher),
            ("watcher", &watcher),
        ] {
            within(
                30,
                &format!("{who} to reconnect"),
                bus.health().wait_for(|h| h.connects > cycle),
            )
            .await;
        }
        let outage_end = its_scheduler::now_ns();
        outages.push((outage_start, outage_end));
        // Frames flow again: results for frames captured after the reconnection.
        let mut after = 0;
        while after < 10 {
            if next_result(&mut seen).await.captured_at_ns > outage_end {
                after += 1;
            }
        }
        // Keep the load running until the next restart is due (the soak), reading results.
        while cycle < cycles as u64 && cycle_start.elapsed() < interval {
            next_result(&mut seen).await;
            rss_max = rss_max.max(rss_kib());
        }
        rss_max = rss_max.max(rss_kib());
        rss_cycles.push(rss_kib());
        eprintln!(
            "cycle {cycle}/{cycles}: outage {:.0} ms, rss {} MiB, results so far {}",
            (outage_end - outage_start) as f64 / 1e6,
            rss_kib() / 1024,
            seen.results.len()
        );
    }
    let rss_end = rss_kib();
    load.stop.send(()).unwrap();
    load.task.await.unwrap();
    publisher.flush().await.unwrap();

    let report = within(120, "node shutdown", node.shutdown())
        .await
        .expect("the node survives the outages and shuts down cleanly");
    assert_ledger(&report.status);
    collect_after_shutdown(
        &mut seen,
        &report.status,
        &mut statuses,
        &mut results,
        &mut errors,
    )
    .await;

    let sent = load.sent.lock().unwrap().clone();
    let lost: Vec<(u64, u64)> = sent
        .iter()
        .filter(|(seq, _)| !seen.results.contains(seq) && !seen.dropped.contains(seq))
        .map(|(s, at)| (*s, *at))
        .collect();
    eprintln!(
        "sent {}, results {}, drop events {}, lost in outages {}, node {:?}, rss start {} end {} max {} MiB",
        sent.len(),
        seen.results.len(),
        seen.dropped.len(),
        lost.len(),
        report.status,
        rss_start / 1024,
        rss_end / 1024,
        rss_max / 1024
    );
    assert!(sent.len() >= 15, "the load ran: {} frames", sent.len());
    for (seq, at) in &lost {
        assert!(
            outages
                .iter()
                .any(|(a, b)| *at + SLACK_NS >= *a && *at <= *b + SLACK_NS),
            "frame {seq} captured at {at} vanished outside every outage {outages:?}"
        );
    }
    assert_eq!(seen.duplicates, 0, "no result is published twice");
    assert!(
        seen.results.len() as u64 <= report.status.results_published,
        "no result is invented"
    );
    // Bounded memory: the whole run stays within a fixed allowance over the warmed-up start
    // (engine arenas, allocator slack, client buffers refilled after each reconnect) ...
    assert!(
        rss_max <= rss_start + 256 * 1024,
        "memory grew from {} to {} MiB",
        rss_start / 1024,
        rss_max / 1024
    );
    // ... and flat: over the second half of the cycles it grows by less than 32 MiB, so it
    // does not grow with the number of restarts.
    if rss_cycles.len() >= 2 {
        let mid = rss_cycles[(rss_cycles.len() - 1) / 2];
        let late = *rss_cycles[rss_cycles.len() / 2..].iter().max().unwrap();
        assert!(
            late <= mid + 32 * 1024,
            "memory still grew in the second half: {:?} MiB",
            rss_cycles.iter().map(|k| k / 1024).collect::<Vec<_>>()
        );
    }
}

#[actix_rt::test]
async fn nats_restart_under_load_loses_only_frames_inside_the_outage() {
    restart_under_load(1, Duration::ZERO).await;
}

/// The 10-minute soak of issue 12 when `ITS_SOAK_SECS` is set (e.g. 600: ten restarts, one a
/// minute); otherwise two quick restarts, so the loop itself stays tested.
#[actix_rt::test]
async fn nats_restarted_every_minute_soak() {
    match std::env::var("ITS_SOAK_SECS") {
        Ok(s) => {
            let secs: u64 = s.parse().expect("ITS_SOAK_SECS is a number of seconds");
            let cycles = (secs / 60).max(1) as u32;
            restart_under_load(cycles, Duration::from_secs(60)).await;
        }
        Err(_) => restart_under_load(2, Duration::from_secs(2)).await,
    }
}

#[actix_rt::test]
async fn a_flooding_camera_is_dropped_by_policy_and_memory_does_not_accumulate() {
    let _one = ONE_AT_A_TIME.lock().await;
    const CAMERA: &str = "flood-cam";
    const FLOOD: u64 = 800;
    const FLOODS: u64 = 4;
    let nats = TestNats::start();
    let publisher = nats.bus().await;
    let watcher = nats.bus().await;
    // No per-camera rate limit: what is tested is the queues' own shedding, which every camera
    // of a class shares (the limit is tested in its-scheduler's tests/camera_rate.rs).
    let settings = node_settings(
        &nats.url(),
        &["scheduler.queue_capacity=16", "scheduler.max_camera_fps=0"],
    );
    let mut statuses = watcher
        .subscribe(&subjects::node_status(&settings.node.id))
        .await
        .unwrap();
    let mut results = watcher.subscribe(subjects::RESULTS_ALL).await.unwrap();
    watcher.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();
    let scene = scene(1280, 720, 90);
    let frame_bytes = scene.jpegs.iter().map(Vec::len).sum::<usize>() / scene.jpegs.len();
    warm_up(&publisher, &mut results).await;
    let rss_start = rss_kib();

    // Three floods, each as fast as the client takes the frames (a round trip every 25 frames
    // keeps the publisher's own buffer small), each until the node has settled every frame.
    let mut seq = 0u64;
    let mut total = 12;
    let mut rss_after = Vec::new();
    let mut rss_max = rss_start;
    let mut last = None;
    for _ in 0..FLOODS {
        let flood_start = Instant::now();
        for _ in 0..FLOOD {
            let data = scene.jpegs[seq as usize % scene.jpegs.len()].clone();
            let f = frame(CAMERA, seq, data, 1280, 720);
            publisher
                .publish_msg(subjects::frames(CAMERA), &f)
                .await
                .unwrap();
            seq += 1;
            if seq.is_multiple_of(25) {
                publisher.flush().await.unwrap();
                rss_max = rss_max.max(rss_kib());
            }
        }
        publisher.flush().await.unwrap();
        let fps = FLOOD as f64 / flood_start.elapsed().as_secs_f64();
        total += FLOOD;
        // The node reads every frame that reached the server and settles each one.
        let settled = within(60, "every flooded frame settled", async {
            loop {
                let msg = statuses.next().await.expect("status subscription open");
                let st: NodeStatus = its_proto::decode(&msg.payload).unwrap();
                rss_max = rss_max.max(rss_kib());
                if st.frames_received == total && st.in_flight == 0 {
                    return st;
                }
            }
        })
        .await;
        assert_ledger(&settled);
        rss_after.push(rss_kib());
        eprintln!(
            "flood of {FLOOD} frames of {} KiB at {fps:.0} fps: settled {:?}, rss {} MiB (peak {} MiB, start {} MiB)",
            frame_bytes / 1024,
            settled.drops,
            rss_kib() / 1024,
            rss_max / 1024,
            rss_start / 1024
        );
        last = Some(settled);
    }
    let settled = last.unwrap();
    let health = node.bus().health().snapshot();
    let report = within(60, "node shutdown", node.shutdown()).await.unwrap();
    assert_eq!(report.status.frames_received, total);
    assert!(
        settled.drops.get("queue_full").copied().unwrap_or(0) > 0,
        "the flood outran the node and the excess was dropped with a reason: {settled:?}"
    );
    assert_eq!(
        health.slow_consumers, 0,
        "the node's frame subscription kept up (it drops by policy, not by NATS): {health:?}"
    );
    assert_eq!(
        health.disconnects, 0,
        "the server never cut the node off as a slow consumer: {health:?}"
    );
    // No accumulation: after two floods, further floods of the same size leave memory where
    // the second left it (what one flood needs transiently is reused, not added). Two warm
    // up: the allocator's and ONNX Runtime's pools can still grow in the second flood (a CI
    // run saw 140, 191, 191 MiB after floods 1, 2, 3). A leak of a frame's bytes per frame
    // would add 40 MiB a flood.
    let (warm, end) = (rss_after[1], *rss_after.last().unwrap());
    assert!(
        end <= warm + 16 * 1024,
        "memory kept growing flood after flood: {rss_after:?} KiB"
    );
}

fn python() -> std::path::PathBuf {
    let venv = its_testkit::workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "{} missing: run scripts/setup.sh",
        venv.display()
    );
    venv
}

#[actix_rt::test]
async fn a_slow_results_consumer_is_cut_off_by_nats_and_holds_nothing_back() {
    let _one = ONE_AT_A_TIME.lock().await;
    const CAMERA: &str = "slow-cam";
    let nats = TestNats::start();
    let publisher = nats.bus().await;
    let watcher = nats.bus().await;
    let settings = node_settings(&nats.url(), &[]);
    let mut statuses = watcher
        .subscribe(&subjects::node_status(&settings.node.id))
        .await
        .unwrap();
    let mut results = watcher.subscribe(subjects::RESULTS_ALL).await.unwrap();
    let mut errors = watcher.subscribe("its.events.error.*").await.unwrap();
    watcher.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();

    // The slow consumer: its own process, 4 messages of pending room, one message per 0.5 s.
    let mut slow = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/slow_subscriber.py"
        ))
        .args(["--url", &nats.url(), "--pending", "4", "--delay", "0.5"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(slow.stdout.take().unwrap()).lines();
    let ready = within(30, "the slow subscriber to subscribe", out.next_line())
        .await
        .unwrap();
    assert_eq!(ready.as_deref(), Some("ready"));

    warm_up(&publisher, &mut results).await;
    let rss_start = rss_kib();
    let load = start_load(publisher.clone(), CAMERA, 5);
    let mut seen = Seen::new(CAMERA);
    let run = Instant::now();
    while run.elapsed() < Duration::from_secs(8) {
        let msg = within(60, "a result", results.next()).await.unwrap();
        seen.result(&msg.payload);
    }
    let rss_end = rss_kib();
    load.stop.send(()).unwrap();
    load.task.await.unwrap();
    publisher.flush().await.unwrap();

    // The slow consumer reports what NATS dropped for it.
    slow.stdin.take().unwrap().shutdown().await.unwrap();
    let line = within(30, "the slow subscriber's report", out.next_line())
        .await
        .unwrap()
        .expect("a report line");
    within(10, "the slow subscriber to exit", slow.wait())
        .await
        .unwrap();
    let slow_report: serde_json::Value = serde_json::from_str(&line).unwrap();

    let report = within(120, "node shutdown", node.shutdown()).await.unwrap();
    assert_ledger(&report.status);
    collect_after_shutdown(
        &mut seen,
        &report.status,
        &mut statuses,
        &mut results,
        &mut errors,
    )
    .await;
    let sent = load.sent.lock().unwrap().len() as u64;
    eprintln!(
        "slow consumer {slow_report}; healthy watcher {} results of {sent} frames; node {:?}; rss {} -> {} MiB",
        seen.results.len(),
        report.status,
        rss_start / 1024,
        rss_end / 1024
    );
    let slow_errors = slow_report["slow_consumer_errors"].as_u64().unwrap();
    let handled = slow_report["handled"].as_u64().unwrap();
    assert!(
        slow_errors > 0,
        "NATS reported the slow consumer: {slow_report}"
    );
    assert!(handled < report.status.results_published);
    // Nothing was held back: the healthy watcher has every frame as a result or a drop event,
    // and the node's memory did not grow with the slow consumer's backlog.
    assert_eq!(
        report.status.frames_received,
        sent + 12,
        "the load and the warm-up"
    );
    assert_eq!(
        seen.results.len() as u64 + seen.dropped.len() as u64,
        sent,
        "{seen:?}"
    );
    assert_eq!(seen.duplicates, 0);
    // A coarse tripwire only: the first batches of a new size make ONNX Runtime allocate
    // arenas for that shape (up to ~40 MiB seen in CI after the batch-4 warm-up), so a tight
    // bound here measured ORT, not the slow consumer. That nothing is held back is shown by
    // the assertions above (every frame reached the healthy watcher, nothing in flight); the
    // memory promise under load is the soak's (`nats_restarted_every_minute_soak`).
    assert!(
        rss_end <= rss_start + 128 * 1024,
        "memory grew from {} to {} MiB",
        rss_start / 1024,
        rss_end / 1024
    );
}
