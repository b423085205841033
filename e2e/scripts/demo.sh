#!/usr/bin/env bash
# The `make run` demo, run by with-testenv.sh once the control plane is up and the CRDs are
# installed: starts the controller-manager, applies config/samples, shows what a user sees, and
# keeps everything running until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin_dir=${SPIDERPOOL_BIN_DIR:-$repo/target/debug}
kubectl() { "$TESTENV" kubectl --kubeconfig "$KUBECONFIG" "$@"; }

admin_port=${SPIDERPOOL_DEMO_ADMIN_PORT:-5721}
log="$SPIDERPOOL_E2E_DIR/controller-manager.log"
"$bin_dir/spiderpool-controller-manager" --kubeconfig "$KUBECONFIG" --namespace default \
  --admin-addr "127.0.0.1:$admin_port" 2>"$log" &
manager_pid=$!
trap 'kill -TERM $manager_pid 2>/dev/null; wait $manager_pid 2>/dev/null || true' EXIT

for _ in $(seq 1 300); do
  if curl -fsS "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$manager_pid" 2>/dev/null; then echo "controller-manager exited; see $log" >&2; tail -n 30 "$log" >&2; exit 1; fi
  sleep 0.2
done
echo "== controller-manager ready (admin http://127.0.0.1:$admin_port, log $log)"

kubectl apply -k "$repo/config/samples"
sleep 2

echo
echo "== kubectl get crd"
kubectl get crd
echo
echo "== kubectl get spiderpool -A"
kubectl get spiderpool -A
echo
echo "== kubectl get sp -o wide"
kubectl get sp -o wide
echo
echo "== kubectl get net-attach-def -A -o yaml"
kubectl get net-attach-def -A -o yaml
echo
echo "== everything is running; kubeconfig: $KUBECONFIG"
echo "   try: $TESTENV kubectl --kubeconfig $KUBECONFIG get smc -A"
echo "   press Ctrl-C to stop the controller-manager and the control plane"
wait "$manager_pid"
