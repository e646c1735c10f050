#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for a fixed time each, starting from the committed
# corpus in fuzz/corpus/<target>. New inputs go to a scratch copy, so the repository is not
# touched; a crash fails the run and leaves its input in fuzz/artifacts/<target>/.
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 10 s, every target; CI uses the defaults)
# FUZZ_LOG_DIR=DIR keeps each target's libFuzzer log as DIR/<target>.log.
# The default build is unoptimised and without a sanitizer (`cargo fuzz --dev -s none`;
# assertions and overflow checks off in fuzz/Cargo.toml's dev profile): it builds in about a
# third of the optimised ASan build's time, which is what a short CI run needs. What the
# targets reach is safe Rust (a panic is the finding) apart from zune-jpeg's SIMD paths, which
# the hour-long ASan runs cover. FUZZ_ASSERTIONS=1 builds optimised, with the
# address sanitizer, debug assertions and overflow checks (`cargo fuzz -O -a`): for long runs,
# where an arithmetic overflow is a finding; CI leaves them off, so that a random overflow find
# cannot fail an unrelated change.
# cargo-fuzz needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain
# accept them, so no second toolchain is needed.
set -euo pipefail
[[ -n "${FUZZ_LOG_DIR:-}" ]] && FUZZ_LOG_DIR=$(realpath -m "$FUZZ_LOG_DIR")
cd "$(dirname "$0")/.."
secs="${1:-10}"
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "[fuzz] installing cargo-fuzz 0.13.2"
    cargo install cargo-fuzz --version 0.13.2 --locked -q
fi
export RUSTC_BOOTSTRAP=1
cd fuzz
flags=(--dev -s none)
[[ "${FUZZ_ASSERTIONS:-0}" == 1 ]] && flags=(-O -a)
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
echo "[fuzz] building targets (${flags[*]})"
cargo fuzz build "${flags[@]}"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
# libFuzzer's output per target; FUZZ_LOG_DIR keeps it (follow a long run with tail -f).
logs="${FUZZ_LOG_DIR:-$scratch}"
mkdir -p "$logs"
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t"
    cp -r "corpus/$t/." "$scratch/$t/" 2>/dev/null || true
    log="$logs/$t.log"
    printf '[fuzz] %-18s %ss ... ' "$t" "$secs"
    if cargo fuzz run "${flags[@]}" "$t" "$scratch/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
        echo "ok ($(grep -o 'Done [0-9]* runs in [0-9]* second' "$log" | tail -1)s; $(grep -o 'cov: [0-9]* ft: [0-9]*' "$log" | tail -1); corpus $(find "$scratch/$t" -type f | wc -l) inputs)"
    else
        echo "FAILED"
        tail -40 "$log"
        echo "[fuzz] reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run ${flags[*]} $t fuzz/artifacts/$t/<file>" >&2
        exit 1
    fi
done
