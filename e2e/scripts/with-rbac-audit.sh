#!/usr/bin/env bash
# Runs the given command (the test suites, inside with-testenv.sh), then checks config/rbac
# against the API server's audit log with `rbac-audit` (e2e/src/rbac_audit.rs): every granted verb
# must have been used, no request of ours denied, none allowed by anything else.
#
#   e2e/scripts/with-rbac-audit.sh [--save NAME] [--check-saved] -- <command> [args...]
#
# Alone, it checks this run's audit log. `make test` runs two control planes (the suites, then the
# real node) and no single one exercises every role (the installer only runs on the node): each
# phase saves its log as $SPIDERPOOL_AUDIT_DIR/NAME.log (--save), and the last one checks every
# saved log together (--check-saved).
#
# The command's exit status wins when it failed (a failed run proves nothing about unused
# permissions, but the report is still printed); otherwise the checker's. Needs SPIDERPOOL_E2E_DIR
# (set by with-testenv.sh) holding audit*.log, and the rbac-audit binary in SPIDERPOOL_BIN_DIR.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${SPIDERPOOL_BIN_DIR:-$repo/target/debug}
save="" check_saved=""
while [ $# -gt 0 ]; do
  case "$1" in
    --save) save=$2; shift 2 ;;
    --check-saved) check_saved=1; shift ;;
    --) shift; break ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--save NAME] [--check-saved] -- command..." >&2; exit 2; }
if [ -n "$save$check_saved" ]; then
  : "${SPIDERPOOL_AUDIT_DIR:?is needed with --save/--check-saved}"
  mkdir -p "$SPIDERPOOL_AUDIT_DIR"
fi

"$@"
rc=$?

shopt -s nullglob
logs=("${SPIDERPOOL_E2E_DIR:?run inside e2e/scripts/with-testenv.sh}"/audit*.log)
if [ -n "$save" ]; then
  if [ ${#logs[@]} -gt 0 ]; then
    cat "${logs[@]}" >"$SPIDERPOOL_AUDIT_DIR/$save.log"
  else
    echo "no audit log in $SPIDERPOOL_E2E_DIR to save as $save" >&2
  fi
  logs=()
fi
if [ -n "$check_saved" ]; then
  logs=("$SPIDERPOOL_AUDIT_DIR"/*.log)
elif [ -n "$save" ]; then
  exit "$rc"
fi
echo >&2
echo "== RBAC audit (config/rbac against ${logs[*]:-no audit log})" >&2
if [ ${#logs[@]} -eq 0 ]; then
  echo "no audit log: the test control plane must record service-account requests (--audit-log-path)" >&2
  audit=1
else
  "$bin_dir/rbac-audit" --rbac-dir "$repo/config/rbac" "${logs[@]}" >&2
  audit=$?
fi
if [ "$rc" -ne 0 ]; then exit "$rc"; fi
exit "$audit"
