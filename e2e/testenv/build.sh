#!/usr/bin/env bash
# Build the testenv binary (etcd + kube-apiserver + kube-controller-manager + kubectl v1.36.3)
# into a cache directory outside the work tree, keyed by the hash of its sources, and print its
# path as the last line of stdout. Everything else goes to stderr.
#
#   TESTENV="$(e2e/testenv/build.sh)" && "$TESTENV" up --dir /tmp/te --with-controller-manager
#
# A cold build (empty Go build cache) takes several minutes on 2 cores; later builds with the
# same sources print the cached path at once, and with changed sources reuse the Go build cache.
set -euo pipefail
cd "$(dirname "$0")"

K8S_VERSION=v1.36.3   # keep in step with go.mod (gen-replaces.sh)
MAJOR=1 MINOR=36

key="$( { cat go.mod go.sum; for f in $(ls ./*.go | LC_ALL=C sort); do echo "== $f"; cat "$f"; done; } |
  sha256sum | cut -c1-16)"
outdir="${XDG_CACHE_HOME:-$HOME/.cache}/spiderpool-rs/testenv/${key}"
bin="${outdir}/testenv"

if [ ! -x "$bin" ]; then
  mkdir -p "$outdir"
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
  # go.sum is committed; -mod=mod lets go fill in nothing but what go.sum already pins.
  pkg=k8s.io/component-base/version
  ldflags="-s -w -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=${MAJOR} -X ${pkg}.gitMinor=${MINOR}"
  # gitCommit: a module zip has no commit; empty beats the "$Format:%H$" placeholder.
  ldflags+=" -X ${pkg}.gitCommit= -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "building testenv (${K8S_VERSION}) into ${outdir} ..." >&2
  start=$(date +%s)
  # -p 2: two cores; more parallel compile jobs only add memory pressure.
  go build -p 2 -trimpath -ldflags "$ldflags" -o "${bin}.tmp" . >&2
  mv "${bin}.tmp" "$bin"
  echo "built in $(( $(date +%s) - start ))s: $(du -h "$bin" | cut -f1)" >&2
  # Keep the three most recent builds (~130 MB each); a running binary survives its deletion.
  ls -dt "${outdir%/*}"/*/ 2>/dev/null | tail -n +4 | xargs -r rm -rf
fi
echo "$bin"
