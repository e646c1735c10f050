//! `model.toml`: what a model directory holds and how to feed and read the model.
//!
//! ```toml
//! name = "tiny-yolo"
//! version = "1"
//! file = "model.onnx"          # default "model.onnx", relative to the model directory
//! score_threshold = 0.25       # default 0.25
//! iou_threshold = 0.45         # default 0.45
//! max_detections = 300         # default 300
//! classes = ["person", "bicycle", "car"]
//!
//! [input]
//! width = 640
//! height = 640
//! layout = "nchw"              # default; the only layout supported
//! color = "rgb"                # default; the only channel order supported
//! scale = "0..1"               # default; pixel / 255
//!
//! [output]
//! format = "yolov8"            # or "yolov5"
//! ```
//!
//! Unknown keys are rejected, so a typo is an error rather than a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::EngineError;

/// File name of the manifest inside a model directory.
pub const MANIFEST_FILE: &str = "model.toml";

/// A model directory's manifest (`<model_dir>/model.toml`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Model name, for logs and metrics.
    pub name: String,
    /// Model version, for logs and metrics.
    pub version: String,
    /// Model file, relative to the model directory.
    #[serde(default = "default_file")]
    pub file: PathBuf,
    /// What the model's input tensor expects.
    pub input: InputSpec,
    /// What the model's output tensor holds.
    pub output: OutputSpec,
    /// Class names; index = class id.
    pub classes: Vec<String>,
    /// Candidates scoring at or below this are dropped before NMS (0..=1).
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// NMS drops a box whose IoU with a kept box exceeds this (0..=1).
    #[serde(default = "default_iou_threshold")]
    pub iou_threshold: f32,
    /// At most this many detections per image, highest scores first.
    #[serde(default = "default_max_detections")]
    pub max_detections: usize,
}

/// The input tensor the model expects: `[batch, 3, height, width]` float32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// Input width in pixels.
    pub width: u32,
    /// Input height in pixels.
    pub height: u32,
    /// Memory layout of the tensor.
    #[serde(default)]
    pub layout: Layout,
    /// Channel order.
    #[serde(default)]
    pub color: ColorOrder,
    /// How pixel bytes map to floats.
    #[serde(default)]
    pub scale: PixelScale,
}

impl InputSpec {
    /// Floats in one image of the input tensor: 3 * width * height.
    pub fn image_len(&self) -> usize {
        3 * self.width as usize * self.height as usize
    }
}

/// Tensor memory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Planar: `[batch, channel, row, column]`.
    #[default]
    Nchw,
}

/// Channel order of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorOrder {
    /// Red, green, blue.
    #[default]
    Rgb,
}

/// Pixel scaling of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum PixelScale {
    /// `value = byte / 255`.
    #[default]
    #[serde(rename = "0..1")]
    Unit,
}

/// The model's output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// How to decode it.
    pub format: OutputFormat,
}

/// Layout and meaning of the (first) output tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// Anchor-free, `[batch, 4 + C, N]`: rows cx, cy, w, h in input pixels, then C class
    /// scores already passed through a sigmoid. No objectness. (Ultralytics v8 / 11 export.)
    Yolov8,
    /// `[batch, N, 5 + C]`: per anchor cx, cy, w, h in input pixels, objectness, then C class
    /// probabilities; score = objectness * class probability. (Ultralytics v5 export.)
    Yolov5,
}

impl OutputFormat {
    /// Number of non-class values per anchor (4 box values, plus objectness for v5).
    pub fn box_values(self) -> usize {
        match self {
            Self::Yolov8 => 4,
            Self::Yolov5 => 5,
        }
    }
}

fn default_file() -> PathBuf {
    PathBuf::from("model.onnx")
}
fn default_score_threshold() -> f32 {
    0.25
}
fn default_iou_threshold() -> f32 {
    0.45
}
fn default_max_detections() -> usize {
    300
}

impl ModelManifest {
    /// Reads and validates `<model_dir>/model.toml`.
    pub fn load(model_dir: &Path) -> Result<Self, EngineError> {
        let path = model_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| EngineError::ManifestRead {
            path: path.clone(),
            source,
        })?;
        let manifest = Self::parse(&text).map_err(|e| match e {
            EngineError::ManifestParse { message, .. } => {
                EngineError::ManifestParse { path, message }
            }
            other => other,
        })?;
        Ok(manifest)
    }

    /// Parses and validates a manifest from TOML text.
    pub fn parse(text: &str) -> Result<Self, EngineError> {
        let manifest: Self = toml::from_str(text).map_err(|e| EngineError::ManifestParse {
            path: PathBuf::new(),
            message: e.message().to_owned(),
        })?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the values serde cannot: non-zero input size, at least one class,
    /// thresholds within 0..=1, at least one detection.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.input.width == 0 || self.input.height == 0 {
            return Err(EngineError::ZeroInputSize {
                width: self.input.width,
                height: self.input.height,
            });
        }
        if self.classes.is_empty() {
            return Err(EngineError::EmptyClasses);
        }
        for (name, value) in [
            ("score_threshold", self.score_threshold),
            ("iou_threshold", self.iou_threshold),
        ] {
            // `contains` is false for NaN too.
            if !(0.0..=1.0).contains(&value) {
                return Err(EngineError::ThresholdOutOfRange { name, value });
            }
        }
        if self.max_detections == 0 {
            return Err(EngineError::ZeroMaxDetections);
        }
        Ok(())
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// Values per anchor in the output: 4 + C (yolov8) or 5 + C (yolov5).
    pub fn values_per_anchor(&self) -> usize {
        self.output.format.box_values() + self.num_classes()
    }

    /// Path of the model file for a manifest read from `model_dir`.
    pub fn model_path(&self, model_dir: &Path) -> PathBuf {
        model_dir.join(&self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
name = "m"
version = "3"
classes = ["car", "bus"]
[input]
width = 320
height = 256
[output]
format = "yolov5"
"#;

    #[test]
    fn defaults_are_filled_in() {
        let m = ModelManifest::parse(MINIMAL).unwrap();
        assert_eq!(m.file, PathBuf::from("model.onnx"));
        assert_eq!(m.score_threshold, 0.25);
        assert_eq!(m.iou_threshold, 0.45);
        assert_eq!(m.max_detections, 300);
        assert_eq!(m.input.layout, Layout::Nchw);
        assert_eq!(m.input.color, ColorOrder::Rgb);
        assert_eq!(m.input.scale, PixelScale::Unit);
        assert_eq!(m.output.format, OutputFormat::Yolov5);
        assert_eq!(m.values_per_anchor(), 7);
        assert_eq!(m.input.image_len(), 3 * 320 * 256);
    }

    #[test]
    fn explicit_values_are_read() {
        let text = r#"
name = "m"
version = "1"
file = "weights/x.onnx"
score_threshold = 0.5
iou_threshold = 0.7
max_detections = 10
classes = ["a"]
[input]
width = 64
height = 32
layout = "nchw"
color = "rgb"
scale = "0..1"
[output]
format = "yolov8"
"#;
        let m = ModelManifest::parse(text).unwrap();
        assert_eq!(
            m.model_path(Path::new("/d")),
            PathBuf::from("/d/weights/x.onnx")
        );
        assert_eq!(
            (m.score_threshold, m.iou_threshold, m.max_detections),
            (0.5, 0.7, 10)
        );
        assert_eq!(m.values_per_anchor(), 5);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = MINIMAL.replace("classes", "colour = 1\nclasses");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ManifestParse { .. })
        ));
        let text = MINIMAL.replace("height = 256", "height = 256\nmean = 0.5");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ManifestParse { .. })
        ));
    }

    #[test]
    fn unsupported_layout_and_format_are_rejected() {
        let text = MINIMAL.replace("height = 256", "height = 256\nlayout = \"nhwc\"");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ManifestParse { .. })
        ));
        let text = MINIMAL.replace("yolov5", "yolox");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ManifestParse { .. })
        ));
    }

    #[test]
    fn validate_rejects_zero_size() {
        let text = MINIMAL.replace("width = 320", "width = 0");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ZeroInputSize {
                width: 0,
                height: 256
            })
        ));
    }

    #[test]
    fn validate_rejects_empty_classes() {
        let text = MINIMAL.replace(r#"["car", "bus"]"#, "[]");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::EmptyClasses)
        ));
    }

    #[test]
    fn validate_rejects_thresholds_outside_unit_range() {
        let text = MINIMAL.replace("classes", "score_threshold = 1.5\nclasses");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ThresholdOutOfRange {
                name: "score_threshold",
                ..
            })
        ));
        let text = MINIMAL.replace("classes", "iou_threshold = -0.1\nclasses");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ThresholdOutOfRange {
                name: "iou_threshold",
                ..
            })
        ));
        let text = MINIMAL.replace("classes", "iou_threshold = nan\nclasses");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ThresholdOutOfRange {
                name: "iou_threshold",
                ..
            })
        ));
    }

    #[test]
    fn validate_rejects_zero_max_detections() {
        let text = MINIMAL.replace("classes", "max_detections = 0\nclasses");
        assert!(matches!(
            ModelManifest::parse(&text),
            Err(EngineError::ZeroMaxDetections)
        ));
    }

    #[test]
    fn load_reports_missing_file_and_parse_path() {
        let dir = tempfile::tempdir().unwrap();
        let err = ModelManifest::load(dir.path()).unwrap_err();
        assert!(matches!(err, EngineError::ManifestRead { .. }), "{err}");
        assert!(err.to_string().contains("tools/gen_tiny_yolo.py"), "{err}");

        std::fs::write(dir.path().join(MANIFEST_FILE), "name = ").unwrap();
        match ModelManifest::load(dir.path()).unwrap_err() {
            EngineError::ManifestParse { path, .. } => {
                assert_eq!(path, dir.path().join(MANIFEST_FILE))
            }
            other => panic!("unexpected {other}"),
        }
    }
}
