#!/usr/bin/env bash
# The admin API against its own OpenAPI document: starts a real node (`its run`, embedded
# nats-server, CPU worker, admin role), validates /openapi.json with openapi-spec-validator, then
# runs schemathesis for a bounded number of examples. Fails on any 5xx, on a status code or
# content type the document does not declare, and on a body that contradicts its schema.
# POST /api/v1/models/swap is fuzzed too: a fuzzed model_dir never loads, so the node's worker
# keeps its model and the API answers 422.
#
# Usage: crates/its-admin/tests/api-fuzz.sh [max-examples]   (from anywhere; needs .venv from
# scripts/setup.sh). Bounded to about a minute on a 2-core machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/../../.." && pwd)"
cd "$root"
source scripts/env.sh
examples="${1:-10}"
target="${CARGO_TARGET_DIR:-$root/target}"

cargo build -q -p its-node --bin its
work=$(mktemp -d)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
token="fuzz-admin-$(python -c 'import secrets; print(secrets.token_hex(16))')"
printf 'admin %s fuzz\n' "$token" >"$work/tokens"
# No registry watcher: fuzzed camera URLs must never be opened (the network is off limits).
"$target/debug/its" \
    --set nats.embedded_port=0 \
    --set cameras.synthetic_count=1 --set cameras.fps=2 --set cameras.registry=false \
    --set cameras.width=320 --set cameras.height=240 --set cameras.loop_frames=2 \
    --set status.print=false --set status.interval_ms=200 \
    --set admin.enabled=true --set "admin.bind=127.0.0.1:$port" \
    --set "admin.tokens_file=$work/tokens" \
    run >"$work/node.log" 2>&1 &
node_pid=$!
base="http://127.0.0.1:$port"

ready=""
for _ in $(seq 1 120); do
    if curl -fsS "$base/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    if ! kill -0 "$node_pid" 2>/dev/null; then
        break
    fi
    sleep 0.5
done
if [ -z "$ready" ]; then
    echo "api-fuzz: the node did not become ready; its log:" >&2
    cat "$work/node.log" >&2
    exit 1
fi

curl -fsS "$base/openapi.json" -o "$work/openapi.json"
openapi-spec-validator "$work/openapi.json"

schemathesis run "$work/openapi.json" --url "$base" \
    -H "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --phases examples,coverage,fuzzing \
    --max-examples "$examples" --seed 1 --workers 2 \
    --request-timeout 10 --max-time 40 \
    --no-color --warnings off
if grep -q "$token" "$work/node.log"; then
    echo "api-fuzz: the node's log contains the admin token" >&2
    exit 1
fi
echo "api-fuzz: no server error, every response as documented"
