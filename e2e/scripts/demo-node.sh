#!/usr/bin/env bash
# The `make run` demo on a real node, run by `with-testenv.sh --with-node` once the control plane,
# kubelet, containerd and Multus are up: installs spiderpool-rs the way a user does (the images of
# `make images`, `kubectl apply -k` of config/default through the test node's overlay), runs a
# two-NIC Deployment whose addresses come from SpiderSubnet auto pools (seed 002), shows what a
# user sees, and keeps everything running until Ctrl-C.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
kubectl() { "$TESTENV" kubectl --kubeconfig "$KUBECONFIG" "$@"; }
: "${SPIDERPOOL_IMAGES:?lists the archives of make images}"
IFS=, read -r nic0 nic1 _ <<<"$UNDERLAY_NICS"

echo "== importing the images into the node's containerd"
for archive in $SPIDERPOOL_IMAGES; do
  ctr --address "$CONTAINERD_SOCKET" --namespace k8s.io images import "$archive"
done

echo "== kubectl apply -k (config/default through $( "$here/node-overlay.sh" "$SPIDERPOOL_E2E_DIR/overlay" ))"
kubectl apply -k "$SPIDERPOOL_E2E_DIR/overlay"
kubectl -n kube-system rollout status daemonset/spiderpool-installer --timeout=180s
kubectl -n kube-system rollout status deployment/spiderpool-controller --timeout=180s

echo "== two macvlan networks on the node's underlay NICs ($nic0, $nic1), two subnets, a two-NIC Deployment"
kubectl apply -f - <<YAML
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: macvlan-conf-ens192, namespace: kube-system}
spec:
  cniType: macvlan
  macvlan: {master: [$nic0]}
  coordinator: {mode: underlay, hijackCIDR: [10.96.0.0/16]}
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderMultusConfig
metadata: {name: macvlan-conf-ens224, namespace: kube-system}
spec:
  cniType: macvlan
  macvlan: {master: [$nic1]}
  coordinator: {mode: underlay, hijackCIDR: [10.96.0.0/16]}
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderSubnet
metadata: {name: subnet-test-ens192}
spec: {ipVersion: 4, subnet: 10.6.0.0/16, ips: [10.6.168.171-10.6.168.190], gateway: 10.6.0.1}
---
apiVersion: spiderpool.spidernet.io/v2beta1
kind: SpiderSubnet
metadata: {name: subnet-test-ens224}
spec: {ipVersion: 4, subnet: 10.7.0.0/16, ips: [10.7.168.171-10.7.168.190], gateway: 10.7.0.1}
YAML
for _ in $(seq 1 100); do
  [ "$(kubectl -n kube-system get net-attach-def -o name 2>/dev/null | wc -l)" -ge 2 ] && break
  sleep 0.2
done
kubectl apply -f - <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: test-app, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: test-app}}
  template:
    metadata:
      labels: {app: test-app}
      annotations:
        v1.multus-cni.io/default-network: kube-system/macvlan-conf-ens192
        k8s.v1.cni.cncf.io/networks: kube-system/macvlan-conf-ens224
        ipam.spidernet.io/subnets: '[{"interface":"eth0","ipv4":["subnet-test-ens192"]},{"interface":"net1","ipv4":["subnet-test-ens224"]}]'
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - {name: c, image: "localhost/busybox:v1", imagePullPolicy: Never, command: [sleep, "86400"]}
YAML
kubectl rollout status deployment/test-app --timeout=180s

echo
echo "== kubectl get pods -A -o wide"
kubectl get pods -A -o wide
pod=$(kubectl get pods -l app=test-app -o jsonpath='{.items[0].metadata.name}')
for command in "ip addr show eth0" "ip addr show net1" "ip rule" "ip route show table 100"; do
  echo
  echo "== kubectl exec $pod -- $command"
  # shellcheck disable=SC2086
  kubectl exec "$pod" -- $command
done
echo
echo "== kubectl get spidersubnet; kubectl get spiderippool -o wide"
kubectl get spidersubnet
kubectl get spiderippool -o wide
echo
echo "== pool usage on the controller-manager's /metrics (http://$NODE_IP:5721/metrics)"
curl -fsS "http://$NODE_IP:5721/metrics" | grep -E '^spiderpool_(ippool|subnet)_[a-z_]+\{' | grep test || true
echo
echo "== everything is running on a real node ($NODE_NAME); kubeconfig: $KUBECONFIG"
echo "   try: $TESTENV kubectl --kubeconfig $KUBECONFIG scale deployment/test-app --replicas=5"
echo "   press Ctrl-C to stop the node and the control plane (the host is restored)"
while :; do sleep 3600; done
