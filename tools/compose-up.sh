#!/usr/bin/env bash
# Starts deploy/compose (NATS and every tier from the image Kiln builds of
# itself) with Debian's docker-compose, runs builds through it with the
# client certificate, shows the output, and tears it down (volumes too).
#
#   tools/compose-up.sh [--keep]
#
# --keep: leave the cluster (and a dockerd this script started) running.
# The docker daemon: DOCKER_HOST's if it answers; else a private dockerd
# (Debian's docker.io) with its data under out/compose/docker, no bridge and
# no iptables (every service uses the host's network, on 127.0.0.1), stopped
# at the end. The image: out/image/kiln-docker.tar, built by tools/image.sh
# when missing. Ports: free ones, picked at start (KILN_*_PORT to fix them).
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = --keep ] && keep=true
out=$PWD/out/compose
mkdir -p "$out"
export KILN_COMPOSE_SECRETS=$PWD/deploy/compose/secrets
project=kiln-compose

if ! command -v docker-compose > /dev/null; then
  echo "compose-up: installing Debian's docker-compose"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose > /dev/null
fi
[ -f out/image/kiln-docker.tar ] || bash tools/image.sh
bash tools/make-base-image.sh out/base/busybox

dockerd_pid=
cleanup() {
  status=$?
  if ! $keep || [ $status -ne 0 ]; then
    if [ $status -ne 0 ] && [ -n "${compose_started:-}" ]; then
      echo "== compose-up failed; service logs (last lines):"
      compose logs --no-color --tail=25 2>&1 || true
    fi
    if [ -n "${compose_started:-}" ]; then
      compose down -v --timeout 20 2>&1 | sed 's/^/compose: /' || true
    fi
    if [ -n "$dockerd_pid" ]; then
      kill "$dockerd_pid" 2>/dev/null || true
      wait "$dockerd_pid" 2>/dev/null || true
    fi
  fi
  exit $status
}
trap cleanup EXIT

if ! docker info > /dev/null 2>&1; then
  echo "compose-up: no docker daemon answers; starting a private dockerd (data in $out/docker)"
  run=/run/kiln-compose-docker
  mkdir -p "$run" "$out/docker"
  echo '{}' > "$run/daemon.json"
  dockerd --host="unix://$run/docker.sock" --data-root="$out/docker" --exec-root="$run/exec" \
    --pidfile="$run/docker.pid" --config-file="$run/daemon.json" --bridge=none --iptables=false \
    --ip6tables=false --ip-forward=false --ip-masq=false --userland-proxy=false > "$out/dockerd.log" 2>&1 &
  dockerd_pid=$!
  export DOCKER_HOST=unix://$run/docker.sock
  for _ in $(seq 150); do docker info > /dev/null 2>&1 && break; sleep 0.2; done
  docker info > /dev/null 2>&1 || { tail -n 30 "$out/dockerd.log" >&2; echo "compose-up: dockerd did not start" >&2; exit 1; }
fi
echo "compose-up: docker $(docker version --format '{{.Server.Version}}') at ${DOCKER_HOST:-the default socket}; $(docker-compose version --short 2>/dev/null || docker-compose --version)"

load_start=$(date +%s)
docker load -i out/image/kiln-docker.tar
docker image prune -f > /dev/null # the previous kiln:dev, if any
echo "compose-up: image loaded in $(( $(date +%s) - load_start )) s: $(docker image ls --format '{{.Repository}}:{{.Tag}} {{.ID}} {{.Size}}' "${KILN_IMAGE:-kiln:dev}")"

# Certificates for mutual TLS between the tiers and the CLI, and NATS's.
tools/make-certs.sh "$KILN_COMPOSE_SECRETS/tls" solver frontend exporters content worker-oci:worker worker-containerd:worker client > /dev/null
sh tools/make-nats-secrets.sh "$KILN_COMPOSE_SECRETS/nats" > /dev/null

free_port() { node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
for var in KILN_NATS_PORT KILN_SOLVER_PORT KILN_FRONTEND_PORT KILN_EXPORTERS_PORT KILN_WORKER_OCI_PORT KILN_CONTENT_PORT KILN_WORKER_CONTAINERD_PORT; do
  [ -n "${!var:-}" ] || export "$var=$(free_port)"
done

# A host whose own capability bounding set is not full (dockerd inside a
# container) cannot start privileged containers: the workers then get every
# capability it has instead (deploy/compose/compose.unprivileged.yaml).
compose_files=(-f deploy/compose/compose.yaml)
bounding=$(awk '/^CapBnd/ {print $2}' /proc/self/status)
full=$(printf '%x' $(( (1 << ($(cat /proc/sys/kernel/cap_last_cap) + 1)) - 1 )))
if [ "$((16#$bounding))" != "$((16#$full))" ]; then
  echo "compose-up: capability bounding set $bounding is not full ($full): workers run with deploy/compose/compose.unprivileged.yaml"
  compose_files+=(-f deploy/compose/compose.unprivileged.yaml)
fi
compose() { docker-compose -p "$project" "${compose_files[@]}" "$@"; }

up_start=$(date +%s)
compose_started=1
compose up -d 2>&1 | sed 's/^/compose: /'
[ "${PIPESTATUS[0]}" = 0 ] || { echo "compose-up: docker-compose up failed" >&2; exit 1; }

export KILN_ADDR=tcp://127.0.0.1:$KILN_SOLVER_PORT
export KILN_TLS_CACERT=$KILN_COMPOSE_SECRETS/tls/ca.pem KILN_TLS_CERT=$KILN_COMPOSE_SECRETS/tls/client.pem KILN_TLS_KEY=$KILN_COMPOSE_SECRETS/tls/client-key.pem
# Ready when the solver lists both workers.
for _ in $(seq 120); do
  [ "$(bin/kiln workers 2>/dev/null | grep -c '^[^ ]*-' || true)" -ge 2 ] && break
  sleep 0.5
done
echo "compose-up: cluster up in $(( $(date +%s) - up_start )) s"
compose ps
echo
echo "== kiln workers -v (through the solver at $KILN_ADDR, client certificate)"
bin/kiln workers -v

echo
echo "== kiln build examples/busybox-app (RUN steps in runc inside the worker-oci container)"
rm -rf "$out/busybox-app"
build_start=$(date +%s)
bin/kiln build --progress=plain --worker-filter labels.kiln.tier==worker-oci \
  --build-context busybox=oci-layout://"$PWD"/out/base/busybox:latest \
  -o type=local,dest="$out/busybox-app" examples/busybox-app
echo "compose-up: build took $(( $(date +%s) - build_start )) s"
echo "== $out/busybox-app/app/greeting.txt"
cat "$out/busybox-app/app/greeting.txt"

echo
echo "== kiln build examples/hello on worker-containerd (files only: its executor runs no RUN yet)"
rm -rf "$out/hello"
bin/kiln build --progress=plain --worker-filter labels.kiln.tier==worker-containerd -o type=local,dest="$out/hello" examples/hello
cat "$out/hello/hello.txt"

echo
echo "== kiln history ls"
bin/kiln history ls
if $keep; then
  echo "compose-up: left running (--keep): KILN_ADDR=$KILN_ADDR KILN_TLS_CACERT=$KILN_TLS_CACERT KILN_TLS_CERT=$KILN_TLS_CERT KILN_TLS_KEY=$KILN_TLS_KEY${dockerd_pid:+ DOCKER_HOST=$DOCKER_HOST}"
fi
