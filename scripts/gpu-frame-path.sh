#!/usr/bin/env bash
# The GPU frame path on the device machine: GPU worker-stream tests, the 1-vs-N-stream bench,
# and the load-test ramp (cameras at 30 fps meeting p99 <= 100 ms) or soak with the real GPU
# worker. Builds nothing there (no cargo): prepare here, carry .device.
#
# Prepare here:  bash scripts/gpu-frame-path.sh --prepare
#                (release its-loadtest, lane-bench and the lane/engine test binaries, stripped;
#                the YOLO11n graph from ../shared/models with a model.toml; nats-server)
# Run there:     bash scripts/gpu-frame-path.sh                  (carry: [".device"])
#                MODE=soak SOAK_CAMERAS=N SOAK_SECS=540 bash scripts/gpu-frame-path.sh
#                SKIP_TESTS=1 / SKIP_BENCH=1 / SKIP_RAMP=1 shorten a run.
# Logs and reports go to $OUT (or ./.device/out).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -p its-loadtest --bin its-loadtest -p its-gpu --bin lane-bench
    mkdir -p .device
    rm -rf .device/yolo11n
    cp "$target/release/its-loadtest" "$target/release/lane-bench" .device/
    json=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null)
    for t in lane engine engine_memory engine_cache; do
        bin=$(grep -o "\"executable\":\"[^\"]*/deps/${t}-[^\"]*\"" <<<"$json" | head -1 | cut -d'"' -f4 || true)
        [[ -n "$bin" ]] && cp "$bin" ".device/its-gpu-${t}-tests"
    done
    mkdir -p .device/yolo11n
    cp ../shared/models/yolo11n-random.onnx .device/yolo11n/model.onnx
    # The demo model's manifest (80 COCO classes, 640x640, yolov8 head) under another name.
    sed -e 's/^name = .*/name = "yolo11n-random"/' -e '/^#/d' \
        models/generated/tiny-yolo/model.toml > .device/yolo11n/model.toml
    cp "$(command -v nats-server || echo .venv/bin/nats-server)" .device/nats-server
    strip .device/its-loadtest .device/lane-bench .device/its-gpu-*-tests
    du -sh .device
    ls -la .device
    exit 0
fi

out="${OUT:-.device/out}"
mkdir -p "$out"
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ITS_REQUIRE_GPU=1
export PATH="$PWD/.device:$PATH"
capi=$(python3 -c 'import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), "capi"))' 2>/dev/null)
ORT_DYLIB_PATH=$(ls "$capi"/libonnxruntime.so* 2>/dev/null | head -1)
export ORT_DYLIB_PATH
status=0
{
    date -u
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
} 2>&1 | tee "$out/device.txt"

if [[ -z "${SKIP_TESTS:-}" && "${MODE:-ramp}" == ramp ]]; then
    echo "== GPU tests" | tee "$out/tests.txt"
    for t in lane engine engine_memory engine_cache; do
        bin=".device/its-gpu-${t}-tests"
        [[ -x $bin ]] || { echo "not carried: $t" | tee -a "$out/tests.txt"; continue; }
        filter=""
        [[ $t == engine ]] && filter="gpu_"
        echo "-- $t" | tee -a "$out/tests.txt"
        timeout 240 "$bin" --test-threads=1 $filter 2>&1 | tail -25 | tee -a "$out/tests.txt" || status=1
    done
fi

if [[ -z "${SKIP_BENCH:-}" && "${MODE:-ramp}" == ramp ]]; then
    echo "== lane bench" | tee "$out/lane-bench.txt"
    timeout 240 .device/lane-bench .device/yolo11n/model.onnx --streams 1,2,4,8 --batch 32 \
        --secs 4 --json 2>&1 | tee -a "$out/lane-bench.txt" || status=1
fi

# The node under test: the GPU worker (one per GPU, 8 streams), YOLO11n FP16.
node_args=(--embedded-node --model-dir .device/yolo11n --set engine.backend=gpu
    --set engine.gpu_streams="${STREAMS:-8}" --set scheduler.batch_sizes="${BATCHES:-1,4,8,16,32}"
    --fps 30 --res-mix 720p=100)
if [[ "${MODE:-ramp}" == ramp && -z "${SKIP_RAMP:-}" ]]; then
    echo "== load-test ramp" | tee "$out/loadtest.txt"
    timeout 330 .device/its-loadtest "${node_args[@]}" --mode ramp \
        --ramp-start "${RAMP_START:-60}" --ramp-step "${RAMP_STEP:-60}" \
        --ramp-max "${RAMP_MAX:-600}" --step-secs "${STEP_SECS:-12}" --warmup-secs 3 \
        --out "$out/ramp" --json "$out/ramp.json" 2>&1 | grep -v " INFO \| DEBUG " \
        | tail -60 | tee -a "$out/loadtest.txt" || status=1
fi
# SOAK_AFTER_RAMP=1: soak at 80 % of the camera count the ramp found.
if [[ -n "${SOAK_AFTER_RAMP:-}" && -f "$out/ramp.json" ]]; then
    best=$(python3 -c "import json; print(json.load(open('$out/ramp.json'))['ramp']['max_cameras_meeting_bound'] or 0)")
    if [[ "$best" -gt 0 ]]; then
        MODE=soak
        SOAK_CAMERAS=$(( best * 8 / 10 ))
        echo "ramp found $best cameras; soaking at $SOAK_CAMERAS" | tee -a "$out/loadtest.txt"
    fi
fi
soak_args=(--mode soak --cameras "${SOAK_CAMERAS:-0}" --duration "${SOAK_SECS:-540}"
    --soak-warmup-secs 30 --rss-interval-secs 10)
if [[ "${MODE:-ramp}" == soak && -n "${SOAK_BACKGROUND:-}" ]]; then
    # A soak longer than one device call: started in its own session (it outlives this
    # call while the machine stays warm) from copies of the binaries and the model, and
    # collected by a second call with MODE=collect.
    bg=/tmp/its-soak
    rm -rf "$bg" && mkdir -p "$bg/bin"
    cp .device/its-loadtest .device/nats-server "$bg/bin/"
    cp -r .device/yolo11n "$bg/yolo11n"
    bg_args=("${node_args[@]}")
    bg_args[2]="$bg/yolo11n"
    (cd "$bg" && PATH="$bg/bin:$PATH" setsid nohup bash -c \
        "timeout $(( ${SOAK_SECS:-540} + 400 )) $bg/bin/its-loadtest ${bg_args[*]} ${soak_args[*]} --out $bg/soak --json $bg/soak.json >$bg/log 2>&1; echo \$? >$bg/rc" \
        >/dev/null 2>&1 &)
    echo "soak of $SOAK_CAMERAS cameras for ${SOAK_SECS:-540} s started in the background ($bg)" \
        | tee -a "$out/loadtest.txt"
elif [[ "${MODE:-ramp}" == soak ]]; then
    echo "== load-test soak" | tee "$out/loadtest.txt"
    timeout $(( ${SOAK_SECS:-540} + 60 )) .device/its-loadtest "${node_args[@]}" "${soak_args[@]}" \
        --out "$out/soak" --json "$out/soak.json" \
        2>&1 | grep -v " INFO \| DEBUG " | tail -60 | tee -a "$out/loadtest.txt" || status=1
fi
if [[ "${MODE:-ramp}" == collect ]]; then
    bg=/tmp/its-soak
    echo "== load-test soak (collected)" | tee "$out/loadtest.txt"
    [[ -d $bg ]] || { echo "no background soak on this machine" | tee -a "$out/loadtest.txt"; exit 1; }
    until [[ -f $bg/rc ]]; do sleep 5; done
    echo "soak exit $(cat $bg/rc)" | tee -a "$out/loadtest.txt"
    grep -v " INFO \| DEBUG " "$bg/log" | tail -60 | tee -a "$out/loadtest.txt"
    cp -r "$bg/soak" "$out/soak" 2>/dev/null
    cp "$bg/soak.json" "$out/" 2>/dev/null
    [[ "$(cat $bg/rc)" == 0 ]] || status=1
fi

# Only a few files come back from the device: keep the reports, leave the plots there.
rm -f "$out"/*/*.png
echo
echo "== summary"
grep -h "test result\|FAILED\|^| [0-9]" "$out"/tests.txt "$out"/lane-bench.txt 2>/dev/null | tail -20
grep -h -i "result\|cameras\|p99\|unaccounted" "$out/loadtest.txt" 2>/dev/null | tail -12
exit $status
