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
{
    echo "== its engine check FP32 vs ONNX Runtime"
    timeout 240 "$dir/its" engine check "$m" --batch 1,32 || status=1
    echo "== its engine check FP16 (fused) vs ONNX Runtime, tolerance 5e-2"
    timeout 120 "$dir/its" engine check "$m" --batch 2 --math fp16 --tolerance 5e-2 || status=1
    # Each variant in its own cache directory, so that none takes another's choices.
    ecb=$(mktemp -d)
    for variant in "" "--no-direct-stem" "--no-fused"; do
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
        timeout 200 "$dir/its-gpu-lane-tests" --test-threads=1 gpu_ || status=1
        echo "== lane-bench"
        timeout 120 "$dir/lane-bench" "$m" --streams 1,2,4 --batch 32 --secs 3 || status=1
    } 2>&1 | tee "$out/lane.txt"
fi
echo "== summary (ms per batch, CUDA events, median of $iters)"
python3 - "$out" <<'EOF'
import json, sys, os
out = sys.argv[1]
for name in ("bench.json", "bench-no-direct-stem.json", "bench-no-fused.json"):
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
