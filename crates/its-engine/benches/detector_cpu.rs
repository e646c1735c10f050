//! CPU detector throughput: letterbox + ONNX Runtime + decode/NMS on 1280x720 frames.
//!
//! `cargo bench -p its-engine --bench detector_cpu` runs the generated tiny model;
//! `ITS_BENCH_ONNX=/path/to/yolo11n.onnx cargo bench -p its-engine --bench detector_cpu` runs
//! any YOLOv8-format graph with 80 classes at 640x640 (e.g. the YOLO11n graph of the design
//! brief). Prints a markdown table.

use std::path::PathBuf;
use std::time::Instant;

use its_engine::{Detector, ModelManifest, OrtEngine, OrtOptions, RgbImage};

fn manifest_for(onnx: &str) -> (ModelManifest, PathBuf) {
    let classes: Vec<String> = (0..80).map(|i| format!("\"c{i}\"")).collect();
    let text = format!(
        "name = \"bench\"\nversion = \"1\"\nfile = \"{onnx}\"\nclasses = [{}]\n[input]\nwidth = 640\nheight = 640\n[output]\nformat = \"yolov8\"\n",
        classes.join(", ")
    );
    let m = ModelManifest::parse(&text).expect("bench manifest");
    (m, PathBuf::from(onnx))
}

fn main() {
    let (manifest, path, label) = match std::env::var("ITS_BENCH_ONNX") {
        Ok(onnx) => {
            let (m, p) = manifest_for(&onnx);
            (m, p, onnx)
        }
        Err(_) => {
            let dir =
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/generated/tiny-yolo");
            let m = ModelManifest::load(&dir).expect("run scripts/setup.sh to generate the model");
            let p = m.model_path(&dir);
            (m, p, "models/generated/tiny-yolo".into())
        }
    };
    // Frames with structure, so NMS has candidates to work on.
    let frame = {
        let (w, h) = (1280u32, 720u32);
        let mut img = RgbImage::filled(w, h, [90, 90, 92]);
        for (i, px) in img.data.chunks_exact_mut(3).enumerate() {
            let (x, y) = (i as u32 % w, i as u32 / w);
            if (x / 80 + y / 60) % 3 == 0 {
                px.copy_from_slice(&[(x % 256) as u8, (y % 256) as u8, 200]);
            }
        }
        img
    };
    eprintln!("model: {label}");
    eprintln!("| intra threads | batch | ms per batch | images/s | of which inference ms |");
    eprintln!("| --- | --- | --- | --- | --- |");
    for threads in [0usize, 1] {
        let opts = OrtOptions {
            intra_threads: threads,
            ..OrtOptions::default()
        };
        let engine = OrtEngine::load(&path, &manifest, &opts).expect("load model");
        let mut det = Detector::new(Box::new(engine), manifest.clone()).expect("detector");
        for batch in [1usize, 8] {
            let images = vec![frame.clone(); batch];
            for _ in 0..3 {
                det.detect(&images).unwrap();
            }
            let iters = if batch == 1 { 20 } else { 5 };
            let t0 = Instant::now();
            let mut infer_ns = 0u64;
            for _ in 0..iters {
                infer_ns += det.detect(&images).unwrap()[0].infer_ns;
            }
            let per = t0.elapsed().as_secs_f64() / iters as f64;
            eprintln!(
                "| {} | {batch} | {:.1} | {:.1} | {:.1} |",
                if threads == 0 {
                    "default (all cores)".to_owned()
                } else {
                    threads.to_string()
                },
                per * 1e3,
                batch as f64 / per,
                infer_ns as f64 / iters as f64 / 1e6
            );
        }
    }
}
