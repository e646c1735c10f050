#!/usr/bin/env bash
# Sets up a fresh machine and runs every check: formatting, clippy, all tests (real
# nats-server, real ONNX model, the Python subscriber, the kernel compile test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-nvrtc
source scripts/env.sh
bash tests/deploy/check.sh
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] fuzz targets (short run)"
./scripts/fuzz.sh
echo "[test] cargo test"
export ITS_LOADTEST_CI_OUT="$PWD/target/loadtest-ci" # the CI load test (loadtest/tests) keeps its reports here
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
echo "[test] admin API against its OpenAPI document (openapi-spec-validator, schemathesis)"
crates/its-admin/tests/api-fuzz.sh
# One closing line over every test binary (cargo prints one result line per binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
