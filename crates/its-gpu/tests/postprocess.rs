//! GPU post-processing (decode + top-k + NMS + letterbox inverse) against the CPU reference,
//! and the CPU reference against its-engine's decode + nms. GPU tests skip with a message
//! where no device is present, and fail instead when ITS_REQUIRE_GPU=1.

use its_engine::decode::decode_yolov8;
use its_engine::nms::nms;
use its_engine::preprocess::Letterbox;
use its_gpu::pool::{DevicePool, PinnedPool};
use its_gpu::postprocess::reference::{Rng, postprocess_frame, synthetic_output};
use its_gpu::testdata::gpu_or_skip;
use its_gpu::{Detection, FrameGeometry, GpuContext, PostprocessConfig, Postprocessor};

fn geometry(src_w: u32, src_h: u32, size: u32) -> FrameGeometry {
    let lb = Letterbox::new(src_w, src_h, size, size);
    FrameGeometry {
        scale: lb.scale,
        pad_x: lb.pad_x,
        pad_y: lb.pad_y,
        src_width: src_w,
        src_height: src_h,
    }
}

fn cfg(classes: usize, anchors: usize) -> PostprocessConfig {
    PostprocessConfig {
        num_classes: classes,
        num_anchors: anchors,
        ..PostprocessConfig::yolo_coco640()
    }
}

/// Uniform random output: every anchor's best score is high, so nearly all pass and NMS
/// and the top-k selection get real work. Scores rounded to 1/16 create many exact ties.
fn uniform_output(rng: &mut Rng, cfg: &PostprocessConfig, size: f32, ties: bool) -> Vec<f32> {
    let (n, c) = (cfg.num_anchors, cfg.num_classes);
    let mut out = vec![0.0; (4 + c) * n];
    for a in 0..n {
        out[a] = rng.next_f32() * size;
        out[n + a] = rng.next_f32() * size;
        out[2 * n + a] = rng.next_f32() * size * 0.3;
        out[3 * n + a] = rng.next_f32() * size * 0.3;
    }
    for v in &mut out[4 * n..] {
        let s = rng.next_f32();
        *v = if ties { (s * 16.0).floor() / 16.0 } else { s };
    }
    out
}

#[test]
fn reference_matches_its_engine_decode_and_nms() {
    let mut rng = Rng(11);
    for (classes, anchors, objects) in [(80usize, 8400usize, 30usize), (3, 500, 10), (1, 7, 2)] {
        let c = cfg(classes, anchors);
        for (w, h) in [(1280u32, 720u32), (720, 1280), (1, 1), (3840, 2160)] {
            let out = synthetic_output(&mut rng, &c, 640.0, objects, 12);
            let geo = geometry(w, h, 640);
            let lb = Letterbox::new(w, h, 640, 640);
            let cands = decode_yolov8(&out, anchors, classes, c.score_threshold);
            let engine: Vec<Detection> = nms(cands, c.iou_threshold, c.max_detections, true)
                .into_iter()
                .map(|d| {
                    let (x1, y1) = lb.to_original(d.x1, d.y1);
                    let (x2, y2) = lb.to_original(d.x2, d.y2);
                    Detection {
                        class_id: d.class_id,
                        score: d.score,
                        x1,
                        y1,
                        x2,
                        y2,
                    }
                })
                .collect();
            let ours = postprocess_frame(&out, &c, &geo);
            assert!(!ours.is_empty());
            assert_eq!(ours, engine, "{classes}x{anchors} {w}x{h}");
        }
    }
}

fn check_gpu(
    gpu: &GpuContext,
    c: PostprocessConfig,
    frames: &[(Vec<f32>, FrameGeometry)],
    label: &str,
) {
    let stream = gpu.new_stream().unwrap();
    let pool = DevicePool::new(stream.clone(), 1 << 30);
    let pinned = PinnedPool::new(gpu, 64 << 20);
    let mut post = Postprocessor::new(gpu, c, pool, pinned).unwrap();
    let packed: Vec<f32> = frames.iter().flat_map(|(o, _)| o.iter().copied()).collect();
    let dev = stream.clone_htod(&packed).unwrap();
    let geos: Vec<FrameGeometry> = frames.iter().map(|(_, g)| *g).collect();
    // Twice: the second run reuses pooled scratch that holds the first run's data.
    for round in 0..2 {
        let got = post.run(&stream, &dev.as_view(), &geos).unwrap();
        assert_eq!(got.len(), frames.len());
        for (i, ((o, g), dets)) in frames.iter().zip(&got).enumerate() {
            let want = postprocess_frame(o, &c, g);
            assert_eq!(
                dets.len(),
                want.len(),
                "{label} round {round} frame {i}: count"
            );
            for (k, (a, b)) in dets.iter().zip(&want).enumerate() {
                assert_eq!(a.class_id, b.class_id, "{label} frame {i} det {k}");
                assert_eq!(
                    a.score.to_bits(),
                    b.score.to_bits(),
                    "{label} frame {i} det {k}"
                );
                for (x, y) in [(a.x1, b.x1), (a.y1, b.y1), (a.x2, b.x2), (a.y2, b.y2)] {
                    assert!(
                        x.to_bits() == y.to_bits(),
                        "{label} frame {i} det {k}: {a:?} vs {b:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn gpu_matches_reference_on_yolo_like_outputs() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng(5);
    let c = cfg(80, 8400);
    let sizes = [
        (1280u32, 720u32),
        (720, 1280),
        (3840, 2160),
        (1, 1),
        (37, 901),
    ];
    for batch in [1usize, 32] {
        let frames: Vec<(Vec<f32>, FrameGeometry)> = (0..batch)
            .map(|i| {
                let (w, h) = sizes[i % sizes.len()];
                (
                    synthetic_output(&mut rng, &c, 640.0, 5 + i % 40, 15),
                    geometry(w, h, 640),
                )
            })
            .collect();
        check_gpu(&gpu, c, &frames, &format!("yolo batch {batch}"));
    }
}

#[test]
fn gpu_matches_reference_on_uniform_random_outputs_of_many_shapes() {
    let Some(gpu) = gpu_or_skip() else { return };
    let mut rng = Rng(9);
    // (classes, anchors, batch, max_candidates, max_detections, class_aware, ties)
    let cases = [
        (1usize, 1usize, 1usize, 4096usize, 300usize, true, false),
        (3, 37, 5, 4096, 300, true, true),
        (80, 100, 7, 64, 300, true, false),
        (80, 8400, 2, 4096, 300, true, false),
        (80, 8400, 3, 1000, 100, false, true),
        (2, 5000, 4, 4096, 512, true, true),
        (17, 333, 32, 200, 10, true, false),
    ];
    for (classes, anchors, batch, max_cand, max_det, aware, ties) in cases {
        let c = PostprocessConfig {
            max_candidates: max_cand,
            max_detections: max_det,
            class_aware: aware,
            score_threshold: 0.3,
            iou_threshold: 0.5,
            ..cfg(classes, anchors)
        };
        let frames: Vec<(Vec<f32>, FrameGeometry)> = (0..batch)
            .map(|i| {
                let g = if i % 2 == 0 {
                    geometry(1280, 720, 640)
                } else {
                    FrameGeometry::identity(640, 640)
                };
                (uniform_output(&mut rng, &c, 640.0, ties), g)
            })
            .collect();
        check_gpu(
            &gpu,
            c,
            &frames,
            &format!("{classes}x{anchors} batch {batch} k {max_cand} det {max_det}"),
        );
    }
}

#[test]
fn invalid_configs_and_batches_are_refused() {
    let Some(gpu) = gpu_or_skip() else { return };
    let stream = gpu.new_stream().unwrap();
    let pool = DevicePool::new(stream.clone(), 1 << 28);
    let pinned = PinnedPool::new(&gpu, 1 << 24);
    let bad = PostprocessConfig {
        max_detections: 10_000,
        ..cfg(80, 8400)
    };
    assert!(Postprocessor::new(&gpu, bad, pool.clone(), pinned.clone()).is_err());
    let c = cfg(3, 10);
    let mut post = Postprocessor::new(&gpu, c, pool, pinned).unwrap();
    let short = stream.clone_htod(&vec![0.5f32; 69]).unwrap();
    let geo = [FrameGeometry::identity(10, 10)];
    assert!(post.run(&stream, &short.as_view(), &geo).is_err());
    let ok = stream.clone_htod(&vec![0.5f32; 70]).unwrap();
    assert!(post.run(&stream, &ok.as_view(), &[]).is_err());
    assert_eq!(post.run(&stream, &ok.as_view(), &geo).unwrap()[0].len(), 1);
}
