#!/usr/bin/env bash
# OCI worker vs containerd worker vs dockerd's BuildKit on the shared benchmark, in one run
# (issue 14's table). Needs ../shared/bench beside the repo and a built checkout (tools/setup.sh).
#   bash tools/bench-workers.sh [-n N] [-s scenarios]      (default: -n 5 -s parallel-stages,many-layers)
# The `kiln` adapter is the default daemon (OCI worker); the `custom` adapter drives a second
# daemon started here with `--worker containerd` on a private containerd (own socket, root,
# state dir), both fed from the kiln adapter's registry. Results: bench/results/workers/.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
BENCH=$REPO/../shared/bench
[ -d "$BENCH" ] || { echo "bench-workers: $BENCH is missing (put ../shared beside the clone)" >&2; exit 2; }
N=5 SCEN=parallel-stages,many-layers
while [ $# -gt 0 ]; do case $1 in -n) N=$2; shift 2;; -s) SCEN=$2; shift 2;; *) echo "bench-workers: unknown flag $1" >&2; exit 2;; esac; done

D=/tmp/kiln-bench-containerd
mkdir -p "$D"
CTRD_SOCK=$D/containerd.sock
KILN_SOCK=$D/kiln.sock
cleanup() {
  [ -f "$D/kilnd.pid" ] && kill "$(cat "$D/kilnd.pid")" 2>/dev/null || true
  sleep 1
  [ -f "$D/containerd.pid" ] && kill "$(cat "$D/containerd.pid")" 2>/dev/null || true
}
trap cleanup EXIT

cat > "$D/containerd.toml" <<TOML
version = 2
root = "$D/ctrd-root"
state = "$D/ctrd-state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
TOML
setsid containerd --config "$D/containerd.toml" > "$D/containerd.log" 2>&1 < /dev/null &
echo $! > "$D/containerd.pid"
for _ in $(seq 100); do [ -S "$CTRD_SOCK" ] && break; sleep 0.1; done

setsid "$REPO/bin/kiln" daemon --root "$D/kiln-root" --addr "unix://$KILN_SOCK" --worker containerd --containerd-address "$CTRD_SOCK" > "$D/kilnd.log" 2>&1 < /dev/null &
echo $! > "$D/kilnd.pid"
for _ in $(seq 200); do KILN_ADDR=unix://$KILN_SOCK "$REPO/bin/kiln" workers > /dev/null 2>&1 && break; sleep 0.1; done
KILN_ADDR=unix://$KILN_SOCK "$REPO/bin/kiln" workers

K="KILN_ADDR=unix://$KILN_SOCK $REPO/bin/kiln"
export CUSTOM_BUILD="$K build --progress=plain -f \"\$2\" -t \"\$3\" \"\$1\""
export CUSTOM_BUILD_EXPORT="$K build --progress=plain -f \"\$2\" -t \"\$3\" -o type=oci,dest=\"\$4\" \"\$1\""
export CUSTOM_CLEAN="$K prune -f --all > /dev/null"
export CUSTOM_BASE_REF="127.0.0.1:${KILN_REG_PORT:-5055}/busybox:local"
export CUSTOM_VERSION="kiln $(git rev-parse --short HEAD) --worker containerd ($(containerd --version | awk '{print $3}'))"
export KILN_MAIN=$REPO
# kiln first: its adapter_check starts the registry the containerd daemon pulls the base from.
bash "$BENCH/run.sh" -a kiln,custom,docker-buildkit -s "$SCEN" -n "$N" --results "$REPO/bench/results/workers"
