//! [`Detector`]: images in, detections in original-frame pixels out (CPU pre/post-processing
//! around any [`Engine`]).

use std::path::Path;
use std::time::Instant;

use crate::EngineError;
use crate::decode::{Detection, decode_yolov5, decode_yolov8};
use crate::engine::{Engine, RawOutput};
use crate::manifest::{ModelManifest, OutputFormat};
use crate::nms::nms;
use crate::ort_engine::{OrtEngine, OrtOptions};
use crate::preprocess::{Letterbox, RgbImage, letterbox_into};

/// Detections for one image, with the batch's stage timings.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectOutput {
    /// Detections after NMS, highest score first, in original-frame pixels.
    pub detections: Vec<Detection>,
    /// Letterboxing the whole batch, in nanoseconds (the same for every image of a batch).
    pub preprocess_ns: u64,
    /// Running the engine on the whole batch, in nanoseconds.
    pub infer_ns: u64,
    /// Decode + NMS + mapping for the whole batch, in nanoseconds.
    pub postprocess_ns: u64,
}

/// A detector: one model behind one [`Engine`].
pub struct Detector {
    engine: Box<dyn Engine>,
    manifest: ModelManifest,
    /// The batch input tensor, reused between calls (grows to the largest batch seen).
    input: Vec<f32>,
    /// Letterbox geometry per image of the current batch, reused between calls.
    letterboxes: Vec<Letterbox>,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("engine", &self.engine.name())
            .field("model", &self.manifest.name)
            .finish_non_exhaustive()
    }
}

fn elapsed_ns(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

impl Detector {
    /// Loads `<model_dir>/model.toml` and its model with ONNX Runtime.
    pub fn load(model_dir: &Path, options: &OrtOptions) -> Result<Self, EngineError> {
        let manifest = ModelManifest::load(model_dir)?;
        let engine = OrtEngine::load(&manifest.model_path(model_dir), &manifest, options)?;
        Self::new(Box::new(engine), manifest)
    }

    /// Wraps an engine. The manifest is validated and must describe the engine's input.
    pub fn new(engine: Box<dyn Engine>, manifest: ModelManifest) -> Result<Self, EngineError> {
        manifest.validate()?;
        let spec = engine.input();
        if spec != manifest.input {
            return Err(EngineError::ModelMismatch {
                path: manifest.file.clone(),
                detail: format!(
                    "engine `{}` takes {spec:?}, manifest says {:?}",
                    engine.name(),
                    manifest.input
                ),
            });
        }
        Ok(Self {
            engine,
            manifest,
            input: Vec::new(),
            letterboxes: Vec::new(),
        })
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &ModelManifest {
        &self.manifest
    }

    /// The engine's name.
    pub fn engine_name(&self) -> &str {
        self.engine.name()
    }

    /// Detects objects in a batch of images (any sizes; each is letterboxed).
    ///
    /// Steady state allocates no input tensor: the internal buffer is reused and only grows
    /// when a larger batch arrives. An empty batch returns an empty result without running
    /// the engine. Any invalid image fails the whole batch.
    pub fn detect(&mut self, images: &[RgbImage]) -> Result<Vec<DetectOutput>, EngineError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        for img in images {
            img.check()?;
        }

        let t0 = Instant::now();
        let spec = self.manifest.input;
        let per_image = spec.image_len();
        self.input.resize(images.len() * per_image, 0.0);
        self.letterboxes.clear();
        for (img, dst) in images.iter().zip(self.input.chunks_exact_mut(per_image)) {
            self.letterboxes
                .push(letterbox_into(img, spec.width, spec.height, dst));
        }
        let preprocess_ns = elapsed_ns(t0);

        let t1 = Instant::now();
        let raw = self.engine.run(&self.input, images.len())?;
        let infer_ns = elapsed_ns(t1);

        let t2 = Instant::now();
        let per_image_dets = self.postprocess(&raw, images.len())?;
        let postprocess_ns = elapsed_ns(t2);

        Ok(per_image_dets
            .into_iter()
            .map(|detections| DetectOutput {
                detections,
                preprocess_ns,
                infer_ns,
                postprocess_ns,
            })
            .collect())
    }

    fn postprocess(
        &self,
        raw: &RawOutput,
        batch: usize,
    ) -> Result<Vec<Vec<Detection>>, EngineError> {
        let m = &self.manifest;
        let num_classes = m.num_classes();
        let per_anchor = m.values_per_anchor();
        let format = m.output.format;
        let num_anchors = match (format, &raw.shape[..]) {
            (OutputFormat::Yolov8, &[b, v, n]) if b == batch && v == per_anchor => n,
            (OutputFormat::Yolov5, &[b, n, v]) if b == batch && v == per_anchor => n,
            _ => {
                return Err(EngineError::OutputShape {
                    expected: match format {
                        OutputFormat::Yolov8 => format!("yolov8 [{batch}, {per_anchor}, anchors]"),
                        OutputFormat::Yolov5 => format!("yolov5 [{batch}, anchors, {per_anchor}]"),
                    },
                    found: raw.shape.clone(),
                });
            }
        };
        let per_image = per_anchor * num_anchors;
        if raw.data.len() != batch * per_image {
            return Err(EngineError::OutputShape {
                expected: format!("{} floats", batch * per_image),
                found: raw.shape.clone(),
            });
        }
        Ok(raw
            .data
            .chunks_exact(per_image)
            .zip(&self.letterboxes)
            .map(|(out, lb)| {
                let cands = match format {
                    OutputFormat::Yolov8 => {
                        decode_yolov8(out, num_anchors, num_classes, m.score_threshold)
                    }
                    OutputFormat::Yolov5 => {
                        decode_yolov5(out, num_anchors, num_classes, m.score_threshold)
                    }
                };
                nms(cands, m.iou_threshold, m.max_detections, true)
                    .into_iter()
                    .map(|c| {
                        let (x1, y1) = lb.to_original(c.x1, c.y1);
                        let (x2, y2) = lb.to_original(c.x2, c.y2);
                        Detection {
                            class_id: c.class_id,
                            score: c.score,
                            x1,
                            y1,
                            x2,
                            y2,
                        }
                    })
                    .collect()
            })
            .collect())
    }

    #[cfg(test)]
    fn input_buffer(&self) -> (*const f32, usize) {
        (self.input.as_ptr(), self.input.capacity())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::manifest::InputSpec;

    /// Batches and inputs a fake engine was given.
    type Seen = Arc<Mutex<Vec<(usize, Vec<f32>)>>>;

    /// Returns a fixed yolov8 output per image and records the inputs it was given.
    struct FakeEngine {
        input: InputSpec,
        per_image: Vec<f32>,
        anchors: usize,
        rows: usize,
        seen: Seen,
    }

    impl Engine for FakeEngine {
        fn input(&self) -> InputSpec {
            self.input
        }
        fn run(&mut self, input: &[f32], batch: usize) -> Result<RawOutput, EngineError> {
            self.seen.lock().unwrap().push((batch, input.to_vec()));
            Ok(RawOutput {
                data: self.per_image.repeat(batch),
                shape: vec![batch, self.rows, self.anchors],
            })
        }
        fn name(&self) -> &str {
            "fake"
        }
    }

    fn manifest() -> ModelManifest {
        ModelManifest::parse(
            "name = \"fake\"\nversion = \"1\"\nclasses = [\"car\", \"bus\"]\n[input]\nwidth = 8\nheight = 8\n[output]\nformat = \"yolov8\"\n",
        )
        .unwrap()
    }

    /// 3 anchors, 2 classes (rows cx, cy, w, h, car, bus), in 8x8 input pixels.
    /// Anchor 0: car 0.9 at [1,3]-[3,5]; anchor 1: car 0.8, same box (suppressed);
    /// anchor 2: bus 0.1 (below 0.25).
    #[rustfmt::skip]
    const OUT: [f32; 18] = [
        2.0, 2.0, 6.0,
        4.0, 4.0, 4.0,
        2.0, 2.0, 2.0,
        2.0, 2.0, 2.0,
        0.9, 0.8, 0.0,
        0.0, 0.0, 0.1,
    ];

    fn detector() -> (Detector, Seen) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let m = manifest();
        let engine = FakeEngine {
            input: m.input,
            per_image: OUT.to_vec(),
            anchors: 3,
            rows: 6,
            seen: seen.clone(),
        };
        (Detector::new(Box::new(engine), m).unwrap(), seen)
    }

    #[test]
    fn maps_boxes_back_to_original_pixels() {
        let (mut det, seen) = detector();
        // 4x2 image into 8x8: scale 2, pad_y 2 (hand-computed in preprocess tests).
        let img = RgbImage::filled(4, 2, [255, 0, 0]);
        let out = det.detect(std::slice::from_ref(&img)).unwrap();
        assert_eq!(out.len(), 1);
        // Box [1,3]-[3,5] -> ((1-0)/2, (3-2)/2)-((3-0)/2, (5-2)/2) = (0.5, 0.5)-(1.5, 1.5).
        assert_eq!(
            out[0].detections,
            vec![Detection {
                class_id: 0,
                score: 0.9,
                x1: 0.5,
                y1: 0.5,
                x2: 1.5,
                y2: 1.5
            }]
        );
        let seen = seen.lock().unwrap();
        let (batch, input) = &seen[0];
        assert_eq!((*batch, input.len()), (1, 3 * 64));
        // Red plane: pad rows then 1.0; green plane 0.0 inside.
        assert_eq!(input[0], 114.0 / 255.0);
        assert_eq!(input[2 * 8], 1.0);
        assert_eq!(input[64 + 2 * 8], 0.0);
    }

    #[test]
    fn batches_images_of_different_sizes() {
        let (mut det, seen) = detector();
        let a = RgbImage::filled(4, 2, [0, 0, 0]);
        let b = RgbImage::filled(2, 4, [0, 0, 0]);
        let out = det.detect(&[a, b]).unwrap();
        assert_eq!(out.len(), 2);
        // Same model output, different letterbox: b is 2x4 -> scale 2, pad_x 2, so
        // [1,3]-[3,5] -> (0, 1.5)-(0.5, 2.5) with x clamped at 0.
        assert_eq!(
            (
                out[1].detections[0].x1,
                out[1].detections[0].y1,
                out[1].detections[0].x2,
                out[1].detections[0].y2
            ),
            (0.0, 1.5, 0.5, 2.5)
        );
        assert_eq!(out[0].preprocess_ns, out[1].preprocess_ns);
        assert_eq!(seen.lock().unwrap()[0].0, 2);
    }

    #[test]
    fn reuses_the_input_buffer() {
        let (mut det, _) = detector();
        let imgs = vec![RgbImage::filled(4, 2, [1, 2, 3]); 3];
        det.detect(&imgs).unwrap();
        let before = det.input_buffer();
        det.detect(&imgs).unwrap();
        det.detect(&imgs[..1]).unwrap();
        det.detect(&imgs).unwrap();
        assert_eq!(det.input_buffer(), before);
    }

    #[test]
    fn empty_batch_does_not_run_the_engine() {
        let (mut det, seen) = detector();
        assert!(det.detect(&[]).unwrap().is_empty());
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn bad_image_fails_the_batch() {
        let (mut det, seen) = detector();
        let bad = RgbImage {
            width: 2,
            height: 2,
            data: vec![0; 5],
        };
        assert!(matches!(
            det.detect(&[RgbImage::filled(2, 2, [0; 3]), bad]),
            Err(EngineError::ImageBufferSize { .. })
        ));
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn wrong_output_shape_is_an_error() {
        let m = manifest();
        let engine = FakeEngine {
            input: m.input,
            per_image: vec![0.0; 7 * 3],
            anchors: 3,
            rows: 7,
            seen: Arc::default(),
        };
        let mut det = Detector::new(Box::new(engine), m).unwrap();
        assert!(matches!(
            det.detect(&[RgbImage::filled(2, 2, [0; 3])]),
            Err(EngineError::OutputShape { .. })
        ));
    }

    #[test]
    fn engine_input_must_match_manifest() {
        let m = manifest();
        let mut other = m.input;
        other.width = 16;
        let engine = FakeEngine {
            input: other,
            per_image: OUT.to_vec(),
            anchors: 3,
            rows: 6,
            seen: Arc::default(),
        };
        assert!(matches!(
            Detector::new(Box::new(engine), m),
            Err(EngineError::ModelMismatch { .. })
        ));
    }
}
