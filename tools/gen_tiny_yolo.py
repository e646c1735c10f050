#!/usr/bin/env python3
"""Generate a tiny, deterministic YOLOv8-style ONNX detector for tests and CPU smoke runs.

Writes `<out>/model.onnx` and `<out>/model.toml` (the manifest read by `its-engine`).
Default out: `models/generated/tiny-yolo` relative to the repository root.

The network is not trained: weights come from numpy seed 7, so its detections are
arbitrary but deterministic. What matters is that the graph has the exact interface of
an Ultralytics YOLOv8 export:

    input  `images`  float32 [batch (dynamic), 3, 640, 640], RGB, scaled 0..1
    output `output0` float32 [batch, 84, 400]
           rows 0..4  : cx, cy, w, h in input pixels
           rows 4..84 : class scores for the 80 COCO classes, already sigmoided

Graph: five stride-2 3x3 Conv + SiLU (x * sigmoid(x)) layers, 3->8->16->32->64->64
channels, take 640x640 down to a 20x20 grid (stride 32); a 1x1 head conv gives 4 + 80
channels per cell; then, in-graph:

    cx = (grid_x + sigmoid(t0)) * 32        cy = (grid_y + sigmoid(t1)) * 32
    w  = sigmoid(t2) * 4 * 32                h  = sigmoid(t3) * 4 * 32
    score_c = sigmoid(head_c + bias_c - 3.5)   (the -3.5 is folded into the head bias)

so boxes are sane pixel values inside the 640 frame (at most 128 px wide) and only a
handful of scores pass 0.25. About 0.13 GMAC per image: a few ms on one CPU core.

Running the script twice produces byte-identical files (idempotent).
Requires: numpy, onnx (installed by scripts/setup.sh).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "models" / "generated" / "tiny-yolo"

SEED = 7
OPSET = 17
INPUT_SIZE = 640
STRIDE = 32
GRID = INPUT_SIZE // STRIDE  # 20
NUM_ANCHORS = GRID * GRID  # 400
CHANNELS = [3, 8, 16, 32, 64, 64]
CLASS_BIAS = -3.5
# Gain on the He-normal conv weights (He init assumes ReLU; SiLU passes less variance), so
# that the 20x20 features still vary across the frame instead of collapsing to a constant.
CONV_GAIN = 1.5
# Scale of the head's class weights. With CONV_GAIN this is tuned so that a flat grey frame
# gives no anchor above 0.25 and a frame with gradients and shapes gives a few dozen.
CLASS_WEIGHT_GAIN = 1.0

COCO_CLASSES = [
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck",
    "boat", "traffic light", "fire hydrant", "stop sign", "parking meter", "bench",
    "bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra",
    "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis",
    "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard",
    "surfboard", "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon",
    "bowl", "banana", "apple", "sandwich", "orange", "broccoli", "carrot", "hot dog",
    "pizza", "donut", "cake", "chair", "couch", "potted plant", "bed", "dining table",
    "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone", "microwave",
    "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
]
assert len(COCO_CLASSES) == 80
NUM_CLASSES = len(COCO_CLASSES)


def build_model() -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []

    def const(name: str, array: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(array, name))
        return name

    x = "images"
    for i, (cin, cout) in enumerate(zip(CHANNELS[:-1], CHANNELS[1:])):
        fan_in = cin * 3 * 3
        w = rng.normal(0.0, CONV_GAIN * np.sqrt(2.0 / fan_in), size=(cout, cin, 3, 3)).astype(np.float32)
        b = rng.normal(0.0, 0.1, size=(cout,)).astype(np.float32)
        conv = f"conv{i}"
        nodes.append(
            helper.make_node(
                "Conv",
                [x, const(f"{conv}.weight", w), const(f"{conv}.bias", b)],
                [f"{conv}.out"],
                name=conv,
                kernel_shape=[3, 3],
                strides=[2, 2],
                pads=[1, 1, 1, 1],
            )
        )
        nodes.append(helper.make_node("Sigmoid", [f"{conv}.out"], [f"{conv}.sig"], name=f"{conv}.sigmoid"))
        nodes.append(helper.make_node("Mul", [f"{conv}.out", f"{conv}.sig"], [f"{conv}.silu"], name=f"{conv}.silu"))
        x = f"{conv}.silu"

    # 1x1 head: 4 box channels + 80 class channels.
    cin = CHANNELS[-1]
    head_w = rng.normal(0.0, np.sqrt(1.0 / cin), size=(4 + NUM_CLASSES, cin, 1, 1)).astype(np.float32)
    head_w[4:] *= CLASS_WEIGHT_GAIN
    head_b = rng.normal(0.0, 0.1, size=(4 + NUM_CLASSES,)).astype(np.float32)
    head_b[4:] += CLASS_BIAS
    nodes.append(
        helper.make_node(
            "Conv",
            [x, const("head.weight", head_w), const("head.bias", head_b)],
            ["head.out"],
            name="head",
            kernel_shape=[1, 1],
        )
    )
    # [B, 84, 20, 20] -> [B, 84, 400]; anchor index = gy * 20 + gx.
    nodes.append(
        helper.make_node(
            "Reshape",
            ["head.out", const("flat.shape", np.array([0, 4 + NUM_CLASSES, NUM_ANCHORS], dtype=np.int64))],
            ["head.flat"],
            name="flatten",
        )
    )
    nodes.append(helper.make_node("Sigmoid", ["head.flat"], ["head.sig"], name="head.sigmoid"))
    nodes.append(
        helper.make_node(
            "Split",
            ["head.sig", const("split.sizes", np.array([2, 2, NUM_CLASSES], dtype=np.int64))],
            ["xy.sig", "wh.sig", "scores"],
            name="split",
            axis=1,
        )
    )
    idx = np.arange(NUM_ANCHORS)
    grid = np.stack([idx % GRID, idx // GRID]).astype(np.float32).reshape(1, 2, NUM_ANCHORS)
    nodes.append(helper.make_node("Add", ["xy.sig", const("grid.xy", grid)], ["xy.cells"], name="xy.add_grid"))
    nodes.append(
        helper.make_node("Mul", ["xy.cells", const("stride", np.array(STRIDE, dtype=np.float32))], ["xy"], name="xy.scale")
    )
    nodes.append(
        helper.make_node(
            "Mul", ["wh.sig", const("wh.gain", np.array(4.0 * STRIDE, dtype=np.float32))], ["wh"], name="wh.scale"
        )
    )
    nodes.append(helper.make_node("Concat", ["xy", "wh", "scores"], ["output0"], name="concat", axis=1))

    graph = helper.make_graph(
        nodes,
        "tiny_yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, INPUT_SIZE, INPUT_SIZE])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["batch", 4 + NUM_CLASSES, NUM_ANCHORS])],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        producer_name="its-camera-ai/tools/gen_tiny_yolo.py",
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    # Pin the IR version so the file does not change with the installed onnx version
    # (IR 8 is what opset 17 shipped with; every ONNX Runtime >= 1.13 reads it).
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def manifest_toml() -> str:
    classes = "\n".join(f'    "{c}",' for c in COCO_CLASSES)
    return f"""# Generated by tools/gen_tiny_yolo.py; do not edit by hand.
# Untrained weights (numpy seed {SEED}): detections are deterministic but meaningless.
name = "tiny-yolo"
version = "1"
file = "model.onnx"
score_threshold = 0.25
iou_threshold = 0.45
max_detections = 300
classes = [
{classes}
]

[input]
width = {INPUT_SIZE}
height = {INPUT_SIZE}
layout = "nchw"
color = "rgb"
scale = "0..1"

[output]
format = "yolov8"
"""


def write_if_changed(path: Path, data: bytes) -> str:
    if path.exists() and path.read_bytes() == data:
        return "unchanged"
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return "written"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    args = parser.parse_args(argv)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    model_bytes = build_model().SerializeToString(deterministic=True)
    manifest = manifest_toml().encode()
    for name, data in (("model.onnx", model_bytes), ("model.toml", manifest)):
        path = out / name
        state = write_if_changed(path, data)
        digest = hashlib.sha256(data).hexdigest()[:16]
        print(f"{state}: {path} ({len(data)} bytes, sha256 {digest})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
