#!/bin/sh
# Makes what deploy/nats/nats-server.conf needs (README, "NATS with users,
# subject permissions and TLS"), in one directory:
#   ca.pem ca-key.pem                 a NATS CA (made once, reused)
#   nats-server.pem (+ -key.pem)      the server's certificate
#   nats-client.pem (+ -key.pem)      the client certificate tiers show NATS
#   <user>.password                   one per tier user: solver frontend exporters content worker
# Files that exist are kept, so a second run changes nothing.
#
#   tools/make-nats-secrets.sh DIR
#
# KILN_NATS_SANS adds SANs to the server certificate (e.g.
# "DNS:nats,DNS:nats.kiln.svc.cluster.local"); localhost and 127.0.0.1 are
# always in it. deploy/nats/run-nats-server.sh starts the server from DIR.
set -eu
[ $# -eq 1 ] || { echo "usage: $0 DIR" >&2; exit 2; }
dir=$1
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -subj "/CN=kiln NATS CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
fi
issue() { # NAME USAGE SANS
  [ -f "$dir/$1.pem" ] && return 0
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\nsubjectAltName=%s\n' "$2" "$3" > "$dir/$1.ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/$1-key.pem" -out "$dir/$1.csr" -subj "/CN=$1" 2>/dev/null
  openssl x509 -req -in "$dir/$1.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial -days 365 \
    -extfile "$dir/$1.ext" -out "$dir/$1.pem" 2>/dev/null
  rm -f "$dir/$1.csr" "$dir/$1.ext"
  echo "$dir/$1.pem"
}
issue nats-server serverAuth "DNS:localhost,IP:127.0.0.1${KILN_NATS_SANS:+,$KILN_NATS_SANS}"
issue nats-client clientAuth DNS:localhost
# A letter first: nats-server reads the values of its $VARIABLES as config values.
for user in solver frontend exporters content worker; do
  [ -f "$dir/$user.password" ] || echo "k$(openssl rand -hex 24)" > "$dir/$user.password"
done
