#!/usr/bin/env bash
# Runs the given command (the test suites, inside with-testenv.sh), then checks config/rbac
# against the API server's audit log of that run with `rbac-audit` (e2e/src/rbac_audit.rs): every
# granted verb must have been used, no request of ours denied, none allowed by anything else.
#
#   e2e/scripts/with-rbac-audit.sh -- <command> [args...]
#
# The command's exit status wins when it failed (a failed run proves nothing about unused
# permissions, but the report is still printed); otherwise the checker's. Needs SPIDERPOOL_E2E_DIR
# (set by with-testenv.sh) holding audit*.log, and the rbac-audit binary in SPIDERPOOL_BIN_DIR.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${SPIDERPOOL_BIN_DIR:-$repo/target/debug}
[ "${1:-}" = "--" ] && shift
[ $# -gt 0 ] || { echo "usage: $0 -- command..." >&2; exit 2; }

"$@"
rc=$?

shopt -s nullglob
logs=("${SPIDERPOOL_E2E_DIR:?run inside e2e/scripts/with-testenv.sh}"/audit*.log)
echo >&2
echo "== RBAC audit of this run (config/rbac against ${logs[*]:-no audit log})" >&2
if [ ${#logs[@]} -eq 0 ]; then
  echo "no audit log in $SPIDERPOOL_E2E_DIR: the test control plane must record service-account requests (--audit-log-path)" >&2
  audit=1
else
  "$bin_dir/rbac-audit" --rbac-dir "$repo/config/rbac" "${logs[@]}" >&2
  audit=$?
fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$audit"
