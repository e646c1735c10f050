#!/usr/bin/env bash
# Sets up a fresh machine and runs the main job on the embedded default: a local nats-server,
# 4 synthetic cameras, the CPU worker with YOLOv3-tiny (COCO, imported from Darknet into
# models/yolov3-tiny), a status line per second. Ctrl-C stops it in order.
# Extra arguments go to `its run` (e.g. --duration 10, --cameras 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --bin its
# The demo model: the COCO-trained YOLOv3-tiny that setup fetched, imported to ONNX once.
model=models/yolov3-tiny
if [ ! -s "$model/model.toml" ] || [ .cache/yolov3-tiny/yolov3-tiny.weights -nt "$model/model.onnx" ]; then
    target/release/its model import darknet .cache/yolov3-tiny/yolov3-tiny.cfg \
        .cache/yolov3-tiny/yolov3-tiny.weights .cache/yolov3-tiny/coco.names -o "$model"
fi
exec target/release/its run --set engine.model_dir="$model" "$@"
