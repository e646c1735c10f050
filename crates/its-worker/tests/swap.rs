//! Model hot swap of the CPU worker at its actor boundary (real ONNX Runtime, the tiny model):
//! batches keep running while a second version loads, each batch runs whole on one model and
//! every batch after the swap on the new one; a directory that does not load changes nothing;
//! an engine restart after a swap reloads the model in use, not the one the worker started with.

use std::time::Instant;

use its_worker::{FaultHook, JobResult, SwapError, Worker, WorkerOptions};

mod common;
use common::{batch, jpeg};

fn version(o: &its_worker::BatchOutcome) -> &str {
    o.model
        .as_ref()
        .expect("the CPU worker names the model")
        .version
        .as_str()
}

#[actix_rt::test]
async fn swap_between_batches_keeps_every_frame() {
    let tmp = tempfile::tempdir().unwrap();
    let v2 = its_testkit::demo_model_version(tmp.path(), "2");
    let faults = FaultHook::default();
    let (worker, info, switch) = Worker::start_swappable(&WorkerOptions {
        faults: faults.clone(),
        ..WorkerOptions::cpu("cpu-0", its_testkit::demo_model_dir(), 2)
    })
    .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
    assert_eq!(info.model.version, "1");
    let data = jpeg();
    let first = worker.send(batch(&data, 1000, 1)).await.unwrap();
    assert_eq!(version(&first), "1");

    // Batches keep going, two at a time, while the swap loads and switches.
    let runner = {
        let (worker, data) = (worker.clone(), data.clone());
        actix_rt::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..20u64 {
                let sent = Instant::now();
                let a = worker.send(batch(&data, 4 * i, 2));
                let b = worker.send(batch(&data, 4 * i + 2, 2));
                let (a, b) = futures::join!(a, b);
                outcomes.push((sent, a.unwrap()));
                outcomes.push((sent, b.unwrap()));
            }
            outcomes
        })
    };
    let swapped = switch.swap(&v2).await.expect("swap to version 2");
    let swapped_at = Instant::now();
    assert_eq!(
        (
            swapped.previous.version.as_str(),
            swapped.model.version.as_str()
        ),
        ("1", "2")
    );
    let outcomes = runner.await.unwrap();
    for (_, o) in &outcomes {
        assert_eq!(o.results.len(), 2);
        for (_, r) in &o.results {
            assert!(matches!(r, JobResult::Done { .. }), "{r:?}");
        }
    }
    // Every batch sent after the swap answered runs on version 2.
    let late: Vec<&str> = outcomes
        .iter()
        .filter(|(sent, _)| *sent > swapped_at)
        .map(|(_, o)| version(o))
        .collect();
    assert!(late.iter().all(|v| *v == "2"), "{late:?}");
    let after = worker.send(batch(&data, 2000, 2)).await.unwrap();
    assert_eq!(version(&after), "2");

    // A directory that does not load: an error naming it, and version 2 stays.
    let missing = tmp.path().join("missing");
    match switch.swap(&missing).await {
        Err(SwapError::Load { model_dir, .. }) => assert_eq!(model_dir, missing),
        other => panic!("expected a load error, got {other:?}"),
    }
    let o = worker.send(batch(&data, 3000, 1)).await.unwrap();
    assert_eq!(version(&o), "2");

    // An engine restart after the swap reloads version 2 (not the start-up directory).
    faults.panic_next_batches(1);
    let o = worker.send(batch(&data, 4000, 1)).await.unwrap();
    assert!(o.device_failed());
    assert_eq!(faults.restarts(), 1);
    // Two batches at a time, so both threads (the restarted one too) run.
    for i in 0..3 {
        let (a, b) = futures::join!(
            worker.send(batch(&data, 5000 + 2 * i, 1)),
            worker.send(batch(&data, 5001 + 2 * i, 1))
        );
        for o in [a.unwrap(), b.unwrap()] {
            assert!(matches!(o.results[0].1, JobResult::Done { .. }));
            assert_eq!(version(&o), "2");
        }
    }

    // And back to version 1.
    let back = switch.swap(its_testkit::demo_model_dir()).await.unwrap();
    assert_eq!(back.model.version, "1");
    let o = worker.send(batch(&data, 6000, 2)).await.unwrap();
    assert_eq!(version(&o), "1");
}
