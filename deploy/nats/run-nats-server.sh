#!/bin/sh
# Starts nats-server with deploy/nats/nats-server.conf from files in one
# directory (the one tools/make-nats-secrets.sh fills), so that no password
# is ever in a unit file, a compose file or a pod spec:
#   DIR/ca.pem DIR/nats-server.pem DIR/nats-server-key.pem
#   DIR/{solver,frontend,exporters,content,worker}.password
#
#   run-nats-server.sh [NATS-SERVER ARGS]...
#
# KILN_NATS_SECRETS is DIR (default /etc/kiln/nats); KILN_NATS_CONF the
# config (default nats-server.conf next to this script). Extra arguments go to
# nats-server (e.g. --jetstream --store_dir /data -a 127.0.0.1 -p 4222).
set -eu
here=$(dirname "$(readlink -f "$0")")
dir=${KILN_NATS_SECRETS:-/etc/kiln/nats}
conf=${KILN_NATS_CONF:-$here/nats-server.conf}
for f in ca.pem nats-server.pem nats-server-key.pem; do
  [ -r "$dir/$f" ] || { echo "run-nats-server: $dir/$f is missing (tools/make-nats-secrets.sh $dir)" >&2; exit 1; }
done
export KILN_NATS_TLS_CA="$dir/ca.pem" KILN_NATS_TLS_CERT="$dir/nats-server.pem" KILN_NATS_TLS_KEY="$dir/nats-server-key.pem"
for user in solver frontend exporters content worker; do
  [ -r "$dir/$user.password" ] || { echo "run-nats-server: $dir/$user.password is missing (tools/make-nats-secrets.sh $dir)" >&2; exit 1; }
  var=KILN_NATS_$(echo "$user" | tr a-z A-Z)_PASSWORD
  export "$var=$(cat "$dir/$user.password")"
done
exec nats-server -c "$conf" "$@"
