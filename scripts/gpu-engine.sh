#!/usr/bin/env bash
# The native engine on the device machine: its GPU tests, `its engine check` against ONNX
# Runtime, and `its engine bench` with and without the fused cuDNN convolution graphs, plus the
# per-op profile of both. Builds nothing there (no cargo): prepare here, carry .device/engine.
#
# Prepare here:  bash scripts/gpu-engine.sh --prepare
#                (release `its`, lane-bench and the engine/lane test binaries, stripped, and the
#                YOLO11n graph from ../shared/models, into the git-ignored .device/engine)
# Run there:     bash scripts/gpu-engine.sh                  (carry: [".device/engine"])
#                SKIP_TESTS=1 / SKIP_LANE=1 / ITERS=N shorten a run.
# Logs go to $OUT (or ./.device/engine/out); the last lines are a short table.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.device/engine

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -p its-node --bin its -p its-gpu --bin lane-bench
    rm -rf "$dir"
    mkdir -p "$dir/yolo11n"
    cp "$target/release/its" "$target/release/lane-bench" "$dir/"
    json=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null)
    for t in engine lane; do
        bin=$(grep -o "\"executable\":\"[^\"]*/deps/${t}-[^\"]*\"" <<<"$json" | head -1 | cut -d'"' -f4)
        cp "$bin" "$dir/its-gpu-${t}-tests"
    done
    cp ../shared/models/yolo11n-random.onnx "$dir/yolo11n/model.onnx"
    sed -e 's/^name = .*/name = "yolo11n-random"/' -e '/^#/d' \
        models/generated/tiny-yolo/model.toml >"$dir/yolo11n/model.toml"
    strip "$dir/its" "$dir/lane-bench" "$dir"/its-gpu-*-tests
    du -sh "$dir"
    exit 0
fi

out="${OUT:-$dir/out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ITS_REQUIRE_GPU=1
capi=$(python3 -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null)
ORT_DYLIB_PATH=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -1)
export ORT_DYLIB_PATH
m="$dir/yolo11n/model.onnx"
iters="${ITERS:-50}"
status=0
{
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
} 2>&1 | tee "$out/device.txt"

if [[ -z "${SKIP_TESTS:-}" ]]; then
    echo "== GPU engine tests" | tee "$out/tests.txt"
    timeout 300 "$dir/its-gpu-engine-tests" --test-threads=1 gpu_ 2>&1 | tee -a "$out/tests.txt" \
        || status=1
fi
{
    echo "== its engine check FP32 vs ONNX Runtime"
    timeout 240 "$dir/its" engine check "$m" --batch 1,32 || status=1
    echo "== its engine check FP16 (fused) vs ONNX Runtime, tolerance 5e-2"
    timeout 120 "$dir/its" engine check "$m" --batch 2 --math fp16 --tolerance 5e-2 || status=1
    for variant in "" "--no-fused"; do
        echo "== its engine bench fp16 ${variant:-fused}"
        timeout 240 "$dir/its" engine bench "$m" --batch 1,8,32 --math fp16 --iters "$iters" \
            $variant --json >"$out/bench${variant:+-unfused}.json" || status=1
        timeout 240 "$dir/its" engine bench "$m" --batch 32 --math fp16 --no-graph --profile \
            --iters 10 $variant || status=1
    done
} 2>&1 | tee "$out/engine.txt"
if [[ -z "${SKIP_LANE:-}" ]]; then
    {
        echo "== GPU lane tests"
        timeout 200 "$dir/its-gpu-lane-tests" --test-threads=1 gpu_ || status=1
        echo "== lane-bench"
        timeout 120 "$dir/lane-bench" "$m" --streams 1,2,4 --batch 32 --secs 3 || status=1
    } 2>&1 | tee "$out/lane.txt"
fi
echo "== summary (ms per batch, CUDA events, median of $iters)"
python3 - "$out" <<'EOF'
import json, sys, os
out = sys.argv[1]
for name in ("bench.json", "bench-unfused.json"):
    p = os.path.join(out, name)
    try:
        d = json.load(open(p))
    except Exception as e:
        print(name, "missing:", e)
        continue
    for r in d["profiles"]:
        print(f'{name:<20} batch {r["batch"]:>3}  {r["ms"]:8.3f} ms  {r["img_per_s"]:8.0f} img/s  fused {r.get("fused_convs")}/{r.get("fused_tried")}')
EOF
echo "status $status"
exit $status
