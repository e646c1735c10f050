//! The live registry through a real nats-server: entries start, restart and stop cameras
//! without a restart; two ingest processes share the cameras; churn leaves nothing behind.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use actix::prelude::*;
use common::*;
use futures::StreamExt;
use its_camera::{CameraState, CameraSupervisor, GetSupervisorSnapshot, Registry, RegistryOptions};
use its_proto::registry::CAMERAS_BUCKET;
use its_proto::{CameraSpec, FrameMsg, Priority, subjects};
use its_testkit::{TestNats, within};

fn opts(id: &str) -> RegistryOptions {
    RegistryOptions {
        ingest_id: id.into(),
        lease_ttl: Duration::from_secs(3),
        max_cameras: 0,
    }
}

fn tiny(id: &str) -> CameraSpec {
    let mut s = CameraSpec::new(id, "synthetic://road", 10.0);
    (s.width, s.height) = (Some(32), Some(32));
    s
}

async fn ids(sup: &Addr<CameraSupervisor>) -> BTreeSet<String> {
    let snap = sup.send(GetSupervisorSnapshot).await.unwrap();
    snap.cameras.into_iter().map(|c| c.camera_id).collect()
}

#[actix_rt::test]
async fn entries_start_change_and_stop_cameras_live() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let kv = bus.kv::<CameraSpec>(CAMERAS_BUCKET, 1).await.unwrap();
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let reg = Registry::start(&bus, sup.clone(), opts("ingest-a"))
        .await
        .unwrap();
    let mut frames = bus.subscribe(&subjects::frames("live")).await.unwrap();
    bus.flush().await.unwrap();

    kv.put("live", &tiny("live")).await.unwrap();
    wait_camera(&sup, "live", 5, "camera started from the registry", |c| {
        c.state == CameraState::Streaming
    })
    .await;

    let mut changed = tiny("live");
    changed.priority = Priority::Urgent;
    kv.put("live", &changed).await.unwrap();
    within(5, "frames with the changed priority", async {
        loop {
            let m = frames.next().await.unwrap();
            let f: FrameMsg = its_proto::decode(&m.payload).unwrap();
            if f.priority == Priority::Urgent {
                break;
            }
        }
    })
    .await;

    let mut disabled = changed.clone();
    disabled.enabled = false;
    kv.put("live", &disabled).await.unwrap();
    wait_sup(&sup, 5, "disabled camera stops", |s| s.cameras.is_empty()).await;
    kv.put("live", &changed).await.unwrap();
    wait_camera(&sup, "live", 5, "re-enabled", |c| {
        c.state == CameraState::Streaming
    })
    .await;
    kv.delete("live").await.unwrap();
    wait_sup(&sup, 5, "deleted camera stops", |s| {
        s.cameras.is_empty() && s.live_actors == 0 && s.live_tasks == 0
    })
    .await;
    reg.stop().await;
}

#[actix_rt::test]
async fn two_ingest_processes_run_each_camera_exactly_once() {
    let nats = TestNats::start();
    let admin = nats.bus().await;
    let kv = admin.kv::<CameraSpec>(CAMERAS_BUCKET, 1).await.unwrap();
    // Fully separate ingest processes: own connections, supervisors and registries. A and B
    // take at most 4 cameras each, so 8 cameras split 4 and 4.
    let bus_a = nats.bus().await;
    let bus_b = nats.bus().await;
    let sup_a = CameraSupervisor::new(env(bus_a.clone(), "ingest-a")).start();
    let sup_b = CameraSupervisor::new(env(bus_b.clone(), "ingest-b")).start();
    let capped = |id: &str| RegistryOptions {
        max_cameras: 4,
        ..opts(id)
    };
    let reg_a = Registry::start(&bus_a, sup_a.clone(), capped("ingest-a"))
        .await
        .unwrap();
    let reg_b = Registry::start(&bus_b, sup_b.clone(), capped("ingest-b"))
        .await
        .unwrap();
    let all: BTreeSet<String> = (0..8).map(|i| format!("cam-{i}")).collect();
    for id in &all {
        kv.put(id, &tiny(id)).await.unwrap();
    }
    let placed = |a: &BTreeSet<String>, b: &BTreeSet<String>| {
        a.is_disjoint(b) && a.union(b).cloned().collect::<BTreeSet<_>>() == all
    };
    within(15, "every camera placed once", async {
        loop {
            let (a, b) = (ids(&sup_a).await, ids(&sup_b).await);
            assert!(a.is_disjoint(&b), "a camera runs twice: {a:?} {b:?}");
            if placed(&a, &b) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Leases renew without moving anything (several renewal periods).
    for _ in 0..30 {
        let (a, b) = (ids(&sup_a).await, ids(&sup_b).await);
        assert!(placed(&a, &b), "placement changed: {a:?} {b:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A stops and releases its leases: a new process C takes A's cameras over at once.
    let bus_c = nats.bus().await;
    let sup_c = CameraSupervisor::new(env(bus_c.clone(), "ingest-c")).start();
    let reg_c = Registry::start(&bus_c, sup_c.clone(), opts("ingest-c"))
        .await
        .unwrap();
    reg_a.stop().await;
    within(15, "takeover of released cameras", async {
        loop {
            let (b, c) = (ids(&sup_b).await, ids(&sup_c).await);
            assert!(b.is_disjoint(&c), "a camera runs twice: {b:?} {c:?}");
            if placed(&b, &c) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    wait_sup(&sup_a, 5, "stopped process runs nothing", |s| {
        s.cameras.is_empty() && s.live_actors == 0
    })
    .await;
    // B dies without releasing: its cameras stop, and C takes them over once the leases
    // expire (3 s here).
    drop(reg_b);
    wait_sup(&sup_b, 5, "dead registry's cameras stop", |s| {
        s.cameras.is_empty()
    })
    .await;
    within(20, "takeover after lease expiry", async {
        while ids(&sup_c).await != all {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    reg_c.stop().await;
}

#[actix_rt::test]
async fn a_thousand_registry_operations_leave_nothing_behind() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let kv = bus.kv::<CameraSpec>(CAMERAS_BUCKET, 1).await.unwrap();
    let server = HttpCam::start(vec![Step::Part(jpeg(32, 32, 9))], Duration::from_millis(20)).await;
    let sup = CameraSupervisor::new(env(bus.clone(), "ingest-a")).start();
    let reg = Registry::start(&bus, sup.clone(), opts("ingest-a"))
        .await
        .unwrap();
    // A camera that is already streaming, so start-up costs are paid before the baseline.
    kv.put("warm", &tiny("warm")).await.unwrap();
    wait_camera(&sup, "warm", 10, "warm-up camera", |c| {
        c.state == CameraState::Streaming
    })
    .await;
    let fds_before = open_fds();

    // 500 adds and 500 removes over 25 ids; every fifth is an HTTP camera (a socket).
    for i in 0..500 {
        let id = format!("churn-{}", i % 25);
        let spec = if i % 5 == 0 {
            CameraSpec::new(&id, server.url("/stream"), 10.0)
        } else {
            tiny(&id)
        };
        kv.put(&id, &spec).await.unwrap();
        kv.delete(&id).await.unwrap();
    }
    let snap = wait_sup(&sup, 30, "churn settles", |s| {
        s.cameras.len() == 1 && s.live_actors == 1 && s.live_tasks == 2
    })
    .await;
    assert_eq!(snap.cameras[0].camera_id, "warm");
    within(20, "sockets and pipes closed", async {
        while open_fds() > fds_before + 2 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    kv.delete("warm").await.unwrap();
    wait_sup(&sup, 10, "all gone", |s| {
        s.live_actors == 0 && s.live_tasks == 0
    })
    .await;
    reg.stop().await;
}
