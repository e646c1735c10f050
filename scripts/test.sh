#!/usr/bin/env bash
# Sets up a fresh machine and runs every check: formatting, clippy, all tests (real
# nats-server, real ONNX model, the Python subscriber, the kernel compile test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-nvrtc
source scripts/env.sh
# A one-off build gains nothing from incremental state, which is gigabytes on disk.
export CARGO_INCREMENTAL=0
echo "[test] disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free"
bash tests/deploy/check.sh
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] fuzz targets (short run)"
./scripts/fuzz.sh
# The sanitizer build (gigabytes) is not needed again; where the disk is short, free it for the tests.
if (($(df --output=avail -k . | tail -1) < 30 * 1024 * 1024)); then rm -rf fuzz/target; fi
echo "[test] cargo test"
export ITS_LOADTEST_CI_OUT="$PWD/target/loadtest-ci" # the CI load test (loadtest/tests) keeps its reports here
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "[test] admin API against its OpenAPI document (openapi-spec-validator, schemathesis)"
crates/its-admin/tests/api-fuzz.sh
echo "[test] disk: $(df -h --output=avail . | tail -1 | tr -d ' ') free, target/ $(du -sh target | cut -f1)"
# One closing line over every test binary (cargo prints one result line per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
