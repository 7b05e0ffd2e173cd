#!/usr/bin/env bash
# Makes the certificates of mTLS between Temporal's frontend and every process of the compose
# file (README.md, "Deploy"): run it once before the first `docker compose up`.
#
#   deploy/temporal/make-certs.sh [DIR]        (default: deploy/temporal/certs)
#
# DIR/ca/ca.key, ca.pem   the private CA (its key is never mounted into a container)
# DIR/server/             ca.pem, cluster.pem, cluster.key: the Temporal server's certificate for
#                         `temporal` (its frontend and its internode traffic; serverAuth and
#                         clientAuth, since its services also call each other)
# DIR/client/             ca.pem, client.pem, client.key: the one client certificate of the api,
#                         the workers, the set-up jobs and the Web UI (clientAuth)
#
# X.509 v3 certificates (rustls, in the SDK's core, refuses v1), P-256 keys, valid CERT_DAYS
# (default 825) days. Existing files are kept: delete DIR to issue new ones. The keys in server/
# and client/ are readable by all (0644) because the containers read them as their own users
# (uid 1000 in Temporal's images, 10001 in ours); keep DIR on a host no one else logs in to, or
# chown the keys to those uids and make them 0600.
set -euo pipefail

DIR=${1:-$(dirname "$0")/certs}
DAYS=${CERT_DAYS:-825}
SERVER_NAMES=${TEMPORAL_CERT_NAMES:-DNS:temporal,DNS:localhost,IP:127.0.0.1}

if [ -e "$DIR/client/client.pem" ]; then
    echo "$DIR already holds certificates; delete it to issue new ones" >&2
    exit 0
fi
command -v openssl >/dev/null || { echo "error: openssl is needed" >&2; exit 1; }
mkdir -p "$DIR/ca" "$DIR/server" "$DIR/client"
chmod 700 "$DIR/ca"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

key() {  # key <file>: a new P-256 private key (PKCS#8)
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
}

key "$DIR/ca/ca.key"
chmod 600 "$DIR/ca/ca.key"
openssl req -x509 -new -key "$DIR/ca/ca.key" -sha256 -days "$DAYS" \
    -subj "/CN=campaign-engine Temporal CA" \
    -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$DIR/ca/ca.pem"

issue() {  # issue <dir> <name> <subject CN> <extensions>
    local dir=$1 name=$2 cn=$3 extensions=$4
    key "$dir/$name.key"
    openssl req -new -key "$dir/$name.key" -subj "/CN=$cn" -out "$work/$name.csr"
    printf '%b\n' "$extensions" > "$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA "$DIR/ca/ca.pem" -CAkey "$DIR/ca/ca.key" \
        -CAcreateserial -CAserial "$work/ca.srl" -sha256 -days "$DAYS" \
        -extfile "$work/$name.ext" -out "$dir/$name.pem" 2>/dev/null
    chmod 644 "$dir/$name.key" "$dir/$name.pem"
}

issue "$DIR/server" cluster temporal "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=$SERVER_NAMES"
issue "$DIR/client" client campaign-engine "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
cp "$DIR/ca/ca.pem" "$DIR/server/ca.pem"
cp "$DIR/ca/ca.pem" "$DIR/client/ca.pem"
chmod 644 "$DIR/server/ca.pem" "$DIR/client/ca.pem"
chmod 755 "$DIR/server" "$DIR/client"
echo "certificates written under $DIR (server/ for Temporal, client/ for everything else)"
