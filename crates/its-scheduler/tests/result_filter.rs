//! The result filter of cluster mode: a result the filter holds back is not published, and
//! still settles its frame exactly once in the ledger (`not_published`), so `in_flight` returns
//! to zero and nothing is counted twice (real nats-server, real CPU worker on the demo model).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use futures::StreamExt;
use its_proto::{DetectionMsg, Encoding, FrameMsg, Priority, SCHEMA_VERSION, subjects};
use its_scheduler::{
    Accounting, Enqueue, LatePolicy, SchedulerActor, SchedulerOptions, WorkerHandle, now_ns,
};
use its_testkit::{TestNats, within};
use its_worker::{Worker, WorkerOptions};

fn jpeg() -> Vec<u8> {
    its_testkit::small_jpeg(40)
}

#[actix_rt::test]
async fn held_back_results_settle_once_unpublished() {
    let nats = TestNats::start();
    let bus = nats.bus().await;
    let acct = Accounting::new("node-f", bus.clone());
    let (addr, info) = Worker::start(&WorkerOptions::cpu("w", its_testkit::demo_model_dir(), 1))
        .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
    let opts = SchedulerOptions {
        deadlines: [Duration::from_secs(60); 4],
        late_policy: LatePolicy::Deliver,
        ..SchedulerOptions::with_defaults()
    };
    // odd frames belong to "another node"
    let filter: its_scheduler::ResultFilter =
        Arc::new(|m: &DetectionMsg| (m.seq % 2 == 1).then_some("the other node publishes it"));
    let scheduler = SchedulerActor::new(
        opts,
        acct.clone(),
        vec![WorkerHandle {
            info,
            addr: addr.recipient(),
        }],
    )
    .with_result_filter(filter)
    .start();
    let mut results = bus.subscribe(&subjects::results("cam-f")).await.unwrap();
    bus.flush().await.unwrap();
    let data = jpeg();
    const N: u64 = 10;
    for seq in 0..N {
        acct.received();
        let frame = FrameMsg {
            v: SCHEMA_VERSION,
            camera_id: "cam-f".into(),
            seq,
            captured_at_ns: now_ns(),
            priority: Priority::Normal,
            deadline_ns: None,
            width: 64,
            height: 48,
            encoding: Encoding::Jpeg,
            data: data.clone(),
        };
        scheduler
            .send(Enqueue {
                frame,
                received_at: std::time::Instant::now(),
                span: tracing::Span::none(),
            })
            .await
            .unwrap();
    }
    within(60, "scheduler drains", scheduler.send(its_scheduler::Drain))
        .await
        .unwrap();
    let status = acct.status(false);
    assert_eq!(status.frames_received, N);
    assert_eq!(status.in_flight, 0, "every frame settled");
    assert_eq!(status.results_published, N / 2);
    assert_eq!(acct.not_published_count(), N / 2);
    assert!(status.drops.is_empty(), "{:?}", status.drops);
    let mut seqs = BTreeSet::new();
    within(10, "the published results", async {
        while seqs.len() < (N / 2) as usize {
            let m = results.next().await.unwrap();
            let d: DetectionMsg = its_proto::decode(&m.payload).unwrap();
            assert!(seqs.insert(d.seq), "seq {} published twice", d.seq);
        }
    })
    .await;
    assert_eq!(seqs, (0..N).step_by(2).collect::<BTreeSet<_>>());
    // nothing else arrives: a flush round trip after the last publication, then the
    // subscription holds no further result
    bus.flush().await.unwrap();
    assert!(
        futures::FutureExt::now_or_never(results.next()).is_none(),
        "a held-back result was published"
    );
}
