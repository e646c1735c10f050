#!/usr/bin/env bash
# Runs the carried GPU binaries on the device machine (builds nothing: no cargo there).
# Prepare here:  cargo build --release -p its-gpu --bins
#                cargo test -p its-gpu --release --no-run   (then copy both into .device/,
#                see scripts/gpu-bench.sh --prepare)
# Run there:     bash scripts/gpu-bench.sh            (carry: [".device"])
# Logs go to $OUT (or ./.device/out when OUT is unset).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    cargo build --release -p its-gpu --bins
    test_bin=$(cargo test -p its-gpu --release --no-run --message-format=json 2>/dev/null \
        | grep -o '"executable":"[^"]*/letterbox-[^"]*"' | head -1 | cut -d'"' -f4)
    mkdir -p .device
    cp target/release/gpu-bench .device/gpu-bench
    cp "$test_bin" .device/its-gpu-letterbox-tests
    ls -la .device
    exit 0
fi

out="${OUT:-.device/out}"
mkdir -p "$out"
# cudarc loads libcuda/libnvrtc dynamically; NVRTC lives with the toolkit.
export LD_LIBRARY_PATH="/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
export ITS_REQUIRE_GPU=1
status=0
{
    date -u
    nvidia-smi -L
    nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv
} 2>&1 | tee "$out/device.txt"

echo "== GPU tests" | tee "$out/tests.txt"
./.device/its-gpu-letterbox-tests --test-threads=1 --nocapture 2>&1 | tee -a "$out/tests.txt" || status=1

echo "== gpu-bench" | tee "$out/bench.txt"
./.device/gpu-bench "${ITERS:-200}" 2>&1 | tee -a "$out/bench.txt" || status=1
exit $status
