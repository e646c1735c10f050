//! Cluster-mode intake: the scheduler reads exactly the frame subjects of the cameras in its
//! assigned set, follows changes of the set, and settles everything it read (real nats-server,
//! real CPU worker on the generated demo model).

use std::collections::BTreeSet;
use std::time::Duration;

use actix::prelude::*;
use its_bus::Bus;
use its_proto::{Encoding, FrameMsg, Priority, SCHEMA_VERSION, subjects};
use its_scheduler::{
    Accounting, LatePolicy, SchedulerActor, SchedulerOptions, WorkerHandle, now_ns,
};
use its_testkit::{TestNats, within};
use its_worker::{Worker, WorkerOptions};
use tokio::sync::{oneshot, watch};

fn jpeg() -> Vec<u8> {
    its_testkit::small_jpeg(90)
}

async fn publish(bus: &Bus, camera: &str, seq: u64, data: &[u8]) {
    let frame = FrameMsg {
        v: SCHEMA_VERSION,
        camera_id: camera.into(),
        seq,
        captured_at_ns: now_ns(),
        priority: Priority::Normal,
        deadline_ns: None,
        width: 64,
        height: 48,
        encoding: Encoding::Jpeg,
        data: data.to_vec(),
    };
    bus.publish_msg(subjects::frames(camera), &frame)
        .await
        .unwrap();
    bus.flush().await.unwrap();
}

async fn until_received(acct: &Accounting, n: u64) {
    within(60, "frames received", async {
        while acct.status(false).frames_received < n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Publishes frames of `camera` one at a time until one is counted: the subscription may not
/// have reached the server yet, and a frame published before it is simply not delivered.
async fn until_subscribed(bus: &Bus, acct: &Accounting, camera: &str, data: &[u8]) {
    within(30, "camera subscribed", async {
        for seq in 0.. {
            let before = acct.status(false).frames_received;
            publish(bus, camera, seq, data).await;
            for _ in 0..100 {
                if acct.status(false).frames_received > before {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
}

#[actix_rt::test]
async fn intake_follows_the_assigned_cameras() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let acct = Accounting::new("node-c", bus.clone());
    let (addr, info) = Worker::start(&WorkerOptions::cpu("w", its_testkit::demo_model_dir(), 1))
        .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
    let opts = SchedulerOptions {
        deadlines: [Duration::from_secs(60); 4],
        late_policy: LatePolicy::Deliver,
        ..SchedulerOptions::with_defaults()
    };
    let scheduler = SchedulerActor::new(
        opts,
        acct.clone(),
        vec![WorkerHandle {
            info,
            addr: addr.recipient(),
        }],
    )
    .start();
    let (set_tx, set_rx) = watch::channel(BTreeSet::from(["cam-a".to_string()]));
    let (stop_tx, stop_rx) = oneshot::channel();
    let intake = actix::spawn(its_scheduler::run_intake_assigned(
        bus.clone(),
        set_rx,
        scheduler.clone(),
        acct.clone(),
        its_scheduler::IntakeOptions::new(1 << 20),
        stop_rx,
    ));
    let data = jpeg();
    until_subscribed(&bus, &acct, "cam-a", &data).await;
    let base = acct.status(false).frames_received;
    // a frame of an unassigned camera is never read
    publish(&bus, "cam-b", 0, &data).await;
    publish(&bus, "cam-a", 100, &data).await;
    until_received(&acct, base + 1).await;
    assert_eq!(acct.status(false).frames_received, base + 1);

    // cam-b joins the set, cam-a leaves it: once a cam-b frame is read, cam-a is unsubscribed
    set_tx.send(BTreeSet::from(["cam-b".to_string()])).unwrap();
    until_subscribed(&bus, &acct, "cam-b", &data).await;
    let after_switch = acct.status(false).frames_received;
    publish(&bus, "cam-a", 200, &data).await;
    publish(&bus, "cam-b", 1000, &data).await;
    until_received(&acct, after_switch + 1).await;

    stop_tx.send(()).unwrap();
    within(30, "intake stops", intake).await.unwrap();
    within(60, "scheduler drains", scheduler.send(its_scheduler::Drain))
        .await
        .unwrap();
    let status = acct.status(false);
    // only assigned frames were read: exactly one more than counted at each checkpoint, and
    // every frame read settled
    assert_eq!(status.frames_received, after_switch + 1);
    assert_eq!(status.in_flight, 0);
}
