//! Cameras that misbehave or carry secrets, against real servers and a real nats-server: a
//! source pushing far more frames than its declared fps is paced down to it, the excess counted
//! as `fps_limit`; credentials in camera URLs appear in no event, status or snapshot, even
//! when ffmpeg echoes the URL in its error output.

mod common;

use std::time::{Duration, Instant};

use actix::prelude::*;
use common::*;
use futures::StreamExt;
use its_camera::{ApplySpec, CameraSupervisor, DROP_FPS_LIMIT};
use its_proto::{CameraSpec, CameraStatus, FrameMsg, subjects};
use its_testkit::{TestNats, within};

#[actix_rt::test]
async fn a_source_faster_than_declared_is_paced_and_the_excess_counted() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    // The server pushes a part every 4 ms (up to 250 fps); the camera declares 10 fps.
    let server = HttpCam::start(vec![Step::Part(jpeg(64, 48, 80))], Duration::from_millis(4)).await;
    let mut frames = bus.subscribe(&subjects::frames("fast")).await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    sup.send(ApplySpec(CameraSpec::new(
        "fast",
        server.url("/stream"),
        10.0,
    )))
    .await
    .unwrap();

    // Count what reaches NATS over 3 s of streaming, from the first frame on.
    let first = within(20, "the first frame", frames.next()).await.unwrap();
    let first: FrameMsg = its_proto::decode(&first.payload).unwrap();
    let window = Duration::from_secs(3);
    let start = Instant::now();
    let mut last = first.captured_at_ns;
    let mut published = 0u64;
    within(10, "3 s of frames", async {
        while start.elapsed() < window {
            let m = frames.next().await.unwrap();
            let f: FrameMsg = its_proto::decode(&m.payload).unwrap();
            assert!(f.captured_at_ns > last);
            last = f.captured_at_ns;
            published += 1;
        }
    })
    .await;
    let fps = published as f64 / window.as_secs_f64();
    assert!(
        (8.0..=12.5).contains(&fps),
        "published {fps:.1} fps for a declared 10"
    );

    // The source really sent far more, and every extra frame is counted.
    let snap = wait_camera(&sup, "fast", 10, "fps_limit drops counted", |c| {
        c.status.drops.get(DROP_FPS_LIMIT).copied().unwrap_or(0) >= 3 * c.frames_published
    })
    .await;
    let dropped: u64 = snap.status.drops.values().sum();
    assert!(
        snap.status.frames_captured >= snap.status.frames_published + dropped
            && snap.status.frames_captured <= snap.status.frames_published + dropped + 4,
        "captured = published + dropped (+ the drop-oldest queue of 4): {:?}",
        snap.status
    );
}

#[actix_rt::test]
async fn credentials_in_camera_urls_are_never_shown() {
    const SECRET: &str = "pw-s3cret-7781";
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let mut events = bus.subscribe("its.events.>").await.unwrap();
    let mut status = bus.subscribe("its.status.camera.*").await.unwrap();
    bus.flush().await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let closed = free_port();
    // One in-process HTTP source and one through ffmpeg (which prints the URL it failed on).
    let cams = [
        (
            "cred-http",
            format!("http://admin:{SECRET}@127.0.0.1:{closed}/stream"),
        ),
        (
            "cred-rtsp",
            format!("rtsp://admin:{SECRET}@127.0.0.1:{closed}/live"),
        ),
    ];
    for (id, url) in &cams {
        sup.send(ApplySpec(CameraSpec::new(*id, url.clone(), 5.0)))
            .await
            .unwrap();
    }

    // Both fail, with their error on the snapshot, in an error event and in a status report.
    for (id, _) in &cams {
        let snap = wait_camera(&sup, id, 30, "the camera failed", |c| {
            c.last_error.is_some() && c.status.last_error.is_some()
        })
        .await;
        let err = snap.last_error.unwrap();
        eprintln!("{id}: {err}");
        assert!(!err.contains(SECRET), "{id}: {err}");
    }
    let mut error_events = 0;
    let mut reports_with_error = 0;
    within(30, "error events and status reports of both", async {
        while error_events < 2 || reports_with_error < 2 {
            tokio::select! {
                Some(m) = events.next() => {
                    let text = String::from_utf8_lossy(&m.payload);
                    assert!(!text.contains(SECRET), "{}: {text}", m.subject);
                    if m.subject.starts_with("its.events.error.") {
                        error_events += 1;
                    }
                }
                Some(m) = status.next() => {
                    let text = String::from_utf8_lossy(&m.payload);
                    assert!(!text.contains(SECRET), "{}: {text}", m.subject);
                    let s: CameraStatus = its_proto::decode(&m.payload).unwrap();
                    if s.last_error.is_some() {
                        reports_with_error += 1;
                    }
                }
            }
        }
    })
    .await;
}
