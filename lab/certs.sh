#!/bin/bash
# lab/certs.sh [OUTDIR]: make the lab's certificates (the guide's
# scripts/00-setup-certs.sh, LAB.md §1.6), by default in build/lab/keys.
#
#   ca.crt/.key         Pingora Root CA (RSA 2048, sha256, 3650 days)
#   server.crt/.key     *.pingora.local, dev.pingora.local, localhost, 127.0.0.1, 172.28.0.10
#   server-ec.crt/.key  the same names on an ECDSA P-256 key (TLS benchmarks)
#   upstream.crt/.key   advanced.pingora.local, *.api.pingora.local, 172.28.0.22 (nginx)
#   client.crt/.key     CN=PingoraClient, for mTLS to nginx :8443
#   grpc.crt/.key       grpc.pingora.local, 172.28.0.23
#
# As in the guide, a step is skipped when its .crt exists, so this is idempotent;
# if the CA itself is (re)made, every leaf is re-signed so they never disagree.
# Beyond the guide, each leaf states its use (serverAuth or clientAuth), which
# strict TLS stacks check. Quiet unless something fails.
set -eu

OUT=${1:-$(cd "$(dirname "$0")/.." && pwd)/build/lab/keys}
mkdir -p "$OUT"
cd "$OUT"

LOG=$(mktemp)
trap 'rm -f "$LOG" ./*.csr ./*.ext' EXIT

# run CMD...: keep openssl's chatter out of sight unless it fails.
run() {
    if ! "$@" >>"$LOG" 2>&1; then
        echo "certs.sh: failed: $*" >&2
        cat "$LOG" >&2
        exit 1
    fi
}

# The Docker variant of the lab runs the dev host as uid 1000 with these files
# mounted read-only, so the keys must be readable by others. They are test keys.
readable() { chmod 0644 "$@"; }

# leaf NAME KEYTYPE SUBJECT USAGE [SAN]: make NAME.key and a CSR, then NAME.crt
# signed by the CA (365 days, sha256). The .crt is written last, so its existence
# means the step finished.
leaf() {
    local name=$1 keytype=$2 subj=$3 usage=$4 san=${5:-}
    [ -f "$name.crt" ] && return 0
    case "$keytype" in
    rsa) run openssl genrsa -out "$name.key" 2048 ;;
    ec) run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$name.key" ;;
    esac
    run openssl req -new -key "$name.key" -out "$name.csr" -subj "$subj"
    {
        echo "basicConstraints = CA:FALSE"
        echo "subjectKeyIdentifier = hash"
        echo "authorityKeyIdentifier = keyid,issuer"
        if [ "$keytype" = ec ]; then
            echo "keyUsage = critical, digitalSignature"
        else
            echo "keyUsage = critical, digitalSignature, keyEncipherment"
        fi
        echo "extendedKeyUsage = $usage"
        if [ -n "$san" ]; then echo "subjectAltName = $san"; fi
    } >"$name.ext"
    run openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
        -days 365 -sha256 -extfile "$name.ext" -out "$name.crt.tmp"
    readable "$name.key" "$name.crt.tmp"
    mv "$name.crt.tmp" "$name.crt"
}

# --- 1. Root CA (the trust anchor) ---
if [ ! -f ca.crt ]; then
    run openssl genrsa -out ca.key 2048
    run openssl req -x509 -new -nodes -key ca.key -sha256 -days 3650 -out ca.crt.tmp \
        -subj "/C=US/ST=PingoraCity/O=CityGov/CN=Pingora Root CA"
    rm -f server.crt server-ec.crt upstream.crt client.crt grpc.crt ca.srl
    readable ca.key ca.crt.tmp
    mv ca.crt.tmp ca.crt
fi

SERVER_SAN="DNS:*.pingora.local, DNS:dev.pingora.local, DNS:localhost, IP:127.0.0.1, IP:172.28.0.10"

# --- 2. Server (the proxy's own TLS listeners) ---
leaf server rsa "/C=US/ST=PingoraCity/O=Pingora Proxy/CN=*.pingora.local" serverAuth "$SERVER_SAN"
leaf server-ec ec "/C=US/ST=PingoraCity/O=Pingora Proxy/CN=*.pingora.local" serverAuth "$SERVER_SAN"

# --- 3. Upstream (nginx, advanced.pingora.local; *.api covers v1/v2.api for SNI routing) ---
leaf upstream rsa "/C=US/ST=PingoraCity/O=Upstream Corp/CN=advanced.pingora.local" serverAuth \
    "DNS:advanced.pingora.local, DNS:*.api.pingora.local, IP:172.28.0.22"

# --- 4. Client (mTLS to nginx :8443); no SAN, as in the guide ---
leaf client rsa "/C=US/ST=PingoraCity/O=Pingora Proxy/CN=PingoraClient" clientAuth

# --- 5. gRPC upstream ---
leaf grpc rsa "/C=US/ST=PingoraCity/O=gRPC Services/CN=grpc.pingora.local" serverAuth \
    "DNS:grpc.pingora.local, IP:172.28.0.23"
