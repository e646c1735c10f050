//! The gpu-bench sections beyond the letterbox: post-processing, nvJPEG, the pipeline, and
//! the summary table / JSON line.

use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaStream, sys::CUevent_flags};
use its_gpu::pool::{DevicePool, PinnedPool};
use its_gpu::postprocess::reference::{Rng, postprocess_frame, synthetic_output};
use its_gpu::testdata::{encode_jpeg, synthetic_scene};
use its_gpu::{
    FrameGeometry, GpuContext, GpuError, GpuPipeline, JpegDecoder, JpegOutput, PipelineConfig,
    PostprocessConfig, Postprocessor,
};

/// The headline figures.
#[derive(Debug, Default)]
pub struct Summary {
    pub letterbox_b32_f16_ms: Option<f64>,
    pub post_device_ms: Option<f64>,
    pub post_wall_ms: Option<f64>,
    pub post_worst_device_ms: Option<f64>,
    pub post_stages_ms: Option<[f64; 3]>,
    pub jpeg_backend: Option<String>,
    pub jpeg_mean_bytes: Option<f64>,
    pub jpeg_fps: Option<f64>,
    pub jpeg_fps_by_decoders: Vec<(usize, f64)>,
    pub jpeg_fps_by_plan: Vec<(String, f64)>,
    pub jpeg_fps_assist: Vec<(usize, f64)>,
    pub cpu_decode_ms: Option<f64>,
    pub pipeline_ms: Option<[f64; 4]>,
    pub pipeline_wall_ms: Option<f64>,
    pub pool: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn geo_720p() -> FrameGeometry {
    // 1280x720 -> 640: scale 0.5, pad_y 140.
    FrameGeometry {
        scale: 0.5,
        pad_x: 0,
        pad_y: 140,
        src_width: 1280,
        src_height: 720,
    }
}

/// Times `enqueue` (device events around decode + NMS + D2H of the detections) and the
/// host wall time of enqueue + finish, on `outputs` (B frames), median of `iters`.
fn time_post(
    post: &mut Postprocessor,
    stream: &Arc<CudaStream>,
    dev: &cudarc::driver::CudaSlice<f32>,
    geos: &[FrameGeometry],
    iters: usize,
) -> Result<(f64, f64), GpuError> {
    for _ in 0..10 {
        post.run(stream, &dev.as_view(), geos)?;
    }
    let (mut device, mut wall) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let t = Instant::now();
        let a = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        post.enqueue(stream, &dev.as_view(), geos)?;
        let b = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        post.finish(stream)?;
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        device.push(f64::from(a.elapsed_ms(&b)?));
    }
    Ok((median(device), median(wall)))
}

/// Decode + NMS of batch 32 YOLO11n-shaped outputs (80 classes x 8400 anchors).
pub fn postprocess(gpu: &GpuContext, iters: usize, s: &mut Summary) -> Result<bool, GpuError> {
    let cfg = PostprocessConfig::yolo_coco640();
    let stream = gpu.new_stream()?;
    let pool = DevicePool::new(stream.clone(), 1 << 30);
    let pinned = PinnedPool::new(gpu, 64 << 20);
    let mut post = Postprocessor::new(gpu, cfg, pool.clone(), pinned.clone())?;
    let mut rng = Rng(2026);
    let batch = 32;
    let outs: Vec<Vec<f32>> = (0..batch)
        .map(|i| synthetic_output(&mut rng, &cfg, 640.0, 10 + i % 40, 15))
        .collect();
    let geos = vec![geo_720p(); batch];
    let packed: Vec<f32> = outs.iter().flatten().copied().collect();
    let dev = stream.clone_htod(&packed)?;
    let got = post.run(&stream, &dev.as_view(), &geos)?;
    let mut ok = true;
    let mut total = 0;
    for (i, d) in got.iter().enumerate() {
        total += d.len();
        ok &= *d == postprocess_frame(&outs[i], &cfg, &geos[i]);
    }
    let (device, wall) = time_post(&mut post, &stream, &dev, &geos, iters)?;
    // Stage breakdown in a separate pass (the events themselves cost a little).
    post.set_profiling(true);
    let mut stages = Vec::new();
    for _ in 0..iters {
        post.run(&stream, &dev.as_view(), &geos)?;
        if let Some(st) = post.last_stage_ms() {
            stages.push(st);
        }
    }
    post.set_profiling(false);
    let stage = |k: usize| median(stages.iter().map(|r| r[k]).collect());
    let (st_decode, st_nms, st_copy) = (stage(0), stage(1), stage(2));

    // Worst case: uniform random scores, every anchor passes, top-4096 then NMS.
    let worst: Vec<f32> = (0..batch * cfg.per_frame())
        .map(|i| {
            let r = rng.next_f32();
            if i % cfg.per_frame() < 4 * cfg.num_anchors {
                r * 640.0 * 0.3
            } else {
                r
            }
        })
        .collect();
    let dev_worst = stream.clone_htod(&worst)?;
    let got = post.run(&stream, &dev_worst.as_view(), &geos)?;
    let per = cfg.per_frame();
    for (i, d) in got.iter().take(4).enumerate() {
        ok &= *d == postprocess_frame(&worst[i * per..(i + 1) * per], &cfg, &geos[i]);
    }
    let (worst_device, worst_wall) =
        time_post(&mut post, &stream, &dev_worst, &geos, iters / 4 + 1)?;
    println!("\n## Decode + NMS on the GPU, batch 32 x [84, 8400] FP32 (median of {iters})\n");
    println!(
        "| input | detections | device ms (events) | host wall ms (enqueue..finish) | matches CPU |"
    );
    println!("| --- | --- | --- | --- | --- |");
    println!(
        "| YOLO-like (10-49 objects/frame) | {total} | {device:.4} | {wall:.4} | {} |",
        if ok { "yes" } else { "NO" }
    );
    println!(
        "| uniform random (all 8400 pass, top-4096) | - | {worst_device:.4} | {worst_wall:.4} | - |"
    );
    println!(
        "pool after: device {:?}, pinned {:?}",
        pool.stats(),
        pinned.stats()
    );
    println!(
        "stages (YOLO-like, median): zero counters + decode {st_decode:.4} ms, NMS {st_nms:.4} ms, \
         copy of detections {st_copy:.4} ms"
    );
    s.post_stages_ms = Some([st_decode, st_nms, st_copy]);
    s.post_device_ms = Some(device);
    s.post_wall_ms = Some(wall);
    s.post_worst_device_ms = Some(worst_device);
    Ok(ok)
}

fn jpeg_set(n: usize) -> Result<Vec<Vec<u8>>, GpuError> {
    (0..n)
        .map(|i| encode_jpeg(&synthetic_scene(1280, 720, 900 + i as u64), 1280, 720, 85))
        .collect()
}

/// nvJPEG batched decode of 32 distinct q85 720p JPEGs; 1, 2, 4 decoders (each its own
/// handle, state, stream and thread) decoding batches concurrently.
pub fn jpeg(gpu: &GpuContext, s: &mut Summary) -> Result<(), GpuError> {
    let jpegs = Arc::new(jpeg_set(32)?);
    let mean = jpegs.iter().map(Vec::len).sum::<usize>() as f64 / jpegs.len() as f64;
    println!(
        "\n## nvJPEG batched decode, batch 32 x 1280x720 q85 (mean {:.0} KB)\n",
        mean / 1e3
    );
    println!(
        "| decoders (threads x streams) | backend | batches | frames/s | ms per batch (per decoder) |"
    );
    println!("| --- | --- | --- | --- | --- |");
    let mut best = 0.0f64;
    for decoders in [1usize, 2, 4] {
        let batches = 60usize;
        let start = std::sync::Barrier::new(decoders);
        let results: Vec<Result<(String, f64, f64), GpuError>> = std::thread::scope(|sc| {
            let handles: Vec<_> = (0..decoders)
                .map(|_| {
                    let jpegs = jpegs.clone();
                    let start = &start;
                    sc.spawn(move || -> Result<(String, f64, f64), GpuError> {
                        gpu.cuda().bind_to_thread()?;
                        let mut dec = JpegDecoder::new(1920, 1080)?;
                        let stream = gpu.new_stream()?;
                        let mut out = stream.alloc_zeros::<u8>(32 * (1280 * 720 * 3 + 256))?;
                        let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
                        for _ in 0..3 {
                            dec.decode_batch(&stream, &refs, &mut out)?;
                        }
                        stream.synchronize()?;
                        start.wait();
                        let t = Instant::now();
                        let mut in_call = 0.0f64;
                        for _ in 0..batches {
                            let c = Instant::now();
                            let r = dec.decode_batch(&stream, &refs, &mut out)?;
                            in_call += c.elapsed().as_secs_f64();
                            if r.iter().any(Result::is_err) {
                                return Err(GpuError::Jpeg("a frame failed".into()));
                            }
                        }
                        stream.synchronize()?;
                        Ok((
                            format!("{:?}", dec.backend()),
                            t.elapsed().as_secs_f64(),
                            in_call,
                        ))
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(GpuError::Jpeg("thread panicked".into())))
                })
                .collect()
        });
        let mut secs = 0.0f64;
        let mut host = 0.0f64;
        let mut backend = String::new();
        for r in results {
            let (b, t, h) = r?;
            backend = b;
            secs = secs.max(t);
            host = host.max(h);
        }
        let fps = (decoders * batches * 32) as f64 / secs;
        best = best.max(fps);
        println!(
            "| {decoders} | {backend} | {} | {fps:.0} | {:.3} (host in call {:.3}) |",
            decoders * batches,
            secs * 1e3 / batches as f64,
            host * 1e3 / batches as f64
        );
        s.jpeg_backend = Some(backend);
        s.jpeg_fps_by_decoders.push((decoders, fps));
    }
    // Bitstreams packed into pinned staging first (the default passes them from pageable
    // memory).
    let fps = one_decoder(gpu, &jpegs, 32, |d| d.set_pinned_input(true))?;
    println!(
        "| 1, pinned staging of the bitstreams | Hardware | {ONE_DECODER_BATCHES} | {fps:.0} | {:.3} |",
        ms_per_batch(32, fps)
    );
    s.jpeg_fps_by_plan
        .push(("hardware b32 pinned staging".into(), fps));
    // The engines writing the frames' own YUV planes, without the conversion to RGB.
    for batch in [32usize, 64] {
        let fps = one_decoder(gpu, &jpegs, batch, |d| d.set_output(JpegOutput::PlanarYuv))?;
        println!(
            "| 1, planar YUV output, batch {batch} | Hardware | {ONE_DECODER_BATCHES} | {fps:.0} | {:.3} |",
            ms_per_batch(batch, fps)
        );
        s.jpeg_fps_by_plan
            .push((format!("hardware b{batch} planar yuv"), fps));
    }
    // The library's CPU assist: `assist` of every 32 frames decoded by CPU threads while the
    // engines take the rest, in one decode_batch call.
    cpu_decode_reference(&jpegs, s);
    for assist in [4usize, 6, 8, 10] {
        let fps = one_decoder(gpu, &jpegs, 32, |d| d.set_cpu_assist(assist))?;
        println!(
            "| 1 + CPU assist {assist}/32 | Hardware + zune | {ONE_DECODER_BATCHES} | {fps:.0} | {:.3} |",
            ms_per_batch(32, fps)
        );
        s.jpeg_fps_assist.push((assist, fps));
    }
    s.jpeg_mean_bytes = Some(mean);
    s.jpeg_fps = Some(best);
    mixed_backends(gpu, &jpegs, s);
    Ok(())
}

/// Milliseconds per batch of `batch` frames at `fps`.
fn ms_per_batch(batch: usize, fps: f64) -> f64 {
    batch as f64 * 1e3 / fps
}

/// Timed batches of each [`one_decoder`] row.
const ONE_DECODER_BATCHES: usize = 60;

/// Frames/s of one default decoder, set up by `configure`, over [`ONE_DECODER_BATCHES`]
/// batches of `batch` frames (the 32 JPEGs repeated) after 3 warm-up batches.
fn one_decoder(
    gpu: &GpuContext,
    jpegs: &[Vec<u8>],
    batch: usize,
    configure: impl FnOnce(&mut JpegDecoder),
) -> Result<f64, GpuError> {
    gpu.cuda().bind_to_thread()?;
    let mut dec = JpegDecoder::new(1920, 1080)?;
    configure(&mut dec);
    let stream = gpu.new_stream()?;
    let mut out = stream.alloc_zeros::<u8>(batch * (1280 * 720 * 3 + 256))?;
    let refs: Vec<&[u8]> = jpegs
        .iter()
        .cycle()
        .take(batch)
        .map(Vec::as_slice)
        .collect();
    for _ in 0..3 {
        dec.decode_batch(&stream, &refs, &mut out)?;
    }
    stream.synchronize()?;
    let t = Instant::now();
    for _ in 0..ONE_DECODER_BATCHES {
        if dec
            .decode_batch(&stream, &refs, &mut out)?
            .iter()
            .any(Result::is_err)
        {
            return Err(GpuError::Jpeg("a frame failed".into()));
        }
    }
    stream.synchronize()?;
    Ok((ONE_DECODER_BATCHES * batch) as f64 / t.elapsed().as_secs_f64())
}

/// (backend, batch size, calls) of one decoder thread.
type Plan = (its_gpu::JpegBackend, usize, usize);

/// One decoder per backend in `plan` (backend, batch size), each in its own thread and
/// stream, `frames` frames each; returns (frames/s, per-thread seconds).
fn run_backends(
    gpu: &GpuContext,
    jpegs: &[Vec<u8>],
    plan: &[Plan],
) -> Result<(f64, Vec<f64>), GpuError> {
    let start = std::sync::Barrier::new(plan.len());
    let results: Vec<Result<(usize, f64), GpuError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = plan
            .iter()
            .map(|&(backend, batch, calls)| {
                let start = &start;
                sc.spawn(move || -> Result<(usize, f64), GpuError> {
                    gpu.cuda().bind_to_thread()?;
                    let mut dec = JpegDecoder::with_backend(backend, 1920, 1080)?;
                    let stream = gpu.new_stream()?;
                    let mut out = stream.alloc_zeros::<u8>(batch * (1280 * 720 * 3 + 256))?;
                    let refs: Vec<&[u8]> = (0..batch)
                        .map(|i| jpegs[i % jpegs.len()].as_slice())
                        .collect();
                    for _ in 0..2 {
                        dec.decode_batch(&stream, &refs, &mut out)?;
                    }
                    stream.synchronize()?;
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..calls {
                        dec.decode_batch(&stream, &refs, &mut out)?;
                    }
                    stream.synchronize()?;
                    Ok((batch * calls, t.elapsed().as_secs_f64()))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(GpuError::Jpeg("thread panicked".into())))
            })
            .collect()
    });
    let mut frames = 0usize;
    let mut secs = Vec::new();
    for r in results {
        let (f, t) = r?;
        frames += f;
        secs.push(t);
    }
    let wall = secs.iter().copied().fold(0.0f64, f64::max);
    Ok((frames as f64 / wall, secs))
}

/// Two threads, each with its own decode state and stream, on one hardware handle.
fn shared_handle(gpu: &GpuContext, jpegs: &[Vec<u8>], calls: usize) -> Result<f64, GpuError> {
    gpu.cuda().bind_to_thread()?;
    let first = JpegDecoder::new(1920, 1080)?;
    let second = first.sibling()?;
    let start = std::sync::Barrier::new(2);
    let results: Vec<Result<f64, GpuError>> = std::thread::scope(|sc| {
        let handles: Vec<_> = [first, second]
            .into_iter()
            .map(|mut dec| {
                let start = &start;
                sc.spawn(move || -> Result<f64, GpuError> {
                    gpu.cuda().bind_to_thread()?;
                    let stream = gpu.new_stream()?;
                    let mut out = stream.alloc_zeros::<u8>(32 * (1280 * 720 * 3 + 256))?;
                    let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
                    dec.decode_batch(&stream, &refs, &mut out)?;
                    stream.synchronize()?;
                    start.wait();
                    let t = Instant::now();
                    for _ in 0..calls {
                        dec.decode_batch(&stream, &refs, &mut out)?;
                    }
                    stream.synchronize()?;
                    Ok(t.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(GpuError::Jpeg("thread panicked".into())))
            })
            .collect()
    });
    let mut wall = 0.0f64;
    for r in results {
        wall = wall.max(r?);
    }
    Ok((2 * calls * jpegs.len()) as f64 / wall)
}

/// The JPEG engines (one hardware decoder, batch 32, `calls` batches) and `cpu` threads
/// decoding with zune-jpeg and uploading the RGB frames to the device, all at once; the CPU
/// threads stop when the engine thread is done. `pinned`: each CPU thread decodes into one of
/// two pinned host buffers of its own and uploads it asynchronously (the copy of one frame
/// overlaps the decode of the next) instead of a pageable copy per frame. Returns (total
/// frames/s, engine frames/s, CPU frames/s, ms per CPU frame spent decoding and queueing its
/// copy).
fn engines_plus_cpu(
    gpu: &GpuContext,
    jpegs: &[Vec<u8>],
    cpu: usize,
    calls: usize,
    pinned: bool,
) -> Result<(f64, f64, f64, f64), GpuError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let done = AtomicBool::new(false);
    let start = std::sync::Barrier::new(cpu + 1);
    let t0 = std::sync::OnceLock::<Instant>::new();
    let (hw, cpu_frames, cpu_busy) =
        std::thread::scope(|sc| -> Result<(f64, usize, f64), GpuError> {
            let workers: Vec<_> = (0..cpu)
                .map(|k| {
                    let (done, start) = (&done, &start);
                    sc.spawn(move || -> Result<(usize, f64), GpuError> {
                        gpu.cuda().bind_to_thread()?;
                        let stream = gpu.new_stream()?;
                        let frame: usize = 1280 * 720 * 3;
                        // The pool's buffers are a power of two long (4 MiB here), and the copy
                        // takes all of it: 1.5x the frame's bytes over PCIe, still far from its limit.
                        let mut dev = stream.alloc_zeros::<u8>(if pinned {
                            frame.next_power_of_two()
                        } else {
                            frame
                        })?;
                        let opts =
                            DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
                        // Two pinned buffers of the library's pool; `as_mut_slice` waits for the
                        // last copy out of a buffer before the decoder writes it again.
                        let pool = its_gpu::PinnedPool::new(gpu, 2 * frame.next_power_of_two());
                        let mut staging = Vec::new();
                        if pinned {
                            for _ in 0..2 {
                                staging.push(pool.take(frame)?);
                            }
                        }
                        start.wait();
                        let mut n = 0usize;
                        let mut in_decode = std::time::Duration::ZERO;
                        while !done.load(Ordering::Relaxed) {
                            let j = &jpegs[(k + n * cpu) % jpegs.len()];
                            let td = Instant::now();
                            let mut d = zune_jpeg::JpegDecoder::new_with_options(j, opts);
                            if pinned {
                                let buf = staging[n % 2].slice_mut();
                                d.decode_into(&mut buf.as_mut_slice()?[..frame])
                                    .map_err(|e| GpuError::Jpeg(e.to_string()))?;
                                stream.memcpy_htod(&*buf, &mut dev)?;
                            } else {
                                let rgb = d.decode().map_err(|e| GpuError::Jpeg(e.to_string()))?;
                                stream.memcpy_htod(&rgb, &mut dev)?;
                            }
                            in_decode += td.elapsed();
                            n += 1;
                        }
                        stream.synchronize()?;
                        Ok((n, in_decode.as_secs_f64()))
                    })
                })
                .collect();
            let hw = (|| -> Result<f64, GpuError> {
                gpu.cuda().bind_to_thread()?;
                let mut dec = JpegDecoder::new(1920, 1080)?;
                let stream = gpu.new_stream()?;
                let mut out = stream.alloc_zeros::<u8>(32 * (1280 * 720 * 3 + 256))?;
                let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
                dec.decode_batch(&stream, &refs, &mut out)?;
                stream.synchronize()?;
                start.wait();
                let t = *t0.get_or_init(Instant::now);
                for _ in 0..calls {
                    dec.decode_batch(&stream, &refs, &mut out)?;
                }
                stream.synchronize()?;
                Ok(t.elapsed().as_secs_f64())
            })();
            done.store(true, Ordering::Relaxed);
            let (mut frames, mut busy) = (0, 0.0);
            for w in workers {
                let (n, secs) = w
                    .join()
                    .unwrap_or_else(|_| Err(GpuError::Jpeg("thread panicked".into())))?;
                frames += n;
                busy += secs;
            }
            Ok((hw?, frames, busy))
        })?;
    let engine = (calls * jpegs.len()) as f64 / hw;
    let cpu_fps = cpu_frames as f64 / hw;
    let ms_per_frame = 1e3 * cpu_busy / cpu_frames.max(1) as f64;
    Ok((engine + cpu_fps, engine, cpu_fps, ms_per_frame))
}

/// Hardware engines alone at batch 64, GPU hybrid (Huffman on the SMs, batch > 100) alone,
/// and both at once on separate streams.
fn mixed_backends(gpu: &GpuContext, jpegs: &[Vec<u8>], s: &mut Summary) {
    use its_gpu::JpegBackend::{GpuHybrid, Hardware};
    println!("\n## nvJPEG backends side by side (q85 720p; batch, calls per thread)\n");
    println!("| plan | frames/s | seconds per thread |");
    println!("| --- | --- | --- |");
    let plans: [(&str, Vec<Plan>); 4] = [
        ("hardware batch 64", vec![(Hardware, 64, 30)]),
        ("gpu-hybrid batch 128", vec![(GpuHybrid, 128, 8)]),
        (
            "hardware b32 + gpu-hybrid b128",
            vec![(Hardware, 32, 60), (GpuHybrid, 128, 6)],
        ),
        (
            "hardware b32 + hardware b32 (2 handles)",
            vec![(Hardware, 32, 40), (Hardware, 32, 40)],
        ),
    ];
    match shared_handle(gpu, jpegs, 40) {
        Ok(fps) => {
            println!("| hardware b32 x 2 threads, one handle, two states | {fps:.0} | - |");
            s.jpeg_fps_by_plan
                .push(("hardware b32 x2 states one handle".into(), fps));
        }
        Err(e) => println!("| hardware b32 x 2 threads, one handle | failed: {e} | - |"),
    }
    for (cpu, pinned) in [
        (4usize, false),
        (8, false),
        (12, false),
        (2, true),
        (4, true),
        (6, true),
        (8, true),
    ] {
        let how = if pinned {
            "zune-jpeg into pinned, async upload"
        } else {
            "zune-jpeg + pageable upload"
        };
        match engines_plus_cpu(gpu, jpegs, cpu, 60, pinned) {
            Ok((total, engine, cpu_fps, ms)) => {
                println!(
                    "| hardware b32 + {cpu} CPU threads ({how}) | {total:.0} \
                     (engines {engine:.0}, CPU {cpu_fps:.0}; {ms:.2} ms per CPU frame in decode and copy) | - |"
                );
                let tag = if pinned { " pinned" } else { "" };
                s.jpeg_fps_by_plan
                    .push((format!("hardware b32 + {cpu} cpu threads{tag}"), total));
            }
            Err(e) => println!("| hardware + {cpu} CPU threads ({how}) | failed: {e} | - |"),
        }
    }
    for (name, plan) in plans {
        match run_backends(gpu, jpegs, &plan) {
            Ok((fps, secs)) => {
                println!("| {name} | {fps:.0} | {secs:.3?} |");
                s.jpeg_fps_by_plan.push((name.to_string(), fps));
            }
            Err(e) => println!("| {name} | failed: {e} | - |"),
        }
    }
}

/// GpuPipeline: preprocess (decode -> letterbox -> quality) + postprocess, batch 32 720p.
pub fn pipeline(gpu: &GpuContext, s: &mut Summary) -> Result<(), GpuError> {
    let jpegs = jpeg_set(32)?;
    let refs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
    let cfg = PipelineConfig::yolo640(32);
    let mut p = GpuPipeline::new(gpu, cfg)?;
    let mut rng = Rng(7);
    let outs: Vec<f32> = (0..32)
        .flat_map(|i| synthetic_output(&mut rng, &cfg.post, 640.0, 10 + i, 15))
        .collect();
    let dev = p.stream().clone_htod(&outs)?;
    let (mut st, mut wall) = (Vec::new(), Vec::new());
    for i in 0..60 {
        let t = Instant::now();
        let prep = p.preprocess(&refs)?;
        let geos: Vec<FrameGeometry> = prep
            .frames
            .iter()
            .map(|f| {
                f.as_ref()
                    .map(|f| f.geometry)
                    .map_err(|e| GpuError::Jpeg(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let (_, post_ms) = p.postprocess(&dev.as_view(), &geos)?;
        if i >= 10 {
            wall.push(t.elapsed().as_secs_f64() * 1e3);
            st.push([
                prep.timings.decode_ms,
                prep.timings.letterbox_ms,
                prep.timings.quality_ms,
                post_ms,
            ]);
        }
    }
    let col = |k: usize| median(st.iter().map(|r| r[k]).collect());
    let med = [col(0), col(1), col(2), col(3)];
    let (dp, pp) = p.pool_stats();
    println!(
        "\n## GpuPipeline, batch 32 x 720p q85 JPEG (median of 50 batches; device ms per stage)\n"
    );
    println!(
        "| nvJPEG decode | letterbox f16 | quality | decode+NMS | host wall per batch | backend |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    println!(
        "| {:.3} | {:.4} | {:.4} | {:.4} | {:.3} | {:?} |",
        med[0],
        med[1],
        med[2],
        med[3],
        median(wall.clone()),
        p.jpeg_backend()
    );
    let pool = format!(
        "device: hits {} misses {} held {} MiB high-water {} MiB; pinned: hits {} misses {}",
        dp.hits,
        dp.misses,
        dp.bytes_held >> 20,
        dp.high_water_bytes >> 20,
        pp.hits,
        pp.misses
    );
    println!("pools after 60 batches: {pool}");
    s.pipeline_ms = Some(med);
    s.pipeline_wall_ms = Some(median(wall));
    s.pool = Some(pool);
    Ok(())
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "n/a".into(), |x| format!("{x:.digits$}"))
}

impl Summary {
    pub fn print(&self, gpu: &GpuContext, json: bool) {
        let sanitizer = std::env::var("ITS_SANITIZER_VERDICT").unwrap_or_else(|_| "not run".into());
        println!("\n## Summary ({})\n", gpu.device_name());
        println!("| figure | value | target |");
        println!("| --- | --- | --- |");
        println!(
            "| fused letterbox, batch 32 x 720p -> FP16 640x640 | {} ms | <= 0.12 ms |",
            fmt(self.letterbox_b32_f16_ms, 4)
        );
        println!(
            "| nvJPEG decode alone, q85 720p, batch 32 ({}) | {} frames/s | >= 14,000 |",
            self.jpeg_backend.as_deref().unwrap_or("n/a"),
            fmt(self.jpeg_fps, 0)
        );
        let yuv = self
            .jpeg_fps_by_plan
            .iter()
            .find(|(n, _)| n == "hardware b32 planar yuv");
        println!(
            "| nvJPEG decode alone, planar YUV output (no RGB conversion), batch 32 | {} frames/s | - |",
            fmt(yuv.map(|a| a.1), 0)
        );
        let assisted = self
            .jpeg_fps_assist
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1));
        println!(
            "| JpegDecoder::decode_batch with CPU assist (best: {} of 32 frames on CPU threads) | {} frames/s | - |",
            assisted.map_or("n/a".to_string(), |a| a.0.to_string()),
            fmt(assisted.map(|a| a.1), 0)
        );
        let free_running = self
            .jpeg_fps_by_plan
            .iter()
            .filter(|(n, _)| n.contains("cpu threads"))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        println!(
            "| JPEG decode, engines + free-running CPU threads (best: {}) | {} frames/s | - |",
            free_running.map_or("n/a", |a| a.0.as_str()),
            fmt(free_running.map(|a| a.1), 0)
        );
        println!(
            "| decode + NMS, batch 32 YOLO11n outputs (device) | {} ms | <= 0.2 ms |",
            fmt(self.post_device_ms, 4)
        );
        println!(
            "| decode + NMS, host wall incl. sync | {} ms | - |",
            fmt(self.post_wall_ms, 4)
        );
        println!(
            "| decode + NMS, worst case (all anchors pass) | {} ms | - |",
            fmt(self.post_worst_device_ms, 4)
        );
        println!(
            "| pipeline decode+letterbox+quality+NMS, host wall per batch 32 | {} ms | - |",
            fmt(self.pipeline_wall_ms, 3)
        );
        println!("| compute-sanitizer (memcheck, racecheck) | {sanitizer} | clean |");
        if json {
            let v = serde_json::json!({
                "device": gpu.device_name(),
                "letterbox_b32_f16_ms": self.letterbox_b32_f16_ms,
                "jpeg_backend": self.jpeg_backend,
                "jpeg_mean_bytes": self.jpeg_mean_bytes,
                "jpeg_fps": self.jpeg_fps,
                "jpeg_fps_by_decoders": self.jpeg_fps_by_decoders,
                "jpeg_fps_by_plan": self.jpeg_fps_by_plan,
                "jpeg_fps_cpu_assist": self.jpeg_fps_assist,
                "cpu_decode_ms_per_frame": self.cpu_decode_ms,
                "postprocess_b32_device_ms": self.post_device_ms,
                "postprocess_b32_wall_ms": self.post_wall_ms,
                "postprocess_b32_worst_device_ms": self.post_worst_device_ms,
                "postprocess_b32_stages_ms": self.post_stages_ms,
                "pipeline_stage_ms": self.pipeline_ms,
                "pipeline_wall_ms": self.pipeline_wall_ms,
                "pools": self.pool,
                "sanitizer": sanitizer,
            });
            println!("JSON {v}");
        }
    }
}

/// One CPU thread decoding with zune-jpeg into a reused buffer (the CPU fallback's cost per
/// frame; the brief's anchor is OpenCV at 2.28 ms per frame on one thread): median of 3 rounds
/// over the 32 frames.
fn cpu_decode_reference(jpegs: &[Vec<u8>], s: &mut Summary) {
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut out = vec![0u8; 1280 * 720 * 3];
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        for j in jpegs {
            if let Err(e) =
                zune_jpeg::JpegDecoder::new_with_options(j.as_slice(), opts).decode_into(&mut out)
            {
                println!("| CPU decode, one thread | failed: {e} | - |");
                return;
            }
        }
        rounds.push(t.elapsed().as_secs_f64() * 1e3 / jpegs.len() as f64);
    }
    let ms = median(rounds);
    println!(
        "| CPU decode alone, one thread (zune-jpeg, reused buffer) | CPU | {} | {:.0} | {ms:.3} per frame |",
        3 * jpegs.len(),
        1e3 / ms
    );
    s.cpu_decode_ms = Some(ms);
}
