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
webhook_port=${SPIDERPOOL_DEMO_WEBHOOK_PORT:-5722}
log="$SPIDERPOOL_E2E_DIR/controller-manager.log"
# Local-development mode: the admin kubeconfig and --webhook-register-url, with which the
# controller-manager creates its own webhook configurations (clientConfig.url on loopback). That
# needs `create` on them, which config/rbac does not grant: a cluster installs them from
# config/webhook and the controller-manager only injects their caBundle (the e2e suites run it so).
"$bin_dir/spiderpool-controller-manager" --kubeconfig "$KUBECONFIG" --namespace default \
  --admin-addr "127.0.0.1:$admin_port" \
  --webhook-addr "127.0.0.1:$webhook_port" --webhook-cert-mode auto --webhook-extra-sans 127.0.0.1 \
  --webhook-register-url "https://127.0.0.1:$webhook_port" 2>"$log" &
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
echo "== the admission webhooks refuse a bad pool (kubectl apply of a pool whose subnet has host bits set)"
printf '%s\n' 'apiVersion: spiderpool.spidernet.io/v2beta1' 'kind: SpiderIPPool' 'metadata: {name: demo-bad-pool}' \
  'spec: {subnet: 10.250.0.1/24}' | kubectl apply -f - 2>&1 || true
echo
echo "== Deployment demo-web (annotated ipam.spidernet.io/subnets) got its auto pools, one per NIC and family"
for _ in $(seq 1 100); do
  [ "$(kubectl get sp -l ipam.spidernet.io/owner-application-name=demo-web -o name 2>/dev/null | wc -l)" -ge 2 ] && break
  sleep 0.2
done
kubectl get sp -l ipam.spidernet.io/owner-application-name=demo-web -o wide
kubectl get ss
echo
echo "== /metrics lines for them (http://127.0.0.1:$admin_port/metrics)"
sleep 1
curl -fsS "http://127.0.0.1:$admin_port/metrics" | grep -E '^spiderpool_(ippool|subnet)_[a-z_]+\{.*(demo-web|subnet="subnet-v)' || true
echo
echo "== everything is running; kubeconfig: $KUBECONFIG"
echo "   try: $TESTENV kubectl --kubeconfig $KUBECONFIG get smc -A"
echo "   press Ctrl-C to stop the controller-manager and the control plane"
wait "$manager_pid"
