//! nvJPEG batched decode against zune-jpeg, and the whole GpuPipeline (decode -> letterbox
//! -> quality, then post-processing) with pool reuse. GPU tests skip with a message where
//! no device (or no nvJPEG) is present, and fail instead when ITS_REQUIRE_GPU=1.

use its_gpu::letterbox::reference::letterbox_batch;
use its_gpu::nvjpeg::is_baseline_huffman;
use its_gpu::postprocess::reference::{Rng, postprocess_frame, synthetic_output};
use its_gpu::quality::reference::measure;
use its_gpu::testdata::gpu_or_skip;
use its_gpu::testdata::{encode_jpeg, encode_jpeg_progressive, synthetic_scene};
use its_gpu::{GpuError, GpuPipeline, HostFrame, JpegDecoder, PipelineConfig, gpu_required};

fn zune_rgb(jpeg: &[u8]) -> Vec<u8> {
    use zune_jpeg::JpegDecoder as Zune;
    use zune_jpeg::zune_core::colorspace::ColorSpace;
    use zune_jpeg::zune_core::options::DecoderOptions;
    let opts = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB);
    Zune::new_with_options(jpeg, opts).decode().unwrap()
}

/// (mean abs difference, PSNR dB) of two u8 images.
fn compare(a: &[u8], b: &[u8]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let (mut abs, mut sq) = (0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let d = f64::from(x) - f64::from(y);
        abs += d.abs();
        sq += d * d;
    }
    let n = a.len() as f64;
    let mse = sq / n;
    let psnr = if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    };
    (abs / n, psnr)
}

/// Mean abs difference budget between two conforming decoders (IDCT and chroma upsampling
/// differ), and a PSNR floor.
const MAX_MEAN_ABS: f64 = 3.0;
const MIN_PSNR: f64 = 30.0;

#[test]
fn baseline_detection_reads_the_frame_header() {
    let rgb = synthetic_scene(64, 48, 1);
    assert!(is_baseline_huffman(&encode_jpeg(&rgb, 64, 48, 85).unwrap()));
    assert!(!is_baseline_huffman(
        &encode_jpeg_progressive(&rgb, 64, 48, 85).unwrap()
    ));
    assert!(!is_baseline_huffman(&[0xFF, 0xD8, 0x42, 0x42, 0, 0]));
    assert!(!is_baseline_huffman(&[0xFF, 0xD8]));
}

#[test]
fn decodes_a_mixed_batch_like_zune_jpeg_and_isolates_bad_frames() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut dec = match JpegDecoder::new(4096, 4096) {
        Ok(d) => d,
        Err(e @ GpuError::NoNvjpeg(_)) if !gpu_required() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    eprintln!("nvjpeg backend: {:?}", dec.backend());
    let stream = gpu.new_stream().unwrap();
    let sizes = [
        (1280u32, 720u32),
        (37, 901),
        (720, 1280),
        (1, 1),
        (3840, 2160),
        (641, 479),
    ];
    for (batch, assist) in [(1usize, 0usize), (7, 0), (32, 0), (7, 3), (32, 4), (32, 8)] {
        dec.set_cpu_assist(assist);
        let mut jpegs = Vec::new();
        let mut rgbs = Vec::new();
        for i in 0..batch {
            let (w, h) = sizes[i % sizes.len()];
            let rgb = synthetic_scene(w, h, i as u64);
            let q = [85u8, 95, 60][i % 3];
            // Every fifth frame progressive: decoded on the CPU path, same result.
            let j = if i % 5 == 4 {
                encode_jpeg_progressive(&rgb, w, h, q).unwrap()
            } else {
                encode_jpeg(&rgb, w, h, q).unwrap()
            };
            jpegs.push(j);
            rgbs.push((w, h));
        }
        // A corrupt frame in the middle, which must not take the batch down.
        let bad_at = batch / 2;
        let garbage = vec![0x42u8; 1000];
        let mut inputs: Vec<&[u8]> = jpegs.iter().map(Vec::as_slice).collect();
        inputs.insert(bad_at, &garbage);
        let mut out = stream
            .alloc_zeros::<u8>(batch * (3840 * 2160 * 3 + 256))
            .unwrap();
        let res = dec.decode_batch(&stream, &inputs, &mut out).unwrap();
        let host = stream.clone_dtoh(&out).unwrap();
        stream.synchronize().unwrap();
        assert_eq!(res.len(), batch + 1);
        assert!(res[bad_at].is_err());
        let good: Vec<_> = res.iter().filter_map(|r| r.as_ref().ok()).collect();
        assert_eq!(good.len(), batch);
        for (i, (f, jpeg)) in good.iter().zip(&jpegs).enumerate() {
            assert_eq!((f.width, f.height), rgbs[i]);
            let start = f.offset as usize;
            let gpu_rgb = &host[start..start + (f.pitch * f.height) as usize];
            let (mean_abs, psnr) = compare(gpu_rgb, &zune_rgb(jpeg));
            assert!(
                mean_abs <= MAX_MEAN_ABS && psnr >= MIN_PSNR,
                "batch {batch} frame {i} {}x{}: mean abs {mean_abs:.3}, psnr {psnr:.1}",
                f.width,
                f.height
            );
        }
    }
}

#[test]
fn pipeline_prepares_batches_from_pools_and_postprocesses() {
    let Some(gpu) = gpu_or_skip() else { return };
    // Portrait frames too: accept up to 1920 on both axes; 2 frames a batch on CPU threads.
    let cfg = PipelineConfig {
        max_height: 1920,
        jpeg_cpu_assist: 2,
        ..PipelineConfig::yolo640(8)
    };
    let mut p = match GpuPipeline::new(&gpu, cfg) {
        Ok(p) => p,
        Err(e @ GpuError::NoNvjpeg(_)) if !gpu_required() => {
            eprintln!("skipped: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let sizes = [(1280u32, 720u32), (720, 1280), (640, 480), (1920, 1080)];
    let frames: Vec<(u32, u32, Vec<u8>)> = (0..6)
        .map(|i| {
            let (w, h) = sizes[i % sizes.len()];
            (
                w,
                h,
                encode_jpeg(&synthetic_scene(w, h, 50 + i as u64), w, h, 85).unwrap(),
            )
        })
        .collect();
    let too_big = encode_jpeg(&synthetic_scene(1921, 8, 1), 1921, 8, 85).unwrap();
    let mut inputs: Vec<&[u8]> = frames.iter().map(|(_, _, j)| j.as_slice()).collect();
    inputs.push(&too_big);
    let mut misses_after_first = 0;
    for round in 0..3 {
        let prepared = p.preprocess(&inputs).unwrap();
        assert_eq!(prepared.batch, 6);
        assert!(prepared.frames[6].is_err());
        // Input tensor vs the CPU letterbox of zune-decoded frames (decoders differ a little).
        let tensor = p.input_f16(prepared.batch).unwrap();
        let host = p.stream().clone_dtoh(&tensor).unwrap();
        p.stream().synchronize().unwrap();
        let decoded: Vec<Vec<u8>> = frames.iter().map(|(_, _, j)| zune_rgb(j)).collect();
        let hf: Vec<HostFrame<'_>> = decoded
            .iter()
            .zip(&frames)
            .map(|(d, (w, h, _))| HostFrame {
                data: d,
                width: *w,
                height: *h,
                pitch: 3 * *w as usize,
            })
            .collect();
        let (reference, params) = letterbox_batch(&hf, 640, 640);
        let mean_abs: f64 = host
            .iter()
            .zip(&reference)
            .map(|(&g, &r)| (half::f16::from_bits(g).to_f64() - r).abs())
            .sum::<f64>()
            / reference.len() as f64;
        assert!(mean_abs < 3.0 / 255.0, "round {round}: mean abs {mean_abs}");
        for (i, f) in prepared.frames[..6].iter().enumerate() {
            let f = f.as_ref().unwrap();
            assert_eq!(f.slot, i);
            assert_eq!(
                (f.geometry.pad_x, f.geometry.pad_y),
                (params[i].pad_x, params[i].pad_y)
            );
            let want = measure(&hf[i]);
            assert!(
                (f.quality.brightness - want.brightness).abs() < 0.02
                    && (f.quality.sharpness - want.sharpness).abs() < 0.02,
                "frame {i}: {:?} vs {want:?}",
                f.quality
            );
        }
        // Post-process a synthetic detector output for these frames.
        let post = cfg.post;
        let mut rng = Rng(round);
        let outs: Vec<Vec<f32>> = (0..6)
            .map(|_| synthetic_output(&mut rng, &post, 640.0, 20, 10))
            .collect();
        let packed: Vec<f32> = outs.iter().flatten().copied().collect();
        let dev = p.stream().clone_htod(&packed).unwrap();
        let geos: Vec<_> = prepared.frames[..6]
            .iter()
            .map(|f| f.as_ref().unwrap().geometry)
            .collect();
        let (dets, ms) = p.postprocess(&dev.as_view(), &geos).unwrap();
        assert!(ms >= 0.0);
        for (i, d) in dets.iter().enumerate() {
            assert_eq!(
                *d,
                postprocess_frame(&outs[i], &post, &geos[i]),
                "frame {i}"
            );
        }
        let (dev_stats, pinned_stats) = p.pool_stats();
        if round == 0 {
            misses_after_first = dev_stats.misses + pinned_stats.misses;
        } else {
            assert_eq!(
                dev_stats.misses + pinned_stats.misses,
                misses_after_first,
                "steady state must not allocate: {dev_stats:?} {pinned_stats:?}"
            );
            assert!(dev_stats.hits > 0 && pinned_stats.hits > 0);
        }
    }
}
