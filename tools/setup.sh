#!/usr/bin/env bash
# Installs everything Kiln needs on a fresh Debian 12 machine (as root) and
# builds it. Idempotent: a second run installs nothing and rebuilds only what
# changed (Nx cache).
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server: e2e/src/ssh-git-context.spec.ts runs its own sshd on 127.0.0.1 (never the system service).
# chromium: the dashboard e2e drives it headless over the DevTools protocol (e2e/src/dashboard.spec.ts).
APT_PACKAGES=(runc strace nats-server openssl docker-registry skopeo umoci busybox-static containerd docker.io iproute2 tar zstd attr git qemu-user-static binfmt-support openssh-client openssh-server systemd containernetworking-plugins iptables chromium)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Installing a package must not start its service (openssh-server's sshd on port 22): tests start
  # their own daemons. A policy-rc.d that denies every start, only while we install.
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
fi

# Emulated RUN steps for other architectures (multi-platform builds): the
# kernel runs foreign binaries through qemu-user handlers in binfmt_misc.
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null || true
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 2>/dev/null || echo "setup: qemu-aarch64 not registered in binfmt_misc (emulated e2e skips)"
# An arm64 busybox for the multi-platform e2e's emulated RUN: the .deb only, never installed.
arm64_deb=/var/cache/kiln-test/busybox-static_arm64.deb
if [ ! -f "$arm64_deb" ]; then
  dpkg --add-architecture arm64
  apt-get update -qq
  tmp=$(mktemp -d)
  if (cd "$tmp" && apt-get download -qq busybox-static:arm64); then
    mkdir -p "$(dirname "$arm64_deb")"
    mv "$tmp"/busybox-static_*_arm64.deb "$arm64_deb"
  else
    echo "setup: could not download busybox-static:arm64 (emulated e2e skips)"
  fi
  rm -rf "$tmp"
fi

# npm packages: reinstall only when the lockfile changed since the last install.
stamp=node_modules/.kiln-lock-sha
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: npm install (better-sqlite3 compiles from source: about a minute)"
  # `npm install` with the committed lockfile rather than `npm ci`: the lockfile
  # written here lacks other platforms' optional binaries (buf, rollup), and
  # `npm ci` refuses such a lockfile as out of sync.
  npm install --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

# The examples' base image (busybox from Debian's busybox-static), an OCI layout.
bash tools/make-base-image.sh out/base/busybox

echo "setup: building"
NX_DAEMON=false NX_NO_CLOUD=true npx nx run-many -t build --output-style=static >/tmp/kiln-build.log 2>&1 || { cat /tmp/kiln-build.log; exit 1; }
echo "setup: done"
