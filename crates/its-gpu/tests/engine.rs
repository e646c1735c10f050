//! The native engine's plan against ONNX Runtime (CPU reference executor, every machine), and
//! the CUDA executor against the CPU reference (GPU machines; skipped with a message elsewhere).

use std::path::{Path, PathBuf};

use its_engine::{Engine, ModelManifest, OrtEngine, OrtOptions};
use its_gpu::engine::tensor::{relative_error, sample_input};
use its_gpu::engine::{ConvMath, CudaEngine, EngineBuildError, EngineOptions, Plan, cpu};
use its_gpu::{GpuContext, gpu_required};
use its_model::onnx::ModelProto;
use its_model::synth::{Arch, SynthSpec, write};

const SKIP: &str = "skipped: no CUDA device (set ITS_REQUIRE_GPU=1 to fail instead)";

fn gpu_or_skip() -> Option<GpuContext> {
    match GpuContext::new(0) {
        Ok(gpu) => Some(gpu),
        Err(e) if gpu_required() => panic!("ITS_REQUIRE_GPU=1 but no usable GPU: {e}"),
        Err(e) => {
            eprintln!("{SKIP} ({e})");
            None
        }
    }
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn synth(arch: Arch, imgsz: usize, classes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(
        &SynthSpec {
            arch,
            seed: 7,
            imgsz,
            classes,
        },
        dir.path(),
    )
    .unwrap();
    dir
}

fn load(dir: &Path) -> (ModelProto, ModelManifest) {
    let manifest = ModelManifest::load(dir).unwrap();
    let model = ModelProto::read(&manifest.model_path(dir)).unwrap();
    (model, manifest)
}

/// Runs the plan on the CPU and ONNX Runtime on the same batch; returns the relative error.
fn plan_vs_ort(dir: &Path, batch: usize) -> f32 {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let x = sample_input(batch * 3 * h * w, 1);
    let ours = cpu::run(&plan, &x).unwrap();
    let mut ort =
        OrtEngine::load(&manifest.model_path(dir), &manifest, &OrtOptions::default()).unwrap();
    let theirs = ort.run(&x, batch).unwrap();
    assert_eq!(plan.shape(plan.outputs[0].1), theirs.shape.as_slice());
    relative_error(&ours[0], &theirs.data)
}

#[test]
fn plan_matches_onnx_runtime_on_the_generated_tiny_yolo() {
    let err = plan_vs_ort(&workspace().join("models/generated/tiny-yolo"), 2);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_matches_onnx_runtime_on_synth_yolo11n() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    let err = plan_vs_ort(dir.path(), 2);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_matches_onnx_runtime_on_synth_yolov8n() {
    let dir = synth(Arch::Yolov8n, 128, 3);
    let err = plan_vs_ort(dir.path(), 1);
    assert!(err < 1e-4, "relative error {err}");
}

#[test]
fn plan_folds_shape_arithmetic_and_fuses_activations() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    let (model, _) = load(dir.path());
    let plan = Plan::build(&model, [1, 3, 160, 160]).unwrap();
    let kinds: Vec<&str> = plan.ops.iter().map(|o| o.kind()).collect();
    let count = |k: &str| kinds.iter().filter(|&&x| x == k).count();
    let graph_convs = model
        .graph()
        .node
        .iter()
        .filter(|n| n.op_type == "Conv")
        .count();
    assert_eq!(count("conv"), graph_convs);
    // Every SiLU went into its convolution: no Sigmoid·Mul pair survives as separate ops
    // except the head's class sigmoid.
    let standalone_act = count("act");
    assert!(
        standalone_act <= 2,
        "{standalone_act} activations left: {kinds:?}"
    );
    // Each fused SiLU removed a Sigmoid and a Mul node: the remaining element-wise binary
    // ops are exactly the graph's others.
    let ops = model.op_counts();
    let n = |k: &str| ops.get(k).copied().unwrap_or(0);
    let fused = n("Sigmoid") - standalone_act;
    assert_eq!(
        count("binary"),
        n("Add") + n("Sub") + n("Mul") + n("Div") - fused
    );
}

#[test]
fn an_unsupported_operator_is_named_with_its_node() {
    let dir = synth(Arch::Yolov8n, 64, 1);
    let (mut model, _) = load(dir.path());
    let graph = model.graph.as_mut().unwrap();
    let node = graph
        .node
        .iter_mut()
        .find(|n| n.op_type == "Sigmoid")
        .unwrap();
    node.op_type = "Erf".into();
    let name = node.name.clone();
    let err = Plan::build(&model, [1, 3, 64, 64]).unwrap_err();
    match &err {
        EngineBuildError::Unsupported { op, node, .. } => {
            assert_eq!(op, "Erf");
            assert_eq!(node, &name);
        }
        other => panic!("expected Unsupported, got {other}"),
    }
    assert!(err.to_string().contains("Erf"));
}

#[test]
fn a_profile_that_contradicts_a_fixed_input_dimension_is_refused() {
    let (model, _) = load(&workspace().join("models/generated/tiny-yolo"));
    let err = Plan::build(&model, [1, 4, 320, 320]).unwrap_err();
    assert!(err.to_string().contains("dimension 1"), "{err}");
}

fn gpu_vs_cpu(gpu: &GpuContext, dir: &Path, batch: usize) -> f32 {
    gpu_vs_cpu_with(gpu, dir, batch, EngineOptions::default())
}

fn gpu_vs_cpu_with(gpu: &GpuContext, dir: &Path, batch: usize, opts: EngineOptions) -> f32 {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let x = sample_input(batch * 3 * h * w, 3);
    let reference = cpu::run(&plan, &x).unwrap();
    let mut engine = CudaEngine::build(gpu, plan, opts).unwrap();
    let ours = engine.run(&x).unwrap();
    // A second run replays the graph on the same buffers: same answer.
    let again = engine.run(&x).unwrap();
    assert_eq!(ours, again, "replay differs from the first run");
    relative_error(&ours[0], &reference[0])
}

#[test]
fn gpu_engine_matches_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    for (arch, size, classes, batch) in [
        (Arch::Yolo11n, 160, 80, 1),
        (Arch::Yolo11n, 320, 80, 3),
        (Arch::Yolov8n, 128, 5, 2),
    ] {
        let dir = synth(arch, size, classes);
        let err = gpu_vs_cpu(&gpu, dir.path(), batch);
        eprintln!("{arch:?} {size} batch {batch}: relative error {err:.2e}");
        assert!(
            err < 1e-3,
            "{arch:?} {size} batch {batch}: relative error {err}"
        );
    }
    if workspace().join(".cache/yolov3-tiny").is_dir() {
        let dir = yolov3_tiny();
        let err = gpu_vs_cpu(&gpu, dir.path(), 2);
        assert!(err < 1e-3, "yolov3-tiny: relative error {err}");
    }
    let tiny = workspace().join("models/generated/tiny-yolo");
    if tiny.is_dir() {
        let err = gpu_vs_cpu(&gpu, &tiny, 4);
        assert!(err < 1e-3, "tiny-yolo: relative error {err}");
    }
}

#[test]
fn gpu_fp16_engine_tracks_the_cpu_reference() {
    let Some(gpu) = gpu_or_skip() else { return };
    let opts = EngineOptions {
        math: ConvMath::Fp16,
        ..EngineOptions::default()
    };
    let dir = synth(Arch::Yolo11n, 320, 80);
    let err = gpu_vs_cpu_with(&gpu, dir.path(), 2, opts);
    eprintln!("Yolo11n 320 batch 2 FP16: relative error {err:.2e}");
    // FP16 storage keeps ~3 significant digits per layer; 88 layers of random weights.
    assert!(err < 5e-2, "FP16 relative error {err}");
}

/// The COCO-trained YOLOv3-tiny that set-up fetches, imported by `its model import darknet`.
fn yolov3_tiny() -> tempfile::TempDir {
    let src = workspace().join(".cache/yolov3-tiny");
    let dir = tempfile::tempdir().unwrap();
    its_model::darknet::import(
        &src.join("yolov3-tiny.cfg"),
        &src.join("yolov3-tiny.weights"),
        &src.join("coco.names"),
        dir.path(),
    )
    .unwrap_or_else(|e| panic!("import {} (run scripts/setup.sh): {e}", src.display()));
    dir
}

#[test]
fn plan_matches_onnx_runtime_on_the_imported_yolov3_tiny() {
    let dir = yolov3_tiny();
    let err = plan_vs_ort(dir.path(), 2);
    assert!(err < 1e-4, "relative error {err}");
}

/// The channels-last rewrite gives the same outputs on the CPU reference, and puts the
/// convolutions in NHWC.
fn nhwc_rewrite_is_exact(dir: &Path, batch: usize) {
    let (model, manifest) = load(dir);
    let spec = &manifest.input;
    let (h, w) = (spec.height as usize, spec.width as usize);
    let plan = Plan::build(&model, [batch, 3, h, w]).unwrap();
    let rewritten = its_gpu::engine::layout::to_nhwc(&plan);
    let convs = |p: &Plan| {
        p.ops
            .iter()
            .filter(|o| matches!(o, its_gpu::engine::Op::Conv(_)))
            .count()
    };
    let nhwc_convs = rewritten
        .ops
        .iter()
        .filter(|o| matches!(o, its_gpu::engine::Op::Conv(c) if c.nhwc))
        .count();
    assert_eq!(convs(&rewritten), convs(&plan));
    assert!(
        nhwc_convs * 10 >= convs(&plan) * 8,
        "only {nhwc_convs} of {} convolutions channels-last",
        convs(&plan)
    );
    let x = sample_input(batch * 3 * h * w, 5);
    let a = cpu::run(&plan, &x).unwrap();
    let b = cpu::run(&rewritten, &x).unwrap();
    let err = relative_error(&b[0], &a[0]);
    assert!(err < 1e-6, "{}: relative error {err}", dir.display());
}

#[test]
fn channels_last_rewrite_keeps_the_outputs() {
    nhwc_rewrite_is_exact(synth(Arch::Yolo11n, 160, 80).path(), 2);
    nhwc_rewrite_is_exact(synth(Arch::Yolov8n, 128, 3).path(), 1);
    nhwc_rewrite_is_exact(yolov3_tiny().path(), 1);
}
