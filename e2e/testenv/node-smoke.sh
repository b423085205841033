#!/usr/bin/env bash
# Proof that `testenv up --with-node` runs a real node and gives the host back unchanged.
#
#   e2e/testenv/node-smoke.sh           # snapshot the host, run the checks under
#                                       # `with-testenv.sh --with-node`, snapshot again, compare
#   e2e/testenv/node-smoke.sh --kill    # the same, but SIGKILL testenv after the checks, so that
#                                       # `testenv node-down` (with-testenv.sh's trap) cleans up
#   e2e/testenv/node-smoke.sh snapshot FILE    # only write a host snapshot
#
# Checks: a hostNetwork busybox Pod; a Service selecting it gets EndpointSlices/Endpoints and
# the apiserver reaches it through them (service proxy); an admission webhook behind a
# selector-less Service is called at its endpoint (--enable-aggregator-routing); a 2-replica
# Deployment on the bridge cluster network; a macvlan NetworkAttachmentDefinition on the first
# underlay NIC and a 2-replica Deployment using it through Multus, whose Pods ping each other over
# net1; DIR/audit.log records ServiceAccount requests only. Needs root. Exits non-zero on a
# failed check or a host snapshot difference.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

log() { echo "node-smoke: $*" >&2; }
now() { date +%s%N; }
since() { local ms=$(( ($(now) - $1) / 1000000 )); printf '%d.%03ds' $((ms / 1000)) $((ms % 1000)); }

# ---- host snapshot ------------------------------------------------------------------------

# Everything the node changes on the host, in a form that must be byte-identical before `up`
# and after teardown. Counters and timestamps are stripped; volatile sysctls are left out.
snapshot() {
  local s
  echo "== ip -o link"; ip -o link
  echo "== ip -o addr"; ip -o addr
  echo "== ip route"; ip route
  echo "== ip -6 route"; ip -6 route
  echo "== ip rule"; ip rule
  for s in iptables-save ip6tables-save; do
    echo "== $s"; "$s" | sed -e '/^#/d' -e 's/ \[[0-9]*:[0-9]*\]$//'
  done
  echo "== nft list tables"; nft list tables
  echo "== /proc/mounts"; cat /proc/mounts
  echo "== ls /run/netns"; ls /run/netns 2>&1 || true
  echo "== sysctl"
  sysctl -a 2>/dev/null | grep -Ev '^(fs\.(dentry-state|inode-nr|inode-state|file-nr|aio-nr|quota\.)|kernel\.(random\.|ns_last_pid|pty\.nr)|net\.netfilter\.nf_conntrack_count)' || true
  echo "== dirs"
  for s in /run/containerd /run/netns /var/lib/cni /var/lib/kubelet /var/log/containers /var/log/pods \
           /usr/libexec/kubernetes /opt/containerd /var/lib/containerd /etc/cni /opt/cni; do
    if [ -e "$s" ]; then echo "$s exists"; else echo "$s absent"; fi
  done
  echo "== kubepods cgroups"; find /sys/fs/cgroup -maxdepth 2 -name 'kubepods*' | sort
}

# ---- checks (run by with-testenv.sh --with-node) -------------------------------------------

k() { "$TESTENV" kubectl "$@"; }

free_port() {
  local p
  while :; do
    p=$(shuf -i 20000-29999 -n 1)
    ss -Htln "sport = :$p" | grep -q . || { echo "$p"; return; }
  done
}

check_hostnetwork_and_service() {
  local port=$1 t
  t=$(now)
  k apply -f - >&2 <<EOF
apiVersion: v1
kind: Pod
metadata: {name: te-hostnet, labels: {app: te-hostnet}}
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 1
  containers:
  - name: httpd
    image: localhost/busybox:v1
    imagePullPolicy: Never
    command: ["httpd", "-f", "-p", "$port", "-h", "/etc"]
    env:  # there is no kube-proxy: hostNetwork Pods reach the apiserver like this
    - {name: KUBERNETES_SERVICE_HOST, value: "127.0.0.1"}
    - {name: KUBERNETES_SERVICE_PORT, value: "$APISERVER_PORT"}
---
apiVersion: v1
kind: Service
metadata: {name: te-hostnet}
spec:
  selector: {app: te-hostnet}
  ports: [{port: $port, targetPort: $port}]
EOF
  k wait --for=condition=Ready pod/te-hostnet --timeout=60s >&2
  log "hostNetwork pod Ready in $(since "$t")"
  t=$(now)
  local addr=""
  for _ in $(seq 1 100); do
    addr=$(k get endpointslices -l kubernetes.io/service-name=te-hostnet \
      -o jsonpath='{.items[*].endpoints[*].addresses[*]}' 2>/dev/null || true)
    [ "$addr" = "$NODE_IP" ] && break
    sleep 0.1
  done
  [ "$addr" = "$NODE_IP" ] || { log "FAIL: Service te-hostnet has endpoint slice addresses '$addr', want $NODE_IP"; return 1; }
  log "Service te-hostnet: EndpointSlice address $addr in $(since "$t"); Endpoints: $(k get endpoints te-hostnet -o jsonpath='{.subsets[*].addresses[*].ip}:{.subsets[*].ports[*].port}')"
  # The apiserver reaches the Pod through the Service's endpoints (service proxy subresource).
  local body
  body=$(k get --raw "/api/v1/namespaces/default/services/te-hostnet:$port/proxy/passwd")
  case "$body" in root:x:0:0*) log "apiserver -> Service te-hostnet -> hostNetwork pod: GET /passwd ok" ;;
    *) log "FAIL: service proxy returned: $body"; return 1 ;; esac
}

# A validating webhook served by a host process behind a selector-less Service whose
# EndpointSlice names the node IP: the apiserver can only call it at that endpoint
# (aggregator routing); the ClusterIP leads nowhere without kube-proxy.
check_webhook_routing() {
  local port=$1 work="$SPIDERPOOL_E2E_DIR/te-webhook" t pid
  mkdir -p "$work"
  openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj "/CN=te-webhook.default.svc" \
    -addext "subjectAltName=DNS:te-webhook.default.svc" \
    -keyout "$work/tls.key" -out "$work/tls.crt" 2>/dev/null
  python3 - "$NODE_IP" "$port" "$work/tls.crt" "$work/tls.key" >"$work/server.log" 2>&1 <<'EOF' &
import http.server, json, ssl, sys
ip, port, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
class Deny(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "response": {"uid": review["request"]["uid"], "allowed": False,
                         "status": {"code": 403, "message": "te-webhook reached at its endpoint"}}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.HTTPServer((ip, port), Deny)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
EOF
  pid=$!
  t=$(now)
  k apply -f - >&2 <<EOF
apiVersion: v1
kind: Service
metadata: {name: te-webhook}
spec:
  ports: [{port: $port, targetPort: $port}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: te-webhook-1, labels: {kubernetes.io/service-name: te-webhook}}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"]}]
ports: [{port: $port, protocol: TCP}]
---
apiVersion: v1
kind: Namespace
metadata: {name: te-webhook-test, labels: {te-webhook: deny}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: te-webhook}
webhooks:
- name: deny.te-webhook.testenv
  clientConfig:
    service: {name: te-webhook, namespace: default, port: $port, path: /validate}
    caBundle: $(base64 -w0 "$work/tls.crt")
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [configmaps]}]
  namespaceSelector: {matchLabels: {te-webhook: deny}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
EOF
  local out="" ok=""
  for _ in $(seq 1 50); do
    out=$(k -n te-webhook-test create configmap probe 2>&1 || true)
    case "$out" in *"te-webhook reached at its endpoint"*) ok=1; break ;; esac
    sleep 0.2
  done
  k delete validatingwebhookconfiguration te-webhook >&2
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  [ -n "$ok" ] || { log "FAIL: webhook not called at its endpoint; last answer: $out"; return 1; }
  log "admission webhook behind a Service called at its endpoint (aggregator routing) in $(since "$t")"
}

deployment() { # NAME ANNOTATIONS-YAML
  cat <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: $1}
spec:
  replicas: 2
  selector: {matchLabels: {app: $1}}
  template:
    metadata:
      labels: {app: $1}
      annotations: {$2}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: localhost/busybox:v1
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/etc"]
EOF
}

check_bridge_deployment() {
  local t ip
  t=$(now)
  deployment te-bridge "" | k apply -f - >&2
  k rollout status deploy/te-bridge --timeout=90s >&2
  log "bridge Deployment (2 pods) available in $(since "$t"): $(k get pods -l app=te-bridge -o jsonpath='{.items[*].status.podIP}')"
  for ip in $(k get pods -l app=te-bridge -o jsonpath='{.items[*].status.podIP}'); do
    # (busybox 1.35's wget -T crashes: bound it with timeout instead)
    timeout 5 busybox wget -q -O - "http://$ip:8080/group" | grep -q '^root:' ||
      { log "FAIL: host cannot reach pod $ip on the bridge"; return 1; }
  done
  log "host -> bridge pods: HTTP ok"
}

check_macvlan_deployment() {
  local master=${UNDERLAY_NICS%%,*} t p q qip
  t=$(now)
  k apply -f - >&2 <<EOF
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: te-macvlan}
spec:
  config: '{"cniVersion":"1.0.0","name":"te-macvlan","type":"macvlan","master":"$master","mode":"bridge","ipam":{"type":"host-local","dataDir":"$SPIDERPOOL_E2E_DIR/node/cni/ipam-macvlan","ranges":[[{"subnet":"10.245.0.0/24"}]]}}'
EOF
  deployment te-macvlan "k8s.v1.cni.cncf.io/networks: te-macvlan" | k apply -f - >&2
  k rollout status deploy/te-macvlan --timeout=90s >&2
  log "Multus + macvlan (master $master) Deployment (2 pods) available in $(since "$t")"
  p=$(k get pods -l app=te-macvlan -o jsonpath='{.items[0].metadata.name}')
  q=$(k get pods -l app=te-macvlan -o jsonpath='{.items[1].metadata.name}')
  k exec "$p" -- ip -o -4 addr show net1 >&2
  qip=$(k exec "$q" -- ip -o -4 addr show net1 | awk '{print $4}' | cut -d/ -f1)
  case "$qip" in 10.245.0.*) ;; *) log "FAIL: pod $q has no net1 address in 10.245.0.0/24: '$qip'"; return 1 ;; esac
  k exec "$p" -- ping -c 2 -W 2 -I net1 "$qip" >&2
  log "pod $p -> pod $q ($qip) over net1: ping ok"
}

# DIR/audit.log holds service-account requests only (the components under test run as
# ServiceAccounts): one made with a ServiceAccount token is there, the admin's are not.
check_audit_log() {
  local token audit="$SPIDERPOOL_E2E_DIR/audit.log"
  token=$(k create token default)
  k --token="$token" get configmaps -n default >/dev/null 2>&1 || true # forbidden, still audited
  sleep 0.2
  grep -q '"verb":"list".*"username":"system:serviceaccount:default:default"' "$audit" ||
    { log "FAIL: the ServiceAccount's list of configmaps is not in $audit"; return 1; }
  if grep -v '"username":"system:serviceaccount:' "$audit" | grep -q .; then
    log "FAIL: $audit has events of users that are not ServiceAccounts"; return 1
  fi
  log "audit log: $(wc -l <"$audit") events, all by ServiceAccounts, incl. the probe's list"
}

run_checks() {
  local kill_testenv=$1
  : "${NODE_NAME:?run under with-testenv.sh --with-node}"
  log "node $NODE_NAME ($NODE_IP), underlay NICs $UNDERLAY_NICS, dir $SPIDERPOOL_E2E_DIR"
  k get nodes -o wide >&2
  check_hostnetwork_and_service "$(free_port)"
  check_webhook_routing "$(free_port)"
  check_bridge_deployment
  check_macvlan_deployment
  check_audit_log
  log "checks passed"
  if [ "$kill_testenv" = 1 ]; then
    local pid
    pid=$(sed -n 's/.*"upPID": \([0-9]*\).*/\1/p' "$SPIDERPOOL_E2E_DIR/node/node.json")
    log "SIGKILL testenv (pid $pid) with the pods running; with-testenv.sh's trap runs testenv node-down"
    kill -KILL "$pid"
  fi
}

# ---- main --------------------------------------------------------------------------------

main() {
  local kill_testenv=0
  case "${1:-}" in
    checks) run_checks "${2:-0}"; return ;;
    snapshot) snapshot >"$2"; return ;;
    --kill) kill_testenv=1 ;;
    "") ;;
    *) echo "usage: $0 [--kill] | snapshot FILE" >&2; return 2 ;;
  esac
  [ "$(id -u)" = 0 ] || { echo "node-smoke: needs root" >&2; return 1; }
  local out t rc=0
  out=$(mktemp -d "${TMPDIR:-/tmp}/node-smoke.XXXXXX")
  snapshot >"$out/before"
  t=$(now)
  "$repo/e2e/scripts/with-testenv.sh" --with-node -- "$here/node-smoke.sh" checks "$kill_testenv" || rc=$?
  log "with-testenv.sh exited $rc after $(since "$t") (build, up, checks, teardown)"
  snapshot >"$out/after"
  if diff -u "$out/before" "$out/after" >"$out/diff"; then
    log "host snapshot identical before up and after teardown ($(wc -l <"$out/before") lines)"
  else
    log "FAIL: the host differs after teardown:"
    cat "$out/diff" >&2
    rc=1
  fi
  [ "$rc" -ne 0 ] || rm -rf "$out"
  [ "$rc" -eq 0 ] && log PASS || log "FAIL (snapshots in $out)"
  return "$rc"
}

main "$@"
