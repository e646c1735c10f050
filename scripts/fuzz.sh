#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed time each, starting from the committed
# corpus in fuzz/corpus/<target>. New inputs go to a scratch copy, so the repository is not
# touched; a crash fails the run and leaves its input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 15; CI uses the default)
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them, so no second toolchain is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked -q
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
echo "[fuzz] building targets (address sanitizer, release)"
cargo fuzz build -O
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for t in $(cargo fuzz list); do
    mkdir -p "$scratch/$t"
    cp -r "corpus/$t/." "$scratch/$t/" 2>/dev/null || true
    printf '[fuzz] %-18s %ss ... ' "$t" "$secs"
    if out=$(cargo fuzz run -O "$t" "$scratch/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 2>&1); then
        echo "ok ($(grep -o 'Done [0-9]* runs' <<<"$out" | tail -1))"
    else
        echo "FAILED"
        tail -40 <<<"$out"
        echo "[fuzz] reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run -O $t fuzz/artifacts/$t/<file>" >&2
        exit 1
    fi
done
