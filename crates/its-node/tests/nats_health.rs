//! The node's own NATS connection, with a real nats-server (docs/RELIABILITY.md names each test
//! below as the proof of a promise):
//!
//! - the frame intake reads through a subscription bounded by `nats.intake_capacity`: a burst
//!   beyond it makes the node's intake a real NATS slow consumer, whose events are reported in
//!   `NodeStatus.nats_slow_consumer_events` and in the admin's `/metrics`, while the ledger
//!   still balances (a frame the client dropped was never received);
//! - `Node::shutdown` returns only once every result and its final status reached the server:
//!   the node's runtime is dropped the moment shutdown returns (as a process exiting would),
//!   and another client still gets all of them.

use std::time::Duration;

use futures::StreamExt;
use its_node::Node;
use its_proto::{NodeReport, NodeStatus, subjects};
use its_testkit::{TestNats, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn node_settings(url: &str, extra: &[&str]) -> its_config::Settings {
    let mut o = vec![
        format!("nats.url={url}"),
        "cameras.synthetic_count=0".into(),
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        "status.interval_ms=200".into(),
        "scheduler.batch_sizes=1,4".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    o.extend(extra.iter().map(|s| s.to_string()));
    its_testkit::settings(&o)
}

/// `GET path` on the admin server; the body.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A burst of `n` frames far beyond the intake's room, from one client as fast as it goes (the
/// node's client reads whole socket buffers at once, so it finds the subscription full); each
/// frame is a small garbage message (a counted malformed_envelope drop when read). Returns the
/// first node report with slow-consumer events once every frame read has settled.
async fn burst_until_slow_consumer(
    publisher: &its_bus::Bus,
    statuses: &mut its_bus::Subscriber,
    n: u64,
) -> NodeReport {
    for seq in 0..n {
        publisher
            .publish_raw(
                subjects::frames("burst-cam"),
                seq.to_le_bytes().repeat(64).into(),
            )
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    within(
        60,
        "a status with slow-consumer events, all settled",
        async {
            loop {
                let msg = statuses.next().await.expect("status subscription open");
                let r: NodeReport = its_proto::decode(&msg.payload).unwrap();
                if r.nats_slow_consumer_events > 0 && r.status.in_flight == 0 {
                    // Settled: nothing more arrives once the client emptied its buffer.
                    let again: NodeReport =
                        its_proto::decode(&statuses.next().await.unwrap().payload).unwrap();
                    if again.status.frames_received == r.status.frames_received {
                        return again;
                    }
                }
            }
        },
    )
    .await
}

#[actix_rt::test]
async fn the_intake_byte_bound_lowers_its_frame_capacity_by_the_servers_max_payload() {
    const BURST: u64 = 3000;
    // A server that takes messages of at most 64 KiB, and a node whose intake may hold 128 KiB.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nats.conf");
    std::fs::write(&conf, "max_payload: 65536\n").unwrap();
    let nats = TestNats::start_with_args(&["-c", conf.to_str().unwrap()]);
    let publisher = nats.bus().await;
    let watcher = nats.bus().await;
    assert_eq!(publisher.max_payload(), 65_536);
    let settings = node_settings(&nats.url(), &["nats.intake_max_bytes=131072"]);
    assert_eq!(
        settings.nats.intake_capacity, 4096,
        "the frame bound is not the limit"
    );
    let node_id = settings.node.id.clone();
    let mut statuses = watcher
        .subscribe(&subjects::node_status(&node_id))
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();
    assert_eq!(node.intake_frames(), 2, "128 KiB of 64 KiB messages");
    let report = burst_until_slow_consumer(&publisher, &mut statuses, BURST).await;
    let st = &report.status;
    let drops: u64 = st.drops.values().sum();
    assert_eq!(st.frames_received, st.results_published + drops, "{st:?}");
    assert!(st.frames_received < BURST, "{st:?}");
    within(60, "node shutdown", node.shutdown()).await.unwrap();
}

#[actix_rt::test]
async fn a_frame_intake_past_its_capacity_is_a_reported_slow_consumer() {
    const BURST: u64 = 3000;
    let nats = TestNats::start();
    let publisher = nats.bus().await;
    let watcher = nats.bus().await;
    let mut settings = node_settings(&nats.url(), &["nats.intake_capacity=2"]);
    settings.admin.enabled = true;
    settings.admin.bind = "127.0.0.1:0".into();
    settings.admin.workers = 1;
    let node_id = settings.node.id.clone();
    let mut statuses = watcher
        .subscribe(&subjects::node_status(&node_id))
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    let node = within(60, "node start", Node::start(settings))
        .await
        .unwrap();
    let admin = node.admin_addr().expect("admin enabled");
    let before = sample(
        &http_get(admin, "/metrics").await,
        "its_nats_slow_consumer_events_total",
    );
    assert_eq!(before, Some(0.0), "no slow consumer before the burst");

    let report = burst_until_slow_consumer(&publisher, &mut statuses, BURST).await;
    let st = &report.status;
    let drops: u64 = st.drops.values().sum();
    assert_eq!(st.frames_received, st.results_published + drops, "{st:?}");
    assert!(
        st.frames_received < BURST,
        "the bounded subscription dropped part of the burst before the intake read it: {st:?}"
    );
    assert_eq!(
        node.bus().health().snapshot().slow_consumers,
        report.nats_slow_consumer_events
    );
    eprintln!(
        "burst of {BURST}: {} read, {} slow-consumer events",
        st.frames_received, report.nats_slow_consumer_events
    );

    // /metrics: the admin's own connection (the node's) and the node's reported count.
    let text = within(30, "the admin saw the report", async {
        loop {
            let text = http_get(admin, "/metrics").await;
            let per_node =
                format!("its_node_nats_slow_consumer_events_total{{node=\"{node_id}\"}}");
            if sample(&text, &per_node).unwrap_or(0.0) > 0.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let own = sample(&text, "its_nats_slow_consumer_events_total").unwrap();
    assert!(own > 0.0, "{text}");
    assert!(text.contains("# TYPE its_nats_slow_consumer_events_total counter"));
    assert!(text.contains("# TYPE its_node_nats_slow_consumer_events_total counter"));
    within(60, "node shutdown", node.shutdown()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_every_result_reached_the_server() {
    let nats = TestNats::start();
    let watcher = nats.bus().await;
    let mut results = watcher.subscribe(subjects::RESULTS_ALL).await.unwrap();
    let mut statuses = watcher
        .subscribe(&subjects::node_status("*"))
        .await
        .unwrap();
    watcher.flush().await.unwrap();
    // Four cameras of the node's own, stopped mid-stream: shutdown finishes the queued frames
    // and publishes their results and the final status last, then returns.
    let settings = node_settings(
        &nats.url(),
        &[
            "cameras.synthetic_count=4",
            "cameras.fps=25",
            "cameras.width=160",
            "cameras.height=120",
        ],
    );
    let (tx, rx) = tokio::sync::oneshot::channel();
    let node_thread = std::thread::spawn(move || {
        // The node's own runtime, dropped as soon as shutdown returned: whatever was still in
        // the client's buffers then is lost, as it would be when a process exits.
        let system = actix::System::new();
        let report = system.block_on(async move {
            let node = Node::start(settings).await.unwrap();
            rx.await.unwrap();
            node.shutdown().await.unwrap()
        });
        drop(system);
        report
    });
    // Let results flow, then stop the node while frames are queued.
    let mut seen = 0u64;
    while seen < 8 {
        within(60, "first results", results.next()).await.unwrap();
        seen += 1;
    }
    tx.send(()).unwrap();
    let report = tokio::task::spawn_blocking(move || node_thread.join().unwrap())
        .await
        .unwrap();
    let st = &report.status;
    assert_eq!(st.in_flight, 0, "{st:?}");
    assert!(st.results_published > seen, "{st:?}");
    // Every result, and the final status after them, reached the server before shutdown
    // returned: the subscriber gets them although the node's runtime is gone.
    within(30, "every result of the node", async {
        while seen < st.results_published {
            results.next().await.expect("results subscription open");
            seen += 1;
        }
    })
    .await;
    within(30, "the node's final status", async {
        loop {
            let msg = statuses.next().await.expect("status subscription open");
            let last: NodeStatus = its_proto::decode(&msg.payload).unwrap();
            if last.at_ns == st.at_ns {
                assert_eq!(&last, st);
                return;
            }
        }
    })
    .await;
}
