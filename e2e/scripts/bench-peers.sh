#!/usr/bin/env bash
# `make bench-peers`: our IPAM plugin and Whereabouts side by side, through the same driver and
# workload (e2e/tests/bench_peers.rs on e2e/tests/bench_support), each on a fresh control plane,
# one after the other; prints one table as `BENCH peers` lines (the full output goes to
# bench-peers.log). See docs/benchmarks.md.
#
#   e2e/scripts/bench-peers.sh            both plugins (ours first)
#   e2e/scripts/bench-peers.sh whereabouts   only the named ones
#
# Builds what it needs: our release plugin and test binary (cargo), Whereabouts from the Go
# module proxy (e2e/peers/build.sh, cached). The BENCH_IPAM_* knobs of bench_ipam size the run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
cd "$repo"
cargo=${CARGO:-cargo}
target=${CARGO_TARGET_DIR:-$repo/target}
plugins=("$@")
[ ${#plugins[@]} -gt 0 ] || plugins=(ours whereabouts)

whereabouts_dir=$(e2e/peers/build.sh | tail -n 1)
$cargo build --release -p spiderpool-cni --bin spiderpool >&2
$cargo test --release -p spiderpool-e2e --test bench_peers --no-run >&2

results="$target/bench-peers"
mkdir -p "$results"
rows="$results/table.md"
rm -f "$rows"
revision=$(git describe --always --dirty 2>/dev/null || echo unknown)
log="$repo/bench-peers.log"
: >"$log"
status=0
for plugin in "${plugins[@]}"; do
  echo "BENCH peers: $plugin on a fresh control plane (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  set +e
  BENCH_PEERS_PLUGIN="$plugin" BENCH_PEERS_ROWS="$rows" BENCH_PEERS_REVISION="$revision" \
    WHEREABOUTS_DIR="$whereabouts_dir" SPIDERPOOL_BIN_DIR="$target/release" \
    e2e/scripts/with-testenv.sh --with-controller-manager -- \
    $cargo test --release -p spiderpool-e2e --test bench_peers -- --ignored --nocapture 2>&1 \
    | tee -a "$log" | grep -E '^BENCH|^test result|panicked'
  run_status=${PIPESTATUS[0]}
  set -e
  [ "$run_status" -eq 0 ] || { echo "BENCH peers: the $plugin run failed (see $log)"; status=1; }
done
echo "BENCH peers: the table (ADD phase; Whereabouts' controller, ip-reconciler, is not run: only the CNI calls are measured)"
[ -f "$rows" ] && sed 's/^/BENCH peers /' "$rows"
exit $status
