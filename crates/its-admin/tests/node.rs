//! The admin API as role `admin` of a real node (registry watcher, scheduler, CPU worker, tiny
//! ONNX model, real nats-server): a camera created through the API starts streaming and its
//! frames move the Prometheus counters; drain and tuning reach the real scheduler; deleting the
//! camera stops it.

mod common;

use std::time::Duration;

use awc::http::Method;
use common::{Api, parse_prometheus, sum};
use futures::StreamExt;
use its_node::Node;
use its_proto::{EventKind, EventMsg, subjects};
use its_testkit::{TestNats, within};
use serde_json::json;

async fn poll<T>(secs: u64, what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    within(secs, what, async {
        loop {
            if let Some(v) = f().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[actix_rt::test]
async fn camera_from_the_api_streams_and_counts() {
    let nats = TestNats::start();
    let mut settings = its_testkit::settings(&[
        format!("nats.url={}", nats.url()),
        "cameras.synthetic_count=0".into(),
        "cameras.registry=true".into(),
        // Debug builds on a 2-core CI machine are slow: deadlines must not be what is tested.
        "scheduler.deadline_normal_ms=60000".into(),
        // Two workers: a scheduler refuses to drain its last one.
        "scheduler.workers=2".into(),
        "status.print=false".into(),
        "status.interval_ms=200".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ]);
    settings.admin.enabled = true;
    settings.admin.bind = "127.0.0.1:0".into();
    settings.admin.workers = 1;
    let node_id = settings.node.id.clone();
    let node = within(60, "node start", Node::start(settings))
        .await
        .expect("node starts");
    let api = Api::new(node.admin_addr().expect("admin enabled"));
    let bus = nats.bus().await;
    let mut camera_events = bus
        .subscribe(&subjects::events(EventKind::Camera, "road-1"))
        .await
        .unwrap();
    bus.flush().await.unwrap();

    let r = api
        .send(
            Method::POST,
            "/api/v1/cameras",
            None,
            json!({"id": "road-1", "url": "synthetic://road", "fps": 10,
                   "width": 320, "height": 240}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The node's registry watcher picks it up and reports it streaming.
    poll(60, "camera streaming", async || {
        let s = api.get("/api/v1/cameras/road-1/status", None).await.json();
        (s["state"] == "streaming").then_some(())
    })
    .await;
    let a = api.get("/api/v1/assignments", None).await.json();
    assert_eq!(a[0]["camera_id"], "road-1");
    assert_eq!(a[0]["ingest_id"], node_id.as_str());

    // Frames flow: the counters move between two scrapes.
    let scrape = async || {
        let r = api.get("/metrics", None).await;
        parse_prometheus(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body))
    };
    let results = |m: &[common::Sample]| {
        sum(
            m,
            "its_frames_total",
            &[("camera", "road-1"), ("outcome", "result")],
        )
    };
    let first = poll(90, "first results counted", async || {
        let m = scrape().await;
        (results(&m) >= 2.0).then_some(m)
    })
    .await;
    let received = |m: &[common::Sample]| {
        sum(
            m,
            "its_node_frames_received_total",
            &[("node", node_id.as_str())],
        )
    };
    let second = poll(90, "counters move", async || {
        let m = scrape().await;
        (results(&m) > results(&first) && received(&m) > received(&first)).then_some(m)
    })
    .await;
    assert!(sum(&second, "its_frame_latency_seconds_count", &[]) >= results(&second));
    assert!(
        sum(
            &second,
            "its_batch_size_count",
            &[("node", node_id.as_str())]
        ) >= 1.0
    );
    assert_eq!(
        sum(&second, "its_camera_streaming", &[("camera", "road-1")]),
        1.0
    );

    // Workers, models and readiness from the real node.
    let workers = poll(30, "worker status with its model", async || {
        let w = api.get("/api/v1/workers", None).await.json();
        w.as_array()
            .and_then(|a| a.iter().find(|w| w["model"].is_object()).cloned())
    })
    .await;
    let models = api.get("/api/v1/models", None).await.json();
    assert_eq!(models.as_array().unwrap().len(), 1, "{models}");
    assert_eq!(api.get("/readyz", None).await.status, 200);
    let s = api.get("/api/v1/scheduler", None).await.json();
    assert_eq!(s[0]["node_id"], node_id.as_str());

    // Drain, resume and tuning are applied by the node's scheduler.
    let id = workers["id"].as_str().unwrap().to_owned();
    let r = api
        .raw(
            Method::POST,
            &format!("/api/v1/workers/{id}/drain"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    poll(30, "worker reported drained", async || {
        let w = api.get(&format!("/api/v1/workers/{id}"), None).await.json();
        (w["draining"] == true).then_some(())
    })
    .await;
    let r = api
        .raw(
            Method::POST,
            &format!("/api/v1/workers/{id}/resume"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = api
        .send(
            Method::PATCH,
            "/api/v1/scheduler",
            None,
            json!({"batch_sizes": [1, 2, 4], "late_policy": "deliver"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);

    // Deleting the camera stops it.
    let r = api
        .raw(Method::DELETE, "/api/v1/cameras/road-1", None, None, None)
        .await;
    assert_eq!(r.status, 204);
    within(60, "camera stopped", async {
        while let Some(msg) = camera_events.next().await {
            let e: EventMsg = its_proto::decode(&msg.payload).unwrap();
            if e.message == "stopped" {
                return;
            }
        }
        panic!("event subscription ended");
    })
    .await;

    within(90, "node shutdown", node.shutdown())
        .await
        .expect("clean shutdown");
}
