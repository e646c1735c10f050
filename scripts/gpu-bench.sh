#!/usr/bin/env bash
# Runs the carried GPU binaries on the device machine (builds nothing: no cargo there).
# Prepare here:  bash scripts/gpu-bench.sh --prepare
#                (release build of gpu-bench and of the its-gpu test binaries, stripped,
#                copied into the git-ignored .device/)
# Run there:     bash scripts/gpu-bench.sh            (carry: [".device"])
#                SKIP_SANITIZER=1 / SKIP_BENCH=1 / ITERS=N to shorten a run;
#                ONLY_ENGINE=1 runs just the native engine's tests, check and bench.
# The native engine steps (its engine check / bench) use .device/yolo11n-random.onnx, copied
# by --prepare from ../shared/models when present, and ONNX Runtime from the device's python.
# Logs go to $OUT (or ./.device/out when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(letterbox postprocess quality nvjpeg engine)

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -p its-gpu --bins
    mkdir -p .device
    cp "$target/release/gpu-bench" .device/gpu-bench
    cargo build --release -p its-node --bin its
    cp "$target/release/its" .device/its
    if [[ -f ../shared/models/yolo11n-random.onnx ]]; then
        cp ../shared/models/yolo11n-random.onnx .device/
    fi
    # The trained YOLOv3-tiny (imported) and real road frames for the FP16-vs-FP32 check:
    # 64 frames of vtest.avi plus the fetched photos (all from scripts/setup.sh's .cache).
    if [[ -d .cache/yolov3-tiny ]]; then
        rm -rf .device/yolov3-tiny .device/frames
        "$target/release/its" model import darknet .cache/yolov3-tiny/yolov3-tiny.cfg \
            .cache/yolov3-tiny/yolov3-tiny.weights .cache/yolov3-tiny/coco.names \
            -o .device/yolov3-tiny
        mkdir -p .device/frames
        ffmpeg -loglevel error -i .cache/videos/vtest.avi -vf "select=not(mod(n\,12))" \
            -vsync vfr -frames:v 64 -q:v 3 .device/frames/vtest-%03d.jpg
        cp .cache/photos/*.jpg .device/frames/
    fi
    json=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null)
    for t in "${TESTS[@]}"; do
        bin=$(grep -o "\"executable\":\"[^\"]*/deps/${t}-[^\"]*\"" <<<"$json" | head -1 | cut -d'"' -f4)
        cp "$bin" ".device/its-gpu-${t}-tests"
    done
    strip .device/gpu-bench .device/its .device/its-gpu-*-tests
    ls -la .device
    exit 0
fi

out="${OUT:-.device/out}"
mkdir -p "$out"
# cudarc loads libcuda/libnvrtc dynamically, nvJPEG is loaded by name: all from CUDA's lib64.
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ITS_REQUIRE_GPU=1
status=0
{
    date -u
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
    ls /usr/local/cuda/lib64/libnvjpeg.so* 2>&1
} 2>&1 | tee "$out/device.txt"

if [[ -n "${ONLY_ENGINE:-}" ]]; then
    TESTS=(engine)
    SKIP_BENCH=1
    SKIP_SANITIZER=1
fi
# ONNX Runtime (CPU) from the device's python, for `its engine check`.
capi=$(python3 -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null)
ORT_DYLIB_PATH=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -1)
export ORT_DYLIB_PATH
echo "== GPU tests" | tee "$out/tests.txt"
for t in "${TESTS[@]}"; do
    echo "-- $t" | tee -a "$out/tests.txt"
    # The engine's CPU-vs-ONNX-Runtime tests need the workspace's models: CI runs them.
    [[ -x "./.device/its-gpu-${t}-tests" ]] || { echo "not carried: $t" | tee -a "$out/tests.txt"; continue; }
    filter=""
    [[ $t == engine ]] && filter="gpu_"
    "./.device/its-gpu-${t}-tests" --test-threads=1 $filter 2>&1 | tee -a "$out/tests.txt" \
        || status=1
done

verdict="not run (no compute-sanitizer found)"
[[ -n "${SKIP_SANITIZER:-}" ]] && verdict="skipped in this run (SKIP_SANITIZER)"
san=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer /usr/local/cuda-*/bin/compute-sanitizer \
    /opt/nvidia/*/compute-sanitizer 2>/dev/null | head -1)
echo "compute-sanitizer: ${san:-none}" | tee -a "$out/device.txt"
if [[ -n "$san" && -x "$san" && -z "${SKIP_SANITIZER:-}" ]]; then
    echo "== compute-sanitizer" | tee "$out/sanitizer.txt"
    bad=0
    for tool in memcheck racecheck; do
        for t in postprocess quality letterbox; do
            echo "-- $tool $t" | tee -a "$out/sanitizer.txt"
            timeout "${SANITIZER_TIMEOUT:-120}" "$san" --tool "$tool" --error-exitcode 3 \
                "./.device/its-gpu-${t}-tests" --test-threads=1 gpu_ >>"$out/sanitizer.txt" 2>&1
            rc=$?
            tail -3 "$out/sanitizer.txt"
            [[ $rc -ne 0 ]] && { bad=1; echo "!! $tool $t rc=$rc" | tee -a "$out/sanitizer.txt"; }
        done
    done
    if [[ $bad -eq 0 ]]; then
        verdict="clean (memcheck + racecheck, postprocess/quality/letterbox GPU tests)"
    else
        verdict="ERRORS (see sanitizer.txt)"
        status=1
    fi
fi
echo "sanitizer: $verdict" | tee -a "$out/tests.txt"

if [[ -z "${SKIP_BENCH:-}" ]]; then
    echo "== gpu-bench" | tee "$out/bench.txt"
    ITS_SANITIZER_VERDICT="$verdict" ./.device/gpu-bench "${ITERS:-200}" --json 2>&1 \
        | tee -a "$out/bench.txt" || status=1
fi
# The native engine against ONNX Runtime (CPU, from the device's python) and its timings,
# for each model that was carried (.device is limited in size: carry what the run needs).
engine_steps() {
    local rc=0
    local m=.device/yolo11n-random.onnx
    if [[ -f $m ]]; then
        echo "== its engine check (FP32, vs ONNX Runtime $ORT_DYLIB_PATH)"
        ./.device/its engine check "$m" --batch 1,2,32 || rc=1
        echo "== its engine check (TF32 and FP16, informational tolerance 5e-2)"
        ./.device/its engine check "$m" --batch 2 --math tf32 --tolerance 5e-2 || true
        ./.device/its engine check "$m" --batch 2 --math fp16 --tolerance 5e-2 || true
        echo "== its engine build"
        ./.device/its engine build "$m" --batch 1,4,8,16,32 || rc=1
        for math in fp32 tf32 fp16; do
            echo "== its engine bench ($math, CUDA graph)"
            ./.device/its engine bench "$m" --batch 1,8,32 --math "$math" --iters "${ITERS:-100}" || rc=1
        done
        echo "== its engine bench (fp16, NCHW everywhere, for comparison)"
        ./.device/its engine bench "$m" --batch 1,32 --math fp16 --nchw --iters "${ITERS:-100}" || rc=1
        echo "== its engine bench (fp16, 4 execution contexts on 4 streams)"
        ./.device/its engine bench "$m" --batch 8,32 --math fp16 --streams 4 --iters 30 || rc=1
        echo "== its engine bench (fp16, eager, per-op profile)"
        ./.device/its engine bench "$m" --batch 32 --math fp16 --no-graph --profile --iters 20 || rc=1
    fi
    if [[ -d .device/yolov3-tiny ]]; then
        echo "== its engine check: imported YOLOv3-tiny vs ONNX Runtime, FP16 vs FP32 detections"
        ./.device/its engine check .device/yolov3-tiny --batch 1,8 --images .device/frames || rc=1
        echo "== its engine bench: imported YOLOv3-tiny (fp16)"
        ./.device/its engine bench .device/yolov3-tiny --batch 1,8,32 --math fp16 --iters "${ITERS:-100}" || rc=1
    fi
    return $rc
}
if [[ -x .device/its ]]; then
    engine_steps 2>&1 | tee "$out/engine.txt"
    [[ ${PIPESTATUS[0]} -ne 0 ]] && status=1
fi
if [[ -x .device/its-gpu-engine-tests && -n "$san" && -x "$san" && -z "${SKIP_ENGINE_SANITIZER:-}" ]]; then
    echo "== compute-sanitizer memcheck + racecheck: engine GPU tests" | tee "$out/engine-sanitizer.txt"
    for tool in memcheck racecheck; do
        timeout "${SANITIZER_TIMEOUT:-150}" "$san" --tool "$tool" --error-exitcode 3 \
            ./.device/its-gpu-engine-tests --test-threads=1 gpu_fp16 >>"$out/engine-sanitizer.txt" 2>&1
        rc=$?
        echo "$tool rc=$rc" | tee -a "$out/engine-sanitizer.txt"
        tail -3 "$out/engine-sanitizer.txt"
        [[ $rc -ne 0 ]] && status=1
    done
fi
exit $status
