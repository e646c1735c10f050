#!/usr/bin/env bash
# Sets up a fresh machine and runs the main job on the embedded default: a local nats-server,
# 4 synthetic cameras, the CPU worker, a status line per second. Ctrl-C stops it in order.
# Extra arguments go to `its run` (e.g. --duration 10, --cameras 8).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo build --release --bin its
exec target/release/its run "$@"
