#!/usr/bin/env python3
"""Independent check of `its model import darknet`: runs a Darknet network in numpy.

    darknet_ref.py CFG WEIGHTS ONNX [--input FILE] [--batch 2] [--seed 0]

Reads CFG and WEIGHTS on its own (no code shared with the Rust importer), runs the network
in plain numpy following Darknet's C source for inference (convolution, batch norm as
`(x - mean) / (sqrt(var) + .000001) * scale + bias`, leaky 0.1, maxpool with `-pad/2`
offset and out-of-range cells skipped, nearest upsample, route, shortcut, and the `[yolo]`
box formula of `get_yolo_box`), then runs ONNX in onnxruntime on the same input and
compares `[batch, N, 5 + C]` element by element. The input is FILE (raw little-endian
float32 `[batch, 3, H, W]`, e.g. letterboxed photos) or uniform random values.

Prints one JSON line with the largest differences; exit status 0 when within tolerance,
1 when not, 2 on a usage or format error.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np


def parse_cfg(path: str) -> list[tuple[str, dict[str, str]]]:
    sections: list[tuple[str, dict[str, str]]] = []
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = "".join(raw.split())
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                sections.append((line[1:-1], {}))
            else:
                key, value = line.split("=", 1)
                sections[-1][1][key] = value
    return sections


class Weights:
    def __init__(self, path: str):
        with open(path, "rb") as f:
            major, minor, revision = np.fromfile(f, dtype="<i4", count=3)
            if major * 10 + minor >= 2 and major < 1000 and minor < 1000:
                np.fromfile(f, dtype="<u8", count=1)
            else:
                np.fromfile(f, dtype="<u4", count=1)
            self.data = np.fromfile(f, dtype="<f4")
        self.pos = 0

    def take(self, n: int) -> np.ndarray:
        if self.pos + n > self.data.size:
            raise ValueError(f"weights truncated at float {self.pos} (need {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out


def conv2d(x: np.ndarray, w: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """x [B, C, H, W], w [F, C, k, k] -> [B, F, Ho, Wo] (groups = 1)."""
    k = w.shape[2]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    # win [B, C, Ho, Wo, k, k]
    return np.einsum("bchwij,fcij->bfhw", win, w, optimize=True).astype(np.float32)


def maxpool(x: np.ndarray, size: int, stride: int, pad: int) -> np.ndarray:
    b, c, h, w = x.shape
    out_h = (h + pad - size) // stride + 1
    out_w = (w + pad - size) // stride + 1
    offset = -(pad // 2)  # C: -l.pad / 2 with l.pad >= 0
    out = np.full((b, c, out_h, out_w), -np.inf, dtype=np.float32)
    for n in range(size):
        for m in range(size):
            for i in range(out_h):
                cur_h = offset + i * stride + n
                if not 0 <= cur_h < h:
                    continue
                cols = offset + np.arange(out_w) * stride + m
                ok = (cols >= 0) & (cols < w)
                out[:, :, i, ok] = np.maximum(out[:, :, i, ok], x[:, :, cur_h, cols[ok]])
    return out


def activate(x: np.ndarray, kind: str) -> np.ndarray:
    if kind == "linear":
        return x
    if kind == "leaky":
        return np.where(x > 0, x, np.float32(0.1) * x)
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "logistic":
        return 1 / (1 + np.exp(-x))
    raise ValueError(f"activation {kind} not handled by the reference")


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def run_darknet(cfg: list, weights: Weights, x: np.ndarray) -> np.ndarray:
    net = cfg[0][1]
    net_w, net_h = int(net["width"]), int(net["height"])
    outputs: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    for index, (kind, o) in enumerate(cfg[1:]):
        if kind == "convolutional":
            filters, size = int(o["filters"]), int(o.get("size", 1))
            stride = int(o.get("stride", 1))
            pad = size // 2 if int(o.get("pad", 0)) else int(o.get("padding", 0))
            bn = int(o.get("batch_normalize", 0))
            channels = x.shape[1]
            biases = weights.take(filters)
            if bn:
                scales = weights.take(filters)
                mean = weights.take(filters)
                var = weights.take(filters)
            w = weights.take(filters * channels * size * size).reshape(filters, channels, size, size)
            y = conv2d(x, w, stride, pad)
            if bn:
                y = (y - mean[None, :, None, None]) / (np.sqrt(var)[None, :, None, None] + np.float32(0.000001))
                y = y * scales[None, :, None, None]
            y = y + biases[None, :, None, None]
            x = activate(y.astype(np.float32), o.get("activation", "logistic"))
        elif kind == "maxpool":
            size = int(o.get("size", 1))
            x = maxpool(x, size, int(o.get("stride", 1)), int(o.get("padding", size - 1)))
        elif kind == "upsample":
            s = int(o.get("stride", 2))
            x = x.repeat(s, axis=2).repeat(s, axis=3)
        elif kind == "route":
            idx = [int(v) for v in o["layers"].split(",")]
            groups, gid = int(o.get("groups", 1)), int(o.get("group_id", 0))
            parts = []
            for i in idx:
                t = outputs[i if i >= 0 else index + i]
                per = t.shape[1] // groups
                parts.append(t[:, gid * per : (gid + 1) * per])
            x = np.concatenate(parts, axis=1)
        elif kind == "shortcut":
            i = int(o["from"])
            x = activate(x + outputs[i if i >= 0 else index + i], o.get("activation", "linear"))
        elif kind == "yolo":
            classes = int(o["classes"])
            anchors = [float(v) for v in o["anchors"].split(",")]
            mask = [int(v) for v in o["mask"].split(",")]
            sxy = float(o.get("scale_x_y", 1))
            b, _, lh, lw = x.shape
            t = x.reshape(b, len(mask), 5 + classes, lh, lw)
            for a, n in enumerate(mask):
                p = t[:, a]  # [B, 5 + C, lh, lw]
                j, i = np.meshgrid(np.arange(lh), np.arange(lw), indexing="ij")
                # get_yolo_box: x = (i + sigmoid(tx)) / lw, w = exp(tw) * anchor_w / net_w;
                # with scale_x_y (YOLOv4), sigmoid(t) * s - (s - 1) / 2 replaces sigmoid(t).
                bx = (i + sigmoid(p[:, 0]) * sxy - (sxy - 1) / 2) / lw * net_w
                by = (j + sigmoid(p[:, 1]) * sxy - (sxy - 1) / 2) / lh * net_h
                bw = np.exp(p[:, 2]) * anchors[2 * n]
                bh = np.exp(p[:, 3]) * anchors[2 * n + 1]
                rest = sigmoid(p[:, 4:])  # objectness, classes
                head = np.concatenate([np.stack([bx, by, bw, bh], axis=1), rest], axis=1)
                rows.append(head.reshape(b, 5 + classes, lh * lw).transpose(0, 2, 1))
        else:
            raise ValueError(f"section [{kind}] not handled by the reference")
        outputs.append(x)
    if weights.pos != weights.data.size:
        raise ValueError(f"{weights.data.size - weights.pos} floats left over in the weights file")
    return np.concatenate(rows, axis=1).astype(np.float32)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cfg")
    ap.add_argument("weights")
    ap.add_argument("onnx")
    ap.add_argument("--input", help="raw float32 [batch, 3, H, W] input (default: random)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    import onnxruntime as ort

    cfg = parse_cfg(args.cfg)
    net = cfg[0][1]
    h, w = int(net["height"]), int(net["width"])
    if args.input:
        x = np.fromfile(args.input, dtype="<f4").reshape(-1, 3, h, w)
    else:
        x = np.random.default_rng(args.seed).random((args.batch, 3, h, w), dtype=np.float32)
    try:
        ref = run_darknet(cfg, Weights(args.weights), x)
    except (ValueError, KeyError) as e:
        print(json.dumps({"error": str(e)}))
        return 2
    sess = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    if got.shape != ref.shape:
        print(json.dumps({"ok": False, "shape": list(got.shape), "expected_shape": list(ref.shape)}))
        return 1
    # Boxes are in pixels (up to several hundred); probabilities in 0..1.
    box_err = float(np.max(np.abs(got[..., :4] - ref[..., :4]) / (1.0 + np.abs(ref[..., :4]))))
    prob_err = float(np.max(np.abs(got[..., 4:] - ref[..., 4:])))
    ok = box_err < 1e-3 and prob_err < 1e-4
    print(
        json.dumps(
            {
                "ok": ok,
                "shape": list(got.shape),
                "box_rel_err": box_err,
                "prob_abs_err": prob_err,
                "max_objectness": float(ref[..., 4].max()),
            }
        )
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
