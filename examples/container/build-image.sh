#!/usr/bin/env bash
# The container image weir:dev without a Docker engine (`just image`): an OCI
# image layout built with umoci from a Debian bookworm rootfs (debootstrap, cached),
# the host built with the dist profile, the example plugins and weir.toml, and the
# same configuration as examples/container/Dockerfile (user 10001, /data, port 9464,
# SIGTERM). Writes TARGET/image/oci (OCI layout, tag dev) and TARGET/image/weir-dev.tar
# (a docker-archive: `docker load -i` it where Docker runs).
#
#   build-image.sh TARGET_DIR
set -euo pipefail
target=${1:?usage: build-image.sh TARGET_DIR}
root=$(cd "$(dirname "$0")/../.." && pwd)
cache="$HOME/.cache/weir/image"
base="$cache/rootfs-bookworm"
work="$target/image"
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"

need=()
for tool in umoci skopeo debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if [ ${#need[@]} -gt 0 ]; then
  echo "Installing ${need[*]} (Debian packages) to build the image without a Docker engine. One-time, about 30 s."
  $sudo apt-get install -y -qq "${need[@]}" >/dev/null 2>&1 \
    || { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}" >/dev/null; }
fi

if [ ! -x "$base/bin/sh" ]; then
  echo "Building the base: a Debian bookworm rootfs from debootstrap into $base (one-time, about 30 s)..."
  $sudo rm -rf "$base.partial"
  mkdir -p "$cache"
  $sudo debootstrap --variant=minbase bookworm "$base.partial" http://deb.debian.org/debian >"$cache/debootstrap.log" 2>&1 \
    || { tail -5 "$cache/debootstrap.log"; exit 1; }
  # Documentation, locales and package caches are not needed to run weir.
  $sudo rm -rf "$base.partial"/usr/share/{doc,man,info,locale}/* "$base.partial"/var/cache/apt/* "$base.partial"/var/lib/apt/lists/*
  $sudo mv "$base.partial" "$base"
fi

$sudo rm -rf "$work"
mkdir -p "$work"
umoci init --layout "$work/oci"
umoci new --image "$work/oci:dev"
$sudo umoci unpack --image "$work/oci:dev" "$work/bundle" >/dev/null
rootfs="$work/bundle/rootfs"
$sudo cp -a "$base/." "$rootfs/"
$sudo chroot "$rootfs" useradd --system --uid 10001 --user-group --home-dir /data --shell /usr/sbin/nologin weir 2>/dev/null
$sudo mkdir -p "$rootfs/data" "$rootfs/plugins" "$rootfs/etc/weir"
$sudo install -m 0755 "$target/dist/weir" "$rootfs/usr/local/bin/weir"
$sudo install -m 0644 "$root/examples/container/weir.toml" "$rootfs/etc/weir/weir.toml"
$sudo cp "$root"/examples/plugins/*.wasm "$root"/examples/plugins/*.toml "$rootfs/plugins/"
$sudo chown -R 10001:10001 "$rootfs/data" "$rootfs/plugins"
$sudo umoci repack --image "$work/oci:dev" "$work/bundle" >/dev/null
umoci config --image "$work/oci:dev" \
  --author "weir" \
  --config.user 10001:10001 \
  --config.workingdir /data \
  --config.volume /data \
  --config.exposedports 9464/tcp \
  --config.stopsignal SIGTERM \
  --config.entrypoint /usr/local/bin/weir \
  --config.cmd run --config.cmd --config --config.cmd /etc/weir/weir.toml \
  --config.cmd --log-format --config.cmd json
umoci gc --layout "$work/oci"
$sudo rm -rf "$work/bundle"
skopeo copy -q "oci:$work/oci:dev" "docker-archive:$work/weir-dev.tar:weir:dev"
echo "image weir:dev: OCI layout $work/oci (tag dev), $(du -sb "$work/oci/blobs" | cut -f1) bytes of blobs; docker-archive $work/weir-dev.tar ($(stat -c %s "$work/weir-dev.tar") bytes)"
