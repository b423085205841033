#!/usr/bin/env bash
# Build the testenv binary (etcd + kube-apiserver + kube-controller-manager + kube-scheduler +
# kubelet + kubectl v1.36.3) and, next to it, the two binaries its node mode needs: `pause` (the
# sandbox image's only file) and `multus` (Multus CNI v4.3.0 thin plugin). All land in one cache
# directory outside the work tree, keyed by the hash of their sources; the testenv path is the
# last line of stdout. Everything else goes to stderr.
#
#   TESTENV="$(e2e/testenv/build.sh)" && "$TESTENV" up --dir /tmp/te --with-controller-manager
#
# Layout (testenv finds pause and multus in its own directory):
#   ~/.cache/spiderpool-rs/testenv/<key>/{testenv,pause,multus}
#   ~/.cache/spiderpool-rs/multus/<mkey>/multus   built once per multus/go.{mod,sum}, copied above,
#                                                 so a testenv source change does not rebuild it
#
# A cold build (empty Go build cache) takes several minutes on 2 cores; later builds with the
# same sources print the cached path at once, and with changed sources reuse the Go build cache.
set -euo pipefail
cd "$(dirname "$0")"

K8S_VERSION=v1.36.3   # keep in step with go.mod (gen-replaces.sh)
MAJOR=1 MINOR=36
MULTUS_MODULE=gopkg.in/k8snetworkplumbingwg/multus-cni.v4
MULTUS_VERSION="$(sed -n "s#^[[:space:]]*${MULTUS_MODULE//./\\.} \(v[^ ]*\).*#\1#p" multus/go.mod)"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
# go.sum files are committed; -mod=mod lets go fill in nothing but what go.sum already pins.

hash_files() { for f in "$@"; do echo "== $f"; cat "$f"; done | sha256sum | cut -c1-16; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/spiderpool-rs"
key="$(hash_files go.mod go.sum $(ls ./*.go pause/*.go | LC_ALL=C sort) multus/go.mod multus/go.sum)"
outdir="${cache}/testenv/${key}"
bin="${outdir}/testenv"
mkey="$(hash_files multus/go.mod multus/go.sum)"
mdir="${cache}/multus/${mkey}"

# prune DIR N: keep the N most recently built subdirectories of DIR (a running binary survives
# its deletion).
prune() { ls -dt "$1"/*/ 2>/dev/null | tail -n +"$(( $2 + 1 ))" | xargs -r rm -rf; }

build_testenv() {
  local pkg=k8s.io/component-base/version ldflags start
  ldflags="-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${MAJOR} -X ${pkg}.gitMinor=${MINOR}"
  # gitCommit: a module zip has no commit; empty beats the "$Format:%H$" placeholder.
  ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "building testenv (${K8S_VERSION}) into ${outdir} ..." >&2
  start=$(date +%s)
  # -p 2: two cores; more parallel compile jobs only add memory pressure.
  go build -p 2 -trimpath -ldflags "$ldflags" -o "${bin}.tmp" . >&2
  mv "${bin}.tmp" "$bin"
  echo "built testenv in $(( $(date +%s) - start ))s: $(du -h "$bin" | cut -f1)" >&2
}

build_pause() {
  go build -p 2 -trimpath -ldflags "-s -w" -o "${outdir}/pause.tmp" ./pause >&2
  mv "${outdir}/pause.tmp" "${outdir}/pause"
}

# Multus is its own module (multus/go.mod) because it pins other k8s.io versions than
# Kubernetes v1.36.3; its go.mod names the plugin with a `tool` directive.
build_multus() {
  local start
  mkdir -p "$mdir"
  echo "building multus ${MULTUS_VERSION} into ${mdir} ..." >&2
  start=$(date +%s)
  (cd multus && go build -p 2 -trimpath \
    -ldflags "-s -w -X ${MULTUS_MODULE}/pkg/multus.version=${MULTUS_VERSION}" \
    -o "${mdir}/multus.tmp" "${MULTUS_MODULE}/cmd/multus") >&2
  mv "${mdir}/multus.tmp" "${mdir}/multus"
  echo "built multus in $(( $(date +%s) - start ))s: $(du -h "${mdir}/multus" | cut -f1)" >&2
  prune "${cache}/multus" 2
}

mkdir -p "$outdir"
# One build at a time per cache: `make test` starts one in the background while Rust compiles,
# and with-testenv.sh's own call then waits for it and finds the result instead of building twice.
exec 9>"${cache}/build.lock"
flock 9
[ -x "$bin" ] || build_testenv
[ -x "${outdir}/pause" ] || build_pause
if [ ! -x "${outdir}/multus" ]; then
  [ -x "${mdir}/multus" ] || build_multus
  cp "${mdir}/multus" "${outdir}/multus.tmp" && mv "${outdir}/multus.tmp" "${outdir}/multus"
fi
# Keep the three most recent builds (~150 MB each).
prune "${cache}/testenv" 3
echo "$bin"
