#!/usr/bin/env bash
# Builds Kiln's own container image with Kiln, from Debian packages only:
#   1. tools/make-debian-base.sh: a debootstrap base as an OCI layout
#      (out/image/base; cached: reruns skip it)
#   2. tools/stage-kiln.mjs: the built bundle (out/image/context/kiln)
#   3. bin/kiln build -f deploy/image/Dockerfile with the base as the named
#      context kiln-debian-base, exported twice in one build:
#        out/image/kiln-oci/      an OCI image layout (tag = the image name)
#        out/image/kiln-docker.tar a docker tarball (`docker load -i`)
#
#   tools/image.sh [--tag NAME] [--load]
#
# --tag: the image name (default kiln:dev, as deploy/compose expects).
# --load: `docker load` the tarball into the dockerd of DOCKER_HOST.
# Needs root (debootstrap, and the all-in-one daemon kiln starts runs runc)
# and a built tree (npm run build).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=kiln:dev
load=false
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=${2:?--tag needs a value}; shift 2 ;;
    --tag=*) tag=${1#--tag=}; shift ;;
    --load) load=true; shift ;;
    *) echo "usage: tools/image.sh [--tag NAME] [--load]" >&2; exit 2 ;;
  esac
done
out=out/image
start=$(date +%s)

bash tools/make-debian-base.sh "$out/base"
node tools/stage-kiln.mjs "$out/context/kiln"

# A daemon of this tree's build on a fresh state root, stopped (and its root
# removed) at the end. Fresh on purpose: after a daemon restart the worker
# no longer knows which snapshot came from which base blob or step, so a
# cached build would export one whole-tree layer instead of the base's blob
# plus one layer per step (ARCHITECTURE, "Layers").
daemon_root=$PWD/$out/daemon
export KILN_ADDR=unix://$daemon_root/kiln.sock
rm -rf "$daemon_root"
mkdir -p "$daemon_root"
bin/kilnd --root "$daemon_root" --addr "$KILN_ADDR" > "$daemon_root/kilnd.log" 2>&1 &
daemon=$!
trap 'kill "$daemon" 2>/dev/null; wait "$daemon" 2>/dev/null; rm -rf "$daemon_root" 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  bin/kiln workers > /dev/null 2>&1 && break
  kill -0 "$daemon" 2>/dev/null || { tail -n 20 "$daemon_root/kilnd.log" >&2; echo "image: kilnd did not start" >&2; exit 1; }
  sleep 0.3
done

rm -rf "$out/kiln-oci"
build_start=$(date +%s)
bin/kiln build --progress=plain \
  -f deploy/image/Dockerfile \
  --build-context kiln-debian-base=oci-layout://"$PWD/$out/base:latest" \
  -o type=oci,tar=false,dest="$out/kiln-oci",name="$tag" \
  -o type=docker,dest="$out/kiln-docker.tar",name="$tag" \
  "$out/context"
end=$(date +%s)

# Summary, and a check that the base's layer went in as Debian's blob, unchanged.
manifest=$(node -e '
  const fs = require("fs");
  const read = (dir, d) => JSON.parse(fs.readFileSync(dir + "/blobs/" + d.digest.replace(":", "/"), "utf8"));
  const manifestOf = (dir) => {
    const index = JSON.parse(fs.readFileSync(dir + "/index.json", "utf8"));
    const m = read(dir, index.manifests[0]);
    return { digest: index.manifests[0].digest, m: m.manifests ? read(dir, m.manifests[0]) : m };
  };
  const image = manifestOf(process.argv[1]), base = manifestOf(process.argv[2]);
  if (image.m.layers[0].digest !== base.m.layers[0].digest) {
    console.error(`image: the first layer ${image.m.layers[0].digest} is not the base blob ${base.m.layers[0].digest}`);
    process.exit(1);
  }
  const size = image.m.layers.reduce((n, l) => n + l.size, 0);
  console.log(`${image.digest} layers=${image.m.layers.length} (base blob + ${image.m.layers.length - 1}) compressed=${(size / 1048576).toFixed(1)} MiB`);
' "$out/kiln-oci" "$out/base")
echo
echo "== image $tag: $manifest"
echo "   $out/kiln-oci (OCI layout), $out/kiln-docker.tar ($(du -h "$out/kiln-docker.tar" | cut -f1))"
echo "   kiln build: $((end - build_start)) s; all steps: $((end - start)) s"

if $load; then
  docker load -i "$out/kiln-docker.tar"
  docker image ls "$tag"
fi
