//! Cluster mode under the per-role NATS permissions of `config/nats/roles.conf`, enforced by a
//! real nats-server: two `cluster.enabled` nodes under the `node` identity heartbeat, elect a
//! leader, place the registry cameras (written by the `admin` identity) across both and serve
//! the frames that a registry ingest under the `ingest` identity publishes; a drain sent by the
//! admin is answered and obeyed, and a node shutting down resigns and removes its heartbeat so
//! the other takes every camera. The `ingest` identity is refused every write of cluster state
//! (a put into each `its_cluster_*` bucket, a drain on `its.control.cluster.*`, a purge, a
//! consumer on a cluster bucket, opening a cluster bucket), and a node cannot drain another
//! node nor write the camera registry; none of the refused writes reaches the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::Actor;
use futures::StreamExt;
use its_bus::{Bus, Kv};
use its_node::Node;
use its_proto::cluster::{ASSIGNMENTS_BUCKET, LEADER_BUCKET, NODES_BUCKET};
use its_proto::{
    Assignment, CAMERAS_BUCKET, CameraSpec, ClusterControl, ControlReply, DetectionMsg, NodeInfo,
    subjects,
};
use its_testkit::roles::{connect, server};
use its_testkit::within;

const N1: &str = "perm-n1";
const N2: &str = "perm-n2";
const CAMERAS: [&str; 4] = ["pcam-0", "pcam-1", "pcam-2", "pcam-3"];

fn violations(bus: &Bus) -> u64 {
    bus.health().snapshot().permission_violations
}

/// Waits for the server to refuse something `bus` just did; the refusal's text, lowercase.
async fn refusal(bus: &Bus, before: u64, what: &str) -> String {
    bus.flush().await.unwrap();
    let snap = within(
        10,
        &format!("the server to refuse {what}"),
        bus.health().wait_for(|h| h.permission_violations > before),
    )
    .await;
    snap.last_server_error
        .unwrap_or_default()
        .to_ascii_lowercase()
}

/// Publishes `payload` on `subject` as `bus` and asserts that the server refuses it by name.
async fn refused_publish(bus: &Bus, who: &str, subject: &str, payload: Vec<u8>) {
    let before = violations(bus);
    bus.publish_raw(subject.to_owned(), payload.into())
        .await
        .unwrap();
    let text = refusal(bus, before, &format!("{who} publishing on {subject}")).await;
    assert!(
        text.contains("publish") && text.contains(&subject.to_ascii_lowercase()),
        "{who} on {subject}: {text}"
    );
}

/// A YOLOv8n with a 64x64 input, written once per test process with `its model synth`
/// (deterministic random weights: the detections are meaningless, the work is real and cheap).
fn small_model(dir: &std::path::Path) -> std::path::PathBuf {
    let out_dir = dir.join("yolov8n-64");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_its"))
        .args([
            "model", "synth", "--arch", "yolov8n", "--seed", "1", "--imgsz", "64",
        ])
        .args(["--classes", "80", "-o"])
        .arg(&out_dir)
        .output()
        .expect("run its model synth");
    assert!(out.status.success(), "its model synth: {out:?}");
    out_dir
}

fn node_settings(id: &str, url: &str, model: &std::path::Path) -> its_config::Settings {
    its_testkit::settings(&[
        format!("nats.url={url}"),
        "nats.user=node".into(),
        "nats.password=node-test-password".into(),
        format!("node.id={id}"),
        "cluster.enabled=true".into(),
        // 4 cameras at 4 fps on one node is 80 % of this: placement spreads them over two
        "cluster.capacity_fps=20".into(),
        "cameras.synthetic_count=0".into(),
        "scheduler.deadline_normal_ms=60000".into(),
        "engine.intra_threads=1".into(),
        "engine.cpu_workers=1".into(),
        "status.print=false".into(),
        format!("engine.model_dir={}", model.display()),
    ])
}

/// One result as the subscriber saw it.
struct Seen {
    camera: String,
    node: String,
    at: Instant,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// Per camera, the nodes whose results for it arrived after `t`, with how many.
fn served_since(log: &Log, t: Instant) -> BTreeMap<String, BTreeMap<String, usize>> {
    let mut m: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in log.lock().unwrap().iter().filter(|r| r.at > t) {
        *m.entry(r.camera.clone())
            .or_default()
            .entry(r.node.clone())
            .or_default() += 1;
    }
    m
}

/// Polls `f` every 20 ms until it returns `Some`, failing the test after `secs`.
async fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    within(secs, what, async {
        loop {
            if let Some(v) = f() {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Waits for a heartbeat of `node` written after `after_ns` that satisfies `ok`.
async fn heartbeat(
    nodes: &Kv<NodeInfo>,
    node: &str,
    after_ns: u64,
    what: &str,
    ok: impl Fn(&NodeInfo) -> bool,
) -> NodeInfo {
    within(20, what, async {
        loop {
            if let Some(info) = nodes.get(node).await.unwrap().and_then(|e| e.value)
                && info.heartbeat_at_ns > after_ns
                && ok(&info)
            {
                return info;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[actix_rt::test]
async fn cluster_nodes_work_under_the_node_identity_and_ingest_cannot_touch_cluster_state() {
    let (nats, dir) = server();
    let model = small_model(dir.path());
    let admin = connect(&nats, "admin").await;
    let ingest = connect(&nats, "ingest").await;
    let subscriber = connect(&nats, "subscriber").await;

    // The admin identity creates the registry (as the admin API does at start-up).
    let registry: Kv<CameraSpec> = admin.kv(CAMERAS_BUCKET, 1).await.unwrap();

    // The subscriber identity reads every result, noting which node published it.
    let mut results = subscriber.subscribe(subjects::RESULTS_ALL).await.unwrap();
    subscriber.flush().await.unwrap();
    let log: Log = Arc::default();
    let collector = {
        let log = log.clone();
        tokio::spawn(async move {
            while let Some(msg) = results.next().await {
                let det: DetectionMsg = its_proto::decode(&msg.payload).expect("a DetectionMsg");
                log.lock().unwrap().push(Seen {
                    camera: det.camera_id,
                    node: det.node_id,
                    at: Instant::now(),
                });
            }
        })
    };

    // Two cluster-mode nodes under the node identity: they create the cluster buckets.
    let n1 = within(
        60,
        "node 1 start",
        Node::start(node_settings(N1, &nats.url(), &model)),
    )
    .await
    .expect("a cluster node starts under the node identity");
    let n2 = within(
        60,
        "node 2 start",
        Node::start(node_settings(N2, &nats.url(), &model)),
    )
    .await
    .expect("a second cluster node starts under the node identity");
    let nodes: Kv<NodeInfo> = admin.kv(NODES_BUCKET, 1).await.unwrap();
    let assignments: Kv<Assignment> = admin.kv(ASSIGNMENTS_BUCKET, 1).await.unwrap();
    for id in [N1, N2] {
        heartbeat(&nodes, id, 0, &format!("a heartbeat of {id}"), |_| true).await;
    }

    // The admin registers the cameras; a registry ingest under the ingest identity leases them
    // and publishes their frames.
    for cam in CAMERAS {
        let mut spec = CameraSpec::new(cam, "synthetic://road", 4.0);
        (spec.width, spec.height) = (Some(64), Some(48));
        registry.put(cam, &spec).await.unwrap();
    }
    let cameras = its_camera::CameraSupervisor::new(its_camera::CameraEnv::new(
        ingest.clone(),
        "ingest-cluster-perm",
    ))
    .start();
    let ingest_registry = its_camera::Registry::start(
        &ingest,
        cameras.clone(),
        its_camera::RegistryOptions {
            ingest_id: "ingest-cluster-perm".into(),
            lease_ttl: Duration::from_secs(3),
            max_cameras: 0,
        },
    )
    .await
    .expect("the registry ingest starts under the ingest identity");

    // (1) Both nodes serve: every camera has results, and the cameras are spread over both.
    let start = Instant::now();
    until(60, "results of every camera, from both nodes", || {
        let served = served_since(&log, start);
        let nodes: BTreeSet<&String> = served.values().flat_map(|m| m.keys()).collect();
        let every = CAMERAS.iter().all(|c| {
            served
                .get(*c)
                .is_some_and(|m| m.values().sum::<usize>() >= 3)
        });
        (every && nodes.len() == 2).then_some(())
    })
    .await;
    for (who, bus) in [
        ("ingest", &ingest),
        ("node 1", n1.bus()),
        ("node 2", n2.bus()),
        ("subscriber", &subscriber),
    ] {
        let h = bus.health().snapshot();
        assert_eq!(
            h.permission_violations, 0,
            "{who}: {:?}",
            h.last_server_error
        );
    }

    // The admin drains node 1: node 1 answers under the node identity, its cameras move to
    // node 2, and it reports drained.
    let reply: ControlReply = admin
        .request_msg(
            its_proto::cluster::control_cluster(N1),
            &ClusterControl::Drain,
            Duration::from_secs(5),
        )
        .await
        .expect("node 1 answers the drain");
    assert!(reply.ok, "{reply:?}");
    heartbeat(&nodes, N1, 0, "node 1 drained", |i| i.drained).await;
    let drained = Instant::now();
    until(30, "every camera served by node 2 after the drain", || {
        let served = served_since(&log, drained);
        CAMERAS
            .iter()
            .all(|c| {
                served
                    .get(*c)
                    .and_then(|m| m.get(N2))
                    .is_some_and(|n| *n >= 2)
            })
            .then_some(())
    })
    .await;
    let reply: ControlReply = admin
        .request_msg(
            its_proto::cluster::control_cluster(N1),
            &ClusterControl::Resume,
            Duration::from_secs(5),
        )
        .await
        .expect("node 1 answers the resume");
    assert!(reply.ok, "{reply:?}");
    heartbeat(&nodes, N1, 0, "node 1 resumed", |i| !i.draining).await;

    // (2) The ingest identity is refused every write of cluster state, by name.
    let forged = b"forged".to_vec();
    let drain = its_proto::encode(&ClusterControl::Drain).unwrap();
    for (subject, payload) in [
        (format!("$KV.{ASSIGNMENTS_BUCKET}.{}", CAMERAS[0]), &forged),
        (format!("$KV.{LEADER_BUCKET}.leader"), &forged),
        (format!("$KV.{NODES_BUCKET}.{N1}"), &forged),
        (its_proto::cluster::control_cluster(N1), &drain),
        (
            format!("$JS.API.STREAM.PURGE.KV_{ASSIGNMENTS_BUCKET}"),
            &Vec::new(),
        ),
        (
            format!("$JS.API.STREAM.DELETE.KV_{NODES_BUCKET}"),
            &Vec::new(),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.KV_{ASSIGNMENTS_BUCKET}"),
            &Vec::new(),
        ),
    ] {
        refused_publish(&ingest, "ingest", &subject, payload.clone()).await;
    }
    // Nor may it read the cluster buckets' subjects, or open a cluster bucket at all.
    let before = violations(&ingest);
    let _sub = ingest
        .subscribe(&format!("$KV.{ASSIGNMENTS_BUCKET}.>"))
        .await
        .unwrap();
    let text = refusal(&ingest, before, "ingest reading the assignments").await;
    assert!(
        text.contains("subscription") && text.contains("$kv.its_cluster_assignments"),
        "{text}"
    );
    let before = violations(&ingest);
    let opened = ingest.kv::<Assignment>(ASSIGNMENTS_BUCKET, 1).await;
    assert!(opened.is_err(), "ingest opened the assignments bucket");
    let text = refusal(&ingest, before, "ingest opening the assignments bucket").await;
    assert!(text.contains("kv_its_cluster_assignments"), "{text}");

    // A node cannot drain another node, nor write the camera registry.
    refused_publish(
        n1.bus(),
        "node 1",
        &its_proto::cluster::control_cluster(N2),
        drain.clone(),
    )
    .await;
    refused_publish(
        n1.bus(),
        "node 1",
        &format!("$KV.{CAMERAS_BUCKET}.{}", CAMERAS[0]),
        forged.clone(),
    )
    .await;

    // None of it reached the cluster: heartbeats written since show neither node draining,
    // and every assignment is still a real one of a live node.
    let refused_at = its_cluster::now_ns();
    for id in [N1, N2] {
        let info = heartbeat(
            &nodes,
            id,
            refused_at,
            &format!("a new heartbeat of {id}"),
            |_| true,
        )
        .await;
        assert!(!info.draining, "{id} draining after refused drains");
    }
    for cam in CAMERAS {
        let a = assignments
            .get(cam)
            .await
            .expect("the assignment decodes")
            .and_then(|e| e.value)
            .expect("assigned");
        assert!([N1, N2].contains(&a.node_id.as_str()), "{a:?}");
    }

    // Node 1 shuts down under its identity: it resigns and removes its heartbeat (both KV
    // writes allowed), and node 2 takes every camera.
    let n1_health = n1.bus().health().clone();
    let report = within(60, "node 1 shutdown", n1.shutdown())
        .await
        .expect("node 1 shuts down cleanly");
    assert_eq!(report.status.in_flight, 0);
    let h = n1_health.snapshot();
    assert_eq!(h.permission_violations, 2, "{:?}", h.last_server_error);
    assert!(
        nodes.get(N1).await.unwrap().is_none(),
        "node 1's heartbeat removed"
    );
    let gone = Instant::now();
    until(
        30,
        "every camera served by node 2 after node 1 left",
        || {
            let served = served_since(&log, gone);
            CAMERAS
                .iter()
                .all(|c| {
                    served
                        .get(*c)
                        .and_then(|m| m.get(N2))
                        .is_some_and(|n| *n >= 2)
                })
                .then_some(())
        },
    )
    .await;

    ingest_registry.stop().await;
    let h = n2.bus().health().snapshot();
    assert_eq!(h.permission_violations, 0, "{:?}", h.last_server_error);
    let report = within(60, "node 2 shutdown", n2.shutdown())
        .await
        .expect("node 2 shuts down cleanly");
    assert_eq!(report.status.in_flight, 0);
    let h = ingest.health().snapshot();
    // the seven refused publishes, the refused subscription and the refused bucket open(s)
    assert!(h.permission_violations >= 9, "{h:?}");
    collector.abort();
}
