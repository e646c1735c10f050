//! `its_model::synth`: the published parameter counts and output shapes, and the graphs run
//! in ONNX Runtime.

use its_engine::{Engine, ModelManifest, OrtEngine, OrtOptions};
use its_model::synth::{Arch, SynthSpec, anchors, build, write};

fn spec(arch: Arch, imgsz: usize, classes: usize) -> SynthSpec {
    SynthSpec {
        arch,
        seed: 1,
        imgsz,
        classes,
    }
}

#[test]
fn parameter_counts_match_the_published_models() {
    // Published: YOLO11n 2.62 M, YOLOv8n 3.15 M parameters at 80 classes; exactly the counts
    // Ultralytics reports for the fused models (batch norm folded into conv biases, the
    // DFL's 16 fixed bins included).
    let p11 = build(&spec(Arch::Yolo11n, 640, 80))
        .unwrap()
        .parameter_count();
    let p8 = build(&spec(Arch::Yolov8n, 640, 80))
        .unwrap()
        .parameter_count();
    eprintln!("yolo11n {p11}, yolov8n {p8}");
    assert_eq!(p11, 2_616_248, "yolo11n");
    assert_eq!(p8, 3_151_904, "yolov8n");
    // Weights do not depend on the input size.
    assert_eq!(
        build(&spec(Arch::Yolo11n, 320, 80))
            .unwrap()
            .parameter_count(),
        p11
    );
}

#[test]
fn same_seed_same_bytes_other_seed_other_weights() {
    let a = build(&spec(Arch::Yolov8n, 320, 3)).unwrap().to_bytes();
    let b = build(&spec(Arch::Yolov8n, 320, 3)).unwrap().to_bytes();
    assert_eq!(a, b);
    let mut other = spec(Arch::Yolov8n, 320, 3);
    other.seed = 2;
    assert_ne!(build(&other).unwrap().to_bytes(), a);
}

#[test]
fn bad_requests_are_errors() {
    assert!(build(&spec(Arch::Yolo11n, 100, 80)).is_err());
    assert!(build(&spec(Arch::Yolo11n, 640, 0)).is_err());
    assert!("yolo12n".parse::<Arch>().is_err());
}

#[test]
fn yolo11n_runs_with_the_export_output_shape() {
    let dir = tempfile::tempdir().unwrap();
    let report = write(&spec(Arch::Yolo11n, 640, 80), dir.path()).unwrap();
    assert_eq!(report.output, (84, 8400));
    let manifest = ModelManifest::load(dir.path()).unwrap();
    assert_eq!(manifest.classes[2], "car");
    let mut engine = OrtEngine::load(
        &manifest.model_path(dir.path()),
        &manifest,
        &OrtOptions::default(),
    )
    .unwrap();
    let input = vec![0.5f32; 3 * 640 * 640];
    let raw = engine.run(&input, 1).unwrap();
    assert_eq!(raw.shape, [1, 84, 8400]);
    assert!(raw.data.iter().all(|v| v.is_finite()));
    // Box centres lie within the grid's reach, scores are probabilities.
    let row = |r: usize| &raw.data[r * 8400..(r + 1) * 8400];
    assert!(row(0).iter().all(|&x| (-500.0..1200.0).contains(&x)));
    assert!(row(2).iter().all(|&w| w >= 0.0));
    assert!((4..84).all(|r| row(r).iter().all(|&p| (0.0..=1.0).contains(&p))));
}

#[test]
fn yolov8n_runs_with_dynamic_batch_at_other_sizes() {
    let dir = tempfile::tempdir().unwrap();
    write(&spec(Arch::Yolov8n, 256, 5), dir.path()).unwrap();
    let manifest = ModelManifest::load(dir.path()).unwrap();
    assert_eq!(
        manifest.classes,
        ["class0", "class1", "class2", "class3", "class4"]
    );
    let mut engine = OrtEngine::load(
        &manifest.model_path(dir.path()),
        &manifest,
        &OrtOptions::default(),
    )
    .unwrap();
    let input: Vec<f32> = (0..2 * 3 * 256 * 256)
        .map(|i| (i % 251) as f32 / 251.0)
        .collect();
    let raw = engine.run(&input, 2).unwrap();
    assert_eq!(raw.shape, [2, 9, anchors(256)]);
    assert_eq!(anchors(256), 32 * 32 + 16 * 16 + 8 * 8);
}
