#!/usr/bin/env bash
# One device call for the native engine and the frame path together. The binaries of both
# (scripts/gpu-engine.sh and scripts/gpu-frame-path.sh) are larger than the device tool's
# 64 MiB carry, so --prepare packs them xz-compressed into .device-bundle/, and the run
# unpacks them there, runs both scripts, and packs every log and report into one archive
# (the tool returns at most 8 files).
#
# Prepare here:  bash scripts/gpu-session.sh --prepare
# Run there:     bash scripts/gpu-session.sh                 (carry: [".device-bundle"])
#                SKIP_ENGINE=1 skips the engine script, SKIP_PATH=1 the frame-path script; the frame-path script's variables
#                (STREAMS, BATCHES, RAMP_*, STEP_SECS, SOAK_AFTER_RAMP, SOAK_BACKGROUND, MODE)
#                pass through.
set -uo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--prepare" ]]; then
    set -e
    rm -rf .device
    bash scripts/gpu-engine.sh --prepare
    bash scripts/gpu-frame-path.sh --prepare
    # One copy of the model: the engine script's folder links to the frame path's.
    rm -rf .device/engine/yolo11n
    mkdir -p .device-bundle
    tar -cf - .device | xz -T2 -6 >.device-bundle/bundle.tar.xz
    du -sh .device .device-bundle/bundle.tar.xz
    exit 0
fi
final="${OUT:-.device/out}"
work=/tmp/its-session-out
rm -rf "$work" && mkdir -p "$work"
if [[ -f .device-bundle/bundle.tar.xz ]]; then
    xz -dc .device-bundle/bundle.tar.xz | tar -xf -
    ln -sfn ../yolo11n .device/engine/yolo11n
fi
status=0
if [[ -z "${SKIP_ENGINE:-}" ]]; then
    OUT="$work/engine" bash scripts/gpu-engine.sh || status=1
fi
# A failing engine stops the run before the load test (unless FORCE=1): the device time is
# better spent on the fix.
if [[ -n "${SKIP_PATH:-}" ]]; then
    echo "frame path skipped (SKIP_PATH=1)"
elif [[ $status -eq 0 || -n "${FORCE:-}" ]]; then
    OUT="$work/path" bash scripts/gpu-frame-path.sh || status=1
else
    echo "engine failed: frame path and load test not run"
fi
tar -C "$work" -czf "$final/logs.tar.gz" .
cp "$work"/path/loadtest.txt "$final/" 2>/dev/null
cp "$work"/engine/build.txt "$final/" 2>/dev/null
echo "session status $status"
exit $status
