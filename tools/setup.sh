#!/usr/bin/env bash
# Installs everything Kiln needs on a fresh Debian 12 machine (as root) and
# builds it. Idempotent: a second run installs nothing and rebuilds only what
# changed (Nx cache).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(runc nats-server docker-registry skopeo umoci busybox-static containerd docker.io iproute2 tar zstd attr git openssh-client)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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

echo "setup: building"
NX_DAEMON=false NX_NO_CLOUD=true npx nx run-many -t build --output-style=static >/tmp/kiln-build.log 2>&1 || { cat /tmp/kiln-build.log; exit 1; }
echo "setup: done"
