#!/usr/bin/env bash
# Builds the OCI image archives of spiderpool-rs from release binaries, offline: no registry, no
# base image, nothing pulled. Each image holds static (musl) binaries and the few files they need.
#
#   config/images/build.sh BIN_DIR OUT_DIR VERSION
#
# BIN_DIR holds spiderpool-controller-manager, spiderpool-installer, spiderpool, ifacer and
# coordinator. Writes OUT_DIR/spiderpool-<name>-VERSION.oci.tar for each image and prints each
# archive's path on its own line (stdout carries nothing else). The archives are OCI image layouts
# whose index names the image (io.containerd.image.name), so `ctr -n k8s.io images import FILE`
# gives them the names config/default expects:
#   ghcr.io/spiderpool-rs/spiderpool-controller-manager:VERSION
#   ghcr.io/spiderpool-rs/spiderpool-installer:VERSION
# Reproducible: every timestamp is SOURCE_DATE_EPOCH (default: the last commit's time), so the same
# binaries give byte-identical archives.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 BIN_DIR OUT_DIR VERSION" >&2; exit 2; }
bin_dir=$(cd "$1" && pwd)
mkdir -p "$2"
out_dir=$(cd "$2" && pwd)
version=$3
repository=ghcr.io/spiderpool-rs
command -v umoci >/dev/null || { echo "umoci is needed (Debian package umoci)" >&2; exit 1; }
here=$(cd "$(dirname "$0")" && pwd)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
work=$(mktemp -d "${TMPDIR:-/tmp}/spiderpool-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# image NAME USER ENTRYPOINT FILE:DEST...
image() {
  local name=$1 user=$2 entrypoint=$3
  shift 3
  local layout="$work/$name" bundle="$work/$name-bundle"
  umoci init --layout "$layout" >&2
  umoci new --image "$layout:$version" >&2
  umoci unpack --rootless --image "$layout:$version" "$bundle" >&2
  local rootfs="$bundle/rootfs"
  mkdir -p "$rootfs/etc" "$rootfs/usr/bin" "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  # Enough for a process to have a name for its user (the controller-manager runs as 65532).
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' >"$rootfs/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
  local pair
  for pair in "$@"; do
    install -D -m 0755 "$bin_dir/${pair%%:*}" "$rootfs/${pair#*:}"
  done
  find "$rootfs" -exec touch -h -d "@$epoch" {} +
  umoci repack --image "$layout:$version" --history.created "$created" \
    --history.created_by "config/images/build.sh" "$bundle" >&2
  umoci config --image "$layout:$version" --created "$created" --author spiderpool-rs \
    --no-history --config.user "$user" --config.entrypoint "$entrypoint" --config.workingdir / \
    --config.label "org.opencontainers.image.source=https://github.com/spiderpool-rs/spiderpool-rs" \
    --config.label "org.opencontainers.image.version=$version" >&2
  umoci gc --layout "$layout" >&2
  # Name the image in the index too, so containerd's import needs no --base-name.
  local reference="$repository/$name:$version"
  sed -i "s#\"org.opencontainers.image.ref.name\":\"$version\"#\"io.containerd.image.name\":\"$reference\",\"org.opencontainers.image.ref.name\":\"$version\"#" "$layout/index.json"
  grep -q "io.containerd.image.name" "$layout/index.json" || { echo "could not name $reference in index.json" >&2; exit 1; }
  local archive="$out_dir/$name-$version.oci.tar"
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner \
    -C "$layout" -cf "$archive.tmp" oci-layout index.json blobs
  mv "$archive.tmp" "$archive"
  echo "$archive"
}

image spiderpool-controller-manager 65532:65532 /usr/bin/spiderpool-controller-manager \
  spiderpool-controller-manager:usr/bin/spiderpool-controller-manager
image spiderpool-installer 0:0 /usr/bin/spiderpool-installer \
  spiderpool-installer:usr/bin/spiderpool-installer \
  spiderpool:usr/lib/spiderpool/cni/spiderpool \
  ifacer:usr/lib/spiderpool/cni/ifacer \
  coordinator:usr/lib/spiderpool/cni/coordinator
