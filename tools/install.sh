#!/usr/bin/env bash
# Installs the built Kiln (bin/, the packages' dist/, production
# node_modules, deploy/nats and deploy/systemd) under PREFIX, replacing an
# earlier install in one rename; optionally writes the systemd units.
#
#   tools/install.sh [--prefix DIR] [--systemd DIR]
#
# --prefix: where Kiln goes (default /opt/kiln; the units name this path).
# --systemd: write kilnd.service, kiln-tier@.service and kiln-nats.service
#   to DIR (e.g. /etc/systemd/system), with /opt/kiln replaced by PREFIX.
# Needs a built tree (npm run build) and, where Kiln runs, Node.js >= 20.19
# on PATH, Debian's runc (workers) and nats-server (kiln-nats.service).
set -euo pipefail
cd "$(dirname "$0")/.."
prefix=/opt/kiln
units=
while [ $# -gt 0 ]; do
  case $1 in
    --prefix) prefix=${2:?--prefix needs a directory}; shift 2 ;;
    --prefix=*) prefix=${1#--prefix=}; shift ;;
    --systemd) units=${2:?--systemd needs a directory}; shift 2 ;;
    --systemd=*) units=${1#--systemd=}; shift ;;
    *) echo "usage: tools/install.sh [--prefix DIR] [--systemd DIR]" >&2; exit 2 ;;
  esac
done
case $prefix in /*) ;; *) prefix=$PWD/$prefix ;; esac
prefix=${prefix%/}

# Stage next to the target, then swap: a running kilnd keeps its open files,
# and a failed copy leaves the old install as it was.
staged=$prefix.new.$$
trap 'rm -rf "$staged"' EXIT
node tools/stage-kiln.mjs "$staged" > /dev/null
mkdir -p "$staged/deploy"
cp -r deploy/systemd "$staged/deploy/systemd"
if [ -e "$prefix" ]; then
  mv "$prefix" "$prefix.old.$$"
  mv "$staged" "$prefix"
  rm -rf "$prefix.old.$$"
else
  mkdir -p "$(dirname "$prefix")"
  mv "$staged" "$prefix"
fi
echo "install: Kiln in $prefix ($(du -sh "$prefix" | cut -f1)); $prefix/bin/kiln, $prefix/bin/kilnd"

if [ -n "$units" ]; then
  mkdir -p "$units"
  for unit in deploy/systemd/*.service; do
    sed "s#/opt/kiln#$prefix#g" "$unit" > "$units/$(basename "$unit")"
  done
  echo "install: units in $units: $(cd deploy/systemd && ls ./*.service | xargs -n1 basename | tr '\n' ' ')"
  echo "install: then: systemctl daemon-reload && systemctl enable --now kilnd   (or kiln-nats + kiln-tier@TIER)"
fi

node_ok=$(node -e 'const [a,b]=process.versions.node.split(".").map(Number); console.log(a>20||(a===20&&b>=19))' 2>/dev/null || echo false)
[ "$node_ok" = true ] || echo "install: warning: Kiln needs Node.js >= 20.19 on PATH (found: $(node --version 2>/dev/null || echo none))" >&2
command -v runc > /dev/null || echo "install: warning: runc is not installed (workers run steps with it: apt-get install runc)" >&2
