//! The GPU worker's stream ([`GpuLane`]): JPEGs in, detections out, checked stage by stage
//! against references computed from what the lane's own buffers hold. GPU machines only; the
//! tests say they were skipped elsewhere (ITS_REQUIRE_GPU=1 turns that into a failure).

use its_engine::ModelManifest;
use its_gpu::engine::tensor::relative_error;
use its_gpu::engine::{ConvMath, CudaEngine, EngineBuildError, EngineOptions, Plan};
use its_gpu::postprocess::reference::postprocess_frame;
use its_gpu::testdata::gpu_or_skip;
use its_gpu::testdata::{encode_jpeg, synthetic_scene};
use its_gpu::{
    FrameGeometry, GpuContext, GpuError, GpuLane, LaneConfig, LetterboxParams, PipelineConfig,
};
use its_model::onnx::ModelProto;
use its_model::synth::{Arch, SynthSpec, write};

fn yolo11n() -> (tempfile::TempDir, ModelProto, ModelManifest) {
    let dir = tempfile::tempdir().unwrap();
    write(
        &SynthSpec {
            arch: Arch::Yolo11n,
            seed: 11,
            imgsz: 640,
            classes: 80,
        },
        dir.path(),
    )
    .unwrap();
    let manifest = ModelManifest::load(dir.path()).unwrap();
    let model = ModelProto::read(&manifest.model_path(dir.path())).unwrap();
    (dir, model, manifest)
}

fn options(math: ConvMath) -> EngineOptions {
    EngineOptions {
        math,
        // The heuristic's choice is the same in every context, so two contexts of one plan
        // compute the same numbers.
        time_algorithms: false,
        ..EngineOptions::default()
    }
}

fn lane_config(math: ConvMath, batches: &[usize]) -> LaneConfig {
    let mut pipeline = PipelineConfig::yolo640(32);
    pipeline.max_width = 3840;
    pipeline.max_height = 2160;
    LaneConfig {
        pipeline,
        engine: options(math),
        batches: batches.to_vec(),
        cache: None,
    }
}

/// A JPEG and its size, or `None` for a frame the lane must refuse.
type Frame = (Vec<u8>, Option<(u32, u32)>);

fn jpeg(w: u32, h: u32, seed: u64) -> Vec<u8> {
    encode_jpeg(&synthetic_scene(w, h, seed), w, h, 85).unwrap()
}

/// Checks one batch: refused frames where expected, detections equal (bit for bit) to the
/// CPU post-processing of the output the engine left in the lane, that output close to a
/// second context's run on the input the letterbox left there.
fn check_batch(
    gpu: &GpuContext,
    lane: &mut GpuLane,
    model: &ModelProto,
    math: ConvMath,
    frames: &[Frame],
) {
    let jpegs: Vec<&[u8]> = frames.iter().map(|(j, _)| j.as_slice()).collect();
    let batch = lane.run(&jpegs).unwrap();
    assert!(batch.profile >= frames.len(), "profile {}", batch.profile);
    assert_eq!(batch.frames.len(), frames.len());
    let (input, output) = lane.last_io(batch.profile).unwrap();
    let cfg = its_gpu::PostprocessConfig::yolo_coco640();
    let per_frame = cfg.per_frame();
    let mut slot = 0;
    for (i, ((_, size), got)) in frames.iter().zip(&batch.frames).enumerate() {
        match (size, got) {
            (None, Err(_)) => {}
            (None, Ok(f)) => panic!("frame {i} should be refused, got {f:?}"),
            (Some(_), Err(e)) => panic!("frame {i} refused: {e}"),
            (Some((w, h)), Ok(f)) => {
                assert_eq!((f.width, f.height), (*w, *h), "frame {i}");
                let p = LetterboxParams::compute(*w, *h, 640, 640);
                let geo = FrameGeometry::from_letterbox(&p, *w, *h);
                let want = postprocess_frame(
                    &output[slot * per_frame..(slot + 1) * per_frame],
                    &cfg,
                    &geo,
                );
                assert_eq!(f.detections, want, "frame {i} (slot {slot})");
                slot += 1;
            }
        }
    }
    assert!(slot > 0, "no frame was decoded");
    // The engine's output against a second context of the same plan on the same input.
    let plan = Plan::build(model, [batch.profile, 3, 640, 640]).unwrap();
    let mut other = CudaEngine::build(gpu, plan, options(math)).unwrap();
    let again = other.run(&input).unwrap();
    let used = slot * per_frame;
    let err = relative_error(&output[..used], &again[0][..used]);
    assert!(
        err < 1e-3,
        "engine output vs a second context: relative error {err}"
    );
    let t = batch.timings;
    assert!(
        t.decode_ms > 0.0 && t.infer_ms > 0.0 && t.postprocess_ms > 0.0,
        "{t:?}"
    );
}

#[test]
fn lane_runs_mixed_batches_end_to_end() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (_dir, model, _) = yolo11n();
    for math in [ConvMath::Fp16, ConvMath::Fp32] {
        let mut lane = GpuLane::new(&gpu, model.clone(), lane_config(math, &[1, 8, 32])).unwrap();
        assert_eq!(lane.profiles(), vec![1, 8, 32]);
        // Mixed sizes, a portrait frame, odd sizes, 4K and a corrupt frame in the middle.
        let sizes = [
            (1280, 720),
            (1920, 1080),
            (720, 1280),
            (333, 217),
            (3840, 2160),
        ];
        let mut frames: Vec<Frame> = sizes
            .iter()
            .enumerate()
            .map(|(k, &(w, h))| (jpeg(w, h, k as u64), Some((w, h))))
            .collect();
        frames.insert(2, (b"\xff\xd8 not a jpeg at all".to_vec(), None));
        check_batch(&gpu, &mut lane, &model, math, &frames);
        // Batch 1 and a full batch of 32.
        check_batch(&gpu, &mut lane, &model, math, &frames[..1]);
        let full: Vec<_> = (0..32)
            .map(|k| (jpeg(1280, 720, 100 + k), Some((1280, 720))))
            .collect();
        check_batch(&gpu, &mut lane, &model, math, &full);
        // Steady state: the pools stop missing after the first batches.
        let (before, _) = lane.pool_stats();
        check_batch(&gpu, &mut lane, &model, math, &full);
        let (after, _) = lane.pool_stats();
        assert_eq!(
            after.misses, before.misses,
            "a steady-state batch allocated"
        );
    }
}

#[test]
fn a_model_without_the_yolo_head_is_refused_with_the_reason() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (_dir, model, _) = yolo11n();
    let mut cfg = lane_config(ConvMath::Fp16, &[1]);
    cfg.pipeline.post.num_classes = 3;
    let err = GpuLane::new(&gpu, model, cfg).unwrap_err();
    assert!(
        matches!(&err, EngineBuildError::Shape(m) if m.contains("[batch, 4 + 3 classes")),
        "{err}"
    );
}

/// A real CUDA error: a batch profile far larger than the device's memory fails to build
/// with an error (not a panic), and the device keeps serving a normal lane afterwards.
#[test]
fn an_out_of_memory_profile_fails_cleanly_and_the_gpu_keeps_working() {
    let Some(gpu) = gpu_or_skip() else { return };
    let (_dir, model, _) = yolo11n();
    let plan = Plan::build(&model, [20_000, 3, 640, 640]).unwrap();
    let err = CudaEngine::build(&gpu, plan, options(ConvMath::Fp16)).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, EngineBuildError::Gpu(GpuError::Driver(_))) && msg.contains("MEMORY"),
        "{msg}"
    );
    let mut lane = GpuLane::new(&gpu, model.clone(), lane_config(ConvMath::Fp16, &[4])).unwrap();
    let frames: Vec<_> = (0..4)
        .map(|k| (jpeg(640, 480, k), Some((640, 480))))
        .collect();
    check_batch(&gpu, &mut lane, &model, ConvMath::Fp16, &frames);
}
