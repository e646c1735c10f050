//! `its model import darknet`, `its model synth` and `its detect --annotate` as a user runs
//! them. The import test needs the YOLOv3-tiny files and photos scripts/setup.sh fetches into
//! .cache/; it skips, saying so, only when they are missing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    its_testkit::workspace_root()
}

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("its-model-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn its(cwd: &Path, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_its"));
    c.current_dir(cwd).args(args);
    // The scratch directory has no .venv above it: point the binary at the library this
    // test process finds from the workspace.
    let ort = its_engine::find_onnxruntime(None).expect("onnxruntime: run scripts/setup.sh");
    c.env(its_engine::ort_engine::ORT_DYLIB_ENV, ort);
    for (k, _) in std::env::vars() {
        if k.starts_with("ITS__") {
            c.env_remove(k);
        }
    }
    let out = c.output().expect("run its");
    assert!(
        out.status.success(),
        "its {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn import_darknet_then_detect_and_annotate_a_photo() {
    let cache = root().join(".cache");
    let (cfg, weights, names) = (
        cache.join("yolov3-tiny/yolov3-tiny.cfg"),
        cache.join("yolov3-tiny/yolov3-tiny.weights"),
        cache.join("yolov3-tiny/coco.names"),
    );
    let photo = cache.join("photos/dog.jpg");
    if let Some(missing) = [&cfg, &weights, &names, &photo]
        .iter()
        .find(|p| !p.exists())
    {
        eprintln!(
            "SKIPPED: {} is missing; run scripts/setup.sh to fetch YOLOv3-tiny and the photos",
            missing.display()
        );
        return;
    }
    let dir = scratch("import");
    let model = dir.join("yolov3-tiny");
    let out = its(
        &dir,
        &[
            "model",
            "import",
            "darknet",
            s(&cfg),
            s(&weights),
            s(&names),
            "-o",
            s(&model),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("8.85 M parameters") && err.contains("[batch, 2535, 85]"),
        "{err}"
    );

    let ann = dir.join("annotated");
    let out = its(
        &dir,
        &[
            "detect",
            "--model",
            s(&model),
            "--json",
            "--annotate",
            s(&ann),
            s(&photo),
        ],
    );
    let line: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON object per image");
    let found: Vec<&str> = line["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["class_name"].as_str().unwrap())
        .collect();
    for want in ["dog", "bicycle"] {
        assert!(found.contains(&want), "{want} not in {found:?}");
    }
    assert!(
        found.contains(&"truck") || found.contains(&"car"),
        "{found:?}"
    );

    let copy = std::fs::read(ann.join("dog.jpg")).expect("annotated copy");
    let drawn = its_engine::decode_jpeg(&copy).unwrap();
    let orig = its_engine::decode_jpeg(&std::fs::read(&photo).unwrap()).unwrap();
    assert_eq!((drawn.width, drawn.height), (orig.width, orig.height));
    // The dog's box is drawn: its left edge column differs from the photo over its height.
    let changed = (0..drawn.data.len())
        .step_by(3)
        .filter(|&i| drawn.data[i].abs_diff(orig.data[i]) > 60)
        .count();
    assert!(changed > 2_000, "{changed} pixels changed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn synth_writes_a_model_detect_can_run() {
    let dir = scratch("synth");
    let model = dir.join("v8");
    let out = its(
        &dir,
        &[
            "model",
            "synth",
            "--arch",
            "yolov8n",
            "--seed",
            "3",
            "--imgsz",
            "320",
            "--classes",
            "3",
            "-o",
            s(&model),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("output [batch, 7, 2100]"), "{err}");

    let out = its(&dir, &["model", "inspect", s(&model)]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("input  images [batch, 3, 320, 320]")
            && text.contains("output output0 [batch, 7, 2100]")
            && text.contains("opset ai.onnx:17"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Conv", "64"]),
        "{text}"
    );

    // A JPEG made here: a grey frame.
    let img = its_engine::RgbImage::filled(64, 48, [128, 128, 128]);
    let mut bytes = Vec::new();
    jpeg_encoder::Encoder::new(&mut bytes, 90)
        .encode(&img.data, 64, 48, jpeg_encoder::ColorType::Rgb)
        .unwrap();
    let jpg = dir.join("grey.jpg");
    std::fs::write(&jpg, bytes).unwrap();
    let out = its(&dir, &["detect", "--model", s(&model), "--json", s(&jpg)]);
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["width"], 64);
    assert!(line["detections"].is_array());

    // An unknown architecture is refused by the argument parser, naming the known ones.
    let bad = Command::new(env!("CARGO_BIN_EXE_its"))
        .current_dir(&dir)
        .args(["model", "synth", "--arch", "yolo99", "-o", "x"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("known: yolo11n, yolov8n"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
