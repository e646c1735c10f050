#!/usr/bin/env bash
# The native engine on the device machine: its GPU tests, compute-sanitizer over a small engine,
# `its engine check` against ONNX Runtime (YOLO11n) and FP16 against FP32 detections (the
# imported YOLOv3-tiny over real frames), build times, and `its engine bench` with and without
# the direct depthwise kernel and the fused cuDNN graphs. Builds nothing there (no cargo): prepare
# here, carry what the steps need (the 64 MiB carry limit does not hold everything at once).
#
# Prepare here:  bash scripts/gpu-engine.sh --prepare
#                (into the git-ignored .device/: engine/ the release `its` and the engine test
#                binary; yolo11n/ the graph from ../shared/models; lane/ lane-bench and the lane
#                tests; v3/ the imported YOLOv3-tiny and 69 real frames, from scripts/setup.sh's
#                .cache)
# Run there:     carry .device/engine plus
#                  .device/yolo11n (and .device/lane)  for the YOLO11n steps (default), or
#                  .device/v3                          with ONLY=v3 (tests, sanitizer, FP16-vs-FP32)
#                SKIP_TESTS=1 / SKIP_BUILD_TIMES=1 / SKIP_BENCH=1 (checks and benches) /
#                SKIP_LANE=1 / SANITIZE=1 / ITERS=N.
# Logs go to $OUT (or ./.device/engine/out); the last lines are a short table.
set -uo pipefail
cd "$(dirname "$0")/.."
dir=.device/engine

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -p its-node --bin its -p its-gpu --bin lane-bench
    rm -rf "$dir" .device/yolo11n .device/lane .device/v3
    mkdir -p "$dir" .device/yolo11n .device/lane
    cp "$target/release/its" "$dir/"
    cp "$target/release/lane-bench" .device/lane/
    json=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null)
    for dest in "$dir/its-gpu-engine-tests" .device/lane/its-gpu-lane-tests; do
        t=$(basename "$dest" -tests)
        t=${t#its-gpu-}
        bin=$(grep -o "\"executable\":\"[^\"]*/deps/${t}-[^\"]*\"" <<<"$json" | head -1 | cut -d'"' -f4)
        cp "$bin" "$dest"
    done
    cp ../shared/models/yolo11n-random.onnx .device/yolo11n/model.onnx
    sed -e 's/^name = .*/name = "yolo11n-random"/' -e '/^#/d' \
        models/generated/tiny-yolo/model.toml >.device/yolo11n/model.toml
    strip "$dir/its" "$dir/its-gpu-engine-tests" .device/lane/*
    # The trained YOLOv3-tiny (imported) and real road frames for the FP16-vs-FP32 check:
    # 64 frames of vtest.avi plus the 5 fetched photos.
    if [[ -d .cache/yolov3-tiny ]]; then
        mkdir -p .device/v3/frames
        "$target/release/its" model import darknet .cache/yolov3-tiny/yolov3-tiny.cfg \
            .cache/yolov3-tiny/yolov3-tiny.weights .cache/yolov3-tiny/coco.names \
            -o .device/v3/yolov3-tiny
        ffmpeg -loglevel error -i .cache/videos/vtest.avi -vf "select=not(mod(n\,12))" \
            -vsync vfr -frames:v 64 -q:v 3 .device/v3/frames/vtest-%03d.jpg
        cp .cache/photos/*.jpg .device/v3/frames/
    fi
    du -sh "$dir" .device/yolo11n .device/lane .device/v3 2>/dev/null
    exit 0
fi

out="${OUT:-$dir/out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ITS_REQUIRE_GPU=1
capi=$(python3 -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null)
ORT_DYLIB_PATH=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -1)
export ORT_DYLIB_PATH
m=.device/yolo11n/model.onnx
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
if [[ -n "${SANITIZE:-}" ]]; then
    # memcheck and racecheck over the small engine test (every kernel family, no timing).
    san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
    {
        echo "== compute-sanitizer over gpu_small (${san:-none})"
        for tool in memcheck racecheck; do
            timeout "${SANITIZER_TIMEOUT:-240}" "$san" --tool "$tool" --error-exitcode 3 \
                "$dir/its-gpu-engine-tests" --test-threads=1 gpu_small 2>&1 | tail -15
            rc=${PIPESTATUS[0]}
            echo "$tool rc=$rc"
            ((rc != 0)) && status=1
        done
    } 2>&1 | tee "$out/sanitizer.txt"
fi
if [[ "${ONLY:-}" == v3 ]]; then
    {
        echo "== its engine check: imported YOLOv3-tiny, FP32 vs ONNX Runtime, then FP16 vs FP32 detections"
        ec=$(mktemp -d)
        timeout 400 "$dir/its" engine check .device/v3/yolov3-tiny --batch 1,8 \
            --images .device/v3/frames --cache-dir "$ec" || status=1
        rm -rf "$ec"
    } 2>&1 | tee "$out/v3.txt"
    grep -h "rc=" "$out/sanitizer.txt" 2>/dev/null
    grep -h "^test result" "$out/tests.txt" 2>/dev/null
    grep -h "FP16 vs FP32" "$out/v3.txt"
    echo "status $status"
    exit $status
fi
if [[ -z "${SKIP_BUILD_TIMES:-}" ]]; then
    # The issue's profiles, FP16 channels-last with fused graphs: a cold build into an empty
    # cache directory, then the same command again (cache hit: serialized plans restored).
    ec=$(mktemp -d)
    {
        for run in cold cached; do
            echo "== its engine build, profiles 1,4,8,16,32, fp16, $run"
            s0=$(date +%s.%N)
            timeout 240 "$dir/its" engine build "$m" --batch 1,4,8,16,32 --math fp16 \
                --cache-dir "$ec" --json >"$out/build-$run.json" || status=1
            s1=$(date +%s.%N)
            python3 -c "import sys; print(f'process wall {float(sys.argv[2]) - float(sys.argv[1]):.2f} s')" "$s0" "$s1" \
                | tee "$out/build-$run-wall.txt"
            python3 - "$out/build-$run.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for r in d["profiles"]:
    ph = ", ".join(f'{p["phase"]} {p["ms"]:.0f}' for p in r.get("phases_ms", []))
    print(f'batch {r["batch"]:>3}: build {r["build_ms"]:7.0f} ms, fused {r.get("fused_convs")}/{r.get("fused_tried")} restored {r.get("fused_restored")}, cache {r["cache"]}; {ph}')
print(f'total {d.get("total_ms", 0):.0f} ms')
PY
        done
        du -sh "$ec"
    } 2>&1 | tee "$out/build.txt"
    rm -rf "$ec"
fi
[[ -z "${SKIP_BENCH:-}" ]] && {
    echo "== its engine check FP32 vs ONNX Runtime"
    timeout 240 "$dir/its" engine check "$m" --batch 1,32 || status=1
    echo "== its engine check FP16 (fused) vs ONNX Runtime, tolerance 5e-2"
    timeout 120 "$dir/its" engine check "$m" --batch 2 --math fp16 --tolerance 5e-2 || status=1
    # Each variant in its own cache directory, so that none takes another's choices.
    ecb=$(mktemp -d)
    for variant in "" "--no-direct-depthwise" "--no-fused"; do
        echo "== its engine bench fp16 ${variant:-default}"
        timeout 240 "$dir/its" engine bench "$m" --batch 1,8,32 --math fp16 --iters "$iters" \
            $variant --cache-dir "$ecb/v${variant}" --json \
            >"$out/bench${variant:+-${variant#--}}.json" || status=1
    done
    echo "== its engine bench fp16 --profile, batch 32, eager"
    timeout 240 "$dir/its" engine bench "$m" --batch 32 --math fp16 --no-graph --profile \
        --iters 10 --cache-dir "$ecb/v" || status=1
    rm -rf "$ecb"
} 2>&1 | tee "$out/engine.txt"
if [[ -z "${SKIP_LANE:-}" ]]; then
    {
        echo "== GPU lane tests"
        timeout 200 .device/lane/its-gpu-lane-tests --test-threads=1 gpu_ || status=1
        echo "== lane-bench"
        timeout 120 .device/lane/lane-bench "$m" --streams 1,2,4 --batch 32 --secs 3 || status=1
    } 2>&1 | tee "$out/lane.txt"
fi
echo "== summary (ms per batch, CUDA events, median of $iters)"
python3 - "$out" <<'EOF'
import json, sys, os
out = sys.argv[1]
for name in ("bench.json", "bench-no-direct-depthwise.json", "bench-no-fused.json"):
    p = os.path.join(out, name)
    try:
        d = json.load(open(p))
    except Exception as e:
        print(name, "missing:", e)
        continue
    for r in d["profiles"]:
        print(f'{name:<20} batch {r["batch"]:>3}  {r["ms"]:8.3f} ms  {r["img_per_s"]:8.0f} img/s  fused {r.get("fused_convs")}/{r.get("fused_tried")}')
EOF
cat "$out"/build-*-wall.txt 2>/dev/null
grep -h '^total' "$out/build.txt" 2>/dev/null
echo "status $status"
exit $status
