//! The per-role NATS permissions of `config/nats/roles.conf`, enforced by a real nats-server:
//! an ingest identity cannot publish results nor read results or frames, a subscriber cannot
//! publish anything nor read frames, a node cannot inject frames, and the system still works end
//! to end (a real camera, a node, a subscriber) with each process under its own identity.

use futures::StreamExt;
use its_node::Node;
use std::collections::BTreeSet;

use actix::Actor;
use its_proto::{CameraSpec, DetectionMsg, subjects};
use its_testkit::roles::{connect, server};
use its_testkit::within;

const FRAMES: u64 = 6;

fn violations(bus: &its_bus::Bus) -> u64 {
    bus.health().snapshot().permission_violations
}

/// Waits for the server to refuse something `bus` just did; the refusal's text, lowercase.
async fn refusal(bus: &its_bus::Bus, before: u64, what: &str) -> String {
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

#[actix_rt::test]
async fn each_role_is_held_to_its_subjects_and_the_pipeline_still_works() {
    let (nats, _dir) = server();
    let ingest = connect(&nats, "ingest").await;
    let subscriber = connect(&nats, "subscriber").await;

    // The subscriber identity reads results.
    let mut results = subscriber.subscribe(subjects::RESULTS_ALL).await.unwrap();
    subscriber.flush().await.unwrap();

    // A node under the `node` identity, no cameras of its own.
    let overrides = vec![
        format!("nats.url={}", nats.url()),
        "nats.user=node".into(),
        "nats.password=node-test-password".into(),
        "cameras.synthetic_count=0".into(),
        "scheduler.deadline_normal_ms=60000".into(),
        "status.print=false".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    let node = within(
        60,
        "node start",
        Node::start(its_testkit::settings(&overrides)),
    )
    .await
    .expect("node starts under the node identity");

    // A real synthetic camera under the `ingest` identity publishes frames, camera events and
    // status: allowed, and its frames come back as results for the subscriber.
    let mut env = its_camera::CameraEnv::new(ingest.clone(), "ingest-perm");
    env.max_frames = FRAMES;
    env.status_interval = std::time::Duration::from_millis(200);
    let cameras = its_camera::CameraSupervisor::new(env).start();
    let mut spec = CameraSpec::new("perm-cam", "synthetic://road", 10.0);
    (spec.width, spec.height) = (Some(160), Some(120));
    cameras.send(its_camera::ApplySpec(spec)).await.unwrap();
    let mut seen = BTreeSet::new();
    while seen.len() < FRAMES as usize {
        let msg = within(60, "results under role permissions", results.next())
            .await
            .expect("results subscription open");
        let det: DetectionMsg = its_proto::decode(&msg.payload).unwrap();
        assert_eq!(det.camera_id, "perm-cam");
        assert!(seen.insert(det.seq), "result {} twice", det.seq);
    }
    // The camera reported its status under its identity too, and nothing it did was refused.
    within(10, "a camera status report", async {
        loop {
            let snap = cameras
                .send(its_camera::GetSupervisorSnapshot)
                .await
                .unwrap();
            if snap
                .cameras
                .iter()
                .any(|c| c.camera_id == "perm-cam" && c.status.frames_published == FRAMES)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    ingest.flush().await.unwrap();
    for (who, bus) in [("ingest", &ingest), ("node", node.bus())] {
        let h = bus.health().snapshot();
        assert_eq!(
            h.permission_violations, 0,
            "{who}: {:?}",
            h.last_server_error
        );
    }

    // Ingest may not publish results: the server refuses and the client reports it.
    let before = violations(&ingest);
    ingest
        .publish_raw(subjects::results("perm-cam"), b"forged".to_vec().into())
        .await
        .unwrap();
    let text = refusal(&ingest, before, "ingest publishing a result").await;
    assert!(
        text.contains("publish") && text.contains("its.results.perm-cam"),
        "{text}"
    );

    // Ingest may not read results, nor the frames of other cameras.
    for subject in [subjects::RESULTS_ALL, "its.frames.*"] {
        let before = violations(&ingest);
        let _sub = ingest.subscribe(subject).await.unwrap();
        let text = refusal(&ingest, before, "ingest subscribing").await;
        assert!(
            text.contains("subscription") && text.contains(subject),
            "{subject}: {text}"
        );
    }

    // A subscriber may not publish anything, nor read frames.
    let before = violations(&subscriber);
    subscriber
        .publish_raw(subjects::frames("perm-cam"), b"x".to_vec().into())
        .await
        .unwrap();
    let text = refusal(&subscriber, before, "subscriber publishing a frame").await;
    assert!(text.contains("its.frames.perm-cam"), "{text}");
    let before = violations(&subscriber);
    let _sub = subscriber.subscribe("its.frames.*").await.unwrap();
    let text = refusal(&subscriber, before, "subscriber reading frames").await;
    assert!(text.contains("its.frames"), "{text}");

    // A node may not inject frames.
    let before = violations(node.bus());
    node.bus()
        .publish_raw(subjects::frames("perm-cam"), b"x".to_vec().into())
        .await
        .unwrap();
    let text = refusal(node.bus(), before, "node publishing a frame").await;
    assert!(text.contains("its.frames.perm-cam"), "{text}");

    // Every frame the node accepted became a result; the refused messages never reached it.
    let stats = node.status();
    assert_eq!(stats.frames_received, FRAMES);
    assert_eq!(stats.results_published, FRAMES);
    let report = within(60, "node shutdown", node.shutdown())
        .await
        .expect("clean shutdown under the node identity");
    assert_eq!(report.status.in_flight, 0);
}
