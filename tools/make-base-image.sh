#!/usr/bin/env bash
# Makes the examples' base image with no internet: an OCI image layout holding
# Debian's busybox-static (the binary, one symlink per applet, root/nobody users),
# tagged `latest`. Usage: make-base-image.sh DIR   (no-op when DIR already holds it)
set -euo pipefail
dest=${1:?usage: make-base-image.sh DIR}
[ -f "$dest/index.json" ] && grep -q '"latest"' "$dest/index.json" && exit 0
busybox=$(command -v busybox || true)
[ -n "$busybox" ] && "$busybox" --list >/dev/null 2>&1 || { echo "make-base-image: busybox-static is not installed" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$work/oci" >/dev/null
umoci new --image "$work/oci:latest" >/dev/null
umoci unpack --image "$work/oci:latest" "$work/bundle" >/dev/null
root=$work/bundle/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/root" "$root/tmp"
chmod 1777 "$root/tmp"; chmod 0700 "$root/root"
cp "$busybox" "$root/bin/busybox"
for applet in $("$root/bin/busybox" --list); do [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"; done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
umoci repack --image "$work/oci:latest" "$work/bundle" >/dev/null
umoci config --image "$work/oci:latest" --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin --config.cmd /bin/sh >/dev/null
umoci gc --layout "$work/oci" >/dev/null
mkdir -p "$(dirname "$dest")"
rm -rf "$dest"
mv "$work/oci" "$dest"
