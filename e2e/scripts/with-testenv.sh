#!/usr/bin/env bash
# Starts one local control plane (embedded etcd + kube-apiserver [+ kube-controller-manager]
# [+ a real node]), installs the CRDs, runs the given command with the control plane's
# kubeconfig exported, and stops every process it started when the command ends (also on
# Ctrl-C or error).
#
#   e2e/scripts/with-testenv.sh [--with-controller-manager] [--with-node] -- <command> [args...]
#
# Exports to the command: KUBECONFIG, SPIDERPOOL_E2E_KUBECONFIG, SPIDERPOOL_E2E_DIR, TESTENV
# (binary), TESTENV_PID (its `up` process: etcd + kube-apiserver), APISERVER_PORT; with
# --with-node (root only; see e2e/testenv/README.md) also NODE_NAME, NODE_IP, CNI_BIN_DIR,
# CNI_CONF_DIR, CONTAINERD_SOCKET, UNDERLAY_NICS.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
up_flags=()
with_node=""
while [ $# -gt 0 ]; do
  case "$1" in
    --with-controller-manager) up_flags+=(--with-controller-manager); shift ;;
    --with-node) up_flags+=(--with-node); with_node=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--with-controller-manager] [--with-node] -- command..." >&2; exit 2; }

built=$("$repo/e2e/testenv/build.sh" | tail -n 1)
dir=$(mktemp -d "${TMPDIR:-/tmp}/spiderpool-testenv.XXXXXX")
# The build cache keeps only the last few builds: another checkout building a different testenv
# may delete ours while this run still needs it (kubectl, node-down). A private copy (a hard link
# where the file system allows) of testenv and its neighbours (pause, multus) lives as long as
# the run.
mkdir "$dir/bin"
for file in "$(dirname "$built")"/*; do
  ln "$file" "$dir/bin/" 2>/dev/null || cp "$file" "$dir/bin/"
done
testenv="$dir/bin/testenv"
fifo="$dir/ready.fifo"
mkfifo "$fifo"

"$testenv" up --dir "$dir" "${up_flags[@]}" >"$fifo" 2>"$dir/testenv.stderr" &
testenv_pid=$!

cleanup() {
  local rc=$?
  # Ctrl-C / SIGTERM is how `make run` (which sets INTERRUPT_IS_SUCCESS) is meant to end.
  if [ -n "${INTERRUPT_IS_SUCCESS:-}" ] && { [ "$rc" -eq 130 ] || [ "$rc" -eq 143 ]; }; then rc=0; fi
  # A node's teardown deletes its Pods (each gets its CNI DEL) before anything stops: give it
  # time. If testenv must be killed anyway, node-down restores the host after it.
  local grace=100
  [ -n "$with_node" ] && grace=1200
  if kill -0 "$testenv_pid" 2>/dev/null; then
    kill -TERM "$testenv_pid" 2>/dev/null || true
    for _ in $(seq 1 "$grace"); do kill -0 "$testenv_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$testenv_pid" 2>/dev/null || true
  fi
  wait "$testenv_pid" 2>/dev/null || true
  if [ -n "$with_node" ] && ! "$testenv" node-down --dir "$dir"; then
    echo "testenv node-down failed: the host may keep parts of the node (retry: $testenv node-down --dir $dir)" >&2
    [ "$rc" -ne 0 ] || rc=1
  fi
  if [ "$rc" -ne 0 ] && [ -z "${KEEP_TESTENV_DIR:-}" ]; then
    echo "control plane logs kept in $dir" >&2
  elif [ -z "${KEEP_TESTENV_DIR:-}" ]; then
    rm -rf "$dir"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

kubeconfig=""
exec 3<"$fifo"
started=$(date +%s)
while IFS= read -r -t 300 line <&3; do
  case "$line" in
    "TESTENV READY kubeconfig="*) kubeconfig=${line#TESTENV READY kubeconfig=}; break ;;
  esac
done
# Keep draining the control plane's stdout so it never blocks on a full pipe.
cat <&3 >/dev/null &
if [ -z "$kubeconfig" ]; then
  echo "the test control plane did not become ready; last lines of $dir/testenv.stderr:" >&2
  tail -n 40 "$dir/testenv.stderr" >&2 || true
  exit 1
fi
echo "control plane ready in $(( $(date +%s) - started ))s (dir $dir)" >&2

# TESTENV_PID: the process of embedded etcd + kube-apiserver (benchmarks read its CPU time).
export KUBECONFIG="$kubeconfig" SPIDERPOOL_E2E_KUBECONFIG="$kubeconfig" SPIDERPOOL_E2E_DIR="$dir" TESTENV="$testenv" \
  TESTENV_PID="$testenv_pid"
# The values tests need from DIR/env (the node's only with --with-node).
while IFS='=' read -r key value; do
  case "$key" in
    APISERVER_PORT|NODE_NAME|NODE_IP|CNI_BIN_DIR|CNI_CONF_DIR|CONTAINERD_SOCKET|UNDERLAY_NICS)
      export "$key=$value" ;;
  esac
done <"$dir/env"
"$testenv" kubectl apply --server-side -f "$repo/crds/" >&2
"$testenv" kubectl wait --for=condition=Established --timeout=60s crd --all >&2
# Established is not the end: aggregated discovery (which kubectl uses to resolve the
# `spiderpool` category and short names) is refreshed asynchronously.
for _ in $(seq 1 100); do
  count=$("$testenv" kubectl api-resources --categories=spiderpool -o name 2>/dev/null | wc -l)
  [ "$count" -ge 6 ] && break
  sleep 0.2
done
"$@"
