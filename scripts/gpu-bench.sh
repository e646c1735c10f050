#!/usr/bin/env bash
# Runs the carried GPU binaries on the device machine (builds nothing: no cargo there).
# Prepare here:  bash scripts/gpu-bench.sh --prepare
#                (release build of gpu-bench and of the its-gpu test binaries, stripped,
#                copied into the git-ignored .device/)
# Run there:     bash scripts/gpu-bench.sh            (carry: [".device"])
#                SKIP_SANITIZER=1 / SKIP_BENCH=1 / ITERS=N to shorten a run.
# Logs go to $OUT (or ./.device/out when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."

TESTS=(letterbox postprocess quality nvjpeg)

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    target="${CARGO_TARGET_DIR:-target}"
    cargo build --release -p its-gpu --bins
    mkdir -p .device
    cp "$target/release/gpu-bench" .device/gpu-bench
    json=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null)
    for t in "${TESTS[@]}"; do
        bin=$(grep -o "\"executable\":\"[^\"]*/deps/${t}-[^\"]*\"" <<<"$json" | head -1 | cut -d'"' -f4)
        cp "$bin" ".device/its-gpu-${t}-tests"
    done
    strip .device/gpu-bench .device/its-gpu-*-tests
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

echo "== GPU tests" | tee "$out/tests.txt"
for t in "${TESTS[@]}"; do
    echo "-- $t" | tee -a "$out/tests.txt"
    "./.device/its-gpu-${t}-tests" --test-threads=1 2>&1 | tee -a "$out/tests.txt" || status=1
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
exit $status
