//! Synthetic YOLO graphs: the public YOLO11n and YOLOv8n architectures (Ultralytics model
//! descriptions `yolo11.yaml` / `yolov8.yaml` at scale `n`) with deterministic random weights,
//! batch norm already folded into each convolution, exported the way an Ultralytics ONNX
//! export looks to a consumer:
//!
//! ```text
//! images  float32 [batch, 3, S, S], RGB 0..1            (S = imgsz, a multiple of 32)
//! output0 float32 [batch, 4 + C, N], N = (S/8)^2 + (S/16)^2 + (S/32)^2
//!         rows cx, cy, w, h in input pixels (DFL over 16 bins, anchors at cell centres),
//!         then C class scores after a sigmoid
//! ```
//!
//! For engine tests and speed runs without proprietary weights: the detections are
//! meaningless, the compute is that of the real model. The same seed gives the same bytes.
//!
//! Building blocks, as in the architecture description (all `Conv` = convolution + SiLU,
//! padding `k / 2`):
//! * `C2f(c1, c2, n, shortcut)`: `cv1` 1x1 to `2c` (`c = c2 / 2`), split in two, `n`
//!   bottlenecks (two 3x3 convs, residual if `shortcut`) each fed the last chunk, concat all,
//!   `cv2` 1x1 to `c2`.
//! * `C3k2(c1, c2, n, c3k, e)`: C2f with `c = c2 * e` whose inner blocks are bottlenecks with a
//!   `c / 2` hidden width, or (`c3k`) C3k blocks (two 1x1 branches, two 3x3 bottlenecks on
//!   one, concat, 1x1).
//! * `SPPF`: 1x1 to `c1 / 2`, three chained 5x5 stride-1 max pools, concat the four, 1x1.
//! * `C2PSA` (YOLO11): split, one PSA block (multi-head self-attention over the cells with a
//!   3x3 depthwise positional conv, then a 2-layer 1x1 FFN, both residual), concat, 1x1.
//! * `Detect`: per level a box branch (3x3, 3x3, 1x1 to 64) and a class branch (v8: 3x3, 3x3,
//!   1x1; 11: depthwise 3x3 + 1x1 twice, then 1x1), then DFL softmax over 16 bins.

use std::path::{Path, PathBuf};

use its_engine::manifest::{
    ColorOrder, InputSpec, Layout, ModelManifest, OutputFormat, OutputSpec, PixelScale,
};

use crate::ModelError;
use crate::graph::GraphBuilder;
use crate::onnx::{AttributeProto, DataType, Dim, ModelProto};

/// ONNX opset written.
pub const OPSET: i64 = 17;
/// DFL bins per box side.
const REG_MAX: usize = 16;

/// The COCO class names, in the order COCO-trained YOLO models use.
pub const COCO_CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Which architecture to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// YOLO11n.
    Yolo11n,
    /// YOLOv8n.
    Yolov8n,
}

impl Arch {
    /// Name as on the command line: `yolo11n`, `yolov8n`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Yolo11n => "yolo11n",
            Self::Yolov8n => "yolov8n",
        }
    }
}

impl std::str::FromStr for Arch {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "yolo11n" => Ok(Self::Yolo11n),
            "yolov8n" => Ok(Self::Yolov8n),
            other => Err(ModelError::Synth(format!(
                "unknown architecture `{other}` (known: yolo11n, yolov8n)"
            ))),
        }
    }
}

/// What to synthesise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSpec {
    /// Architecture.
    pub arch: Arch,
    /// Seed of the weights.
    pub seed: u64,
    /// Square input size; a positive multiple of 32.
    pub imgsz: usize,
    /// Number of classes (at least 1).
    pub classes: usize,
}

/// splitmix64: a small, fixed, well-mixed generator so the weights never depend on a
/// dependency's version.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

struct Net {
    b: GraphBuilder,
    rng: Rng,
    convs: usize,
}

impl Net {
    /// Convolution (BN folded: weight + bias) with `k / 2` padding, SiLU if `act`; the
    /// arguments are those of the architecture description's `Conv(c1, c2, k, s, g, act)`.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        x: &str,
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        groups: usize,
        act: bool,
    ) -> String {
        let i = self.convs;
        self.convs += 1;
        let fan_in = (c1 / groups) * k * k;
        // Uniform with variance 2 / fan_in (He): keeps SiLU activations at a steady scale.
        let bound = (6.0 / fan_in as f32).sqrt();
        let w: Vec<f32> = (0..c2 * fan_in)
            .map(|_| self.rng.symmetric() * bound)
            .collect();
        let bias: Vec<f32> = (0..c2).map(|_| self.rng.symmetric() * 0.1).collect();
        self.conv_with(x, &w, &bias, (c1, c2, k, s, groups), act, i)
    }

    fn conv_with(
        &mut self,
        x: &str,
        w: &[f32],
        bias: &[f32],
        (c1, c2, k, s, groups): (usize, usize, usize, usize, usize),
        act: bool,
        i: usize,
    ) -> String {
        let wn = self.b.init_f32(
            &format!("conv{i}.weight"),
            &[c2 as i64, (c1 / groups) as i64, k as i64, k as i64],
            w,
        );
        let bn = self
            .b
            .init_f32(&format!("conv{i}.bias"), &[c2 as i64], bias);
        let p = (k / 2) as i64;
        let y = self.b.op(
            "Conv",
            &[x, &wn, &bn],
            vec![
                AttributeProto::ints("kernel_shape", &[k as i64, k as i64]),
                AttributeProto::ints("strides", &[s as i64, s as i64]),
                AttributeProto::ints("pads", &[p; 4]),
                AttributeProto::ints("dilations", &[1, 1]),
                AttributeProto::int("group", groups as i64),
            ],
        );
        if act { self.silu(&y) } else { y }
    }

    fn silu(&mut self, x: &str) -> String {
        let s = self.b.op("Sigmoid", &[x], vec![]);
        self.b.op("Mul", &[x, &s], vec![])
    }

    fn cat(&mut self, parts: &[&str]) -> String {
        self.b
            .op("Concat", parts, vec![AttributeProto::int("axis", 1)])
    }

    fn split2(&mut self, x: &str, a: usize, b: usize) -> (String, String) {
        let sizes = self.b.const_i64("split", &[a as i64, b as i64]);
        let mut o = self.b.node(
            "Split",
            &[x, &sizes],
            2,
            vec![AttributeProto::int("axis", 1)],
        );
        let second = o.pop().unwrap_or_default();
        let first = o.pop().unwrap_or_default();
        (first, second)
    }

    fn bottleneck(&mut self, x: &str, c: usize, hidden: usize, shortcut: bool) -> String {
        let y = self.conv(x, c, hidden, 3, 1, 1, true);
        let y = self.conv(&y, hidden, c, 3, 1, 1, true);
        if shortcut {
            self.b.op("Add", &[x, &y], vec![])
        } else {
            y
        }
    }

    /// C3k: two 1x1 branches, `n` 3x3 bottlenecks (hidden = width) on the first, concat, 1x1.
    fn c3k(&mut self, x: &str, c1: usize, c2: usize, n: usize) -> String {
        let c = c2 / 2;
        let mut a = self.conv(x, c1, c, 1, 1, 1, true);
        let bb = self.conv(x, c1, c, 1, 1, 1, true);
        for _ in 0..n {
            a = self.bottleneck(&a, c, c, true);
        }
        let y = self.cat(&[&a, &bb]);
        self.conv(&y, 2 * c, c2, 1, 1, 1, true)
    }

    /// C2f (v8, `e` = 0.5, bottleneck hidden = c) and C3k2 (11: bottleneck hidden = c / 2,
    /// or C3k blocks).
    #[allow(clippy::too_many_arguments)]
    fn c2f(
        &mut self,
        x: &str,
        c1: usize,
        c2: usize,
        n: usize,
        shortcut: bool,
        e: f32,
        block: Block,
    ) -> String {
        let c = (c2 as f32 * e) as usize;
        let y = self.conv(x, c1, 2 * c, 1, 1, 1, true);
        let (a, mut last) = self.split2(&y, c, c);
        let mut parts = vec![a, last.clone()];
        for _ in 0..n {
            last = match block {
                Block::Bottleneck { hidden_ratio } => {
                    let hidden = (c as f32 * hidden_ratio) as usize;
                    self.bottleneck(&last, c, hidden, shortcut)
                }
                Block::C3k => self.c3k(&last, c, c, 2),
            };
            parts.push(last.clone());
        }
        let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
        let y = self.cat(&refs);
        self.conv(&y, (2 + n) * c, c2, 1, 1, 1, true)
    }

    fn sppf(&mut self, x: &str, c1: usize, c2: usize) -> String {
        let c = c1 / 2;
        let mut y = vec![self.conv(x, c1, c, 1, 1, 1, true)];
        for _ in 0..3 {
            let p = self.b.op(
                "MaxPool",
                &[y.last().map(String::as_str).unwrap_or_default()],
                vec![
                    AttributeProto::ints("kernel_shape", &[5, 5]),
                    AttributeProto::ints("strides", &[1, 1]),
                    AttributeProto::ints("pads", &[2, 2, 2, 2]),
                ],
            );
            y.push(p);
        }
        let refs: Vec<&str> = y.iter().map(String::as_str).collect();
        let cat = self.cat(&refs);
        self.conv(&cat, 4 * c, c2, 1, 1, 1, true)
    }

    /// Multi-head self-attention over the `hw` cells of `[B, c, h, w]`.
    fn attention(&mut self, x: &str, c: usize, hw: (usize, usize)) -> String {
        let heads = c / 64;
        let head_dim = c / heads;
        let key_dim = head_dim / 2;
        let n = (hw.0 * hw.1) as i64;
        let qkv = self.conv(x, c, c + 2 * key_dim * heads, 1, 1, 1, false);
        let shape = self.b.const_i64(
            "attn.shape",
            &[0, heads as i64, (2 * key_dim + head_dim) as i64, n],
        );
        let r = self.b.op("Reshape", &[&qkv, &shape], vec![]);
        let sizes = self
            .b
            .const_i64("split", &[key_dim as i64, key_dim as i64, head_dim as i64]);
        let qkv = self.b.node(
            "Split",
            &[&r, &sizes],
            3,
            vec![AttributeProto::int("axis", 2)],
        );
        let (q, k, v) = (&qkv[0], &qkv[1], &qkv[2]);
        // attn = softmax(q^T k * key_dim^-0.5) over the last axis: [B, heads, N, N].
        let qt = self.b.op(
            "Transpose",
            &[q],
            vec![AttributeProto::ints("perm", &[0, 1, 3, 2])],
        );
        let logits = self.b.op("MatMul", &[&qt, k], vec![]);
        let scale = self
            .b
            .const_f32("attn.scale", &[], &[(key_dim as f32).powf(-0.5)]);
        let logits = self.b.op("Mul", &[&logits, &scale], vec![]);
        let attn = self
            .b
            .op("Softmax", &[&logits], vec![AttributeProto::int("axis", -1)]);
        // out = v attn^T: [B, heads, head_dim, N] -> [B, c, h, w]
        let at = self.b.op(
            "Transpose",
            &[&attn],
            vec![AttributeProto::ints("perm", &[0, 1, 3, 2])],
        );
        let o = self.b.op("MatMul", &[v, &at], vec![]);
        let img = self
            .b
            .const_i64("attn.shape", &[0, c as i64, hw.0 as i64, hw.1 as i64]);
        let o = self.b.op("Reshape", &[&o, &img], vec![]);
        let v_img = self.b.op("Reshape", &[v, &img], vec![]);
        let pe = self.conv(&v_img, c, c, 3, 1, c, false);
        let sum = self.b.op("Add", &[&o, &pe], vec![]);
        self.conv(&sum, c, c, 1, 1, 1, false)
    }

    fn c2psa(&mut self, x: &str, c1: usize, hw: (usize, usize)) -> String {
        let c = c1 / 2;
        let y = self.conv(x, c1, 2 * c, 1, 1, 1, true);
        let (a, b) = self.split2(&y, c, c);
        let att = self.attention(&b, c, hw);
        let b = self.b.op("Add", &[&b, &att], vec![]);
        let f = self.conv(&b, c, 2 * c, 1, 1, 1, true);
        let f = self.conv(&f, 2 * c, c, 1, 1, 1, false);
        let b = self.b.op("Add", &[&b, &f], vec![]);
        let y = self.cat(&[&a, &b]);
        self.conv(&y, 2 * c, c1, 1, 1, 1, true)
    }

    fn upsample(&mut self, x: &str) -> String {
        let scales = self
            .b
            .const_f32("upsample.scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
        self.b.op(
            "Resize",
            &[x, "", &scales],
            vec![
                AttributeProto::string("mode", "nearest"),
                AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
                AttributeProto::string("nearest_mode", "floor"),
            ],
        )
    }
}

#[derive(Clone, Copy)]
enum Block {
    Bottleneck { hidden_ratio: f32 },
    C3k,
}

/// Builds the model for `spec`.
pub fn build(spec: &SynthSpec) -> Result<ModelProto, ModelError> {
    if spec.imgsz == 0 || !spec.imgsz.is_multiple_of(32) {
        return Err(ModelError::Synth(format!(
            "imgsz {} must be a positive multiple of 32",
            spec.imgsz
        )));
    }
    if spec.classes == 0 {
        return Err(ModelError::Synth("classes must be at least 1".into()));
    }
    let s = spec.imgsz;
    let nc = spec.classes;
    let mut n = Net {
        b: GraphBuilder::new(spec.arch.name()),
        rng: Rng(spec.seed ^ 0x5EED_0000_0000_0000),
        convs: 0,
    };
    let x = n.b.input(
        "images",
        DataType::Float,
        &[
            Dim::Named("batch".into()),
            Dim::Fixed(3),
            Dim::Fixed(s as i64),
            Dim::Fixed(s as i64),
        ],
    );
    let (p3, p4, p5, ch) = match spec.arch {
        Arch::Yolov8n => {
            let bott = Block::Bottleneck { hidden_ratio: 1.0 };
            let y = n.conv(&x, 3, 16, 3, 2, 1, true);
            let y = n.conv(&y, 16, 32, 3, 2, 1, true);
            let y = n.c2f(&y, 32, 32, 1, true, 0.5, bott);
            let y = n.conv(&y, 32, 64, 3, 2, 1, true);
            let l4 = n.c2f(&y, 64, 64, 2, true, 0.5, bott);
            let y = n.conv(&l4, 64, 128, 3, 2, 1, true);
            let l6 = n.c2f(&y, 128, 128, 2, true, 0.5, bott);
            let y = n.conv(&l6, 128, 256, 3, 2, 1, true);
            let y = n.c2f(&y, 256, 256, 1, true, 0.5, bott);
            let l9 = n.sppf(&y, 256, 256);
            let y = n.upsample(&l9);
            let y = n.cat(&[&y, &l6]);
            let l12 = n.c2f(&y, 384, 128, 1, false, 0.5, bott);
            let y = n.upsample(&l12);
            let y = n.cat(&[&y, &l4]);
            let p3 = n.c2f(&y, 192, 64, 1, false, 0.5, bott);
            let y = n.conv(&p3, 64, 64, 3, 2, 1, true);
            let y = n.cat(&[&y, &l12]);
            let p4 = n.c2f(&y, 192, 128, 1, false, 0.5, bott);
            let y = n.conv(&p4, 128, 128, 3, 2, 1, true);
            let y = n.cat(&[&y, &l9]);
            let p5 = n.c2f(&y, 384, 256, 1, false, 0.5, bott);
            (p3, p4, p5, [64, 128, 256])
        }
        Arch::Yolo11n => {
            let bott = Block::Bottleneck { hidden_ratio: 0.5 };
            let y = n.conv(&x, 3, 16, 3, 2, 1, true);
            let y = n.conv(&y, 16, 32, 3, 2, 1, true);
            let y = n.c2f(&y, 32, 64, 1, true, 0.25, bott);
            let y = n.conv(&y, 64, 64, 3, 2, 1, true);
            let l4 = n.c2f(&y, 64, 128, 1, true, 0.25, bott);
            let y = n.conv(&l4, 128, 128, 3, 2, 1, true);
            let l6 = n.c2f(&y, 128, 128, 1, true, 0.5, Block::C3k);
            let y = n.conv(&l6, 128, 256, 3, 2, 1, true);
            let y = n.c2f(&y, 256, 256, 1, true, 0.5, Block::C3k);
            let y = n.sppf(&y, 256, 256);
            let l10 = n.c2psa(&y, 256, (s / 32, s / 32));
            let y = n.upsample(&l10);
            let y = n.cat(&[&y, &l6]);
            let l13 = n.c2f(&y, 384, 128, 1, true, 0.5, bott);
            let y = n.upsample(&l13);
            let y = n.cat(&[&y, &l4]);
            let p3 = n.c2f(&y, 256, 64, 1, true, 0.5, bott);
            let y = n.conv(&p3, 64, 64, 3, 2, 1, true);
            let y = n.cat(&[&y, &l13]);
            let p4 = n.c2f(&y, 192, 128, 1, true, 0.5, bott);
            let y = n.conv(&p4, 128, 128, 3, 2, 1, true);
            let y = n.cat(&[&y, &l10]);
            let p5 = n.c2f(&y, 384, 256, 1, true, 0.5, Block::C3k);
            (p3, p4, p5, [64, 128, 256])
        }
    };
    detect(&mut n, spec, [&p3, &p4, &p5], ch);
    let mut model = n.b.into_model(OPSET, "its-model synth");
    model.doc_string = format!(
        "{} with random weights (seed {}), {} classes, input [batch, 3, {s}, {s}]; detections are meaningless",
        spec.arch.name(),
        spec.seed,
        nc
    );
    Ok(model)
}

fn detect(n: &mut Net, spec: &SynthSpec, levels: [&str; 3], ch: [usize; 3]) {
    let nc = spec.classes;
    let c2 = 16.max(ch[0] / 4).max(4 * REG_MAX);
    let c3 = ch[0].max(nc.min(100));
    let strides = [8usize, 16, 32];
    let mut flat = Vec::with_capacity(3);
    let mut anchors_xy: Vec<f32> = Vec::new();
    let mut stride_row: Vec<f32> = Vec::new();
    let mut count = 0usize;
    for ((x, &c), &stride) in levels.iter().zip(&ch).zip(&strides) {
        let box_ = n.conv(x, c, c2, 3, 1, 1, true);
        let box_ = n.conv(&box_, c2, c2, 3, 1, 1, true);
        let box_ = n.conv(&box_, c2, 4 * REG_MAX, 1, 1, 1, false);
        let cls = match spec.arch {
            Arch::Yolov8n => {
                let y = n.conv(x, c, c3, 3, 1, 1, true);
                n.conv(&y, c3, c3, 3, 1, 1, true)
            }
            Arch::Yolo11n => {
                let y = n.conv(x, c, c, 3, 1, c, true);
                let y = n.conv(&y, c, c3, 1, 1, 1, true);
                let y = n.conv(&y, c3, c3, 3, 1, c3, true);
                n.conv(&y, c3, c3, 1, 1, 1, true)
            }
        };
        // Final class conv: Ultralytics' bias prior log(5 / nc / (640 / stride)^2), so that
        // few random scores pass a 0.25 threshold, as with a trained model.
        let i = n.convs;
        n.convs += 1;
        let bound = (6.0 / c3 as f32).sqrt();
        let w: Vec<f32> = (0..nc * c3)
            .map(|_| n.rng.symmetric() * bound * 0.5)
            .collect();
        let prior = (5.0 / nc as f32 / (640.0 / stride as f32).powi(2)).ln();
        let bias = vec![prior; nc];
        let cls = n.conv_with(&cls, &w, &bias, (c3, nc, 1, 1, 1), false, i);
        let y = n.cat(&[&box_, &cls]);
        let g = spec.imgsz / stride;
        let shape = n.b.const_i64(
            "level.shape",
            &[0, (4 * REG_MAX + nc) as i64, (g * g) as i64],
        );
        flat.push(n.b.op("Reshape", &[&y, &shape], vec![]));
        for gy in 0..g {
            for gx in 0..g {
                anchors_xy.push(gx as f32 + 0.5);
                anchors_xy.push(gy as f32 + 0.5);
                stride_row.push(stride as f32);
            }
        }
        count += g * g;
    }
    let refs: Vec<&str> = flat.iter().map(String::as_str).collect();
    let all =
        n.b.op("Concat", &refs, vec![AttributeProto::int("axis", 2)]);
    let (box_, cls) = n.split2(&all, 4 * REG_MAX, nc);
    // DFL: [B, 64, A] -> [B, 4, 16, A] -> [B, 16, 4, A] -> softmax over bins -> expectation.
    let s1 =
        n.b.const_i64("dfl.shape", &[0, 4, REG_MAX as i64, count as i64]);
    let r = n.b.op("Reshape", &[&box_, &s1], vec![]);
    let t = n.b.op(
        "Transpose",
        &[&r],
        vec![AttributeProto::ints("perm", &[0, 2, 1, 3])],
    );
    let sm =
        n.b.op("Softmax", &[&t], vec![AttributeProto::int("axis", 1)]);
    let bins: Vec<f32> = (0..REG_MAX).map(|i| i as f32).collect();
    let w =
        n.b.init_f32("dfl.weight", &[1, REG_MAX as i64, 1, 1], &bins);
    let d = n.b.op(
        "Conv",
        &[&sm, &w],
        vec![AttributeProto::ints("kernel_shape", &[1, 1])],
    );
    let s2 = n.b.const_i64("dfl.shape", &[0, 4, count as i64]);
    let dist = n.b.op("Reshape", &[&d, &s2], vec![]);
    // dist2bbox (xywh): lt, rb distances from the anchor, in grid units, times the stride.
    let (lt, rb) = n.split2(&dist, 2, 2);
    // Anchors as [1, 2, A]: row 0 all x, row 1 all y.
    let mut anchors = vec![0.0f32; 2 * count];
    for a in 0..count {
        anchors[a] = anchors_xy[2 * a];
        anchors[count + a] = anchors_xy[2 * a + 1];
    }
    let anchors = n.b.const_f32("anchors", &[1, 2, count as i64], &anchors);
    let x1y1 = n.b.op("Sub", &[&anchors, &lt], vec![]);
    let x2y2 = n.b.op("Add", &[&anchors, &rb], vec![]);
    let sum = n.b.op("Add", &[&x1y1, &x2y2], vec![]);
    let half = n.b.const_f32("half", &[], &[0.5]);
    let cxy = n.b.op("Mul", &[&sum, &half], vec![]);
    let wh = n.b.op("Sub", &[&x2y2, &x1y1], vec![]);
    let xywh = n.cat(&[&cxy, &wh]);
    let strides = n.b.const_f32("strides", &[1, 1, count as i64], &stride_row);
    let dbox = n.b.op("Mul", &[&xywh, &strides], vec![]);
    let scores = n.b.op("Sigmoid", &[&cls], vec![]);
    n.b.node_with_outputs(
        "Concat",
        &[&dbox, &scores],
        &["output0".to_owned()],
        vec![AttributeProto::int("axis", 1)],
    );
    n.b.output(
        "output0",
        DataType::Float,
        &[
            Dim::Named("batch".into()),
            Dim::Fixed(4 + nc as i64),
            Dim::Fixed(count as i64),
        ],
    );
}

/// Number of output anchors at `imgsz`: cells of the stride 8, 16 and 32 grids.
pub fn anchors(imgsz: usize) -> usize {
    [8, 16, 32].iter().map(|s| (imgsz / s).pow(2)).sum()
}

/// What [`write`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthReport {
    /// The ONNX file.
    pub onnx_path: PathBuf,
    /// Float parameters.
    pub parameters: usize,
    /// Nodes in the graph.
    pub nodes: usize,
    /// Output `[4 + C, N]` without the batch.
    pub output: (usize, usize),
}

/// Writes `model.onnx` and `model.toml` (`yolov8` output format) for `spec` into `out_dir`.
pub fn write(spec: &SynthSpec, out_dir: &Path) -> Result<SynthReport, ModelError> {
    let model = build(spec)?;
    let classes: Vec<String> = if spec.classes == COCO_CLASSES.len() {
        COCO_CLASSES.iter().map(|s| (*s).to_owned()).collect()
    } else {
        (0..spec.classes).map(|i| format!("class{i}")).collect()
    };
    let manifest = ModelManifest {
        name: format!("{}-random", spec.arch.name()),
        version: format!("seed{}", spec.seed),
        file: PathBuf::from("model.onnx"),
        input: InputSpec {
            width: spec.imgsz as u32,
            height: spec.imgsz as u32,
            layout: Layout::Nchw,
            color: ColorOrder::Rgb,
            scale: PixelScale::Unit,
        },
        output: OutputSpec {
            format: OutputFormat::Yolov8,
        },
        classes,
        score_threshold: 0.25,
        iou_threshold: 0.45,
        max_detections: 300,
    };
    let mut text = format!(
        "# Written by `its model synth --arch {} --seed {} --imgsz {} --classes {}`: random\n# weights, meaningless detections; for engine tests and speed runs.\n",
        spec.arch.name(),
        spec.seed,
        spec.imgsz,
        spec.classes
    );
    text.push_str(
        &toml::to_string(&manifest)
            .map_err(|e| ModelError::Synth(format!("cannot write the manifest: {e}")))?,
    );
    std::fs::create_dir_all(out_dir).map_err(|io| ModelError::Io {
        path: out_dir.to_owned(),
        io,
    })?;
    let onnx_path = out_dir.join("model.onnx");
    for (path, data) in [
        (onnx_path.clone(), model.to_bytes()),
        (
            out_dir.join(its_engine::manifest::MANIFEST_FILE),
            text.into_bytes(),
        ),
    ] {
        std::fs::write(&path, data).map_err(|io| ModelError::Io { path, io })?;
    }
    Ok(SynthReport {
        onnx_path,
        parameters: model.parameter_count(),
        nodes: model.graph().node.len(),
        output: (4 + spec.classes, anchors(spec.imgsz)),
    })
}
