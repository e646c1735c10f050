#!/usr/bin/env bash
# A long fuzz run of one target, bounded by the fuzzer's own CPU time rather than wall time, so
# that "one hour" means an hour of fuzzing even on a machine shared with builds.
#   scripts/fuzz-long.sh TARGET [CPU_SECONDS] [LOG_DIR]   (default 3600 s, log under target/fuzz-long)
# Built with debug assertions and overflow checks (`cargo fuzz build -O -a`): an arithmetic
# overflow is a finding. Starts from the committed corpus (fuzz/corpus/TARGET) in a scratch copy;
# a crash leaves its input in fuzz/artifacts/TARGET/ and fails the run. Progress every 5 minutes
# of fuzzing; the last line is the summary (runs, coverage, corpus, CPU and wall time).
set -euo pipefail
target="${1:?usage: scripts/fuzz-long.sh TARGET [CPU_SECONDS] [LOG_DIR]}"
budget="${2:-3600}"
logs=$(realpath -m "${3:-target/fuzz-long}")
cd "$(dirname "$0")/.."
mkdir -p "$logs" "fuzz/artifacts/$target"
export RUSTC_BOOTSTRAP=1
(cd fuzz && cargo fuzz build -O -a "$target")
bin="fuzz/target/x86_64-unknown-linux-gnu/release/$target"
[[ -x "$bin" ]] || { echo "[fuzz-long] no binary at $bin" >&2; exit 1; }
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cp -r "fuzz/corpus/$target/." "$scratch/" 2>/dev/null || true
log="$logs/$target.log"
start=$(date +%s)
# The wall limit is only a ceiling (four times the budget); the CPU budget below ends the run.
"$bin" "$scratch" -artifact_prefix="fuzz/artifacts/$target/" -rss_limit_mb=2048 \
    -max_total_time=$((budget * 4)) -print_final_stats=1 >"$log" 2>&1 &
pid=$!
tick=$(getconf CLK_TCK)
cpu=0
next_report=300
while kill -0 "$pid" 2>/dev/null; do
    # utime + stime of the fuzzer process, fields 14 and 15 of /proc/PID/stat
    if read -r -a st <"/proc/$pid/stat" 2>/dev/null; then
        cpu=$(((st[13] + st[14]) / tick))
    fi
    if ((cpu >= budget)); then
        kill -INT "$pid"
        break
    fi
    if ((cpu >= next_report)); then
        echo "[fuzz-long] $target: ${cpu}s of ${budget}s CPU, $(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1)"
        next_report=$((next_report + 300))
    fi
    sleep 5
done
set +e
wait "$pid"
rc=$?
set -e
wall=$(($(date +%s) - start))
# 72 is libFuzzer's exit code for a run interrupted (here: by the CPU budget).
if ((rc != 0 && rc != 72)); then
    echo "[fuzz-long] $target FAILED (exit $rc); log: $log"
    tail -40 "$log"
    exit 1
fi
runs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
echo "[fuzz-long] $target ok: ${runs:-?} runs, ${cpu}s CPU in ${wall}s wall, $(grep -o 'cov: [0-9]* ft: [0-9]* corp: [0-9]*' "$log" | tail -1); log: $log"
