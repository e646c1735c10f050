//! End to end through a real nats-server: synthetic cameras -> NATS -> scheduler -> CPU worker
//! running the generated ONNX model -> NATS.

use std::collections::BTreeMap;

use futures::StreamExt;
use its_config::Settings;
use its_node::Node;
use its_proto::{
    DetectionMsg, DropReason, Encoding, EventMsg, FrameMsg, Priority, SCHEMA_VERSION, subjects,
};
use its_testkit::{TestNats, within};

const CAMERAS: u32 = 3;
const FRAMES: u64 = 12;
const MAX_FRAME_BYTES: usize = 64 * 1024;

fn settings(url: &str) -> Settings {
    let overrides = vec![
        format!("nats.url={url}"),
        format!("cameras.synthetic_count={CAMERAS}"),
        "cameras.fps=20".into(),
        "cameras.width=320".into(),
        "cameras.height=240".into(),
        "cameras.loop_frames=4".into(),
        format!("cameras.max_frames={FRAMES}"),
        // Debug builds on a 2-core CI machine are slow: deadlines must not be what is tested.
        "scheduler.deadline_normal_ms=60000".into(),
        format!("scheduler.max_frame_bytes={MAX_FRAME_BYTES}"),
        "status.print=false".into(),
        format!(
            "engine.model_dir={}",
            its_testkit::demo_model_dir().display()
        ),
    ];
    its_testkit::settings(&overrides)
}

fn frame(camera: &str, seq: u64, data: Vec<u8>) -> FrameMsg {
    FrameMsg {
        v: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        captured_at_ns: its_scheduler::now_ns(),
        priority: Priority::Normal,
        deadline_ns: None,
        width: 320,
        height: 240,
        encoding: Encoding::Jpeg,
        data,
    }
}

#[actix_rt::test]
async fn frames_flow_end_to_end_and_every_frame_is_accounted_for() {
    let nats = TestNats::start();
    let client = nats.bus().await;
    let mut results = client.subscribe(subjects::RESULTS_ALL).await.unwrap();
    let mut errors = client.subscribe("its.events.error.*").await.unwrap();
    client.flush().await.unwrap();

    let node = within(60, "node start", Node::start(settings(&nats.url())))
        .await
        .unwrap();

    // Bad input next to the good cameras; each must become one counted drop with an event.
    let mut bad: Vec<(String, Vec<u8>, DropReason)> = vec![
        (
            String::from("bad-garbage"),
            b"\x00\x01 not msgpack".to_vec(),
            DropReason::MalformedEnvelope,
        ),
        (
            String::from("bad-jpeg"),
            its_proto::encode(&frame("bad-jpeg", 0, vec![0xff, 0xd8, 0xff, 0x00, 1, 2, 3]))
                .unwrap(),
            DropReason::Undecodable,
        ),
        (
            String::from("bad-big"),
            its_proto::encode(&frame("bad-big", 0, vec![0u8; MAX_FRAME_BYTES + 1])).unwrap(),
            DropReason::PayloadTooLarge,
        ),
    ];
    let mut v99 = frame("bad-version", 0, vec![0xff, 0xd8]);
    v99.v = 99;
    bad.push((
        String::from("bad-version"),
        its_proto::encode(&v99).unwrap(),
        DropReason::UnsupportedVersion,
    ));
    let mut zero = frame("bad-zero", 0, vec![0xff, 0xd8]);
    zero.width = 0;
    zero.height = 0;
    bad.push((
        String::from("bad-zero"),
        its_proto::encode(&zero).unwrap(),
        DropReason::BadDimensions,
    ));
    for (camera, bytes, _) in &bad {
        client
            .publish_raw(subjects::frames(camera), bytes.clone().into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let cams = within(
        120,
        "cameras to publish their frames",
        node.cameras_finished(),
    )
    .await;
    assert_eq!(cams.len(), CAMERAS as usize);
    let report = within(120, "shutdown", node.shutdown()).await.unwrap();
    let s = &report.status;

    // Exact accounting: every frame sent was received, and ended as a result or a drop.
    let sent_by_cameras: u64 = report.cameras.iter().map(|c| c.frames_published).sum();
    assert_eq!(sent_by_cameras, CAMERAS as u64 * FRAMES);
    assert!(report.cameras.iter().all(|c| c.publish_errors == 0));
    let sent = sent_by_cameras + bad.len() as u64;
    let drops: u64 = s.drops.values().sum();
    assert_eq!(s.frames_received, sent, "{s:?}");
    assert_eq!(s.results_published + drops, sent, "{s:?}");
    assert_eq!(s.in_flight, 0);
    for (_, _, reason) in &bad {
        assert_eq!(
            s.drops.get(reason.as_str()),
            Some(&1),
            "{reason:?} in {:?}",
            s.drops
        );
    }

    // The results on the wire: all of them, per camera in rising sequence order.
    let mut per_camera: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for _ in 0..s.results_published {
        let msg = within(30, "results on NATS", results.next()).await.unwrap();
        let r: DetectionMsg = its_proto::decode(&msg.payload).unwrap();
        assert_eq!(msg.subject.as_str(), subjects::results(&r.camera_id));
        assert_eq!((r.frame_width, r.frame_height), (320, 240));
        assert!(r.batch_size >= 1);
        assert!(r.timings.total_ns >= r.timings.infer_ns);
        for d in &r.detections {
            assert!(0.0 <= d.x1 && d.x1 <= d.x2 && d.x2 <= 320.0, "{d:?}");
            assert!(0.0 <= d.y1 && d.y1 <= d.y2 && d.y2 <= 240.0, "{d:?}");
            assert!(d.score > 0.25 && d.score <= 1.0);
            assert!(!d.class_name.is_empty());
        }
        per_camera.entry(r.camera_id).or_default().push(r.seq);
    }
    assert_eq!(
        per_camera.len(),
        CAMERAS as usize,
        "results for every camera: {per_camera:?}"
    );
    for (camera, seqs) in &per_camera {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{camera}: {seqs:?}");
    }

    // One error event per bad frame, on the bad camera's subject, with its reason.
    let mut seen = BTreeMap::new();
    for _ in 0..drops {
        let msg = within(30, "error events", errors.next()).await.unwrap();
        let e: EventMsg = its_proto::decode(&msg.payload).unwrap();
        assert_eq!(
            msg.subject.as_str(),
            format!("its.events.error.{}", e.camera_id)
        );
        seen.insert(e.camera_id.clone(), e.reason);
    }
    for (camera, _, reason) in &bad {
        assert_eq!(seen.get(camera), Some(&Some(*reason)), "{camera}");
    }
}
