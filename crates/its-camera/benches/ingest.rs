//! Ingest benchmark: N synthetic cameras at F fps from one supervisor into a real nats-server,
//! with a subscriber counting what arrives. Prints a table of rates and exact drops.
//!
//! `cargo bench -p its-camera --bench ingest` (env: ITS_BENCH_CAMERAS=200, ITS_BENCH_FPS=30,
//! ITS_BENCH_SECS=20, ITS_BENCH_WIDTH=1280, ITS_BENCH_HEIGHT=720, ITS_BENCH_SCENES=4).
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use futures::StreamExt;
use its_camera::{
    ApplySpec, CameraEnv, CameraState, CameraSupervisor, GetSupervisorSnapshot, StopAll,
    SupervisorSnapshot,
};
use its_proto::{CameraSpec, subjects};

fn env_or<T: std::str::FromStr>(k: &str, d: T) -> T {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn totals(s: &SupervisorSnapshot) -> (u64, u64, BTreeMap<String, u64>) {
    let mut drops = BTreeMap::new();
    let (mut cap, mut publ) = (0, 0);
    for c in &s.cameras {
        cap += c.status.frames_captured;
        publ += c.status.frames_published;
        for (k, v) in &c.status.drops {
            *drops.entry(k.clone()).or_insert(0) += v;
        }
    }
    (cap, publ, drops)
}

fn main() {
    let cameras: u32 = env_or("ITS_BENCH_CAMERAS", 200);
    let fps: f32 = env_or("ITS_BENCH_FPS", 30.0);
    let secs: u64 = env_or("ITS_BENCH_SECS", 20);
    let width: u32 = env_or("ITS_BENCH_WIDTH", 1280);
    let height: u32 = env_or("ITS_BENCH_HEIGHT", 720);
    let scenes: u64 = env_or("ITS_BENCH_SCENES", 4);
    actix_rt::System::new().block_on(async move {
        let nats = its_testkit::TestNats::start();
        let bus = nats.bus().await;
        let sub_bus = nats.bus().await;
        let received = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let mut sub = sub_bus.subscribe(subjects::FRAMES_ALL).await.unwrap();
        sub_bus.flush().await.unwrap();
        let (r, b) = (received.clone(), bytes.clone());
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                r.fetch_add(1, Ordering::Relaxed);
                b.fetch_add(m.payload.len() as u64, Ordering::Relaxed);
            }
        });
        let mut env = CameraEnv::new(bus.clone(), "bench");
        env.source.synthetic_loop_frames = 30;
        env.status_interval = Duration::from_secs(1);
        let sup = CameraSupervisor::new(env).start();
        let t_render = Instant::now();
        for i in 0..cameras {
            let mut s = CameraSpec::new(format!("bench-{i}"), "synthetic://road", fps);
            (s.width, s.height, s.seed) = (Some(width), Some(height), i as u64 % scenes);
            s.jpeg_quality = 80;
            sup.send(ApplySpec(s)).await.unwrap();
        }
        loop {
            let s = sup.send(GetSupervisorSnapshot).await.unwrap();
            if s.cameras.iter().all(|c| c.state == CameraState::Streaming) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let render_s = t_render.elapsed().as_secs_f64();
        // Warm-up, then the measured window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let s0 = sup.send(GetSupervisorSnapshot).await.unwrap();
        let (r0, b0, c0) = (
            received.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            cpu_secs(),
        );
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let s1 = sup.send(GetSupervisorSnapshot).await.unwrap();
        let el = t0.elapsed().as_secs_f64();
        let (r1, b1, c1) = (
            received.load(Ordering::Relaxed),
            bytes.load(Ordering::Relaxed),
            cpu_secs(),
        );
        let (cap0, pub0, d0) = totals(&s0);
        let (cap1, pub1, d1) = totals(&s1);
        let mut per_cam: Vec<f64> = s1
            .cameras
            .iter()
            .zip(&s0.cameras)
            .map(|(a, b)| (a.status.frames_published - b.status.frames_published) as f64 / el)
            .collect();
        per_cam.sort_by(f64::total_cmp);
        let target = cameras as f64 * fps as f64;
        println!("| measure | value |");
        println!("| --- | --- |");
        println!("| cameras x fps, resolution | {cameras} x {fps}, {width}x{height} ({scenes} distinct scenes, 30-frame loops) |");
        println!("| scene render + start | {render_s:.1} s |");
        println!("| window | {el:.1} s |");
        println!("| target rate | {target:.0} frames/s |");
        println!("| captured | {:.0} frames/s |", (cap1 - cap0) as f64 / el);
        println!("| published | {:.0} frames/s ({:.1} % of target) |", (pub1 - pub0) as f64 / el, 100.0 * (pub1 - pub0) as f64 / el / target);
        println!("| received by a subscriber | {:.0} frames/s, {:.0} MB/s |", (r1 - r0) as f64 / el, (b1 - b0) as f64 / el / 1e6);
        println!("| per-camera published fps min / median / max | {:.1} / {:.1} / {:.1} |", per_cam[0], per_cam[per_cam.len() / 2], per_cam[per_cam.len() - 1]);
        let mut reasons: BTreeMap<String, u64> = BTreeMap::new();
        for (k, v) in &d1 {
            reasons.insert(k.clone(), v - d0.get(k).copied().unwrap_or(0));
        }
        println!("| dropped in window, by reason | {} |", if reasons.values().all(|v| *v == 0) { "none".to_string() } else { format!("{reasons:?}") });
        println!("| ingest process CPU (nats-server excluded) | {:.2} cores |", (c1 - c0) / el);
        let fin = sup.send(StopAll).await.unwrap();
        let lost: u64 = fin.iter().map(|c| c.status.frames_captured - c.status.frames_published - c.status.drops.values().sum::<u64>()).sum();
        println!("| captured - published - dropped at stop | {lost} |");
    });
}
