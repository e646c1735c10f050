#!/usr/bin/env bash
# Sets up a fresh machine and runs every check: formatting, clippy, all tests (real
# nats-server, real ONNX model, the Python subscriber, the kernel compile test).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --with-nvrtc
source scripts/env.sh
echo "[test] cargo fmt --check"
cargo fmt --all -- --check
echo "[test] cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "[test] cargo test"
cargo test --workspace
