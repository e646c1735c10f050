//! Liveness-planned activation memory on real plans (CPU only): no two storages live at the
//! same time share bytes (checked from the op list, independently of the planner), the arena
//! is far smaller than one buffer per storage, and the CPU reference run through the arena
//! layout gives exactly the outputs of the run with one buffer per storage.

use std::path::{Path, PathBuf};

use its_engine::ModelManifest;
use its_gpu::engine::memory::{ALIGN, plan_memory, verify};
use its_gpu::engine::tensor::sample_input;
use its_gpu::engine::{Plan, cpu, layout, slices};
use its_model::onnx::ModelProto;
use its_model::synth::{Arch, SynthSpec, write};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn synth(arch: Arch, imgsz: usize, classes: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let spec = SynthSpec {
        arch,
        seed: 7,
        imgsz,
        classes,
    };
    write(&spec, dir.path()).unwrap();
    dir
}

fn plan_of(dir: &Path, batch: usize) -> Plan {
    let manifest = ModelManifest::load(dir).unwrap();
    let model = ModelProto::read(&manifest.model_path(dir)).unwrap();
    let (h, w) = (
        manifest.input.height as usize,
        manifest.input.width as usize,
    );
    Plan::build(&model, [batch, 3, h, w]).unwrap()
}

/// Plans `plan` for `elem` bytes per element, checks it (the arena at least `ratio` times
/// smaller than one buffer per storage), runs the CPU reference both ways.
fn check(what: &str, plan: &Plan, elem: usize, ratio: usize) {
    let mem = plan_memory(plan, elem);
    verify(plan, &mem).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(mem.offsets.iter().all(|o| o.is_multiple_of(ALIGN)));
    assert!(
        mem.arena_bytes * ratio < mem.unplanned_bytes,
        "{what}: arena {} of {} bytes",
        mem.arena_bytes,
        mem.unplanned_bytes
    );
    let x = sample_input(plan.tensors[plan.input].numel(), 11);
    let separate = cpu::run(plan, &x).unwrap();
    let arena = cpu::run_in_arena(plan, &x, &mem).unwrap();
    assert_eq!(separate.len(), arena.len());
    for (a, b) in separate.iter().zip(&arena) {
        assert!(
            a.iter().all(|v| v.is_finite()),
            "{what}: reference not finite"
        );
        assert_eq!(a, b, "{what}: the arena run differs");
    }
    eprintln!(
        "{what}: arena {:.2} MiB, one buffer per storage {:.2} MiB ({:.1}x)",
        mem.arena_bytes as f64 / 1048576.0,
        mem.unplanned_bytes as f64 / 1048576.0,
        mem.unplanned_bytes as f64 / mem.arena_bytes as f64
    );
}

#[test]
fn synth_yolo11n_plans_into_a_small_arena_with_the_same_outputs() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    let plan = plan_of(dir.path(), 2);
    check("yolo11n 160 b2 fp32", &plan, 4, 8);
    check("yolo11n 160 b2 nhwc fp16", &layout::to_nhwc(&plan), 2, 8);
}

#[test]
fn synth_yolov8n_plans_into_a_small_arena_with_the_same_outputs() {
    let dir = synth(Arch::Yolov8n, 128, 3);
    let plan = plan_of(dir.path(), 1);
    check("yolov8n 128 b1 fp32", &plan, 4, 8);
    check("yolov8n 128 b1 nhwc fp16", &layout::to_nhwc(&plan), 2, 8);
}

/// The channels-last plan with concatenation inputs written in place: some inputs are
/// placed, concatenations go, the arena check above holds, and the outputs are exactly the
/// plain channels-last plan's.
fn slices_keep_the_outputs(what: &str, plan: &Plan, ratio: usize, has_narrows: bool) -> usize {
    let nhwc = layout::to_nhwc(plan);
    let mut sliced = nhwc.clone();
    let placed = slices::place_concat_inputs(&mut sliced, &[]);
    let viewed = slices::view_narrows(&mut sliced, &[]);
    let count = |p: &Plan, kind: &str| p.ops.iter().filter(|o| o.kind() == kind).count();
    let concats = |p: &Plan| count(p, "concat");
    let narrows = |p: &Plan| count(p, "narrow");
    assert_eq!(viewed > 0, has_narrows, "{what}: {viewed} narrows viewed");
    assert_eq!(narrows(&sliced) + viewed, narrows(&nhwc));
    assert!(placed > 0, "{what}: nothing placed");
    assert!(
        concats(&sliced) < concats(&nhwc),
        "{what}: {} concatenations before, {} after",
        concats(&nhwc),
        concats(&sliced)
    );
    assert!(sliced.tensors.iter().any(|t| t.view.is_some()));
    assert_eq!(slices::check_views(&sliced, &[]), Ok(()), "{what}");
    check(what, &sliced, 2, ratio);
    let x = sample_input(plan.tensors[plan.input].numel(), 11);
    assert_eq!(
        cpu::run(&nhwc, &x).unwrap(),
        cpu::run(&sliced, &x).unwrap(),
        "{what}: slices changed the outputs"
    );
    eprintln!(
        "{what}: {placed} inputs in place, concatenations {} -> {}, narrows {} -> {}",
        concats(&nhwc),
        concats(&sliced),
        narrows(&nhwc),
        narrows(&sliced)
    );
    placed
}

#[test]
fn concatenation_slices_keep_the_outputs_of_synth_yolo11n_and_yolov8n() {
    let dir = synth(Arch::Yolo11n, 160, 80);
    slices_keep_the_outputs("yolo11n 160 b2 slices", &plan_of(dir.path(), 2), 8, true);
    let dir = synth(Arch::Yolov8n, 128, 3);
    slices_keep_the_outputs("yolov8n 128 b1 slices", &plan_of(dir.path(), 1), 8, true);
}

#[test]
fn generated_tiny_yolo_plans_into_a_small_arena_with_the_same_outputs() {
    let dir = workspace().join("models/generated/tiny-yolo");
    let plan = plan_of(&dir, 2);
    // Eight convolutions: little to reuse.
    check("tiny-yolo b2", &plan, 4, 2);
}

#[test]
fn imported_yolov3_tiny_plans_into_a_small_arena_with_the_same_outputs() {
    let src = workspace().join(".cache/yolov3-tiny");
    if !src.is_dir() {
        eprintln!("skipped: {} missing (run scripts/setup.sh)", src.display());
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    its_model::darknet::import(
        &src.join("yolov3-tiny.cfg"),
        &src.join("yolov3-tiny.weights"),
        &src.join("coco.names"),
        dir.path(),
    )
    .unwrap();
    let plan = plan_of(dir.path(), 1);
    slices_keep_the_outputs("yolov3-tiny 416 b1 slices", &plan, 3, false);
    check("yolov3-tiny 416 b1 fp32", &plan, 4, 3);
    check(
        "yolov3-tiny 416 b1 nhwc fp16",
        &layout::to_nhwc(&plan),
        2,
        3,
    );
}

#[test]
fn the_planned_arena_of_yolo11n_640_is_a_fraction_of_one_buffer_per_storage() {
    // The shared YOLO11n graph at 640, batch 1, FP16 channels-last: plan only (no run).
    let path = workspace().join("../shared/models/yolo11n-random.onnx");
    let model = if path.is_file() {
        ModelProto::read(&path).unwrap()
    } else {
        let dir = synth(Arch::Yolo11n, 640, 80);
        let manifest = ModelManifest::load(dir.path()).unwrap();
        ModelProto::read(&manifest.model_path(dir.path())).unwrap()
    };
    let plan = layout::to_nhwc(&Plan::build(&model, [1, 3, 640, 640]).unwrap());
    let mem = plan_memory(&plan, 2);
    verify(&plan, &mem).unwrap();
    eprintln!(
        "yolo11n 640 b1 fp16 nhwc: arena {:.1} MiB, unplanned {:.1} MiB",
        mem.arena_bytes as f64 / 1048576.0,
        mem.unplanned_bytes as f64 / 1048576.0
    );
    assert!(mem.arena_bytes * 8 < mem.unplanned_bytes);
}
