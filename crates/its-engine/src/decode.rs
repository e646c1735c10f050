//! Decoding raw YOLO output tensors into scored boxes (CPU reference).

/// A scored box in model-input pixels, before NMS.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Class index into the manifest's `classes`.
    pub class_id: u32,
    /// Confidence in 0..1.
    pub score: f32,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

impl Candidate {
    /// Box area (0 for degenerate boxes).
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }
}

/// A final detection in original-frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Class index into the manifest's `classes`.
    pub class_id: u32,
    /// Confidence in 0..1.
    pub score: f32,
    /// Left edge.
    pub x1: f32,
    /// Top edge.
    pub y1: f32,
    /// Right edge.
    pub x2: f32,
    /// Bottom edge.
    pub y2: f32,
}

fn from_center(class_id: usize, score: f32, cx: f32, cy: f32, w: f32, h: f32) -> Candidate {
    Candidate {
        class_id: class_id as u32,
        score,
        x1: cx - w * 0.5,
        y1: cy - h * 0.5,
        x2: cx + w * 0.5,
        y2: cy + h * 0.5,
    }
}

/// Decodes one image of a YOLOv8-format output, `[4 + num_classes, num_anchors]` row-major
/// (element `(row, anchor)` at `output[row * num_anchors + anchor]`).
///
/// Per anchor: the best class is the first class with the highest score; the anchor becomes
/// a candidate when that score is `> score_threshold` (strictly, as Ultralytics does; NaN
/// never passes). Box: `x1 = cx - w / 2`, `y1 = cy - h / 2`, `x2 = cx + w / 2`,
/// `y2 = cy + h / 2`. Candidates come out in anchor order.
///
/// # Panics
/// If `output.len() != (4 + num_classes) * num_anchors`.
pub fn decode_yolov8(
    output: &[f32],
    num_anchors: usize,
    num_classes: usize,
    score_threshold: f32,
) -> Vec<Candidate> {
    assert_eq!(
        output.len(),
        (4 + num_classes) * num_anchors,
        "yolov8 output must hold (4 + {num_classes}) * {num_anchors} floats"
    );
    let row = |r: usize| &output[r * num_anchors..(r + 1) * num_anchors];
    // Walk class rows (contiguous) keeping the running best per anchor.
    let mut best_score = vec![f32::NEG_INFINITY; num_anchors];
    let mut best_class = vec![0usize; num_anchors];
    for c in 0..num_classes {
        for (a, &s) in row(4 + c).iter().enumerate() {
            if s > best_score[a] {
                best_score[a] = s;
                best_class[a] = c;
            }
        }
    }
    let (cx, cy, w, h) = (row(0), row(1), row(2), row(3));
    (0..num_anchors)
        .filter(|&a| best_score[a] > score_threshold)
        .map(|a| from_center(best_class[a], best_score[a], cx[a], cy[a], w[a], h[a]))
        .collect()
}

/// Decodes one image of a YOLOv5-format output, `[num_anchors, 5 + num_classes]` row-major:
/// per anchor `cx, cy, w, h, objectness, p_0 .. p_{C-1}`.
///
/// Per anchor: the best class is the first class with the highest probability;
/// `score = objectness * p_best`; the anchor becomes a candidate when `score >
/// score_threshold` (anchors with `objectness <= score_threshold` are skipped first, which
/// changes nothing for probabilities <= 1). Box as in [`decode_yolov8`].
///
/// # Panics
/// If `output.len() != num_anchors * (5 + num_classes)`.
pub fn decode_yolov5(
    output: &[f32],
    num_anchors: usize,
    num_classes: usize,
    score_threshold: f32,
) -> Vec<Candidate> {
    let stride = 5 + num_classes;
    assert_eq!(
        output.len(),
        num_anchors * stride,
        "yolov5 output must hold {num_anchors} * (5 + {num_classes}) floats"
    );
    let mut out = Vec::new();
    for v in output.chunks_exact(stride) {
        let obj = v[4];
        if obj.is_nan() || obj <= score_threshold {
            continue;
        }
        let mut best = 0;
        for c in 1..num_classes {
            if v[5 + c] > v[5 + best] {
                best = c;
            }
        }
        let score = obj * v[5 + best];
        if score > score_threshold {
            out.push(from_center(best, score, v[0], v[1], v[2], v[3]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yolov8_picks_best_class_and_thresholds() {
        // 3 anchors, 2 classes: rows cx, cy, w, h, class0, class1.
        #[rustfmt::skip]
        let out = [
            10.0, 50.0, 90.0,   // cx
            20.0, 60.0, 70.0,   // cy
            4.0,  8.0,  2.0,    // w
            6.0,  10.0, 2.0,    // h
            0.9,  0.1,  0.25,   // class 0
            0.3,  0.8,  0.2,    // class 1
        ];
        let c = decode_yolov8(&out, 3, 2, 0.25);
        // Anchor 2's best is 0.25, not > 0.25: dropped.
        assert_eq!(c.len(), 2);
        assert_eq!(
            c[0],
            Candidate {
                class_id: 0,
                score: 0.9,
                x1: 8.0,
                y1: 17.0,
                x2: 12.0,
                y2: 23.0
            }
        );
        assert_eq!(
            c[1],
            Candidate {
                class_id: 1,
                score: 0.8,
                x1: 46.0,
                y1: 55.0,
                x2: 54.0,
                y2: 65.0
            }
        );
    }

    #[test]
    fn yolov8_ties_go_to_the_lower_class_and_nan_never_passes() {
        #[rustfmt::skip]
        let out = [
            1.0, 1.0,
            1.0, 1.0,
            2.0, 2.0,
            2.0, 2.0,
            0.5, f32::NAN,
            0.5, f32::NAN,
        ];
        let c = decode_yolov8(&out, 2, 2, 0.1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 0);
        assert_eq!((c[0].x1, c[0].y1, c[0].x2, c[0].y2), (0.0, 0.0, 2.0, 2.0));
    }

    #[test]
    #[should_panic(expected = "yolov8 output")]
    fn yolov8_rejects_wrong_length() {
        decode_yolov8(&[0.0; 10], 2, 2, 0.1);
    }

    #[test]
    fn yolov5_multiplies_objectness() {
        // 3 anchors, 2 classes: cx, cy, w, h, obj, p0, p1.
        #[rustfmt::skip]
        let out = [
            100.0, 100.0, 20.0, 40.0, 0.8, 0.5, 0.75,  // 0.8 * 0.75 = 0.6, class 1
            10.0,  10.0,  2.0,  2.0,  0.2, 1.0, 0.0,   // obj 0.2 <= 0.25: skipped
            50.0,  50.0,  10.0, 10.0, 0.5, 0.4, 0.1,   // 0.5 * 0.4 = 0.2 <= 0.25: dropped
        ];
        let c = decode_yolov5(&out, 3, 2, 0.25);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].class_id, 1);
        assert!((c[0].score - 0.6).abs() < 1e-6);
        assert_eq!(
            (c[0].x1, c[0].y1, c[0].x2, c[0].y2),
            (90.0, 80.0, 110.0, 120.0)
        );
    }
}
