//! Frame quality: score semantics (CPU), and the GPU kernel against the f64 CPU reference on
//! random and structured frames of many sizes.

use its_gpu::letterbox::reference::random_bytes;
use its_gpu::quality::reference::measure;
use its_gpu::quality::{QualityKernel, reports_from};
use its_gpu::testdata::gpu_or_skip;
use its_gpu::testdata::synthetic_scene;
use its_gpu::{FrameRef, HostFrame, QualityIssue, QualityReport};

/// f32 luma on the GPU vs f64 here; sums in f64 on both.
const TOL: f32 = 2e-4;

fn frame(data: &[u8], w: u32, h: u32) -> HostFrame<'_> {
    HostFrame {
        data,
        width: w,
        height: h,
        pitch: 3 * w as usize,
    }
}

#[test]
fn flat_dark_bright_and_blurred_frames_score_low_and_a_scene_scores_high() {
    let gray = vec![128u8; 64 * 48 * 3];
    let flat = measure(&frame(&gray, 64, 48));
    assert!(flat.contrast < 1e-6 && flat.sharpness < 1e-6);
    assert_eq!(flat.score(), 0.0);
    assert_eq!(flat.issue(), Some(QualityIssue::Blurred));

    let scene = synthetic_scene(640, 360, 3);
    let good = measure(&frame(&scene, 640, 360));
    assert!(good.score() > 0.5, "{good:?} score {}", good.score());
    assert_eq!(good.issue(), None);

    let dark: Vec<u8> = scene.iter().map(|v| v / 12).collect();
    let d = measure(&frame(&dark, 640, 360));
    assert_eq!(d.issue(), Some(QualityIssue::Dark), "{d:?}");

    let bright: Vec<u8> = scene.iter().map(|v| 235 + v / 13).collect();
    let b = measure(&frame(&bright, 640, 360));
    assert_eq!(b.issue(), Some(QualityIssue::Overexposed), "{b:?}");

    // Exposure window edges.
    let r = |brightness| QualityReport {
        brightness,
        contrast: 1.0,
        sharpness: 1.0,
    };
    assert_eq!(r(0.5).score(), 1.0);
    assert_eq!(r(0.25).score(), 1.0);
    assert!((r(0.15).score() - 0.5).abs() < 1e-6);
    assert_eq!(r(0.0).score(), 0.0);
    assert_eq!(r(1.0).score(), 0.0);
}

#[test]
fn gpu_matches_reference_on_many_shapes() {
    let Some(gpu) = gpu_or_skip() else { return };
    let stream = gpu.new_stream().unwrap();
    let k = QualityKernel::load(&gpu).unwrap();
    let sizes = [
        (1u32, 1u32),
        (2, 1),
        (1, 3),
        (37, 901),
        (1280, 720),
        (720, 1280),
        (3840, 2160),
        (129, 127),
    ];
    for batch in [1usize, 8, 32] {
        let mut packed = Vec::new();
        let mut owned = Vec::new();
        let mut refs = Vec::new();
        for i in 0..batch {
            let (w, h) = sizes[i % sizes.len()];
            let pitch = 3 * w + (i as u32 % 3) * 5;
            let data = if i % 2 == 0 {
                random_bytes(100 + i as u64, (pitch * h) as usize)
            } else {
                let s = synthetic_scene(w, h, i as u64);
                let mut d = vec![7u8; (pitch * h) as usize];
                for y in 0..h as usize {
                    let row = 3 * w as usize;
                    d[y * pitch as usize..y * pitch as usize + row]
                        .copy_from_slice(&s[y * row..(y + 1) * row]);
                }
                d
            };
            let offset = packed.len().next_multiple_of(256);
            packed.resize(offset, 0);
            refs.push(FrameRef {
                offset: offset as u64,
                width: w,
                height: h,
                pitch,
            });
            packed.extend_from_slice(&data);
            owned.push((data, w, h, pitch));
        }
        let input = stream.clone_htod(&packed).unwrap();
        let mut out = stream.clone_htod(&vec![f32::NAN; 3 * batch]).unwrap();
        k.launch(&stream, &input.as_view(), &refs, &mut out.as_view_mut())
            .unwrap();
        let host = stream.clone_dtoh(&out).unwrap();
        stream.synchronize().unwrap();
        for (i, (got, (data, w, h, pitch))) in reports_from(&host).iter().zip(&owned).enumerate() {
            let want = measure(&HostFrame {
                data,
                width: *w,
                height: *h,
                pitch: *pitch as usize,
            });
            for (a, b, what) in [
                (got.brightness, want.brightness, "brightness"),
                (got.contrast, want.contrast, "contrast"),
                (got.sharpness, want.sharpness, "sharpness"),
            ] {
                assert!(
                    (a - b).abs() <= TOL,
                    "batch {batch} frame {i} ({w}x{h}) {what}: gpu {a} cpu {b}"
                );
            }
        }
    }
}

#[test]
fn frames_outside_the_buffer_are_refused() {
    let Some(gpu) = gpu_or_skip() else { return };
    let stream = gpu.new_stream().unwrap();
    let k = QualityKernel::load(&gpu).unwrap();
    let input = stream.clone_htod(&vec![0u8; 100]).unwrap();
    let mut out = stream.clone_htod(&[0f32; 3]).unwrap();
    let f = FrameRef {
        offset: 0,
        width: 10,
        height: 10,
        pitch: 30,
    };
    assert!(
        k.launch(&stream, &input.as_view(), &[f], &mut out.as_view_mut())
            .is_err()
    );
}
