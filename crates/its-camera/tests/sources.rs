//! Camera sources against real servers started by the tests: the synthetic scene, an HTTP
//! MJPEG server and snapshot server on tokio, a JPEG directory, the vtest.avi video file and
//! GStreamer's RTSP server; and their faults.

mod common;

use std::time::Duration;

use actix::prelude::*;
use common::*;
use futures::StreamExt;
use its_camera::{ApplySpec, CameraState, CameraSupervisor, DROP_CORRUPT, RemoveCamera};
use its_proto::{
    CameraSpec, CameraStatus, EventMsg, FrameMsg, HttpMode, Priority, PriorityBoost, RtspTransport,
    SCHEMA_VERSION, subjects,
};
use its_testkit::{TestNats, within};

async fn next_frame(sub: &mut its_bus::Subscriber) -> FrameMsg {
    let m = within(20, "a frame", sub.next())
        .await
        .expect("subscription open");
    its_proto::decode(&m.payload).expect("a FrameMsg")
}

fn decodable(jpeg: &[u8]) -> (usize, usize) {
    let mut d = zune_jpeg::JpegDecoder::new(jpeg);
    d.decode().expect("a decodable JPEG");
    let info = d.info().unwrap();
    (info.width as usize, info.height as usize)
}

#[actix_rt::test]
async fn synthetic_camera_streams_reports_and_takes_a_priority_boost() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut frames = bus.subscribe(&subjects::frames("syn")).await.unwrap();
    let mut status = bus
        .subscribe(&subjects::camera_status("syn"))
        .await
        .unwrap();
    let mut events = bus.subscribe("its.events.camera.syn").await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let mut spec = CameraSpec::new("syn", "synthetic://road", 20.0);
    (spec.width, spec.height, spec.seed) = (Some(160), Some(96), 7);
    sup.send(ApplySpec(spec)).await.unwrap();

    let first = next_frame(&mut frames).await;
    assert_eq!((first.width, first.height), (160, 96));
    assert_eq!(decodable(&first.data), (160, 96));
    assert_eq!(first.priority, Priority::Normal);
    let second = next_frame(&mut frames).await;
    assert_eq!(second.seq, first.seq + 1);

    let boost = PriorityBoost {
        v: SCHEMA_VERSION,
        camera_id: "syn".into(),
        priority: Priority::Urgent,
        duration_ms: 800,
    };
    bus.publish_msg(subjects::control_priority("syn"), &boost)
        .await
        .unwrap();
    within(10, "boosted frames", async {
        while next_frame(&mut frames).await.priority != Priority::Urgent {}
    })
    .await;
    within(10, "priority falls back", async {
        while next_frame(&mut frames).await.priority != Priority::Normal {}
    })
    .await;

    let st: CameraStatus =
        its_proto::decode(&within(10, "a status", status.next()).await.unwrap().payload).unwrap();
    assert_eq!(st.ingest_id, "ingest-a");
    assert_eq!(st.state, CameraState::Streaming);
    let mut seen = Vec::new();
    within(10, "connecting and streaming events", async {
        while seen.len() < 2 {
            let m = events.next().await.unwrap();
            seen.push(its_proto::decode::<EventMsg>(&m.payload).unwrap().message);
        }
    })
    .await;
    assert_eq!(seen, ["connecting", "streaming"]);

    sup.send(RemoveCamera("syn".into())).await.unwrap();
    wait_sup(&sup, 10, "camera gone", |s| {
        s.cameras.is_empty() && s.live_actors == 0 && s.live_tasks == 0
    })
    .await;
}

#[actix_rt::test]
async fn mjpeg_passes_through_counts_corrupt_parts_and_follows_a_resolution_change() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let small = jpeg(64, 48, 90);
    let large = jpeg(128, 96, 160);
    let mut truncated = jpeg(64, 48, 30);
    truncated.truncate(truncated.len() / 2);
    let server = HttpCam::start(
        vec![
            Step::Part(small.clone()),
            Step::Part(b"this is not a jpeg".to_vec()),
            Step::Part(large.clone()),
            Step::Part(truncated),
        ],
        Duration::from_millis(15),
    )
    .await;
    let mut frames = bus.subscribe(&subjects::frames("mj")).await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    sup.send(ApplySpec(CameraSpec::new(
        "mj",
        server.url("/stream"),
        100.0,
    )))
    .await
    .unwrap();
    let mut sizes = std::collections::BTreeSet::new();
    within(20, "both resolutions", async {
        while sizes.len() < 2 {
            let f = next_frame(&mut frames).await;
            // Passed through byte for byte.
            assert!(f.data == small || f.data == large, "frame was re-encoded");
            sizes.insert((f.width, f.height));
        }
    })
    .await;
    assert_eq!(sizes.into_iter().collect::<Vec<_>>(), [(64, 48), (128, 96)]);
    let snap = wait_camera(&sup, "mj", 10, "corrupt parts counted", |c| {
        c.status.drops.get(DROP_CORRUPT).copied().unwrap_or(0) >= 2
    })
    .await;
    assert_eq!(snap.state, CameraState::Streaming);
    assert!(snap.status.last_error.unwrap().contains("corrupt"));
}

#[actix_rt::test]
async fn snapshots_and_image_directories_pass_jpegs_through() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let shot = jpeg(80, 60, 200);
    let server = HttpCam::start(vec![Step::Part(shot.clone())], Duration::from_millis(10)).await;
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<Vec<u8>> = (0..3u8).map(|i| jpeg(32, 32, 40 * i + 20)).collect();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i:03}.jpg")), f).unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    let mut snaps = bus.subscribe(&subjects::frames("snap")).await.unwrap();
    let mut dirs = bus.subscribe(&subjects::frames("dir")).await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let mut s = CameraSpec::new("snap", server.url("/snapshot"), 20.0);
    s.http_mode = HttpMode::Snapshot;
    sup.send(ApplySpec(s)).await.unwrap();
    let d = CameraSpec::new("dir", format!("file://{}", dir.path().display()), 30.0);
    sup.send(ApplySpec(d)).await.unwrap();

    for _ in 0..3 {
        assert_eq!(next_frame(&mut snaps).await.data, shot);
    }
    for f in &files {
        assert_eq!(&next_frame(&mut dirs).await.data, f);
    }
    // Without loop_playback the directory ends and the camera stops by itself.
    let done = wait_camera(&sup, "dir", 10, "directory camera stops", |c| {
        c.state == CameraState::Stopped
    })
    .await;
    assert_eq!(done.frames_published, 3);
}

#[actix_rt::test]
async fn video_file_is_decoded_and_reencoded() {
    let video = its_testkit::workspace_root().join(".cache/videos/vtest.avi");
    assert!(
        video.exists(),
        "{} is missing: run scripts/setup.sh (it extracts vtest.avi from Debian's opencv-doc)",
        video.display()
    );
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut frames = bus.subscribe(&subjects::frames("vid")).await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let mut spec = CameraSpec::new("vid", format!("file://{}", video.display()), 5.0);
    spec.jpeg_quality = 70;
    sup.send(ApplySpec(spec)).await.unwrap();
    let a = next_frame(&mut frames).await;
    let b = next_frame(&mut frames).await;
    assert_eq!((a.width, a.height), (768, 576));
    assert_eq!(decodable(&b.data), (768, 576));
    assert_eq!(b.seq, a.seq + 1);
}

#[actix_rt::test]
async fn stalled_server_unsupported_scheme_and_unreachable_host_are_clear_errors() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let stalling = HttpCam::start(
        vec![Step::Part(jpeg(32, 32, 1)), Step::Stall],
        Duration::from_millis(10),
    )
    .await;
    let mut errors = bus.subscribe("its.events.error.gopher").await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    sup.send(ApplySpec(CameraSpec::new(
        "stall",
        stalling.url("/stream"),
        10.0,
    )))
    .await
    .unwrap();
    sup.send(ApplySpec(CameraSpec::new(
        "gopher",
        "gopher://example/x",
        10.0,
    )))
    .await
    .unwrap();
    let closed = free_port();
    sup.send(ApplySpec(CameraSpec::new(
        "gone",
        format!("http://127.0.0.1:{closed}/stream"),
        10.0,
    )))
    .await
    .unwrap();

    let stalled = wait_camera(&sup, "stall", 20, "read timeout detected", |c| {
        c.status.frames_published >= 1
            && c.last_error
                .as_deref()
                .is_some_and(|e| e.contains("stalled"))
    })
    .await;
    assert!(matches!(
        stalled.state,
        CameraState::Backoff | CameraState::Connecting | CameraState::Streaming
    ));
    let bad = wait_camera(&sup, "gopher", 10, "unsupported scheme", |c| {
        c.state == CameraState::Stopped
    })
    .await;
    assert!(
        bad.last_error.unwrap().contains("unsupported scheme"),
        "clear error"
    );
    let ev: EventMsg = its_proto::decode(
        &within(10, "error event", errors.next())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert!(ev.message.contains("unsupported scheme"));
    wait_camera(&sup, "gone", 10, "unreachable host backs off", |c| {
        c.state == CameraState::Backoff
            && c.last_error
                .as_deref()
                .is_some_and(|e| e.contains("cannot connect"))
    })
    .await;
    // The others never disturbed a healthy camera.
    let mut ok = CameraSpec::new("ok", "synthetic://road", 20.0);
    (ok.width, ok.height) = (Some(32), Some(32));
    sup.send(ApplySpec(ok)).await.unwrap();
    wait_camera(&sup, "ok", 10, "healthy camera streams", |c| {
        c.state == CameraState::Streaming && c.frames_published > 3
    })
    .await;
}

#[actix_rt::test]
async fn a_flapping_camera_is_quarantined() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut e = env(bus.clone(), "ingest-a");
    e.restart.initial = Duration::from_millis(20);
    e.restart.max = Duration::from_millis(40);
    e.restart.quarantine_failures = 3;
    e.restart.quarantine_for = Duration::from_secs(60);
    let sup = CameraSupervisor::new(e).start();
    let closed = free_port();
    sup.send(ApplySpec(CameraSpec::new(
        "flap",
        format!("http://127.0.0.1:{closed}/"),
        10.0,
    )))
    .await
    .unwrap();
    wait_camera(&sup, "flap", 10, "quarantine", |c| {
        c.state == CameraState::Quarantined
    })
    .await;
}

#[actix_rt::test]
async fn rtsp_over_tcp_and_udp_and_recovery_after_a_server_restart() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let port = free_port();
    let server = RtspServer::start(port);
    let mut frames = bus.subscribe(&subjects::frames("rtsp-tcp")).await.unwrap();
    let mut udp_frames = bus.subscribe(&subjects::frames("rtsp-udp")).await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    sup.send(ApplySpec(CameraSpec::new("rtsp-tcp", server.url(), 5.0)))
        .await
        .unwrap();
    let mut udp = CameraSpec::new("rtsp-udp", server.url(), 5.0);
    udp.rtsp_transport = RtspTransport::Udp;
    sup.send(ApplySpec(udp)).await.unwrap();

    let f = next_frame(&mut frames).await;
    assert_eq!((f.width, f.height), (320, 240));
    assert_eq!(decodable(&f.data), (320, 240));
    let u = next_frame(&mut udp_frames).await;
    assert_eq!((u.width, u.height), (320, 240));
    sup.send(RemoveCamera("rtsp-udp".into())).await.unwrap();

    drop(server);
    let down = wait_camera(&sup, "rtsp-tcp", 20, "backoff after the server died", |c| {
        c.state == CameraState::Backoff
    })
    .await;
    let server = RtspServer::start(port);
    wait_camera(&sup, "rtsp-tcp", 30, "streaming again", |c| {
        c.state == CameraState::Streaming && c.frames_published > down.frames_published + 2
    })
    .await;
    drop(server);
}

#[actix_rt::test]
async fn a_decoded_stream_keeps_flowing_across_a_resolution_change() {
    // An H.264 stream whose resolution changes half-way (two MPEG-TS segments back to back),
    // made with ffmpeg itself.
    let dir = tempfile::tempdir().unwrap();
    let mut joined = Vec::new();
    for (i, size) in ["320x240", "640x360"].iter().enumerate() {
        let part = dir.path().join(format!("{i}.ts"));
        let ok = std::process::Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i"])
            .arg(format!("testsrc=size={size}:rate=10"))
            .args(["-t", "1", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .arg(&part)
            .status()
            .expect("ffmpeg (run scripts/setup.sh)");
        assert!(ok.success());
        joined.extend(std::fs::read(&part).unwrap());
    }
    let video = dir.path().join("switch.ts");
    std::fs::write(&video, joined).unwrap();

    let nats = TestNats::start();
    let bus = nats.bus().await;
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let spec = CameraSpec::new("switch", format!("file://{}", video.display()), 10.0);
    sup.send(ApplySpec(spec)).await.unwrap();
    // ffmpeg scales the second half to the first resolution; nothing stops or errors.
    let done = wait_camera(&sup, "switch", 30, "the whole file published", |c| {
        c.state == CameraState::Stopped
    })
    .await;
    // 20 frames in the file; a loaded machine may deliver some in a burst that the fps limit
    // skips (counted), so count what was captured.
    assert!(done.status.frames_captured >= 18, "{done:?}");
    assert!(done.frames_published >= 10, "{done:?}");
    assert_eq!(done.last_error, None);
    assert_eq!((done.status.width, done.status.height), (320, 240));
}

#[actix_rt::test]
async fn https_mjpeg_passes_through_and_certificates_are_verified() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, frame_path) = (
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
        dir.path().join("frame.jpg"),
    );
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let frame = jpeg(48, 32, 77);
    std::fs::write(&frame_path, &frame).unwrap();
    let port = free_port();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/https_mjpeg.py");
    let mut server = std::process::Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .args([&frame_path, &cert, &key])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut ready = [0u8; 6];
    std::io::Read::read_exact(server.stdout.as_mut().unwrap(), &mut ready).unwrap();
    let _server = ChildGuard(server);
    assert_eq!(&ready, b"ready\n");

    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut frames = bus.subscribe(&subjects::frames("tls")).await.unwrap();
    bus.flush().await.unwrap();
    let url = format!("https://127.0.0.1:{port}/stream");
    let mut trusting = env(bus.clone(), "ingest-a");
    trusting.source.tls_ca_file = Some(cert.clone());
    let sup = CameraSupervisor::new(trusting).start();
    sup.send(ApplySpec(CameraSpec::new("tls", &url, 10.0)))
        .await
        .unwrap();
    for _ in 0..3 {
        let f = next_frame(&mut frames).await;
        assert_eq!(f.data, frame, "passed through byte for byte");
        assert_eq!((f.width, f.height), (48, 32));
    }
    // Without the CA the self-signed certificate is refused: a clear error, not a stream.
    let strict = CameraSupervisor::new(env(bus.clone(), "ingest-b")).start();
    strict
        .send(ApplySpec(CameraSpec::new("untrusted", &url, 10.0)))
        .await
        .unwrap();
    let refused = wait_camera(&strict, "untrusted", 20, "certificate refused", |c| {
        c.last_error
            .as_deref()
            .is_some_and(|e| e.contains("certificate"))
    })
    .await;
    assert_eq!(refused.frames_published, 0);
}
