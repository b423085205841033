#!/usr/bin/env bash
# Coverage-guided fuzzing of every target on the stable toolchain: libFuzzer (libfuzzer-sys)
# with LLVM's sanitizer-coverage instrumentation (-Cpasses=sancov-module and -Cllvm-args, both
# stable flags; no -Z flag, no sanitizer runtime). Targets run two at a time, each for a number
# of inputs (and at most a wall-clock budget); any panic, hang (-timeout per input) or
# out-of-memory fails the run, and the input that caused it is kept under $OUT/crashes/<target>/.
#
# Usage: e2e/fuzz/run.sh [--quick]     (--quick: a short pass, about 30 s)
# Environment: CARGO_TARGET_DIR, FUZZ_JOBS (default 2), FUZZ_SCALE (multiplies the input counts).
set -euo pipefail
cd "$(dirname "$0")/../.."

quick=0
[ "${1:-}" = "--quick" ] && quick=1
target_dir="${CARGO_TARGET_DIR:-$PWD/target}"
out="$target_dir/fuzz-run"
triple="$(rustc -vV | sed -n 's/^host: //p')"
jobs="${FUZZ_JOBS:-2}"
scale="${FUZZ_SCALE:-1}"

# Instrumented release build with debug assertions and overflow checks (cargo-fuzz's flags with
# --sanitizer none). --target keeps the flags off build scripts and proc macros.
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
build_start=$(date +%s)
cargo build --release --target "$triple" -p spiderpool-fuzz --bin spiderpool-fuzz >&2
echo "instrumented build took $(( $(date +%s) - build_start ))s" >&2
binary="$target_dir/$triple/release/spiderpool-fuzz"
unset RUSTFLAGS

# Seeds: written by a plain build of the same binary (the instrumented one has libFuzzer's main).
cargo build -q -p spiderpool-fuzz --bin spiderpool-fuzz >&2
rm -rf "$out/seeds" "$out/logs"
mkdir -p "$out/seeds" "$out/logs" "$out/crashes" "$out/corpus"
"$target_dir/debug/spiderpool-fuzz" seeds "$out/seeds" >&2

# target  inputs  seconds(at most)   -- inputs per target sum to 10.5 million.
plan="annotations 2000000 300
ranges 2500000 150
ledger 1500000 100
cni_env 1500000 300
cni_config 1000000 120
selection 1000000 150
webhook 500000 200
multusconfig 500000 120"
if [ "$quick" = 1 ]; then
  plan="$(awk '{ print $1, int($2 / 200), 4 }' <<<"$plan")"
fi

run_one() {
  local target=$1 runs=$2 seconds=$3
  runs=$(( runs * scale ))
  mkdir -p "$out/corpus/$target" "$out/crashes/$target"
  local started=$(date +%s%N)
  set +e
  SPIDERPOOL_FUZZ_TARGET=$target "$binary" \
    -runs="$runs" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$out/crashes/$target/" \
    "$out/corpus/$target" "$out/seeds/$target" >"$out/logs/$target.log" 2>&1
  local status=$?
  set -e
  local elapsed_ms=$(( ($(date +%s%N) - started) / 1000000 ))
  local done_runs
  done_runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/logs/$target.log" | tail -n 1)
  printf '%s %s %s %s\n' "$target" "${done_runs:-0}" "$elapsed_ms" "$status" >"$out/logs/$target.result"
}
export -f run_one
export out binary scale

fuzz_start=$(date +%s)
awk '{ print $1, $2, $3 }' <<<"$plan" | xargs -P "$jobs" -L 1 bash -c 'run_one "$@"' _

total=0; failed=0
printf '%-14s %12s %9s %10s  %s\n' target inputs seconds inputs/s result
while read -r target runs_planned _; do
  read -r _ runs elapsed_ms status <"$out/logs/$target.result"
  seconds=$(awk -v ms="$elapsed_ms" 'BEGIN { printf "%.1f", ms / 1000 }')
  rate=$(awk -v r="$runs" -v ms="$elapsed_ms" 'BEGIN { printf "%d", (ms > 0 ? r * 1000 / ms : 0) }')
  crashes=$(find "$out/crashes/$target" -type f | wc -l)
  result=ok
  if [ "$status" != 0 ] || [ "$crashes" != 0 ]; then
    result="FAILED (exit $status, $crashes crash file(s) in $out/crashes/$target, log $out/logs/$target.log)"
    failed=1
  fi
  printf '%-14s %12s %9s %10s  %s\n' "$target" "$runs" "$seconds" "$rate" "$result"
  total=$(( total + runs ))
done <<<"$plan"
echo "total: $total inputs in $(( $(date +%s) - fuzz_start ))s on $jobs job(s)"
if [ "$failed" = 1 ]; then
  echo "fuzzing found crashes: reproduce with $target_dir/debug/spiderpool-fuzz replay TARGET FILE" >&2
  exit 1
fi
