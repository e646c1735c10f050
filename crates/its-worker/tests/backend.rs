//! The worker's engine choice at its actor boundary (real ONNX Runtime, the tiny model; the
//! native CUDA engine where a GPU is present): `native` without a usable GPU fails start-up
//! with an error naming the fix; `auto` without one runs ONNX Runtime and says so in its
//! `WorkerInfo`, and with one runs the native engine; either way every detector of the worker
//! (start, engine restart, model swap) comes from the chosen engine.

use its_worker::{
    Backend, EngineChoice, FaultHook, JobResult, Worker, WorkerError, WorkerOptions,
    native_unavailable,
};

mod common;
use common::{batch, jpeg};

fn options(engine: EngineChoice, faults: FaultHook) -> WorkerOptions {
    WorkerOptions {
        engine,
        faults,
        ..WorkerOptions::cpu("cpu-0", its_testkit::demo_model_dir(), 2)
    }
}

fn choice(backend: Backend, gpu_device: u32) -> EngineChoice {
    EngineChoice {
        backend,
        gpu_device,
        batch_sizes: vec![1, 2],
        ..Default::default()
    }
}

fn assert_done(o: &its_worker::BatchOutcome, n: usize) {
    assert_eq!(o.results.len(), n);
    for (_, r) in &o.results {
        assert!(matches!(r, JobResult::Done { .. }), "{r:?}");
    }
}

#[actix_rt::test]
async fn native_without_a_usable_gpu_fails_start_up_naming_the_fix() {
    // Device 63 exists nowhere this runs, with or without a driver.
    for backend in [Backend::Native, Backend::Gpu] {
        match Worker::start(&options(choice(backend, 63), FaultHook::default())) {
            Err(e @ WorkerError::NoGpu { gpu_device: 63, .. }) => {
                let text = e.to_string();
                let needs = format!(
                    "engine.backend = \"{}\" needs a CUDA GPU (device 63)",
                    backend.as_str()
                );
                assert!(text.contains(&needs), "{text}");
                assert!(
                    text.contains("set engine.backend = \"auto\"") && text.contains("\"ort\""),
                    "{text}"
                );
            }
            Err(other) => panic!("expected NoGpu, got {other}"),
            Ok((_, info)) => panic!("started on {info:?}"),
        }
    }

    let Some(why) = native_unavailable(0) else {
        eprintln!("a GPU is usable here: device 0 is checked by the auto test");
        return;
    };
    match Worker::start(&options(choice(Backend::Native, 0), FaultHook::default())) {
        Err(e @ WorkerError::NoGpu { gpu_device: 0, .. }) => {
            let text = e.to_string();
            assert!(text.contains(&why), "the reason ({why}) is in: {text}");
            assert!(text.contains("set engine.backend = \"auto\""), "{text}");
        }
        Err(other) => panic!("expected NoGpu, got {other}"),
        Ok((_, info)) => panic!("started on {info:?}"),
    }
}

#[actix_rt::test]
async fn auto_runs_native_on_a_gpu_and_onnx_runtime_without_one_and_says_which() {
    let faults = FaultHook::default();
    let (worker, info, switch) =
        Worker::start_swappable(&options(choice(Backend::Auto, 0), faults.clone()))
            .expect("cpu worker (run scripts/setup.sh for ONNX Runtime and the demo model)");
    match native_unavailable(0) {
        Some(why) => {
            eprintln!("no usable GPU here ({why}): auto must run ONNX Runtime");
            assert_eq!(info.engine, "ort[cpu]:tiny-yolo");
            assert_eq!(info.device, "cpu");
        }
        None => {
            // The demo model has a yolov8 head, so auto takes the whole GPU frame path.
            assert_eq!(info.engine, "gpu[fp16]:tiny-yolo");
            assert!(info.device.ends_with(" gpu[fp16]"), "{}", info.device);
        }
    }
    let data = jpeg();
    // Both threads, the prebuilt batch sizes and one built on first use.
    let (a, b) = futures::join!(
        worker.send(batch(&data, 0, 1)),
        worker.send(batch(&data, 1, 2))
    );
    assert_done(&a.unwrap(), 1);
    assert_done(&b.unwrap(), 2);
    assert_done(&worker.send(batch(&data, 3, 3)).await.unwrap(), 3);

    // An engine restart rebuilds the detector on the same engine.
    faults.panic_next_batches(1);
    assert!(
        worker
            .send(batch(&data, 10, 1))
            .await
            .unwrap()
            .device_failed()
    );
    assert_eq!(faults.restarts(), 1);
    let (a, b) = futures::join!(
        worker.send(batch(&data, 11, 2)),
        worker.send(batch(&data, 13, 2))
    );
    assert_done(&a.unwrap(), 2);
    assert_done(&b.unwrap(), 2);

    // So does a model swap (here to the same model).
    let swapped = switch.swap(its_testkit::demo_model_dir()).await.unwrap();
    assert_eq!(swapped.model, info.model);
    assert_done(&worker.send(batch(&data, 20, 2)).await.unwrap(), 2);
}

#[actix_rt::test]
async fn ort_stays_onnx_runtime_whatever_the_machine() {
    let (worker, info) =
        Worker::start(&options(choice(Backend::Ort, 0), FaultHook::default())).expect("cpu worker");
    assert_eq!(info.engine, "ort[cpu]:tiny-yolo");
    assert_eq!(info.device, "cpu");
    assert_done(&worker.send(batch(&jpeg(), 0, 2)).await.unwrap(), 2);
}
