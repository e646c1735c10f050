//! GPU benchmark: fused letterbox (correctness against the CPU reference, then time per batch
//! for every kernel variant, FP16 and FP32, batch 1 / 8 / 32 of 1280x720), GPU decode + NMS
//! of YOLO11n-shaped outputs, nvJPEG batched decode of q85 720p JPEGs, and the whole
//! ORT-free pipeline. Prints markdown tables and a summary table; with `--json`, also one
//! JSON line (prefixed `JSON `) with the summary figures.
//! Usage: `gpu-bench [ITERS] [--json]` (default 200 launches per timing).

// A bench binary reports on stdout.
#![allow(clippy::print_stdout)]

use std::process::ExitCode;

#[path = "gpu-bench/extra.rs"]
mod extra;

use cudarc::driver::{CudaSlice, CudaStream, sys::CUevent_flags};
use its_gpu::letterbox::reference::{letterbox_batch, max_abs_err, random_bytes};
use its_gpu::letterbox::{DEFAULT_PIXELS_PER_THREAD, PIXELS_PER_THREAD_VARIANTS};
use its_gpu::{FrameRef, GpuContext, GpuError, HostFrame, LetterboxKernels, gpu_required};

const H100_PEAK_GBS: f64 = 3350.0;
const TW: u32 = 640;
const TH: u32 = 640;
const PLANE3: usize = 3 * TW as usize * TH as usize;
const W: u32 = 1280;
const H: u32 = 720;
const FRAME_BYTES: usize = W as usize * H as usize * 3;
const POOL: usize = 32;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let iters: usize = args.iter().find_map(|a| a.parse().ok()).unwrap_or(200);
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
    let mut summary = extra::Summary::default();
    let mut ok = match run(&gpu, iters, &mut summary) {
        Ok(ok) => ok,
        Err(e) => {
            println!("FAILED: letterbox: {e}");
            false
        }
    };
    match extra::postprocess(&gpu, iters, &mut summary) {
        Ok(pass) => ok &= pass,
        Err(e) => {
            println!("FAILED: postprocess: {e}");
            ok = false;
        }
    }
    if let Err(e) = extra::jpeg(&gpu, &mut summary) {
        println!("FAILED: nvjpeg: {e}");
        ok = false;
    }
    if let Err(e) = extra::pipeline(&gpu, &mut summary) {
        println!("FAILED: pipeline: {e}");
        ok = false;
    }
    summary.print(&gpu, json);
    if ok {
        ExitCode::SUCCESS
    } else {
        println!("FAILED: correctness check");
        ExitCode::FAILURE
    }
}

enum Out {
    F16(CudaSlice<u16>),
    F32(CudaSlice<f32>),
}

fn launch(
    k: &LetterboxKernels,
    stream: &CudaStream,
    input: &CudaSlice<u8>,
    frames: &[FrameRef],
    out: &mut Out,
    slot: usize,
) -> Result<(), GpuError> {
    let n = frames.len() * PLANE3;
    let range = slot * n..(slot + 1) * n;
    match out {
        Out::F16(o) => k.launch_f16(
            stream,
            &input.as_view(),
            frames,
            &mut o.slice_mut(range),
            TW,
            TH,
        )?,
        Out::F32(o) => k.launch_f32(
            stream,
            &input.as_view(),
            frames,
            &mut o.slice_mut(range),
            TW,
            TH,
        )?,
    };
    Ok(())
}

/// Correctness on a mixed batch, every variant, both dtypes; output poisoned with NaN first.
fn check(gpu: &GpuContext, stream: &std::sync::Arc<CudaStream>) -> Result<bool, GpuError> {
    let sizes = [(1280u32, 720u32), (1920, 1080), (640, 480), (37, 901)];
    let owned: Vec<Vec<u8>> = sizes
        .iter()
        .enumerate()
        .map(|(i, &(w, h))| random_bytes(0xC0FFEE + i as u64, (w * h * 3) as usize))
        .collect();
    let frames: Vec<HostFrame<'_>> = owned
        .iter()
        .zip(sizes)
        .map(|(d, (w, h))| HostFrame {
            data: d,
            width: w,
            height: h,
            pitch: 3 * w as usize,
        })
        .collect();
    let (reference, _) = letterbox_batch(&frames, TW, TH);
    let mut packed = Vec::new();
    let mut refs = Vec::new();
    for f in &frames {
        refs.push(FrameRef {
            offset: packed.len() as u64,
            width: f.width,
            height: f.height,
            pitch: f.pitch as u32,
        });
        packed.extend_from_slice(f.data);
    }
    let input = stream.clone_htod(&packed)?;
    let n = frames.len() * PLANE3;
    println!(
        "\n## Correctness: batch of 1280x720, 1920x1080, 640x480, 37x901 vs CPU f64 reference\n"
    );
    println!("| kernel | dtype | max abs err | budget |");
    println!("| --- | --- | --- | --- |");
    let mut ok = true;
    for px in PIXELS_PER_THREAD_VARIANTS {
        let k = LetterboxKernels::load_variant(gpu, px)?;
        let mut o16 = stream.clone_htod(&vec![0xFFFFu16; n])?;
        let mut o32 = stream.clone_htod(&vec![f32::NAN; n])?;
        k.launch_f16(
            stream,
            &input.as_view(),
            &refs,
            &mut o16.as_view_mut(),
            TW,
            TH,
        )?;
        k.launch_f32(
            stream,
            &input.as_view(),
            &refs,
            &mut o32.as_view_mut(),
            TW,
            TH,
        )?;
        let h16 = stream.clone_dtoh(&o16)?;
        let h32 = stream.clone_dtoh(&o32)?;
        stream.synchronize()?;
        let e16 = max_abs_err(
            h16.iter().map(|&v| half::f16::from_bits(v).to_f64()),
            &reference,
        );
        let e32 = max_abs_err(h32.iter().map(|&v| f64::from(v)), &reference);
        let b16 = 1.0 / 255.0 + 1.0 / 2048.0;
        let b32 = 1.0 / 255.0 + 1e-6;
        ok &= e16 <= b16 && e32 <= b32;
        println!("| px{px} | f16 | {e16:.3e} | {b16:.3e} |");
        println!("| px{px} | f32 | {e32:.3e} | {b32:.3e} |");
    }
    Ok(ok)
}

/// Device-to-device copy of 1 GiB: the practical bandwidth ceiling (bytes read + written).
fn copy_ceiling(stream: &std::sync::Arc<CudaStream>) -> Result<f64, GpuError> {
    let n = 1usize << 30;
    let src = stream.clone_htod(&random_bytes(1, 1 << 20))?;
    let mut a = stream.alloc_zeros::<u8>(n)?;
    for i in 0..1024 {
        stream.memcpy_dtod(&src, &mut a.slice_mut(i << 20..(i + 1) << 20))?;
    }
    let mut b = stream.alloc_zeros::<u8>(n)?;
    for _ in 0..3 {
        stream.memcpy_dtod(&a, &mut b)?;
    }
    let reps = 10;
    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    for _ in 0..reps {
        stream.memcpy_dtod(&a, &mut b)?;
    }
    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
    let ms = f64::from(start.elapsed_ms(&end)?) / f64::from(reps);
    Ok(2.0 * n as f64 / (ms * 1e-3) / 1e9)
}

struct Row {
    px: u32,
    batch: usize,
    dtype: &'static str,
    ms: f64,
    spread: f64,
    gbs: f64,
}

/// Median ms per launch of `frames` (one input set; large enough not to sit in L2).
fn time_launches(
    k: &LetterboxKernels,
    stream: &CudaStream,
    input: &CudaSlice<u8>,
    frames: &[FrameRef],
    out: &mut Out,
    iters: usize,
) -> Result<f64, GpuError> {
    for _ in 0..20 {
        launch(k, stream, input, frames, out, 0)?;
    }
    let mut times = Vec::new();
    for _ in 0..5 {
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        for _ in 0..iters {
            launch(k, stream, input, frames, out, 0)?;
        }
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        times.push(f64::from(start.elapsed_ms(&end)?) / iters as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[2])
}

/// Default kernel on batches of 32 that are not 720p: all 1080p, and a mix of sizes.
fn mixed_sizes(
    gpu: &GpuContext,
    stream: &std::sync::Arc<CudaStream>,
    iters: usize,
) -> Result<(), GpuError> {
    let k = LetterboxKernels::load(gpu)?;
    let mix = [(1920u32, 1080u32), (1280, 720), (640, 480), (37, 901)];
    let cases: [(&str, Vec<(u32, u32)>); 2] = [
        ("32 x 1920x1080", vec![(1920, 1080); 32]),
        (
            "8 each of 1920x1080, 1280x720, 640x480, 37x901",
            (0..32).map(|i| mix[i % 4]).collect(),
        ),
    ];
    println!("\n## Default kernel, other batches of 32 (median of 5 x {iters} launches)\n");
    println!("| batch | dtype | ms per batch | GB/s effective | % of 3.35 TB/s peak |");
    println!("| --- | --- | --- | --- | --- |");
    for (name, sizes) in cases {
        let mut packed = Vec::new();
        let mut frames = Vec::new();
        for (i, &(w, h)) in sizes.iter().enumerate() {
            let n = (w * h * 3) as usize;
            frames.push(FrameRef {
                offset: packed.len() as u64,
                width: w,
                height: h,
                pitch: 3 * w,
            });
            packed.extend_from_slice(&random_bytes(7000 + i as u64, n));
        }
        let input = stream.clone_htod(&packed)?;
        let mut o16 = Out::F16(stream.clone_htod(&vec![0x3C00u16; 32 * PLANE3])?);
        let mut o32 = Out::F32(stream.clone_htod(&vec![1.0f32; 32 * PLANE3])?);
        for (dtype, out, elem) in [("f16", &mut o16, 2usize), ("f32", &mut o32, 4usize)] {
            let ms = time_launches(&k, stream, &input, &frames, out, iters)?;
            let gbs = (packed.len() + 32 * PLANE3 * elem) as f64 / (ms * 1e-3) / 1e9;
            println!(
                "| {name} | {dtype} | {ms:.4} | {gbs:.0} | {:.1}% |",
                100.0 * gbs / H100_PEAK_GBS
            );
        }
    }
    Ok(())
}

fn run(gpu: &GpuContext, iters: usize, summary: &mut extra::Summary) -> Result<bool, GpuError> {
    let (maj, min) = gpu.compute_capability();
    println!("# gpu-bench: fused letterbox, {W}x{H} RGB u8 -> [B,3,{TW},{TH}]");
    println!(
        "device: {} (compute capability {maj}.{min})",
        gpu.device_name()
    );
    let stream = gpu.new_stream()?;
    let ok = check(gpu, &stream)?;
    let ceiling = copy_ceiling(&stream)?;
    println!("\nmeasured device-to-device copy (1 GiB, read+write): {ceiling:.0} GB/s");

    // 32 distinct random frames uploaded once; small batches rotate through them and through
    // 32/B output slots so the timing does not measure a hot L2.
    let mut packed = Vec::with_capacity(POOL * FRAME_BYTES);
    for i in 0..POOL {
        packed.extend_from_slice(&random_bytes(42 + i as u64, FRAME_BYTES));
    }
    let input = stream.clone_htod(&packed)?;
    let all: Vec<FrameRef> = (0..POOL)
        .map(|i| FrameRef {
            offset: (i * FRAME_BYTES) as u64,
            width: W,
            height: H,
            pitch: 3 * W,
        })
        .collect();
    let mut out16 = Out::F16(stream.clone_htod(&vec![0x3C00u16; POOL * PLANE3])?);
    let mut out32 = Out::F32(stream.clone_htod(&vec![1.0f32; POOL * PLANE3])?);

    let mut rows = Vec::new();
    for px in PIXELS_PER_THREAD_VARIANTS {
        let k = LetterboxKernels::load_variant(gpu, px)?;
        for batch in [1usize, 8, 32] {
            let slots = POOL / batch;
            for (dtype, out, elem) in [("f16", &mut out16, 2usize), ("f32", &mut out32, 4usize)] {
                for i in 0..20 {
                    let s = i % slots;
                    launch(
                        &k,
                        &stream,
                        &input,
                        &all[s * batch..(s + 1) * batch],
                        out,
                        s,
                    )?;
                }
                let mut times = Vec::new();
                for _ in 0..5 {
                    let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
                    for i in 0..iters {
                        let s = i % slots;
                        launch(
                            &k,
                            &stream,
                            &input,
                            &all[s * batch..(s + 1) * batch],
                            out,
                            s,
                        )?;
                    }
                    let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
                    times.push(f64::from(start.elapsed_ms(&end)?) / iters as f64);
                }
                times.sort_by(f64::total_cmp);
                let ms = times[2];
                let bytes = (batch * FRAME_BYTES + batch * PLANE3 * elem) as f64;
                rows.push(Row {
                    px,
                    batch,
                    dtype,
                    ms,
                    spread: times[4] - times[0],
                    gbs: bytes / (ms * 1e-3) / 1e9,
                });
            }
        }
    }
    stream.synchronize()?;

    println!(
        "\n## All variants (median of 5 x {iters} launches, CUDA events; spread = max - min)\n"
    );
    println!(
        "| kernel | batch | dtype | ms per batch | spread ms | GB/s effective | % of 3.35 TB/s | % of measured copy |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| px{} | {} | {} | {:.4} | {:.4} | {:.0} | {:.1}% | {:.1}% |",
            r.px,
            r.batch,
            r.dtype,
            r.ms,
            r.spread,
            r.gbs,
            100.0 * r.gbs / H100_PEAK_GBS,
            100.0 * r.gbs / ceiling
        );
    }
    println!(
        "\n## Default kernel (letterbox_<dtype>, px{DEFAULT_PIXELS_PER_THREAD}); anchor: torch GPU letterbox 0.885 ms per batch of 32\n"
    );
    println!("| batch | dtype | ms per batch | GB/s effective | % of 3.35 TB/s peak |");
    println!("| --- | --- | --- | --- | --- |");
    for r in rows.iter().filter(|r| r.px == DEFAULT_PIXELS_PER_THREAD) {
        if r.batch == 32 && r.dtype == "f16" {
            summary.letterbox_b32_f16_ms = Some(r.ms);
        }
        println!(
            "| {} | {} | {:.4} | {:.0} | {:.1}% |",
            r.batch,
            r.dtype,
            r.ms,
            r.gbs,
            100.0 * r.gbs / H100_PEAK_GBS
        );
    }
    drop((input, out16, out32));
    mixed_sizes(gpu, &stream, iters)?;
    println!("\ncorrectness: {}", if ok { "PASS" } else { "FAIL" });
    Ok(ok)
}
