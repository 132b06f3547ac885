#!/usr/bin/env bash
# Makes the base of Kiln's own image from Debian packages only: debootstrap
# (minbase) of Debian 13 "trixie" with Node.js 20 (Kiln needs >= 20.19;
# Debian 12 ships 18), runc, nats-server, tini and what a worker runs
# (mount, tar, zstd, git), packed with umoci as an OCI image layout tagged
# `latest`. Debian 13 matches the host's glibc well enough for the native
# module the bundle carries (better-sqlite3, built by `npm install` on a
# Debian 12 host: glibc 2.36 <= 2.41).
#
#   tools/make-debian-base.sh OUT_DIR
#
# OUT_DIR/index.json is reused as long as the suite, mirror and package list
# are the same (a stamp next to it); .debs are kept in out/image/debs, so a
# rebuild after a change downloads only what changed.
# KILN_DEBIAN_MIRROR overrides the mirror (default: the first
# deb.debian.org/debian URI in /etc/apt/sources.list*, else deb.debian.org).
set -euo pipefail
dest=${1:?usage: make-debian-base.sh OUT_DIR}
suite=${KILN_DEBIAN_SUITE:-trixie}
packages=nodejs,runc,nats-server,tini,ca-certificates,mount,tar,zstd,git,openssh-client
mirror=${KILN_DEBIAN_MIRROR:-$(grep -rhoE 'https?://[^ ]+/debian/?$' /etc/apt/sources.list /etc/apt/sources.list.d 2>/dev/null | head -n1 || true)}
mirror=${mirror:-http://deb.debian.org/debian}
stamp="suite=$suite mirror=$mirror packages=$packages v=1"
if [ -f "$dest/index.json" ] && [ "$(cat "$dest.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "make-debian-base: $dest is up to date ($suite: $packages)"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "make-debian-base: debootstrap needs root" >&2; exit 1; }
for tool in debootstrap umoci; do
  if ! command -v "$tool" >/dev/null; then
    echo "make-debian-base: installing Debian's $tool"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$tool" >/dev/null
  fi
done

debs=$(dirname "$dest")/debs
mkdir -p "$debs" "$(dirname "$dest")"
work=$(mktemp -d "$(dirname "$dest")/.base-XXXXXX")
cleanup() {
  # debootstrap mounts /proc and /sys in the target while it configures packages.
  for m in proc sys dev/pts dev; do umount -l "$work/rootfs/$m" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

echo "make-debian-base: debootstrap $suite from $mirror (+ $packages)"
start=$(date +%s)
debootstrap --variant=minbase --include="$packages" --cache-dir="$(readlink -f "$debs")" \
  "$suite" "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  echo "make-debian-base: debootstrap failed (log above)" >&2
  exit 1
}
echo "make-debian-base: debootstrap took $(( $(date +%s) - start )) s"

root=$work/rootfs
# What an image does not need: package lists and caches (apt works again
# after `apt-get update`), logs, docs (copyright files stay), man pages, and
# device nodes (the runtime makes /dev).
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
  "$root"/var/log/* "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/var/cache/debconf/*-old \
  "$root"/dev/* "$root"/proc/* "$root"/sys/* "$root"/tmp/* "$root"/run/*
find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
node_version=$(chroot "$root" node --version)
echo "make-debian-base: node $node_version, runc $(chroot "$root" runc --version | head -n1 | awk '{print $3}'), nats-server $(chroot "$root" nats-server --version | awk '{print $NF}')"

umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:latest" >/dev/null
umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
rmdir "$work/bundle/rootfs"
mv "$root" "$work/bundle/rootfs"
umoci repack --image "$work/oci:latest" "$work/bundle" >/dev/null
umoci config --image "$work/oci:latest" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.cmd /bin/sh --config.label "org.opencontainers.image.base.name=debian:$suite (debootstrap minbase)" >/dev/null
umoci gc --layout "$work/oci" >/dev/null
rm -rf "$dest"
mv "$work/oci" "$dest"
echo "$stamp" > "$dest.stamp"
echo "make-debian-base: $dest ($(du -sh "$dest" | cut -f1), $(( $(date +%s) - start )) s)"
