#!/usr/bin/env bash
# Build the peer IPAM plugins that `make bench-peers` compares ours with, from the Go module proxy
# only, into a cache outside the work tree keyed by the hash of their go.mod/go.sum; the
# directory is the last line of stdout, everything else goes to stderr.
#
#   WHEREABOUTS_DIR="$(e2e/peers/build.sh | tail -n 1)"
#
# Layout:
#   ~/.cache/spiderpool-rs/whereabouts/<key>/whereabouts        the CNI IPAM plugin (static)
#   ~/.cache/spiderpool-rs/whereabouts/<key>/crds/*.yaml        its CRDs, from the module's doc/crds
#   ~/.cache/spiderpool-rs/whereabouts/<key>/daemonset-install.yaml   its ServiceAccount and RBAC
#                                                               (the benchmark applies only those)
#   ~/.cache/spiderpool-rs/whereabouts/<key>/version            the module version
#
# Whereabouts is its own Go module (whereabouts/go.mod names the plugin with a `tool` directive,
# go.sum is committed), so the build is reproducible and offline once the module cache has it.
# Its controller (ip-reconciler, node-slice controller) is not built: the benchmark calls the
# plugin only. A cold build takes ~3 min on 2 cores; unchanged sources print the cached path.
set -euo pipefail
cd "$(dirname "$0")"

MODULE=github.com/k8snetworkplumbingwg/whereabouts
VERSION="$(sed -n "s#^[[:space:]]*${MODULE//./\\.} \(v[^ ]*\).*#\1#p" whereabouts/go.mod)"
[ -n "$VERSION" ] || { echo "no ${MODULE} version in e2e/peers/whereabouts/go.mod" >&2; exit 1; }

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod

hash_files() { for f in "$@"; do echo "== $f"; cat "$f"; done | sha256sum | cut -c1-16; }

cache="${XDG_CACHE_HOME:-$HOME/.cache}/spiderpool-rs"
outdir="${cache}/whereabouts/$(hash_files build.sh whereabouts/go.mod whereabouts/go.sum)"

build_whereabouts() {
  local pkg=${MODULE}/pkg/version start module_dir
  echo "building whereabouts ${VERSION} into ${outdir} ..." >&2
  start=$(date +%s)
  mkdir -p "${outdir}.tmp/crds"
  # The CRDs and the RBAC come from the same module version as the plugin (the module cache),
  # never from the network.
  module_dir="$(cd whereabouts && go list -m -f '{{.Dir}}' "$MODULE")"
  cp "$module_dir"/doc/crds/whereabouts.cni.cncf.io_*.yaml "${outdir}.tmp/crds/"
  cp "$module_dir/doc/crds/daemonset-install.yaml" "${outdir}.tmp/"
  # -p 2: two cores.
  (cd whereabouts && go build -p 2 -trimpath \
    -ldflags "-s -w -X ${pkg}.Version=${VERSION} -X ${pkg}.ReleaseStatus=released" \
    -o "${outdir}.tmp/whereabouts" "${MODULE}/cmd") >&2
  echo "$VERSION" >"${outdir}.tmp/version"
  chmod -R a+rX,u+w "${outdir}.tmp"
  mv "${outdir}.tmp" "$outdir"
  echo "built whereabouts in $(( $(date +%s) - start ))s: $(du -h "${outdir}/whereabouts" | cut -f1)" >&2
  # Keep the two most recent builds.
  ls -dt "${cache}/whereabouts"/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
}

mkdir -p "${cache}/whereabouts"
exec 9>"${cache}/whereabouts/build.lock"
flock 9
if [ ! -x "${outdir}/whereabouts" ]; then
  rm -rf "${outdir}.tmp"
  build_whereabouts
fi
echo "$outdir"
