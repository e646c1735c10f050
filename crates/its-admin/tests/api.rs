//! The admin API over real HTTP against a real nats-server: every endpoint, every role allowed
//! and refused, bad bodies and ids, the registry in KV, scheduler control requests answered by a
//! responder on the bus, and /metrics parsed strictly.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use awc::http::Method;
use common::{ADMIN, Api, OPERATOR, VIEWER, parse_prometheus, sum};
use futures::StreamExt;
use its_admin::AdminServer;
use its_config::{AdminRole, AdminSettings, AdminToken, Secret};
use its_proto::{
    CameraSpec, CameraState, CameraStatus, ControlReply, DetectionMsg, DropReason, EventKind,
    EventMsg, ModelRef, NodeStatus, Priority, SCHEMA_VERSION, SchedulerControl, Timings,
    WorkerStatus, registry::CAMERAS_BUCKET, subjects,
};
use its_testkit::{TestNats, within};
use serde_json::json;

fn token(role: AdminRole, t: &str) -> AdminToken {
    AdminToken {
        name: format!("{}-test", role.as_str()),
        role,
        token: Secret(t.into()),
    }
}

fn settings() -> AdminSettings {
    AdminSettings {
        enabled: true,
        bind: "127.0.0.1:0".into(),
        workers: 1,
        tokens: vec![
            token(AdminRole::Viewer, VIEWER),
            token(AdminRole::Operator, OPERATOR),
            token(AdminRole::Admin, ADMIN),
        ],
        max_body_bytes: 4096,
        control_timeout_ms: 2000,
        ..AdminSettings::default()
    }
}

fn node_status(node: &str, received: u64) -> NodeStatus {
    NodeStatus {
        v: SCHEMA_VERSION,
        node_id: node.into(),
        at_ns: 1,
        frames_received: received,
        results_published: received,
        in_flight: 0,
        drops: BTreeMap::from([("queue_full".to_owned(), 2)]),
        queue_depth: BTreeMap::from([("normal".to_owned(), 3)]),
        latency_p50_ns: 5_000_000,
        latency_p99_ns: 9_000_000,
        breaker: "closed".into(),
        batch_sizes: BTreeMap::from([("1".to_owned(), 4), ("8".to_owned(), 2)]),
    }
}

fn worker_status(node: &str, worker: &str) -> WorkerStatus {
    WorkerStatus {
        v: SCHEMA_VERSION,
        node_id: node.into(),
        worker_id: worker.into(),
        device: "cpu".into(),
        at_ns: 1,
        slots_total: 2,
        slots_busy: 1,
        frames_done: 10,
        batches_done: 5,
        batch_p50_ns: 3_000_000,
        batch_p99_ns: 7_000_000,
        utilisation: None,
        memory_used_bytes: None,
        queue_depth: BTreeMap::from([("normal".to_owned(), 1)]),
        capacity_fps: Some(100.0),
        draining: false,
        restarts: 0,
        gpu_temperature_c: Some(41.0),
        gpu_power_w: Some(120.5),
        gpu_sm_clock_mhz: Some(1980),
        memory_total_bytes: Some(150_000_000_000),
        pool_hits: Some(99),
        pool_misses: Some(1),
        pool_bytes_held: Some(1 << 30),
        pool_high_water_bytes: Some(1 << 30),
    }
}

/// Answers scheduler control requests of `node` with `ok`, forwarding each request.
async fn responder(
    bus: its_bus::Bus,
    node: &str,
    ok: bool,
) -> tokio::sync::mpsc::UnboundedReceiver<SchedulerControl> {
    let mut sub = bus
        .subscribe(&subjects::control_scheduler(node))
        .await
        .unwrap();
    bus.flush().await.unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let cmd: SchedulerControl = its_proto::decode(&msg.payload).unwrap();
            let _ = tx.send(cmd);
            let reply = ControlReply {
                ok,
                message: if ok {
                    "applied".into()
                } else {
                    "refused".into()
                },
            };
            if let Some(to) = msg.reply {
                bus.publish_msg(to.to_string(), &reply).await.unwrap();
            }
        }
    });
    rx
}

#[actix_rt::test]
async fn every_endpoint_and_role() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let server = within(
        20,
        "admin start",
        AdminServer::start(&settings(), bus.clone()),
    )
    .await
    .expect("admin server starts");
    let api = Api::new(server.local_addr());

    // Probes are open by default; readiness waits for a node's status.
    assert_eq!(api.get("/healthz", None).await.status, 200);
    let r = api.get("/readyz", None).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.json()["status_seen"], false);
    assert_eq!(r.json()["nats_connected"], true);

    // 401 without or with a wrong token, 403 with a token whose role is too low.
    let r = api.get("/api/v1/cameras", None).await;
    r.assert_problem(401, None);
    assert_eq!(
        r.www_authenticate.as_deref(),
        Some("Bearer realm=\"its-admin\"")
    );
    let r = api
        .get("/api/v1/cameras", Some("wrong-token-0123456789"))
        .await;
    r.assert_problem(401, None);
    assert!(r.www_authenticate.unwrap().contains("invalid_token"));
    let r = api
        .raw(Method::GET, "/api/v1/cameras", None, None, None)
        .await;
    assert_eq!(r.status, 401);
    for t in [VIEWER, OPERATOR, ADMIN] {
        let r = api.get("/api/v1/cameras", Some(t)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json(), json!([]));
    }

    // Create: viewer refused, operator allowed; the KV entry keeps the credentials, the API
    // never shows them.
    let cam = json!({"id": "cam-1", "url": "rtsp://user:s3cret@10.0.0.5:554/s", "fps": 12.5,
                     "priority": "urgent"});
    api.send(Method::POST, "/api/v1/cameras", Some(VIEWER), cam.clone())
        .await
        .assert_problem(403, None);
    let r = api
        .send(Method::POST, "/api/v1/cameras", Some(OPERATOR), cam.clone())
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["url"], "rtsp://***@10.0.0.5:554/s");
    assert_eq!(r.json()["priority"], "urgent");
    let kv = bus
        .kv::<CameraSpec>(CAMERAS_BUCKET, 1)
        .await
        .expect("registry bucket");
    let stored = kv
        .get("cam-1")
        .await
        .unwrap()
        .expect("in KV")
        .value
        .unwrap();
    assert_eq!(stored.url, "rtsp://user:s3cret@10.0.0.5:554/s");
    assert_eq!(stored.priority, Priority::Urgent);
    assert_eq!(stored.fps, 12.5);
    // Unique ids.
    api.send(Method::POST, "/api/v1/cameras", Some(ADMIN), cam.clone())
        .await
        .assert_problem(409, None);

    // Bad bodies: 4xx problems naming the field, never a 500.
    let bad: [(serde_json::Value, u16, Option<&str>); 9] = [
        (
            json!({"id": "c2", "url": "gopher://h/s", "fps": 5}),
            422,
            Some("url"),
        ),
        (
            json!({"id": "c2", "url": "rtsp://h/s", "fps": 0}),
            422,
            Some("fps"),
        ),
        (
            json!({"id": "c2", "url": "rtsp://h/s", "fps": 500}),
            422,
            Some("fps"),
        ),
        (
            json!({"id": "c 2", "url": "rtsp://h/s", "fps": 5}),
            422,
            Some("id"),
        ),
        (json!({"url": "rtsp://h/s", "fps": 5}), 422, Some("id")),
        (json!({"id": "c2", "fps": 5}), 422, Some("url")),
        (
            json!({"id": "c2", "url": "rtsp://h/s", "fps": "fast"}),
            422,
            Some("fps"),
        ),
        (
            json!({"id": "c2", "url": "rtsp://h/s", "fps": 5, "colour": 1}),
            422,
            Some("colour"),
        ),
        (
            json!({"id": "c2", "url": "rtsp://h/s", "fps": 5, "width": 9000}),
            422,
            Some("width"),
        ),
    ];
    for (body, status, field) in bad {
        api.send(Method::POST, "/api/v1/cameras", Some(OPERATOR), body)
            .await
            .assert_problem(status, field);
    }
    api.raw(
        Method::POST,
        "/api/v1/cameras",
        Some(OPERATOR),
        Some("application/json"),
        Some("{\"id\": ".into()),
    )
    .await
    .assert_problem(400, None);
    api.raw(
        Method::POST,
        "/api/v1/cameras",
        Some(OPERATOR),
        Some("text/plain"),
        Some(cam.to_string()),
    )
    .await
    .assert_problem(415, None);
    api.raw(
        Method::POST,
        "/api/v1/cameras",
        Some(OPERATOR),
        Some("application/json"),
        Some(format!("{{\"pad\": \"{}\"}}", "x".repeat(8000))),
    )
    .await
    .assert_problem(413, None);
    assert_eq!(kv.keys().await.unwrap(), vec!["cam-1".to_owned()]);

    // Read, bad ids, unknown ids.
    let r = api.get("/api/v1/cameras/cam-1", Some(VIEWER)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["url"], "rtsp://***@10.0.0.5:554/s");
    api.get("/api/v1/cameras/bad.id", Some(VIEWER))
        .await
        .assert_problem(400, Some("id"));
    api.get(&format!("/api/v1/cameras/{}", "x".repeat(65)), Some(VIEWER))
        .await
        .assert_problem(400, Some("id"));
    api.get("/api/v1/cameras/nope", Some(VIEWER))
        .await
        .assert_problem(404, None);
    let list = api.get("/api/v1/cameras", Some(VIEWER)).await.json();
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Replace: sending back the redacted URL keeps the stored credentials.
    let mut body = api.get("/api/v1/cameras/cam-1", Some(VIEWER)).await.json();
    body.as_object_mut().unwrap().remove("revision");
    body["fps"] = json!(20);
    api.send(
        Method::PUT,
        "/api/v1/cameras/cam-1",
        Some(VIEWER),
        body.clone(),
    )
    .await
    .assert_problem(403, None);
    let r = api
        .send(
            Method::PUT,
            "/api/v1/cameras/cam-1",
            Some(OPERATOR),
            body.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let stored = kv.get("cam-1").await.unwrap().unwrap().value.unwrap();
    assert_eq!(stored.url, "rtsp://user:s3cret@10.0.0.5:554/s");
    assert_eq!(stored.fps, 20.0);
    let mut other = body.clone();
    other["id"] = json!("cam-2");
    api.send(Method::PUT, "/api/v1/cameras/cam-1", Some(OPERATOR), other)
        .await
        .assert_problem(422, Some("id"));
    body.as_object_mut().unwrap().remove("id");
    api.send(Method::PUT, "/api/v1/cameras/nope", Some(OPERATOR), body)
        .await
        .assert_problem(404, None);

    // Camera status: registered without a report, then with one (errors redacted).
    let r = api.get("/api/v1/cameras/cam-1/status", Some(VIEWER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["seen"], false);
    assert_eq!(r.json()["registered"], true);
    api.get("/api/v1/cameras/ghost/status", Some(VIEWER))
        .await
        .assert_problem(404, None);
    let status = CameraStatus {
        v: SCHEMA_VERSION,
        camera_id: "cam-1".into(),
        ingest_id: "ingest-a".into(),
        at_ns: 1,
        state: CameraState::Backoff,
        frames_captured: 7,
        frames_published: 6,
        drops: BTreeMap::from([("corrupt".to_owned(), 1)]),
        fps_measured: 4.5,
        last_error: Some("cannot open rtsp://user:s3cret@10.0.0.5:554/s: refused".into()),
        width: 640,
        height: 480,
        priority: Priority::Urgent,
    };
    bus.publish_msg(subjects::camera_status("cam-1"), &status)
        .await
        .unwrap();
    bus.flush().await.unwrap();
    let r = within(10, "camera status seen", async {
        loop {
            let r = api.get("/api/v1/cameras/cam-1/status", Some(VIEWER)).await;
            if r.json()["seen"] == true {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let s = r.json();
    assert_eq!(s["state"], "backoff");
    assert_eq!(s["ingest_id"], "ingest-a");
    assert_eq!(s["drops"]["corrupt"], 1);
    assert_eq!(
        s["last_error"],
        "cannot open rtsp://***@10.0.0.5:554/s: refused"
    );
    let a = api.get("/api/v1/assignments", Some(VIEWER)).await.json();
    assert_eq!(a[0]["camera_id"], "cam-1");
    assert_eq!(a[0]["ingest_id"], "ingest-a");
    assert!(!api.seen.borrow().iter().any(|b| b.contains("s3cret")));

    // Workers, scheduler, models from status and results on the bus.
    bus.publish_msg(subjects::node_status("n1"), &node_status("n1", 40))
        .await
        .unwrap();
    for (node, w) in [("n1", "cpu-0"), ("n2", "cpu-0"), ("n2", "gpu-1")] {
        bus.publish_msg(subjects::worker_status(node, w), &worker_status(node, w))
            .await
            .unwrap();
    }
    let det = DetectionMsg {
        v: SCHEMA_VERSION,
        camera_id: "cam-1".into(),
        seq: 0,
        captured_at_ns: 1,
        published_at_ns: 2,
        frame_width: 640,
        frame_height: 480,
        node_id: "n1".into(),
        worker_id: "cpu-0".into(),
        model: ModelRef {
            name: "tiny-yolo".into(),
            version: "1".into(),
        },
        batch_size: 1,
        detections: vec![],
        timings: Timings {
            queue_ns: 1_000_000,
            preprocess_ns: 2_000_000,
            infer_ns: 3_000_000,
            postprocess_ns: 500_000,
            total_ns: 8_000_000,
        },
        late: false,
        out_of_order: false,
        quality: None,
    };
    bus.publish_msg(subjects::results("cam-1"), &det)
        .await
        .unwrap();
    let drop = EventMsg {
        v: SCHEMA_VERSION,
        kind: EventKind::Error,
        camera_id: "cam-1".into(),
        node_id: "n1".into(),
        at_ns: 1,
        seq: Some(1),
        reason: Some(DropReason::DeadlineMissed),
        message: "late".into(),
    };
    bus.publish_msg(subjects::events(EventKind::Error, "cam-1"), &drop)
        .await
        .unwrap();
    bus.flush().await.unwrap();
    within(10, "statuses seen", async {
        loop {
            let w = api.get("/api/v1/workers", Some(VIEWER)).await.json();
            let m = api.get("/api/v1/models", Some(VIEWER)).await.json();
            let s = api.get("/api/v1/scheduler", Some(VIEWER)).await.json();
            if w.as_array().unwrap().len() == 3
                && m.as_array().unwrap().len() == 1
                && s.as_array().unwrap().len() == 1
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let r = api.get("/readyz", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let w = api.get("/api/v1/workers/n1.cpu-0", Some(VIEWER)).await;
    assert_eq!(w.status, 200);
    assert_eq!(w.json()["model"]["name"], "tiny-yolo");
    assert_eq!(w.json()["node_queue_depth"], 3);
    assert_eq!(
        api.get("/api/v1/workers/gpu-1", Some(VIEWER)).await.json()["id"],
        "n2.gpu-1"
    );
    api.get("/api/v1/workers/cpu-0", Some(VIEWER))
        .await
        .assert_problem(400, Some("id"));
    api.get("/api/v1/workers/n9.cpu-0", Some(VIEWER))
        .await
        .assert_problem(404, None);
    api.get("/api/v1/workers/a.b.c", Some(VIEWER))
        .await
        .assert_problem(400, Some("id"));
    let s = api.get("/api/v1/scheduler", Some(VIEWER)).await.json();
    assert_eq!(s[0]["node_id"], "n1");
    assert_eq!(s[0]["breaker"], "closed");
    assert_eq!(s[0]["batch_sizes"]["8"], 2);
    let m = api.get("/api/v1/models", Some(VIEWER)).await.json();
    assert_eq!(m[0]["workers"], json!(["n1.cpu-0"]));

    // Drain and resume: admin only; the node's scheduler gets the request.
    let mut n1 = responder(bus.clone(), "n1", true).await;
    for t in [VIEWER, OPERATOR] {
        api.raw(
            Method::POST,
            "/api/v1/workers/n1.cpu-0/drain",
            Some(t),
            None,
            None,
        )
        .await
        .assert_problem(403, None);
    }
    let r = api
        .raw(
            Method::POST,
            "/api/v1/workers/n1.cpu-0/drain",
            Some(ADMIN),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["ok"], true);
    assert_eq!(
        n1.recv().await.unwrap(),
        SchedulerControl::DrainWorker {
            worker_id: "cpu-0".into()
        }
    );
    let r = api
        .raw(
            Method::POST,
            "/api/v1/workers/n1.cpu-0/resume",
            Some(ADMIN),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        n1.recv().await.unwrap(),
        SchedulerControl::ResumeWorker {
            worker_id: "cpu-0".into()
        }
    );
    // n2 has no scheduler listening: a clear 409, not a 5xx.
    api.raw(
        Method::POST,
        "/api/v1/workers/n2.gpu-1/drain",
        Some(ADMIN),
        None,
        None,
    )
    .await
    .assert_problem(409, None);
    api.raw(
        Method::POST,
        "/api/v1/workers/zz.cpu-0/drain",
        Some(ADMIN),
        None,
        None,
    )
    .await
    .assert_problem(404, None);

    // Scheduler tuning: operator; validated before it is sent.
    let tuning = json!({"batch_sizes": [1, 2, 4], "late_policy": "deliver",
                        "deadlines_ms": [20, 50, 100, 500]});
    api.send(
        Method::PATCH,
        "/api/v1/scheduler",
        Some(VIEWER),
        tuning.clone(),
    )
    .await
    .assert_problem(403, None);
    let r = api
        .send(
            Method::PATCH,
            "/api/v1/scheduler",
            Some(OPERATOR),
            tuning.clone(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["node_id"], "n1");
    match n1.recv().await.unwrap() {
        SchedulerControl::Tune { tuning } => {
            assert_eq!(tuning.batch_sizes, Some(vec![1, 2, 4]));
            assert_eq!(tuning.late_policy.as_deref(), Some("deliver"));
            assert_eq!(tuning.deadlines_ms, Some([20, 50, 100, 500]));
        }
        other => panic!("unexpected {other:?}"),
    }
    for (body, field) in [
        (json!({"batch_sizes": [0, 4]}), "batch_sizes[0]"),
        (json!({"batch_sizes": [8, 4]}), "batch_sizes"),
        (json!({"deadlines_ms": [1, 2]}), "deadlines_ms"),
        (json!({"deadlines_ms": [1, 2, 3, 0]}), "deadlines_ms[3]"),
        (json!({"shed_miss_ratio": 1.5}), "shed_miss_ratio"),
        (json!({"late_policy": "maybe"}), "late_policy"),
        (
            json!({"min_batch_timeout_ms": 9, "max_batch_timeout_ms": 3}),
            "max_batch_timeout_ms",
        ),
        (json!({"turbo": true}), "turbo"),
    ] {
        api.send(Method::PATCH, "/api/v1/scheduler", Some(OPERATOR), body)
            .await
            .assert_problem(422, Some(field));
    }
    api.send(
        Method::PATCH,
        "/api/v1/scheduler?node=n7",
        Some(OPERATOR),
        tuning.clone(),
    )
    .await
    .assert_problem(404, None);
    api.send(
        Method::PATCH,
        "/api/v1/scheduler?node=a.b",
        Some(OPERATOR),
        tuning.clone(),
    )
    .await
    .assert_problem(400, Some("node"));

    // Models: hot swap is admin only; the body is checked before anything is sent, and the
    // node's scheduler gets the request.
    let swap = json!({"model_dir": "/models/tiny-yolo-2"});
    api.send(
        Method::POST,
        "/api/v1/models/swap",
        Some(OPERATOR),
        swap.clone(),
    )
    .await
    .assert_problem(403, None);
    api.raw(Method::POST, "/api/v1/models/swap", Some(ADMIN), None, None)
        .await
        .assert_problem(415, None);
    for (body, field) in [
        (json!({"model_dir": ""}), "model_dir"),
        (json!({"model_dir": "/models/a\u{0}b"}), "model_dir"),
        (json!({"model_dir": "/m", "worker_id": "a.b"}), "worker_id"),
        (json!({"model_dir": 7}), "model_dir"),
        (json!({}), "model_dir"),
        (json!({"model_dir": "/m", "turbo": true}), "turbo"),
    ] {
        api.send(Method::POST, "/api/v1/models/swap", Some(ADMIN), body)
            .await
            .assert_problem(422, Some(field));
    }
    // This server takes bodies of at most 4096 bytes (a model_dir of 4097 is refused first).
    api.send(
        Method::POST,
        "/api/v1/models/swap",
        Some(ADMIN),
        json!({"model_dir": "x".repeat(4097)}),
    )
    .await
    .assert_problem(413, None);
    api.send(
        Method::POST,
        "/api/v1/models/swap?node=n7",
        Some(ADMIN),
        swap.clone(),
    )
    .await
    .assert_problem(404, None);
    api.send(
        Method::POST,
        "/api/v1/models/swap?node=a.b",
        Some(ADMIN),
        swap.clone(),
    )
    .await
    .assert_problem(400, Some("node"));
    let r = api
        .send(
            Method::POST,
            "/api/v1/models/swap?node=n1",
            Some(ADMIN),
            json!({"model_dir": "/models/tiny-yolo-2", "worker_id": "cpu-0"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["results"][0]["node_id"], "n1");
    assert_eq!(r.json()["results"][0]["ok"], true);
    assert_eq!(
        n1.recv().await.unwrap(),
        SchedulerControl::SwapModel {
            model_dir: "/models/tiny-yolo-2".into(),
            worker_id: Some("cpu-0".into()),
        }
    );
    // Unknown paths and methods.
    api.get("/api/v1/nothing", Some(VIEWER))
        .await
        .assert_problem(404, None);
    api.raw(Method::DELETE, "/api/v1/workers", Some(ADMIN), None, None)
        .await
        .assert_problem(405, None);

    // Metrics: open by default, strictly parseable, counters from what was published.
    let r = api.get("/metrics", None).await;
    assert_eq!(r.status, 200);
    assert!(r.content_type.starts_with("text/plain; version=0.0.4"));
    let m = parse_prometheus(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
    assert_eq!(
        sum(
            &m,
            "its_frames_total",
            &[("camera", "cam-1"), ("outcome", "result")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "its_frames_total",
            &[("camera", "cam-1"), ("outcome", "dropped")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "its_frame_drops_total",
            &[("reason", "deadline_missed")]
        ),
        1.0
    );
    assert_eq!(
        sum(&m, "its_stage_latency_seconds_count", &[("stage", "infer")]),
        1.0
    );
    assert_eq!(sum(&m, "its_batch_size_count", &[("node", "n1")]), 6.0);
    assert_eq!(
        sum(&m, "its_batch_size_bucket", &[("node", "n1"), ("le", "4")]),
        4.0
    );
    assert_eq!(
        sum(
            &m,
            "its_breaker_state",
            &[("node", "n1"), ("state", "closed")]
        ),
        1.0
    );
    assert_eq!(
        sum(&m, "its_node_frames_received_total", &[("node", "n1")]),
        40.0
    );
    assert_eq!(sum(&m, "its_nats_connected", &[]), 1.0);
    // GPU telemetry of the workers, as their WorkerStatus carried it (NVML on a GPU node;
    // n1 has one worker).
    let w = worker_status("n1", "cpu-0");
    assert_eq!(
        sum(&m, "its_worker_gpu_power_watts", &[("node", "n1")]),
        f64::from(w.gpu_power_w.unwrap())
    );
    assert_eq!(
        sum(&m, "its_worker_gpu_sm_clock_hertz", &[("node", "n1")]),
        f64::from(w.gpu_sm_clock_mhz.unwrap()) * 1e6
    );
    assert_eq!(
        sum(&m, "its_worker_pool_hit_ratio", &[("node", "n1")]),
        0.99
    );
    assert!(
        sum(
            &m,
            "its_admin_http_responses_total",
            &[
                ("route", "/api/v1/cameras"),
                ("method", "POST"),
                ("code", "422")
            ]
        ) >= 9.0
    );
    assert!(
        sum(
            &m,
            "its_admin_http_responses_total",
            &[("route", "unmatched"), ("code", "404")]
        ) >= 1.0
    );
    assert_eq!(
        sum(
            &m,
            "its_camera_source_drops_total",
            &[("camera", "cam-1"), ("reason", "corrupt")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "its_nats_reconnects_total", &[]), 0.0);

    // Delete: operator; then gone.
    api.raw(
        Method::DELETE,
        "/api/v1/cameras/cam-1",
        Some(VIEWER),
        None,
        None,
    )
    .await
    .assert_problem(403, None);
    let r = api
        .raw(
            Method::DELETE,
            "/api/v1/cameras/cam-1",
            Some(OPERATOR),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert!(kv.get("cam-1").await.unwrap().is_none());
    api.raw(
        Method::DELETE,
        "/api/v1/cameras/cam-1",
        Some(OPERATOR),
        None,
        None,
    )
    .await
    .assert_problem(404, None);
    // A removed id can be registered again.
    let r = api
        .send(Method::POST, "/api/v1/cameras", Some(OPERATOR), cam)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(kv.get("cam-1").await.unwrap().is_some());

    // The OpenAPI document is served and lists every path.
    let doc = api.get("/openapi.json", None).await.json();
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/api/v1/cameras",
        "/api/v1/cameras/{id}",
        "/api/v1/cameras/{id}/status",
        "/api/v1/assignments",
        "/api/v1/workers",
        "/api/v1/workers/{id}",
        "/api/v1/workers/{id}/drain",
        "/api/v1/workers/{id}/resume",
        "/api/v1/scheduler",
        "/api/v1/models",
        "/api/v1/models/swap",
        "/healthz",
        "/readyz",
        "/metrics",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing from OpenAPI");
    }

    api.assert_no_token_leaked();
    within(20, "admin stop", server.stop()).await;
}

#[actix_rt::test]
async fn protected_probes_and_per_camera_switch() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let s = AdminSettings {
        protect_health: true,
        protect_metrics: true,
        per_camera_metrics: false,
        ready_requires_status: false,
        ..settings()
    };
    let server = AdminServer::start(&s, bus.clone()).await.unwrap();
    let api = Api::new(server.local_addr());
    for p in ["/healthz", "/readyz", "/metrics"] {
        api.get(p, None).await.assert_problem(401, None);
        let r = api.get(p, Some(VIEWER)).await;
        assert_eq!(r.status, 200, "{p}: {}", r.body);
    }
    let det_subject = subjects::events(EventKind::Error, "cam-x");
    let drop = EventMsg {
        v: SCHEMA_VERSION,
        kind: EventKind::Error,
        camera_id: "cam-x".into(),
        node_id: "n1".into(),
        at_ns: 1,
        seq: None,
        reason: Some(DropReason::QueueFull),
        message: String::new(),
    };
    bus.publish_msg(det_subject, &drop).await.unwrap();
    bus.flush().await.unwrap();
    let m = within(10, "drop counted", async {
        loop {
            let r = api.get("/metrics", Some(VIEWER)).await;
            let m = parse_prometheus(&r.body).unwrap();
            if sum(&m, "its_frame_drops_total", &[]) == 1.0 {
                return m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // No camera label anywhere when per-camera series are off.
    assert!(m.iter().all(|s| !s.labels.contains_key("camera")));
    assert_eq!(sum(&m, "its_frames_total", &[("outcome", "dropped")]), 1.0);
    server.stop().await;
}

#[actix_rt::test]
async fn refuses_an_open_non_loopback_bind() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let s = AdminSettings {
        bind: "0.0.0.0:0".into(),
        tokens: vec![],
        ..settings()
    };
    let err = AdminServer::start(&s, bus.clone()).await.unwrap_err();
    assert!(err.to_string().contains("without tokens"), "{err}");
    // With a tokens file it starts; a malformed file is refused with its line.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    std::fs::write(&file, format!("# ops\nadmin {ADMIN} ops\n")).unwrap();
    let s = AdminSettings {
        bind: "0.0.0.0:0".into(),
        tokens: vec![],
        tokens_file: file.display().to_string(),
        ..settings()
    };
    let server = AdminServer::start(&s, bus.clone()).await.unwrap();
    let port = server.local_addr().port();
    let api = Api::new(([127, 0, 0, 1], port).into());
    assert_eq!(api.get("/api/v1/workers", Some(ADMIN)).await.status, 200);
    api.get("/api/v1/workers", Some(VIEWER))
        .await
        .assert_problem(401, None);
    server.stop().await;
    std::fs::write(&file, "superuser 0123456789abcdef0123\n").unwrap();
    let err = AdminServer::start(&s, bus).await.unwrap_err();
    assert!(err.to_string().contains("line 1"), "{err}");
}

#[test]
fn tokens_never_printed() {
    let s = its_config::Settings {
        admin: settings(),
        ..Default::default()
    };
    let toml = s.to_toml_redacted();
    let debug = format!("{s:?}");
    for t in [VIEWER, OPERATOR, ADMIN] {
        assert!(!toml.contains(t), "config print shows a token:\n{toml}");
        assert!(!debug.contains(t), "Debug shows a token");
    }
    assert!(toml.contains("<redacted>"));
    assert!(toml.contains("operator-test"), "token names stay visible");
}
