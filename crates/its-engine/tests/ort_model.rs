//! The generated tiny YOLO model (`tools/gen_tiny_yolo.py`) through ONNX Runtime.
//!
//! The model must exist: a missing model fails these tests (run
//! `python3 tools/gen_tiny_yolo.py`). ONNX Runtime is found by `find_onnxruntime`
//! (`ORT_DYLIB_PATH`, or the workspace `.venv` that scripts/setup.sh creates).

use std::path::{Path, PathBuf};

use its_engine::manifest::OutputFormat;
use its_engine::ort_engine::ort_environment;
use its_engine::{
    Detector, Engine, EngineError, ExecutionProviderKind, ModelManifest, OrtEngine, OrtOptions,
    RgbImage,
};

const ANCHORS: usize = 400;
const ROWS: usize = 84;

fn model_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/generated/tiny-yolo");
    assert!(
        dir.join("model.onnx").is_file() && dir.join("model.toml").is_file(),
        "generated test model missing at {}: run `python3 tools/gen_tiny_yolo.py` from the workspace root",
        dir.display()
    );
    dir
}

fn load_engine() -> (OrtEngine, ModelManifest) {
    let dir = model_dir();
    let manifest = ModelManifest::load(&dir).unwrap();
    let engine = OrtEngine::load(
        &manifest.model_path(&dir),
        &manifest,
        &OrtOptions::default(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    (engine, manifest)
}

/// A 1280x720 frame with a gradient and two solid rectangles (something for the
/// untrained network to respond to; a flat frame gives no detections).
fn street_frame() -> RgbImage {
    let (w, h) = (1280u32, 720u32);
    let mut data = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            let px = if (200..600).contains(&x) && (225..450).contains(&y) {
                [230, 25, 25]
            } else if (700..1200).contains(&x) && (506..675).contains(&y) {
                [25, 50, 230]
            } else {
                let gx = (x * 255 / w) as u8;
                let gy = (y * 255 / h) as u8;
                [gx, gy, ((u32::from(gx) + u32::from(gy)) / 2) as u8]
            };
            data.extend_from_slice(&px);
        }
    }
    RgbImage {
        width: w,
        height: h,
        data,
    }
}

#[test]
fn model_loads_and_input_matches_manifest() {
    let (engine, manifest) = load_engine();
    assert_eq!(manifest.name, "tiny-yolo");
    assert_eq!(manifest.output.format, OutputFormat::Yolov8);
    assert_eq!(manifest.classes.len(), 80);
    assert_eq!(manifest.classes[0], "person");
    assert_eq!(manifest.classes[2], "car");
    assert_eq!(manifest.classes[79], "toothbrush");
    let spec = engine.input();
    assert_eq!(spec, manifest.input);
    assert_eq!((spec.width, spec.height), (640, 640));
    assert_eq!(engine.providers(), &[ExecutionProviderKind::Cpu]);
    assert_eq!(engine.name(), "ort[cpu]:tiny-yolo");
}

#[test]
fn output_shape_for_batch_1_and_3() {
    let (mut engine, manifest) = load_engine();
    let per_image = manifest.input.image_len();
    for batch in [1, 3] {
        let input = vec![0.5f32; batch * per_image];
        let out = engine.run(&input, batch).unwrap();
        assert_eq!(out.shape, vec![batch, ROWS, ANCHORS]);
        assert_eq!(out.data.len(), batch * ROWS * ANCHORS);
        // The generator's box decode: cx = (gx + s) * 32, w = s * 128 with s in (0, 1),
        // gx = anchor % 20, so cx lies in [32 gx, 32 (gx + 1)].
        let img0 = &out.data[..ROWS * ANCHORS];
        for a in 0..ANCHORS {
            let (gx, gy) = ((a % 20) as f32, (a / 20) as f32);
            let (cx, cy, w, h) = (
                img0[a],
                img0[ANCHORS + a],
                img0[2 * ANCHORS + a],
                img0[3 * ANCHORS + a],
            );
            assert!(
                (32.0 * gx..=32.0 * (gx + 1.0)).contains(&cx),
                "anchor {a}: cx {cx}"
            );
            assert!(
                (32.0 * gy..=32.0 * (gy + 1.0)).contains(&cy),
                "anchor {a}: cy {cy}"
            );
            assert!(
                w > 0.0 && w <= 128.0 && h > 0.0 && h <= 128.0,
                "anchor {a}: {w}x{h}"
            );
        }
        assert!(img0[4 * ANCHORS..].iter().all(|s| (0.0..=1.0).contains(s)));
    }
}

#[test]
fn wrong_input_length_is_an_error() {
    let (mut engine, manifest) = load_engine();
    let input = vec![0.0f32; manifest.input.image_len() - 1];
    assert!(matches!(
        engine.run(&input, 1),
        Err(EngineError::InputSize { batch: 1, .. })
    ));
    assert!(matches!(
        engine.run(&[], 0),
        Err(EngineError::InputSize { batch: 0, .. })
    ));
}

#[test]
fn identical_images_in_a_batch_give_identical_detections() {
    let mut det = Detector::load(&model_dir(), &OrtOptions::default()).unwrap();
    let frame = street_frame();
    let single = det.detect(std::slice::from_ref(&frame)).unwrap();
    let batch = det.detect(&[frame.clone(), frame.clone(), frame]).unwrap();
    assert_eq!(batch.len(), 3);
    let first = &single[0].detections;
    assert!(
        !first.is_empty(),
        "the structured frame should produce detections"
    );
    assert!(first.len() <= 300);
    for out in &batch {
        assert_eq!(out.detections.len(), first.len());
        for (a, b) in out.detections.iter().zip(first) {
            assert_eq!(a.class_id, b.class_id);
            for (x, y) in [
                (a.score, b.score),
                (a.x1, b.x1),
                (a.y1, b.y1),
                (a.x2, b.x2),
                (a.y2, b.y2),
            ] {
                assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
            }
        }
        assert!(out.infer_ns > 0 && out.preprocess_ns > 0);
    }
    // Detections are in the 1280x720 frame, scores above the threshold, sorted.
    for d in first {
        assert!(d.class_id < 80);
        assert!(d.score > 0.25 && d.score <= 1.0);
        assert!(0.0 <= d.x1 && d.x1 <= d.x2 && d.x2 <= 1280.0, "{d:?}");
        assert!(0.0 <= d.y1 && d.y1 <= d.y2 && d.y2 <= 720.0, "{d:?}");
    }
    assert!(first.windows(2).all(|w| w[0].score >= w[1].score));
}

#[test]
fn flat_grey_frame_gives_no_detections() {
    // The generator is tuned so that a flat frame scores below 0.25 everywhere.
    let mut det = Detector::load(&model_dir(), &OrtOptions::default()).unwrap();
    let out = det
        .detect(&[RgbImage::filled(640, 480, [114, 114, 114])])
        .unwrap();
    assert!(out[0].detections.is_empty(), "{:?}", out[0].detections);
}

/// A copy of the model directory whose manifest has `edit` applied.
fn edited_model(edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let src = model_dir();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("model.onnx"), dir.path().join("model.onnx")).unwrap();
    let text = std::fs::read_to_string(src.join("model.toml")).unwrap();
    std::fs::write(dir.path().join("model.toml"), edit(&text)).unwrap();
    dir
}

#[test]
fn wrong_class_count_is_a_validation_error() {
    let dir = edited_model(|t| t.replace("    \"toothbrush\",\n", ""));
    assert_eq!(ModelManifest::load(dir.path()).unwrap().classes.len(), 79);
    match Detector::load(dir.path(), &OrtOptions::default()) {
        Err(EngineError::ModelMismatch { detail, .. }) => {
            assert!(detail.contains("84 values per anchor"), "{detail}");
            assert!(detail.contains("4 + 79 classes = 83"), "{detail}");
        }
        other => panic!("expected a model mismatch, got {other:?}"),
    }
}

#[test]
fn wrong_input_size_is_a_validation_error() {
    let dir = edited_model(|t| t.replace("width = 640", "width = 320"));
    match Detector::load(dir.path(), &OrtOptions::default()) {
        Err(EngineError::ModelMismatch { detail, .. }) => {
            assert!(
                detail.contains("640x640") && detail.contains("320x640"),
                "{detail}"
            );
        }
        other => panic!("expected a model mismatch, got {other:?}"),
    }
}

#[test]
fn yolov5_format_on_a_yolov8_model_is_a_validation_error() {
    let dir = edited_model(|t| t.replace("format = \"yolov8\"", "format = \"yolov5\""));
    assert!(matches!(
        Detector::load(dir.path(), &OrtOptions::default()),
        Err(EngineError::ModelMismatch { .. })
    ));
}

#[test]
fn reinitialising_with_another_library_is_an_error() {
    let _ = load_engine();
    let other = tempfile::NamedTempFile::new().unwrap();
    match ort_environment(Some(other.path())) {
        Err(EngineError::OrtAlreadyInitialised { requested, .. }) => {
            assert_eq!(requested, other.path())
        }
        other => panic!(
            "expected already-initialised, got {:?}",
            other.map(|(p, _)| p)
        ),
    }
    // Asking again for the library in use is fine.
    let (loaded, _) = ort_environment(None).unwrap();
    assert!(ort_environment(Some(&loaded)).is_ok());
}

#[test]
fn gpu_provider_fallback_is_consistent() {
    // Whether TensorRT is usable depends on the machine (it is not on CPU-only
    // onnxruntime, nor without the TensorRT libraries). Without fallback the load either
    // registers it or fails naming it; with fallback it always loads, and lists it only
    // when the strict load succeeded.
    let dir = model_dir();
    let manifest = ModelManifest::load(&dir).unwrap();
    let path = manifest.model_path(&dir);
    let strict = OrtOptions {
        execution_providers: vec![ExecutionProviderKind::Tensorrt],
        ..OrtOptions::default()
    };
    let lenient = OrtOptions {
        allow_fallback: true,
        ..strict.clone()
    };
    let strict_result = OrtEngine::load(&path, &manifest, &strict);
    let lenient_engine = OrtEngine::load(&path, &manifest, &lenient).unwrap();
    assert_eq!(
        lenient_engine.providers().last(),
        Some(&ExecutionProviderKind::Cpu)
    );
    match strict_result {
        Ok(engine) => {
            assert_eq!(
                engine.providers(),
                &[ExecutionProviderKind::Tensorrt, ExecutionProviderKind::Cpu]
            );
            assert_eq!(lenient_engine.providers(), engine.providers());
        }
        Err(EngineError::ExecutionProviderUnavailable { provider, .. }) => {
            assert_eq!(provider, "tensorrt");
            assert_eq!(lenient_engine.providers(), &[ExecutionProviderKind::Cpu]);
        }
        Err(other) => panic!("unexpected {other}"),
    }
}
