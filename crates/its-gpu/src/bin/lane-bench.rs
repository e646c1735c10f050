//! The whole GPU frame path, 1 stream versus many: for each stream count N, N threads each own
//! a [`GpuLane`] (its own CUDA stream, nvJPEG state, engine context) and push batches of q85
//! 1280x720 JPEGs through nvJPEG -> letterbox -> native engine -> GPU NMS for a fixed time.
//! Prints a markdown table (frames/s, batch wall time, median device time per stage) and, with
//! `--json`, one line prefixed `JSON `.
//! Usage: `lane-bench MODEL.onnx [--streams 1,2,4,8] [--batch 32] [--secs 5] [--fp32] [--json]`.

// A bench binary reports on stdout.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use its_gpu::engine::{ConvMath, EngineOptions};
use its_gpu::testdata::{encode_jpeg, synthetic_scene};
use its_gpu::{GpuContext, GpuLane, LaneConfig, LaneTimings, PipelineConfig, gpu_required};
use its_model::onnx::ModelProto;

struct Args {
    model: String,
    streams: Vec<usize>,
    batch: usize,
    secs: f64,
    math: ConvMath,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        model: String::new(),
        streams: vec![1, 2, 4, 8],
        batch: 32,
        secs: 5.0,
        math: ConvMath::Fp16,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match x.as_str() {
            "--streams" => {
                a.streams = value("--streams")?
                    .split(',')
                    .map(|s| s.trim().parse().map_err(|e| format!("--streams {s}: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--batch" => {
                a.batch = value("--batch")?
                    .parse()
                    .map_err(|e| format!("--batch: {e}"))?
            }
            "--secs" => {
                a.secs = value("--secs")?
                    .parse()
                    .map_err(|e| format!("--secs: {e}"))?
            }
            "--fp32" => a.math = ConvMath::Fp32,
            "--json" => a.json = true,
            m if !m.starts_with('-') && a.model.is_empty() => a.model = m.to_owned(),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.model.is_empty() {
        return Err("usage: lane-bench MODEL.onnx [--streams 1,2,4,8] [--batch 32] [--secs 5] [--fp32] [--json]".into());
    }
    if a.batch == 0 || a.batch > 64 || a.streams.contains(&0) {
        return Err("--batch 1..=64 and stream counts >= 1".into());
    }
    Ok(a)
}

/// What one stream count measured.
struct Row {
    streams: usize,
    frames: usize,
    secs: f64,
    batch_wall_ms: Vec<f64>,
    stages: Vec<LaneTimings>,
    build_s: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(gpu: &GpuContext, model: &ModelProto, a: &Args, streams: usize) -> Result<Row, String> {
    let t0 = Instant::now();
    let mut lanes = Vec::with_capacity(streams);
    for _ in 0..streams {
        let cfg = LaneConfig {
            pipeline: PipelineConfig::yolo640(a.batch),
            engine: EngineOptions {
                math: a.math,
                ..EngineOptions::default()
            },
            batches: vec![a.batch],
            cache: None,
        };
        lanes.push(GpuLane::new(gpu, model.clone(), cfg).map_err(|e| e.to_string())?);
    }
    let build_s = t0.elapsed().as_secs_f64();
    let barrier = Arc::new(Barrier::new(streams));
    let budget = Duration::from_secs_f64(a.secs);
    let handles: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(k, mut lane)| {
            let barrier = barrier.clone();
            let batch = a.batch;
            std::thread::spawn(
                move || -> Result<(usize, Vec<f64>, Vec<LaneTimings>, f64), String> {
                    let jpegs: Vec<Vec<u8>> = (0..batch)
                        .map(|i| {
                            let seed = (k * 1000 + i) as u64;
                            encode_jpeg(&synthetic_scene(1280, 720, seed), 1280, 720, 85)
                        })
                        .collect::<Result<_, _>>()
                        .map_err(|e| e.to_string())?;
                    let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
                    // Warm-up: first batches fill the pools.
                    for _ in 0..3 {
                        lane.run(&refs).map_err(|e| e.to_string())?;
                    }
                    barrier.wait();
                    let start = Instant::now();
                    let (mut frames, mut walls, mut stages) = (0, Vec::new(), Vec::new());
                    while start.elapsed() < budget {
                        let t = Instant::now();
                        let out = lane.run(&refs).map_err(|e| e.to_string())?;
                        walls.push(t.elapsed().as_secs_f64() * 1e3);
                        frames += out.frames.iter().filter(|f| f.is_ok()).count();
                        stages.push(out.timings);
                    }
                    Ok((frames, walls, stages, start.elapsed().as_secs_f64()))
                },
            )
        })
        .collect();
    let mut row = Row {
        streams,
        frames: 0,
        secs: 0.0,
        batch_wall_ms: Vec::new(),
        stages: Vec::new(),
        build_s,
    };
    for h in handles {
        let (frames, walls, stages, secs) =
            h.join().map_err(|_| "a stream panicked".to_string())??;
        row.frames += frames;
        row.secs = row.secs.max(secs);
        row.batch_wall_ms.extend(walls);
        row.stages.extend(stages);
    }
    Ok(row)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            println!("{e}");
            return ExitCode::from(2);
        }
    };
    let gpu = match GpuContext::new(0) {
        Ok(g) => g,
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            return if gpu_required() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let model = match ModelProto::read(std::path::Path::new(&a.model)) {
        Ok(m) => m,
        Err(e) => {
            println!("cannot read {}: {e}", a.model);
            return ExitCode::FAILURE;
        }
    };
    println!(
        "\n## GPU frame path ({}), batch {} x 1280x720 q85 JPEG, {:?}, {} s per row\n",
        gpu.device_name(),
        a.batch,
        a.math,
        a.secs
    );
    println!(
        "| streams | frames/s | vs 1 stream | batch wall p50 ms | decode ms | letterbox ms | infer ms | NMS ms | build s |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut base = None;
    let mut json = Vec::new();
    for &n in &a.streams {
        let row = match run(&gpu, &model, &a, n) {
            Ok(r) => r,
            Err(e) => {
                println!("FAILED: {n} streams: {e}");
                return ExitCode::FAILURE;
            }
        };
        let fps = row.frames as f64 / row.secs;
        let base_fps = *base.get_or_insert(fps);
        let st = |f: fn(&LaneTimings) -> f64| median(row.stages.iter().map(f).collect());
        let (dec, lb, inf, nms) = (
            st(|t| t.decode_ms),
            st(|t| t.letterbox_ms),
            st(|t| t.infer_ms),
            st(|t| t.postprocess_ms),
        );
        let wall = median(row.batch_wall_ms.clone());
        println!(
            "| {} | {fps:.0} | {:.2}x | {wall:.2} | {dec:.3} | {lb:.3} | {inf:.3} | {nms:.3} | {:.1} |",
            row.streams,
            fps / base_fps,
            row.build_s
        );
        json.push(format!(
            "{{\"streams\":{},\"fps\":{fps:.1},\"batch_wall_p50_ms\":{wall:.3},\"decode_ms\":{dec:.4},\"letterbox_ms\":{lb:.4},\"infer_ms\":{inf:.4},\"nms_ms\":{nms:.4}}}",
            row.streams
        ));
    }
    if a.json {
        println!(
            "JSON {{\"device\":\"{}\",\"batch\":{},\"rows\":[{}]}}",
            gpu.device_name(),
            a.batch,
            json.join(",")
        );
    }
    ExitCode::SUCCESS
}
