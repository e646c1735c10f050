//! Greedy non-maximum suppression (CPU reference).

use crate::decode::Candidate;

/// Intersection over union of two boxes; 0 when the union is empty.
pub fn iou(a: &Candidate, b: &Candidate) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

/// Greedy NMS.
///
/// 1. Sort by score, descending, stable (equal scores keep their input order; NaN scores
///    sort last).
/// 2. Walk the sorted list; keep a candidate unless a kept box (of the same class when
///    `class_aware`, of any class otherwise) has `iou > iou_threshold` with it.
/// 3. Stop once `max_detections` are kept.
///
/// Output is in descending score order.
pub fn nms(
    mut cands: Vec<Candidate>,
    iou_threshold: f32,
    max_detections: usize,
    class_aware: bool,
) -> Vec<Candidate> {
    // `total_cmp` puts positive NaN above +inf; map NaN to -inf so it sorts last.
    let key = |c: &Candidate| {
        if c.score.is_nan() {
            f32::NEG_INFINITY
        } else {
            c.score
        }
    };
    cands.sort_by(|a, b| key(b).total_cmp(&key(a)));
    let mut kept: Vec<Candidate> = Vec::with_capacity(max_detections.min(cands.len()));
    for c in cands {
        if kept.len() >= max_detections {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| (!class_aware || k.class_id == c.class_id) && iou(k, &c) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class_id: u32, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Candidate {
        Candidate {
            class_id,
            score,
            x1,
            y1,
            x2,
            y2,
        }
    }

    #[test]
    fn iou_by_hand() {
        // [0,10]x[0,10] vs [5,15]x[0,10]: inter 50, union 150.
        let a = cand(0, 1.0, 0.0, 0.0, 10.0, 10.0);
        let b = cand(0, 1.0, 5.0, 0.0, 15.0, 10.0);
        assert!((iou(&a, &b) - 1.0 / 3.0).abs() < 1e-6);
        // Disjoint and degenerate.
        let c = cand(0, 1.0, 20.0, 20.0, 30.0, 30.0);
        assert_eq!(iou(&a, &c), 0.0);
        let d = cand(0, 1.0, 1.0, 1.0, 1.0, 1.0);
        assert_eq!(iou(&d, &d), 0.0);
    }

    #[test]
    fn suppresses_overlapping_same_class() {
        // b overlaps a with IoU 81/100 = 0.81 (a: [0,10]^2, b: [1,10]^2 -> inter 81, union 100).
        let a = cand(2, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = cand(2, 0.8, 1.0, 1.0, 10.0, 10.0);
        // c: IoU with a = 1/3 <= 0.45: kept.
        let c = cand(2, 0.7, 5.0, 0.0, 15.0, 10.0);
        let out = nms(vec![c, b, a], 0.45, 10, true);
        assert_eq!(out, vec![a, c]);
    }

    #[test]
    fn class_aware_keeps_other_classes() {
        let a = cand(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = cand(1, 0.8, 0.0, 0.0, 10.0, 10.0);
        assert_eq!(nms(vec![a, b], 0.45, 10, true), vec![a, b]);
        // Class-agnostic: the identical box of another class is suppressed.
        assert_eq!(nms(vec![a, b], 0.45, 10, false), vec![a]);
    }

    #[test]
    fn iou_equal_to_threshold_is_not_suppressed() {
        // IoU exactly 0.5: [0,10]x[0,10] vs [0,10]x[0,5] -> inter 50, union 100.
        let a = cand(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = cand(0, 0.8, 0.0, 0.0, 10.0, 5.0);
        assert_eq!(nms(vec![a, b], 0.5, 10, true).len(), 2);
        assert_eq!(nms(vec![a, b], 0.49, 10, true).len(), 1);
    }

    #[test]
    fn sort_is_stable_and_max_detections_caps() {
        // Three disjoint boxes, two with equal scores: input order kept among equals.
        let a = cand(0, 0.5, 0.0, 0.0, 1.0, 1.0);
        let b = cand(0, 0.5, 10.0, 10.0, 11.0, 11.0);
        let c = cand(0, 0.7, 20.0, 20.0, 21.0, 21.0);
        assert_eq!(nms(vec![a, b, c], 0.45, 10, true), vec![c, a, b]);
        assert_eq!(nms(vec![b, a, c], 0.45, 10, true), vec![c, b, a]);
        assert_eq!(nms(vec![a, b, c], 0.45, 2, true), vec![c, a]);
        assert!(nms(Vec::new(), 0.45, 2, true).is_empty());
    }

    #[test]
    fn nan_scores_sort_last() {
        let a = cand(0, f32::NAN, 0.0, 0.0, 1.0, 1.0);
        let b = cand(0, 0.1, 10.0, 10.0, 11.0, 11.0);
        let out = nms(vec![a, b], 0.45, 1, true);
        assert_eq!(out, vec![b]);
    }
}
