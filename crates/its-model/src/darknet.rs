//! Darknet import: `.cfg` + `.weights` + class names to an ONNX graph and a `model.toml`.
//!
//! Supported sections: `[net]`, `[convolutional]`, `[maxpool]`, `[route]` (with `groups` /
//! `group_id`), `[upsample]`, `[shortcut]`, `[yolo]` — enough for YOLOv3, YOLOv3-tiny and
//! YOLOv4-tiny. Anything else (a section, or a key that changes inference) is an error that
//! names the file and line; training-only keys are accepted and ignored.
//!
//! The graph (opset 17) takes `images` `[batch, 3, H, W]` (RGB, 0..1, `H`/`W` from `[net]`,
//! batch dynamic) and returns `output0` `[batch, N, 5 + C]`, already decoded the way Darknet's
//! `get_yolo_box` does, in input pixels:
//!
//! ```text
//! cx = (gx + sigmoid(tx) * s - (s - 1) / 2) * W / w      (s = scale_x_y, default 1)
//! cy = (gy + sigmoid(ty) * s - (s - 1) / 2) * H / h
//! bw = exp(tw) * anchor_w        bh = exp(th) * anchor_h
//! objectness = sigmoid(to)       p_c = sigmoid(t_c)
//! ```
//!
//! Rows are ordered by `[yolo]` layer, then anchor (mask order), then cell (row-major).
//! Batch normalisation is folded into the convolutions with Darknet's inference formula
//! `y = (x - mean) / (sqrt(var) + 1e-6) * scale + bias`.
//!
//! Geometry follows Darknet: a convolution with `pad=1` pads `size / 2` on every side; a
//! maxpool pads `padding` (default `size - 1`) in total, `padding / 2` before and the rest
//! after, so `[maxpool] size=2 stride=1` keeps the size by padding one column on the right
//! and one row at the bottom; an upsample repeats each pixel `stride` times.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use its_engine::manifest::{
    ColorOrder, InputSpec, Layout, ModelManifest, OutputFormat, OutputSpec, PixelScale,
};

use crate::ModelError;
use crate::graph::GraphBuilder;
use crate::onnx::{AttributeProto, DataType, Dim, ModelProto};

/// ONNX opset the importer writes.
pub const OPSET: i64 = 17;
/// Name of the graph input.
pub const INPUT_NAME: &str = "images";
/// Name of the graph output.
pub const OUTPUT_NAME: &str = "output0";

/// One `[section]` of a cfg file with its `key=value` lines.
#[derive(Debug, Clone, PartialEq)]
pub struct Section {
    /// Section name without brackets, e.g. `convolutional`.
    pub kind: String,
    /// 1-based line of the `[section]` header.
    pub line: usize,
    /// `(key, value, line)` in file order.
    pub options: Vec<(String, String, usize)>,
}

/// Splits cfg text into sections. Like Darknet, all whitespace is removed from each line and
/// lines starting with `#` or `;` are comments. A `key=value` before the first section, a line
/// without `=`, or a repeated key is an error.
pub fn parse_sections(text: &str, file: &str) -> Result<Vec<Section>, ModelError> {
    let err = |line: usize, message: String| ModelError::Cfg {
        file: file.to_owned(),
        line,
        message,
    };
    let mut sections: Vec<Section> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line_no = i + 1;
        let line: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(rest) = line.strip_prefix('[') {
            let Some(kind) = rest.strip_suffix(']') else {
                return Err(err(line_no, format!("malformed section header `{raw}`")));
            };
            sections.push(Section {
                kind: kind.to_owned(),
                line: line_no,
                options: Vec::new(),
            });
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(err(line_no, format!("expected `key=value`, found `{raw}`")));
        };
        let Some(section) = sections.last_mut() else {
            return Err(err(
                line_no,
                format!("`{key}` appears before the first [section]"),
            ));
        };
        if section.options.iter().any(|(k, _, _)| k == key) {
            return Err(err(
                line_no,
                format!("`{key}` is set twice in [{}]", section.kind),
            ));
        }
        section
            .options
            .push((key.to_owned(), value.to_owned(), line_no));
    }
    Ok(sections)
}

/// Activation after a convolution or shortcut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    Linear,
    /// `x > 0 ? x : 0.1 x`.
    Leaky,
    /// `max(x, 0)`.
    Relu,
    /// Sigmoid.
    Logistic,
    /// `x * tanh(softplus(x))`.
    Mish,
    /// `x * sigmoid(x)`.
    Swish,
}

/// A layer of the network (the `[net]` section excluded), as the cfg describes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Layer {
    /// `[convolutional]`.
    Conv {
        /// Output channels.
        filters: usize,
        /// Square kernel size.
        size: usize,
        /// Stride.
        stride: usize,
        /// Padding on each side.
        pad: usize,
        /// Channel groups.
        groups: usize,
        /// Whether batch-norm parameters precede the weights (and are folded in).
        batch_normalize: bool,
        /// Activation.
        activation: Activation,
    },
    /// `[maxpool]`.
    MaxPool {
        /// Square window.
        size: usize,
        /// Stride.
        stride: usize,
        /// Total padding per axis (`padding / 2` before, the rest after).
        padding: usize,
    },
    /// `[route]`: channel concatenation of earlier layers (absolute indices), optionally
    /// keeping only group `group_id` of `groups` equal channel slices of each.
    Route {
        /// Source layers, absolute.
        layers: Vec<usize>,
        /// Channel groups per source.
        groups: usize,
        /// Which group to keep.
        group_id: usize,
    },
    /// `[upsample]`: nearest-neighbour, `stride` times in both axes, values times `scale`.
    Upsample {
        /// Factor.
        stride: usize,
        /// Value multiplier.
        scale: f32,
    },
    /// `[shortcut]`: the previous layer plus layer `from` (absolute), then `activation`.
    Shortcut {
        /// The other summand, absolute index.
        from: usize,
        /// Activation.
        activation: Activation,
    },
    /// `[yolo]`: a detection head over the previous layer.
    Yolo {
        /// Anchor `(w, h)` pairs this head uses, in input pixels (mask applied).
        anchors: Vec<(f32, f32)>,
        /// Number of classes.
        classes: usize,
        /// `scale_x_y` (1 for YOLOv3).
        scale_x_y: f32,
    },
}

impl Layer {
    /// The section name of this layer kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Conv { .. } => "convolutional",
            Self::MaxPool { .. } => "maxpool",
            Self::Route { .. } => "route",
            Self::Upsample { .. } => "upsample",
            Self::Shortcut { .. } => "shortcut",
            Self::Yolo { .. } => "yolo",
        }
    }
}

/// A parsed Darknet network.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    /// Input width (`[net] width`).
    pub width: usize,
    /// Input height (`[net] height`).
    pub height: usize,
    /// Layers in cfg order.
    pub layers: Vec<Layer>,
}

/// Largest integer accepted for any cfg option.
pub const MAX_VALUE: usize = 16_384;
/// Largest channel count, height or width of any layer output.
pub const MAX_DIM: usize = 1 << 20;
/// Largest number of output rows (all heads together).
pub const MAX_ROWS: usize = 1 << 24;

/// Shape `(channels, height, width)` of a layer's output.
pub type Chw = (usize, usize, usize);

// Keys that only matter for training: accepted, ignored.
const NET_IGNORED: &[&str] = &[
    "batch",
    "subdivisions",
    "momentum",
    "decay",
    "angle",
    "saturation",
    "exposure",
    "hue",
    "learning_rate",
    "burn_in",
    "max_batches",
    "policy",
    "steps",
    "scales",
    "step",
    "gamma",
    "power",
    "mosaic",
    "mixup",
    "cutmix",
    "blur",
    "flip",
    "letter_box",
    "aspect",
    "min_crop",
    "max_crop",
    "optimized_memory",
    "workspace_size_limit_MB",
    "adam",
    "B1",
    "B2",
    "eps",
    "max_chart_loss",
    "track",
    "time_steps",
    "random",
];
const YOLO_IGNORED: &[&str] = &[
    "jitter",
    "ignore_thresh",
    "truth_thresh",
    "random",
    "iou_normalizer",
    "cls_normalizer",
    "obj_normalizer",
    "iou_loss",
    "iou_thresh",
    "iou_thresh_kind",
    "nms_kind",
    "beta_nms",
    "max_delta",
    "counters_per_class",
    "label_smooth_eps",
    "resize",
    "max",
    "focal_loss",
    "objectness_smooth",
];

struct Opts<'a> {
    file: &'a str,
    section: &'a Section,
    used: HashSet<&'a str>,
}

impl<'a> Opts<'a> {
    fn new(file: &'a str, section: &'a Section) -> Self {
        Self {
            file,
            section,
            used: HashSet::new(),
        }
    }

    fn err(&self, line: usize, message: String) -> ModelError {
        ModelError::Cfg {
            file: self.file.to_owned(),
            line,
            message,
        }
    }

    fn raw(&mut self, key: &'a str) -> Option<(&'a str, usize)> {
        self.used.insert(key);
        self.section
            .options
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, l)| (v.as_str(), *l))
    }

    fn parse<T: std::str::FromStr>(&mut self, key: &'a str) -> Result<Option<T>, ModelError> {
        match self.raw(key) {
            None => Ok(None),
            Some((v, line)) => v.parse().map(Some).map_err(|_| {
                self.err(
                    line,
                    format!("[{}] `{key}={v}` is not a valid number", self.section.kind),
                )
            }),
        }
    }

    /// An integer option, at most [`MAX_VALUE`] (so shape arithmetic cannot overflow).
    fn usize_or(&mut self, key: &'a str, default: usize) -> Result<usize, ModelError> {
        let v = self.parse::<usize>(key)?.unwrap_or(default);
        if v > MAX_VALUE {
            let line = self.raw(key).map_or(self.section.line, |(_, l)| l);
            return Err(self.err(
                line,
                format!(
                    "[{}] `{key}={v}` is larger than {MAX_VALUE}",
                    self.section.kind
                ),
            ));
        }
        Ok(v)
    }

    fn required(&mut self, key: &'a str) -> Result<usize, ModelError> {
        self.parse::<usize>(key)?.ok_or_else(|| {
            self.err(
                self.section.line,
                format!("[{}] needs `{key}`", self.section.kind),
            )
        })
    }

    fn positive(&mut self, key: &'a str, default: usize) -> Result<usize, ModelError> {
        let v = self.usize_or(key, default)?;
        if v == 0 {
            let line = self.raw(key).map_or(self.section.line, |(_, l)| l);
            return Err(self.err(
                line,
                format!("[{}] `{key}` must be at least 1", self.section.kind),
            ));
        }
        Ok(v)
    }

    fn list<T: std::str::FromStr>(&mut self, key: &'a str) -> Result<Option<Vec<T>>, ModelError> {
        let Some((v, line)) = self.raw(key) else {
            return Ok(None);
        };
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| {
                    self.err(
                        line,
                        format!(
                            "[{}] `{key}`: `{s}` is not a valid number",
                            self.section.kind
                        ),
                    )
                })
            })
            .collect::<Result<Vec<T>, _>>()
            .map(Some)
    }

    /// `activation`, or `default` when absent (Darknet: logistic for convolutions, linear for
    /// shortcuts).
    fn activation(&mut self, default: Activation) -> Result<Activation, ModelError> {
        let Some((v, line)) = self.raw("activation") else {
            return Ok(default);
        };
        Ok(match v {
            "linear" => Activation::Linear,
            "leaky" => Activation::Leaky,
            "relu" => Activation::Relu,
            "logistic" => Activation::Logistic,
            "mish" => Activation::Mish,
            "swish" => Activation::Swish,
            other => {
                return Err(self.err(line, format!("unsupported activation `{other}`")));
            }
        })
    }

    /// Fails on any key neither read nor in `ignored`.
    fn finish(&self, ignored: &[&str]) -> Result<(), ModelError> {
        for (k, _, line) in &self.section.options {
            if !self.used.contains(k.as_str()) && !ignored.contains(&k.as_str()) {
                return Err(self.err(
                    *line,
                    format!("unknown key `{k}` in [{}]", self.section.kind),
                ));
            }
        }
        Ok(())
    }
}

impl Network {
    /// Parses cfg text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Self, ModelError> {
        let sections = parse_sections(text, file)?;
        let Some((net, rest)) = sections.split_first() else {
            return Err(ModelError::Cfg {
                file: file.to_owned(),
                line: 0,
                message: "no sections".into(),
            });
        };
        if net.kind != "net" && net.kind != "network" {
            return Err(ModelError::Cfg {
                file: file.to_owned(),
                line: net.line,
                message: format!("the first section must be [net], found [{}]", net.kind),
            });
        }
        let mut o = Opts::new(file, net);
        let width = o.positive("width", 416)?;
        let height = o.positive("height", 416)?;
        let channels = o.usize_or("channels", 3)?;
        if channels != 3 {
            return Err(o.err(
                net.line,
                format!("[net] channels={channels}: only 3-channel (RGB) input is supported"),
            ));
        }
        o.finish(NET_IGNORED)?;

        let mut layers = Vec::with_capacity(rest.len());
        for s in rest {
            let index = layers.len();
            let resolve = |o: &Opts, v: isize, line: usize| -> Result<usize, ModelError> {
                let abs = if v < 0 { index as isize + v } else { v };
                if abs < 0 || abs as usize >= index {
                    return Err(o.err(
                        line,
                        format!(
                            "[{}] layer {index} refers to layer {v}, which is not an earlier layer",
                            s.kind
                        ),
                    ));
                }
                Ok(abs as usize)
            };
            let mut o = Opts::new(file, s);
            let layer = match s.kind.as_str() {
                "convolutional" | "conv" => {
                    let size = o.positive("size", 1)?;
                    let pad_flag = o.usize_or("pad", 0)?;
                    let padding = o.usize_or("padding", 0)?;
                    let layer = Layer::Conv {
                        filters: o.positive("filters", 1)?,
                        size,
                        stride: o.positive("stride", 1)?,
                        pad: if pad_flag != 0 { size / 2 } else { padding },
                        groups: o.positive("groups", 1)?,
                        batch_normalize: o.usize_or("batch_normalize", 0)? != 0,
                        activation: o.activation(Activation::Logistic)?,
                    };
                    o.finish(&[])?;
                    layer
                }
                "maxpool" | "max" => {
                    let size = o.positive("size", 1)?;
                    let stride = o.positive("stride", 1)?;
                    let padding = o.usize_or("padding", size - 1)?;
                    o.finish(&[])?;
                    Layer::MaxPool {
                        size,
                        stride,
                        padding,
                    }
                }
                "route" => {
                    let line = o.raw("layers").map_or(s.line, |(_, l)| l);
                    let refs: Vec<isize> = o.list("layers")?.unwrap_or_default();
                    if refs.is_empty() {
                        return Err(o.err(line, "[route] needs `layers`".into()));
                    }
                    let layers = refs
                        .iter()
                        .map(|&v| resolve(&o, v, line))
                        .collect::<Result<Vec<_>, _>>()?;
                    let groups = o.positive("groups", 1)?;
                    let group_id = o.usize_or("group_id", 0)?;
                    if group_id >= groups {
                        return Err(o.err(
                            line,
                            format!("[route] group_id={group_id} with groups={groups}"),
                        ));
                    }
                    o.finish(&[])?;
                    Layer::Route {
                        layers,
                        groups,
                        group_id,
                    }
                }
                "upsample" => {
                    let stride = o.positive("stride", 2)?;
                    let scale = o.parse::<f32>("scale")?.unwrap_or(1.0);
                    o.finish(&[])?;
                    Layer::Upsample { stride, scale }
                }
                "shortcut" => {
                    let line = o.raw("from").map_or(s.line, |(_, l)| l);
                    let from: isize = o
                        .parse("from")?
                        .ok_or_else(|| o.err(s.line, "[shortcut] needs `from`".into()))?;
                    let from = resolve(&o, from, line)?;
                    let activation = o.activation(Activation::Linear)?;
                    o.finish(&[])?;
                    if index == 0 {
                        return Err(o.err(s.line, "[shortcut] cannot be the first layer".into()));
                    }
                    Layer::Shortcut { from, activation }
                }
                "yolo" => {
                    let classes = o.required("classes")?;
                    let anchors_line = o.raw("anchors").map_or(s.line, |(_, l)| l);
                    let flat: Vec<f32> = o.list("anchors")?.unwrap_or_default();
                    if flat.is_empty() || !flat.len().is_multiple_of(2) {
                        return Err(o.err(
                            anchors_line,
                            format!(
                                "[yolo] `anchors` must be w,h pairs, found {} values",
                                flat.len()
                            ),
                        ));
                    }
                    let pairs: Vec<(f32, f32)> = flat.chunks(2).map(|p| (p[0], p[1])).collect();
                    let num = o.usize_or("num", pairs.len())?;
                    if num != pairs.len() {
                        return Err(o.err(
                            anchors_line,
                            format!("[yolo] num={num} but {} anchor pairs", pairs.len()),
                        ));
                    }
                    let mask_line = o.raw("mask").map_or(s.line, |(_, l)| l);
                    let mask: Vec<usize> = o.list("mask")?.unwrap_or_else(|| (0..num).collect());
                    if let Some(bad) = mask.iter().find(|&&m| m >= num) {
                        return Err(o.err(
                            mask_line,
                            format!("[yolo] mask index {bad} is not below num={num}"),
                        ));
                    }
                    let scale_x_y = o.parse::<f32>("scale_x_y")?.unwrap_or(1.0);
                    if let Some((v, line)) = o.raw("new_coords")
                        && v != "0"
                    {
                        return Err(o.err(line, "[yolo] new_coords=1 is not supported".into()));
                    }
                    o.finish(YOLO_IGNORED)?;
                    if classes == 0 {
                        return Err(o.err(s.line, "[yolo] classes must be at least 1".into()));
                    }
                    Layer::Yolo {
                        anchors: mask.iter().map(|&m| pairs[m]).collect(),
                        classes,
                        scale_x_y,
                    }
                }
                other => {
                    return Err(o.err(s.line, format!("unsupported section [{other}]")));
                }
            };
            layers.push(layer);
        }
        let net = Self {
            width,
            height,
            layers,
        };
        net.shapes().map_err(|e| match e {
            ModelError::Cfg {
                file: f,
                line,
                message,
            } if f.is_empty() => ModelError::Cfg {
                file: file.to_owned(),
                line,
                message,
            },
            other => other,
        })?;
        Ok(net)
    }

    /// Output shape of every layer; checks references, channel counts and head sizes.
    pub fn shapes(&self) -> Result<Vec<Chw>, ModelError> {
        let mut shapes: Vec<Chw> = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate() {
            let err = |message: String| ModelError::Layer {
                layer: i,
                kind: layer.kind().to_owned(),
                message,
            };
            let prev = if i == 0 {
                (3, self.height, self.width)
            } else {
                shapes[i - 1]
            };
            // A [yolo] layer's output is its decoded head, not a feature map: only a [route]
            // may follow one (and no route may read one, checked below).
            if i > 0
                && matches!(self.layers[i - 1], Layer::Yolo { .. })
                && !matches!(layer, Layer::Route { .. })
            {
                return Err(err(
                    "follows a [yolo] layer; only a [route] may take over from one".into(),
                ));
            }
            let shape = match layer {
                Layer::Conv {
                    filters,
                    size,
                    stride,
                    pad,
                    groups,
                    ..
                } => {
                    let (c, h, w) = prev;
                    if c % groups != 0 || filters % groups != 0 {
                        return Err(err(format!(
                            "groups={groups} does not divide {c} input or {filters} output channels"
                        )));
                    }
                    if h + 2 * pad < *size || w + 2 * pad < *size {
                        return Err(err(format!(
                            "kernel {size} larger than padded input {h}x{w}"
                        )));
                    }
                    (
                        *filters,
                        (h + 2 * pad - size) / stride + 1,
                        (w + 2 * pad - size) / stride + 1,
                    )
                }
                Layer::MaxPool {
                    size,
                    stride,
                    padding,
                } => {
                    let (c, h, w) = prev;
                    if h + padding < *size || w + padding < *size {
                        return Err(err(format!(
                            "window {size} larger than padded input {h}x{w}"
                        )));
                    }
                    if padding - padding / 2 >= *size {
                        return Err(err(format!(
                            "padding {padding} too large for window {size}"
                        )));
                    }
                    (
                        c,
                        (h + padding - size) / stride + 1,
                        (w + padding - size) / stride + 1,
                    )
                }
                Layer::Route { layers, groups, .. } => {
                    let mut c = 0;
                    let (_, h, w) = shapes[layers[0]];
                    for &l in layers {
                        if matches!(self.layers[l], Layer::Yolo { .. }) {
                            return Err(err(format!(
                                "routing from [yolo] layer {l} is not supported"
                            )));
                        }
                        let (lc, lh, lw) = shapes[l];
                        if (lh, lw) != (h, w) {
                            return Err(err(format!(
                                "layer {l} is {lh}x{lw}, layer {} is {h}x{w}: cannot concatenate",
                                layers[0]
                            )));
                        }
                        if lc % groups != 0 {
                            return Err(err(format!(
                                "layer {l} has {lc} channels, not divisible by groups={groups}"
                            )));
                        }
                        c += lc / groups;
                    }
                    (c, h, w)
                }
                Layer::Upsample { stride, .. } => (prev.0, prev.1 * stride, prev.2 * stride),
                Layer::Shortcut { from, .. } => {
                    if matches!(self.layers[*from], Layer::Yolo { .. }) {
                        return Err(err(format!(
                            "a shortcut from [yolo] layer {from} is not supported"
                        )));
                    }
                    if shapes[*from] != prev {
                        return Err(err(format!(
                            "layer {from} has shape {:?}, the previous layer {prev:?}",
                            shapes[*from]
                        )));
                    }
                    prev
                }
                Layer::Yolo {
                    anchors, classes, ..
                } => {
                    let want = anchors.len() * (5 + classes);
                    if prev.0 != want {
                        return Err(err(format!(
                            "the previous layer has {} channels, a head with {} anchors and {classes} classes needs {want}",
                            prev.0,
                            anchors.len()
                        )));
                    }
                    prev
                }
            };
            if shape.0 > MAX_DIM || shape.1 > MAX_DIM || shape.2 > MAX_DIM {
                return Err(err(format!(
                    "output {shape:?} is larger than {MAX_DIM} in some dimension"
                )));
            }
            shapes.push(shape);
        }
        let rows: usize = self
            .layers
            .iter()
            .zip(&shapes)
            .filter_map(|(l, &(_, h, w))| match l {
                Layer::Yolo { anchors, .. } => Some(anchors.len() * h * w),
                _ => None,
            })
            .sum();
        if rows > MAX_ROWS {
            return Err(ModelError::Cfg {
                file: String::new(),
                line: 0,
                message: format!("{rows} output rows is more than {MAX_ROWS}"),
            });
        }
        let classes: Vec<usize> = self
            .layers
            .iter()
            .filter_map(|l| match l {
                Layer::Yolo { classes, .. } => Some(*classes),
                _ => None,
            })
            .collect();
        if classes.is_empty() {
            return Err(ModelError::Cfg {
                file: String::new(),
                line: 0,
                message: "the network has no [yolo] layer".into(),
            });
        }
        if classes.iter().any(|&c| c != classes[0]) {
            return Err(ModelError::Cfg {
                file: String::new(),
                line: 0,
                message: format!("[yolo] layers disagree on classes: {classes:?}"),
            });
        }
        Ok(shapes)
    }

    /// Number of classes (the same in every `[yolo]` layer; checked at parse).
    pub fn classes(&self) -> usize {
        self.layers
            .iter()
            .find_map(|l| match l {
                Layer::Yolo { classes, .. } => Some(*classes),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Total detection rows `N` of the output `[batch, N, 5 + C]`.
    pub fn output_rows(&self) -> Result<usize, ModelError> {
        let shapes = self.shapes()?;
        Ok(self
            .layers
            .iter()
            .zip(&shapes)
            .filter_map(|(l, &(_, h, w))| match l {
                Layer::Yolo { anchors, .. } => Some(anchors.len() * h * w),
                _ => None,
            })
            .sum())
    }

    /// Floats each convolution reads from the weights file, in layer order: `(layer, count)`.
    pub fn weight_counts(&self) -> Result<Vec<(usize, usize)>, ModelError> {
        let shapes = self.shapes()?;
        Ok(self
            .layers
            .iter()
            .enumerate()
            .filter_map(|(i, l)| match l {
                Layer::Conv {
                    filters,
                    size,
                    groups,
                    batch_normalize,
                    ..
                } => {
                    let c = if i == 0 { 3 } else { shapes[i - 1].0 };
                    let bn = if *batch_normalize { 3 * filters } else { 0 };
                    Some((i, filters + bn + filters * (c / groups) * size * size))
                }
                _ => None,
            })
            .collect())
    }
}

/// One convolution's parameters with batch norm folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    /// Layer index.
    pub layer: usize,
    /// `[filters, c / groups, size, size]`, row-major.
    pub weight: Vec<f32>,
    /// `[filters]`.
    pub bias: Vec<f32>,
}

/// The `.weights` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeightsHeader {
    /// Format major version.
    pub major: i32,
    /// Format minor version.
    pub minor: i32,
    /// Format revision.
    pub revision: i32,
    /// Images seen in training.
    pub seen: u64,
}

/// Reads a Darknet `.weights` file for `net`: the header, then per convolution in layer order
/// biases, (batch-norm scales, means, variances,) weights, all little-endian float32. The file
/// must hold exactly that many floats. Batch norm is folded into each convolution.
pub fn read_weights(
    bytes: &[u8],
    path: &Path,
    net: &Network,
) -> Result<(WeightsHeader, Vec<ConvWeights>), ModelError> {
    let err = |message: String| ModelError::Weights {
        path: path.to_owned(),
        message,
    };
    let i32_at =
        |o: usize| i32::from_le_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]);
    if bytes.len() < 16 {
        return Err(err(format!(
            "{} bytes is too short for a Darknet weights header",
            bytes.len()
        )));
    }
    let (major, minor, revision) = (i32_at(0), i32_at(4), i32_at(8));
    // Darknet: `seen` is a size_t from format 0.2 on, an int before.
    let long_seen =
        (0..1000).contains(&major) && (0..1000).contains(&minor) && major * 10 + minor >= 2;
    let mut offset = if long_seen { 20 } else { 16 };
    if bytes.len() < offset {
        return Err(err(format!(
            "{} bytes is too short for a format {major}.{minor} weights header",
            bytes.len()
        )));
    }
    let seen = if long_seen {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[12..20]);
        u64::from_le_bytes(b)
    } else {
        u64::from(i32_at(12) as u32)
    };
    let header = WeightsHeader {
        major,
        minor,
        revision,
        seen,
    };
    let mut convs = Vec::new();
    for (i, count) in net.weight_counts()? {
        let Layer::Conv {
            filters,
            batch_normalize,
            ..
        } = net.layers[i]
        else {
            unreachable!("weight_counts lists convolutions only");
        };
        let need = count * 4;
        if bytes.len() - offset < need {
            return Err(err(format!(
                "truncated: layer {i} (convolutional, {filters} filters) needs {count} floats ({need} bytes) at byte {offset}, only {} bytes left",
                bytes.len() - offset
            )));
        }
        let floats: Vec<f32> = bytes[offset..offset + need]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        offset += need;
        let (mut bias, rest) = (floats[..filters].to_vec(), &floats[filters..]);
        let (bn, mut weight) = if batch_normalize {
            (Some(&rest[..3 * filters]), rest[3 * filters..].to_vec())
        } else {
            (None, rest.to_vec())
        };
        if let Some(bn) = bn {
            let (scale, mean, var) = (
                &bn[..filters],
                &bn[filters..2 * filters],
                &bn[2 * filters..],
            );
            let per_filter = weight.len() / filters;
            for f in 0..filters {
                let s = scale[f] / (var[f].sqrt() + 1e-6);
                for w in &mut weight[f * per_filter..(f + 1) * per_filter] {
                    *w *= s;
                }
                bias[f] -= mean[f] * s;
            }
        }
        convs.push(ConvWeights {
            layer: i,
            weight,
            bias,
        });
    }
    if offset != bytes.len() {
        return Err(err(format!(
            "size mismatch: the cfg's convolutions use {offset} bytes, the file has {} ({} bytes left over); wrong cfg for these weights?",
            bytes.len(),
            bytes.len() - offset
        )));
    }
    Ok((header, convs))
}

fn activate(b: &mut GraphBuilder, x: String, activation: Activation) -> String {
    match activation {
        Activation::Linear => x,
        Activation::Leaky => b.op(
            "LeakyRelu",
            &[&x],
            vec![AttributeProto::float("alpha", 0.1)],
        ),
        Activation::Relu => b.op("Relu", &[&x], vec![]),
        Activation::Logistic => b.op("Sigmoid", &[&x], vec![]),
        Activation::Mish => {
            let sp = b.op("Softplus", &[&x], vec![]);
            let t = b.op("Tanh", &[&sp], vec![]);
            b.op("Mul", &[&x, &t], vec![])
        }
        Activation::Swish => {
            let s = b.op("Sigmoid", &[&x], vec![]);
            b.op("Mul", &[&x, &s], vec![])
        }
    }
}

/// Builds the ONNX model for `net` with (BN-folded) `convs` from [`read_weights`].
pub fn to_onnx(net: &Network, convs: &[ConvWeights], name: &str) -> Result<ModelProto, ModelError> {
    let shapes = net.shapes()?;
    let classes = net.classes();
    let mut b = GraphBuilder::new(name);
    let input = b.input(
        INPUT_NAME,
        DataType::Float,
        &[
            Dim::Named("batch".into()),
            Dim::Fixed(3),
            Dim::Fixed(net.height as i64),
            Dim::Fixed(net.width as i64),
        ],
    );
    let mut values: Vec<String> = Vec::with_capacity(net.layers.len());
    let mut heads: Vec<String> = Vec::new();
    let mut conv_iter = convs.iter();
    for (i, layer) in net.layers.iter().enumerate() {
        let x = if i == 0 {
            input.clone()
        } else {
            values[i - 1].clone()
        };
        let in_c = if i == 0 { 3 } else { shapes[i - 1].0 };
        let out =
            match layer {
                Layer::Conv {
                    filters,
                    size,
                    stride,
                    pad,
                    groups,
                    activation,
                    ..
                } => {
                    let cw = conv_iter.next().filter(|c| c.layer == i).ok_or_else(|| {
                        ModelError::Layer {
                            layer: i,
                            kind: layer.kind().into(),
                            message: "no weights for this convolution".into(),
                        }
                    })?;
                    let (f, k) = (*filters as i64, *size as i64);
                    let w = b.init_f32(
                        &format!("conv{i}.weight"),
                        &[f, (in_c / groups) as i64, k, k],
                        &cw.weight,
                    );
                    let bias = b.init_f32(&format!("conv{i}.bias"), &[f], &cw.bias);
                    let p = *pad as i64;
                    let y = b.op(
                        "Conv",
                        &[&x, &w, &bias],
                        vec![
                            AttributeProto::ints("kernel_shape", &[k, k]),
                            AttributeProto::ints("strides", &[*stride as i64; 2]),
                            AttributeProto::ints("pads", &[p; 4]),
                            AttributeProto::ints("dilations", &[1, 1]),
                            AttributeProto::int("group", *groups as i64),
                        ],
                    );
                    activate(&mut b, y, *activation)
                }
                Layer::MaxPool {
                    size,
                    stride,
                    padding,
                } => {
                    let (before, after) = ((padding / 2) as i64, (padding - padding / 2) as i64);
                    b.op(
                        "MaxPool",
                        &[&x],
                        vec![
                            AttributeProto::ints("kernel_shape", &[*size as i64; 2]),
                            AttributeProto::ints("strides", &[*stride as i64; 2]),
                            // [top, left, bottom, right]
                            AttributeProto::ints("pads", &[before, before, after, after]),
                        ],
                    )
                }
                Layer::Route {
                    layers,
                    groups,
                    group_id,
                } => {
                    let mut parts = Vec::with_capacity(layers.len());
                    for &l in layers {
                        let v = values[l].clone();
                        if *groups == 1 {
                            parts.push(v);
                        } else {
                            let per = (shapes[l].0 / groups) as i64;
                            let start = b.const_i64("slice.start", &[per * *group_id as i64]);
                            let end = b.const_i64("slice.end", &[per * (*group_id as i64 + 1)]);
                            let axes = b.const_i64("slice.axes", &[1]);
                            parts.push(b.op("Slice", &[&v, &start, &end, &axes], vec![]));
                        }
                    }
                    if parts.len() == 1 {
                        parts.remove(0)
                    } else {
                        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
                        b.op("Concat", &refs, vec![AttributeProto::int("axis", 1)])
                    }
                }
                Layer::Upsample { stride, scale } => {
                    let s = *stride as f32;
                    let scales = b.const_f32("upsample.scales", &[4], &[1.0, 1.0, s, s]);
                    let y = b.op(
                        "Resize",
                        &[&x, "", &scales],
                        vec![
                            AttributeProto::string("mode", "nearest"),
                            AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
                            AttributeProto::string("nearest_mode", "floor"),
                        ],
                    );
                    if *scale == 1.0 {
                        y
                    } else {
                        let k = b.const_f32("upsample.scale", &[], &[*scale]);
                        b.op("Mul", &[&y, &k], vec![])
                    }
                }
                Layer::Shortcut { from, activation } => {
                    let other = values[*from].clone();
                    let y = b.op("Add", &[&x, &other], vec![]);
                    activate(&mut b, y, *activation)
                }
                Layer::Yolo {
                    anchors, scale_x_y, ..
                } => {
                    let (_, h, w) = shapes[i - 1];
                    heads.push(yolo_head(
                        &mut b,
                        &x,
                        anchors,
                        classes,
                        *scale_x_y,
                        (h, w),
                        (net.height, net.width),
                    ));
                    // Nothing may route from a [yolo] layer (checked in `shapes`).
                    x
                }
            };
        values.push(out);
    }
    if conv_iter.next().is_some() {
        return Err(ModelError::Layer {
            layer: net.layers.len(),
            kind: "weights".into(),
            message: "more convolution weights than convolutions".into(),
        });
    }
    let rows = net.output_rows()?;
    let refs: Vec<&str> = heads.iter().map(String::as_str).collect();
    b.node_with_outputs(
        "Concat",
        &refs,
        &[OUTPUT_NAME.to_owned()],
        vec![AttributeProto::int("axis", 1)],
    );
    b.output(
        OUTPUT_NAME,
        DataType::Float,
        &[
            Dim::Named("batch".into()),
            Dim::Fixed(rows as i64),
            Dim::Fixed(5 + classes as i64),
        ],
    );
    let mut model = b.into_model(OPSET, "its-model darknet import");
    model.doc_string = format!(
        "Darknet import: input `{INPUT_NAME}` [batch, 3, {}, {}] RGB 0..1; output `{OUTPUT_NAME}` [batch, {rows}, {}] (cx, cy, w, h in input pixels, objectness, class probabilities)",
        net.height,
        net.width,
        5 + classes
    );
    Ok(model)
}

/// Decodes one head `[B, A * (5 + C), h, w]` to `[B, A * h * w, 5 + C]` rows.
fn yolo_head(
    b: &mut GraphBuilder,
    x: &str,
    anchors: &[(f32, f32)],
    classes: usize,
    scale_x_y: f32,
    (h, w): (usize, usize),
    (net_h, net_w): (usize, usize),
) -> String {
    let a = anchors.len();
    let n = 5 + classes;
    let hw = h * w;
    let rows = a * hw;
    let s1 = b.const_i64("head.shape", &[0, a as i64, n as i64, hw as i64]);
    let r = b.op("Reshape", &[x, &s1], vec![]);
    let t = b.op(
        "Transpose",
        &[&r],
        vec![AttributeProto::ints("perm", &[0, 1, 3, 2])],
    );
    let s2 = b.const_i64("head.shape", &[0, rows as i64, n as i64]);
    let f = b.op("Reshape", &[&t, &s2], vec![]);
    let split = b.const_i64("head.split", &[2, 2, n as i64 - 4]);
    let parts = b.node(
        "Split",
        &[&f, &split],
        3,
        vec![AttributeProto::int("axis", 2)],
    );

    let mut xy = b.op("Sigmoid", &[&parts[0]], vec![]);
    if scale_x_y != 1.0 {
        let k = b.const_f32("head.scale_x_y", &[], &[scale_x_y]);
        let off = b.const_f32("head.offset_x_y", &[], &[-(scale_x_y - 1.0) / 2.0]);
        let scaled = b.op("Mul", &[&xy, &k], vec![]);
        xy = b.op("Add", &[&scaled, &off], vec![]);
    }
    let mut grid = Vec::with_capacity(rows * 2);
    let mut wh = Vec::with_capacity(rows * 2);
    for &(aw, ah) in anchors {
        for gy in 0..h {
            for gx in 0..w {
                grid.extend([gx as f32, gy as f32]);
                wh.extend([aw, ah]);
            }
        }
    }
    let grid = b.const_f32("head.grid", &[1, rows as i64, 2], &grid);
    let stride = b.const_f32(
        "head.stride",
        &[2],
        &[net_w as f32 / w as f32, net_h as f32 / h as f32],
    );
    let cells = b.op("Add", &[&xy, &grid], vec![]);
    let centre = b.op("Mul", &[&cells, &stride], vec![]);

    let anchors_c = b.const_f32("head.anchors", &[1, rows as i64, 2], &wh);
    let e = b.op("Exp", &[&parts[1]], vec![]);
    let size = b.op("Mul", &[&e, &anchors_c], vec![]);

    let probs = b.op("Sigmoid", &[&parts[2]], vec![]);
    b.op(
        "Concat",
        &[&centre, &size, &probs],
        vec![AttributeProto::int("axis", 2)],
    )
}

/// Reads a class names file: one name per line, blank lines skipped.
pub fn read_names(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// What [`import`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportReport {
    /// Model name (the cfg file stem).
    pub name: String,
    /// The ONNX file.
    pub onnx_path: PathBuf,
    /// The manifest.
    pub manifest_path: PathBuf,
    /// Layers in the cfg (`[net]` not counted).
    pub layers: usize,
    /// Float parameters after folding.
    pub parameters: usize,
    /// Input `(width, height)`.
    pub input: (usize, usize),
    /// Output `[batch, rows, 5 + classes]` without the batch.
    pub output: (usize, usize),
    /// Weights file header.
    pub header: WeightsHeader,
}

fn read_file(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|io| ModelError::Io {
        path: path.to_owned(),
        io,
    })
}

fn write_file(path: &Path, data: &[u8]) -> Result<(), ModelError> {
    std::fs::write(path, data).map_err(|io| ModelError::Io {
        path: path.to_owned(),
        io,
    })
}

/// The manifest for an imported network (`yolov5` output format, Darknet's 0.25 / 0.45
/// defaults for thresholds).
pub fn manifest(net: &Network, name: &str, classes: Vec<String>) -> ModelManifest {
    ModelManifest {
        name: name.to_owned(),
        version: "1".into(),
        file: PathBuf::from("model.onnx"),
        input: InputSpec {
            width: net.width as u32,
            height: net.height as u32,
            layout: Layout::Nchw,
            color: ColorOrder::Rgb,
            scale: PixelScale::Unit,
        },
        output: OutputSpec {
            format: OutputFormat::Yolov5,
        },
        classes,
        score_threshold: 0.25,
        iou_threshold: 0.45,
        max_detections: 300,
    }
}

/// Imports `cfg` + `weights` + `names` into `out_dir` (`model.onnx`, `model.toml`; the
/// directory is created). The manifest is checked by `its-engine`'s own parser before it is
/// written.
pub fn import(
    cfg: &Path,
    weights: &Path,
    names: &Path,
    out_dir: &Path,
) -> Result<ImportReport, ModelError> {
    let cfg_text = String::from_utf8_lossy(&read_file(cfg)?).into_owned();
    let net = Network::parse(&cfg_text, &cfg.display().to_string())?;
    let names_list = read_names(&String::from_utf8_lossy(&read_file(names)?));
    if names_list.len() != net.classes() {
        return Err(ModelError::Names {
            path: names.to_owned(),
            message: format!(
                "{} class names, the cfg's [yolo] layers have classes={}",
                names_list.len(),
                net.classes()
            ),
        });
    }
    let (header, convs) = read_weights(&read_file(weights)?, weights, &net)?;
    let name = cfg
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "darknet".into());
    let model = to_onnx(&net, &convs, &name)?;
    let manifest = manifest(&net, &name, names_list);
    let mut toml_text = format!(
        "# Imported by `its model import darknet` from {} and {}; do not edit by hand.\n",
        cfg.file_name().unwrap_or_default().to_string_lossy(),
        weights.file_name().unwrap_or_default().to_string_lossy()
    );
    toml_text.push_str(
        &toml::to_string(&manifest)
            .map_err(|e| ModelError::Onnx(format!("cannot write the manifest: {e}")))?,
    );
    ModelManifest::parse(&toml_text)
        .map_err(|e| ModelError::Onnx(format!("the written manifest does not load: {e}")))?;
    std::fs::create_dir_all(out_dir).map_err(|io| ModelError::Io {
        path: out_dir.to_owned(),
        io,
    })?;
    let onnx_path = out_dir.join("model.onnx");
    let manifest_path = out_dir.join(its_engine::manifest::MANIFEST_FILE);
    write_file(&onnx_path, &model.to_bytes())?;
    write_file(&manifest_path, toml_text.as_bytes())?;
    Ok(ImportReport {
        name,
        onnx_path,
        manifest_path,
        layers: net.layers.len(),
        parameters: model.parameter_count(),
        input: (net.width, net.height),
        output: (net.output_rows()?, 5 + net.classes()),
        header,
    })
}
