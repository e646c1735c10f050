//! The COCO-trained YOLOv3-tiny (fetched by scripts/setup.sh into .cache/) imported with
//! `its_model::darknet::import`, then run through ONNX Runtime:
//! * on real photos (from the Debian packages darknet and opencv-doc), it finds what a person
//!   sees in them, with class names and boxes within tolerance of boxes drawn by hand;
//! * its output agrees with an independent numpy reading of the same weights
//!   (tests/darknet_ref.py).
//!
//! These tests skip, saying so, only when the fetched files are missing; setup always fetches
//! them, so CI runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use its_engine::{Detection, Detector, OrtOptions, decode_jpeg, letterbox_into};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Fetched {
    cfg: PathBuf,
    weights: PathBuf,
    names: PathBuf,
    photos: PathBuf,
}

fn fetched() -> Option<Fetched> {
    let dir = root().join(".cache/yolov3-tiny");
    let f = Fetched {
        cfg: dir.join("yolov3-tiny.cfg"),
        weights: dir.join("yolov3-tiny.weights"),
        names: dir.join("coco.names"),
        photos: root().join(".cache/photos"),
    };
    let needed = [
        f.cfg.clone(),
        f.weights.clone(),
        f.names.clone(),
        f.photos.join("dog.jpg"),
        f.photos.join("pexels_double_decker_bus.jpg"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        eprintln!(
            "SKIPPED: {} is missing; run scripts/setup.sh to fetch YOLOv3-tiny and the photos",
            missing.display()
        );
        return None;
    }
    Some(f)
}

/// Imports once per test binary into a temporary directory kept for the process lifetime.
fn imported(f: &Fetched) -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let report = its_model::darknet::import(&f.cfg, &f.weights, &f.names, dir.path())
            .expect("import yolov3-tiny");
        // 416x416 input: 13x13 and 26x26 cells, 3 anchors each.
        assert_eq!(report.output, (3 * (13 * 13 + 26 * 26), 85));
        assert_eq!(report.input, (416, 416));
        // The weights file holds 8,858,734 floats: per conv the weights and biases, plus BN
        // scale, mean and variance for the 3,184 batch-normalised channels. Folding leaves
        // weights and biases: 8,858,734 - 3 * 3,184.
        assert_eq!(report.parameters, 8_849_182);
        dir
    })
    .path()
}

fn iou(d: &Detection, b: [f32; 4]) -> f32 {
    let iw = (d.x2.min(b[2]) - d.x1.max(b[0])).max(0.0);
    let ih = (d.y2.min(b[3]) - d.y1.max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = (d.x2 - d.x1) * (d.y2 - d.y1) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    inter / area
}

/// An object a person sees in the photo: acceptable class names, box [x1, y1, x2, y2] in photo
/// pixels drawn by hand, and the least IoU a detection must have with it.
type Expected = (&'static [&'static str], [f32; 4], f32);

fn check_photo(detector: &mut Detector, photo: &Path, expected: &[Expected]) {
    let img = decode_jpeg(&std::fs::read(photo).expect("read photo")).expect("decode photo");
    let out = detector.detect(std::slice::from_ref(&img)).expect("detect");
    let classes = &detector.manifest().classes;
    let found: Vec<String> = out[0]
        .detections
        .iter()
        .map(|d| {
            format!(
                "{} {:.2} [{:.0} {:.0} {:.0} {:.0}]",
                classes[d.class_id as usize], d.score, d.x1, d.y1, d.x2, d.y2
            )
        })
        .collect();
    for (names, b, min_iou) in expected {
        let hit = out[0].detections.iter().any(|d| {
            names.contains(&classes[d.class_id as usize].as_str()) && iou(d, *b) >= *min_iou
        });
        assert!(
            hit,
            "{}: no {names:?} with IoU >= {min_iou} with {b:?}; found {found:#?}",
            photo.display()
        );
    }
}

#[test]
fn finds_the_vehicles_in_real_photos() {
    let Some(f) = fetched() else { return };
    let mut detector = Detector::load(imported(&f), &OrtOptions::default()).expect("load");
    assert_eq!(detector.manifest().classes.len(), 80);
    assert_eq!(detector.manifest().classes[2], "car");
    // 768x576: the dog sitting in front, the red road bike behind it, the white pickup
    // parked across the street.
    check_photo(
        &mut detector,
        &f.photos.join("dog.jpg"),
        &[
            (&["dog"], [133.0, 222.0, 305.0, 540.0], 0.5),
            (&["bicycle"], [125.0, 140.0, 567.0, 420.0], 0.5),
            (&["truck", "car"], [466.0, 73.0, 738.0, 170.0], 0.5),
        ],
    );
    // 546x413: the red double-decker filling the frame, a white taxi partly behind the bus on
    // the right (cut by the frame), a white SUV at the left edge. The SUV is 60x40 px and cut
    // by both the frame and the bus; YOLOv3-tiny at 416 boxes it tightly around its body, so
    // it gets a looser IoU.
    check_photo(
        &mut detector,
        &f.photos.join("pexels_double_decker_bus.jpg"),
        &[
            (&["bus"], [65.0, 112.0, 475.0, 388.0], 0.5),
            (&["car"], [455.0, 280.0, 546.0, 388.0], 0.5),
            (&["car"], [5.0, 287.0, 67.0, 330.0], 0.25),
        ],
    );
}

#[test]
fn agrees_with_an_independent_numpy_reading_of_the_weights() {
    let Some(f) = fetched() else { return };
    let dir = imported(&f);
    let python = root().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup.sh",
        python.display()
    );
    // Real input: both photos letterboxed to 416x416, so the heads see objects (random input
    // leaves every objectness near zero).
    let mut input = vec![0.0f32; 2 * 3 * 416 * 416];
    for (photo, dst) in ["dog.jpg", "pexels_double_decker_bus.jpg"]
        .iter()
        .zip(input.chunks_exact_mut(3 * 416 * 416))
    {
        let img = decode_jpeg(&std::fs::read(f.photos.join(photo)).unwrap()).unwrap();
        letterbox_into(&img, 416, 416, dst);
    }
    let input_path = dir.join("input.f32");
    std::fs::write(
        &input_path,
        input
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = Command::new(&python)
        .arg(root().join("tests/darknet_ref.py"))
        .arg(&f.cfg)
        .arg(&f.weights)
        .arg(dir.join("model.onnx"))
        .arg("--input")
        .arg(&input_path)
        .output()
        .expect("run tests/darknet_ref.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "darknet_ref.py failed ({}): {stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    eprintln!("darknet_ref.py: {line}");
    assert_eq!(line["ok"], true, "{line}");
    assert_eq!(line["shape"], serde_json::json!([2, 2535, 85]), "{line}");
    // The photos' objects were compared too, not only near-zero scores.
    assert!(line["max_objectness"].as_f64().unwrap() > 0.5, "{line}");
}
