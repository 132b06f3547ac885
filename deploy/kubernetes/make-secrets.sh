#!/bin/sh
# Prints the Secrets deploy/kubernetes mounts, as YAML for `kubectl apply -f -`:
#   kiln-tls-<role>   ca.pem, tier.pem, tier-key.pem      (mTLS between tiers; roles solver
#                                                           frontend exporters content worker)
#   kiln-nats-<user>  ca.pem, client.pem, client-key.pem, password   (the tier's NATS login)
#   kiln-nats-server  ca.pem, nats-server.pem, nats-server-key.pem, <user>.password
# from certificates and passwords made (once, then reused) under DIR with
# tools/make-certs.sh and tools/make-nats-secrets.sh. The CLI's certificate
# stays in DIR/tls (client.pem, client-key.pem): it is no cluster Secret.
#
#   deploy/kubernetes/make-secrets.sh DIR [NAMESPACE] | kubectl apply -f -
set -eu
[ $# -ge 1 ] && [ $# -le 2 ] || { echo "usage: $0 DIR [NAMESPACE]" >&2; exit 2; }
dir=$1
ns=${2:-kiln}
repo=$(dirname "$(readlink -f "$0")")/../..
"$repo/tools/make-certs.sh" "$dir/tls" solver frontend exporters content worker client > /dev/null
KILN_NATS_SANS="DNS:nats,DNS:nats.$ns,DNS:nats.$ns.svc,DNS:nats.$ns.svc.cluster.local" \
  sh "$repo/tools/make-nats-secrets.sh" "$dir/nats" > /dev/null

secret() { # NAME KEY=FILE...
  name=$1
  shift
  printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\ntype: Opaque\ndata:\n' "$name" "$ns"
  for kv in "$@"; do printf '  %s: %s\n' "${kv%%=*}" "$(base64 -w0 < "${kv#*=}")"; done
}
n=$dir/nats
for role in solver frontend exporters content worker; do
  secret "kiln-tls-$role" ca.pem="$dir/tls/ca.pem" tier.pem="$dir/tls/$role.pem" tier-key.pem="$dir/tls/$role-key.pem"
  secret "kiln-nats-$role" ca.pem="$n/ca.pem" client.pem="$n/nats-client.pem" client-key.pem="$n/nats-client-key.pem" password="$n/$role.password"
done
secret kiln-nats-server ca.pem="$n/ca.pem" nats-server.pem="$n/nats-server.pem" nats-server-key.pem="$n/nats-server-key.pem" \
  solver.password="$n/solver.password" frontend.password="$n/frontend.password" exporters.password="$n/exporters.password" \
  content.password="$n/content.password" worker.password="$n/worker.password"
