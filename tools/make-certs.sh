#!/bin/sh
# Makes a cluster CA and one certificate per tier role for Kiln's mutual TLS.
#
#   tools/make-certs.sh DIR [NAME[:ROLE]]...
#
# DIR gets ca.pem/ca-key.pem (made once, reused on later runs) and, per
# NAME, NAME.pem and NAME-key.pem. ROLE defaults to NAME; it is one of
# solver frontend worker content exporters client, and goes into the
# certificate as the SAN URI kiln://tier/ROLE, which is what the tiers check.
# With no NAME, one certificate per role is made.
# KILN_CERT_SANS adds SANs to every certificate (e.g. "DNS:build1.lan,IP:10.0.0.5");
# 127.0.0.1 and localhost are always included.
# KILN_CERT_DAYS sets the validity (default 365).
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [NAME[:ROLE]]..." >&2; exit 2; }
dir=$1
shift
[ $# -gt 0 ] || set -- solver frontend worker content exporters client
days=${KILN_CERT_DAYS:-365}
mkdir -p "$dir"
umask 077
if [ ! -f "$dir/ca.pem" ]; then
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/ca-key.pem" -out "$dir/ca.pem" -days "$((days * 10))" -subj "/CN=kiln cluster CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi
for spec in "$@"; do
  name=${spec%%:*}
  role=${spec#*:}
  case $role in
    solver|frontend|worker|content|exporters|client) ;;
    *) echo "$0: unknown role \"$role\" in \"$spec\" (one of solver frontend worker content exporters client)" >&2; exit 2 ;;
  esac
  ext="$dir/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    echo "subjectAltName=URI:kiln://tier/$role,DNS:localhost,IP:127.0.0.1${KILN_CERT_SANS:+,$KILN_CERT_SANS}"
  } > "$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$dir/$name-key.pem" -out "$dir/$name.csr" -subj "/CN=kiln $name" 2>/dev/null
  openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca-key.pem" -CAcreateserial \
    -days "$days" -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
  rm -f "$dir/$name.csr" "$ext"
  echo "$dir/$name.pem (kiln://tier/$role)"
done
