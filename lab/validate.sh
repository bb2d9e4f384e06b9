#!/bin/bash
# lab/validate.sh: check from inside dev that every lab service answers, by IP
# and by name, as the guide's scripts/validate-dev.sh does (LAB.md §1.7), plus
# the mTLS port, the TLS gRPC port and real gRPC health checks instead of a bare
# TCP connect. Prints OK/FAILED per check; unlike the guide's script it exits 1
# if any check failed. Run by lab/up.sh; safe to run any time the lab is up.
set -eu
# shellcheck source=lab/lib.sh
. "$(dirname "$0")/lib.sh"
require_root

RUN=("$LAB_DIR/run" dev)
# The checks run concurrently (the gRPC ones start a Python interpreter each);
# each writes "RC NAME" to its numbered file, printed in order at the end.
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
n=0

# next_file: set $f to the next result file (no $(...): n must count in this shell).
next_file() { n=$((n + 1)); f=$(printf '%s/%03d' "$OUT" "$n"); }

section() { next_file; echo "- $1" >"$f"; }

check() { # NAME CMD...
    local name=$1
    shift
    next_file
    (
        rc=0
        "$@" >/dev/null 2>"$f.err" || rc=$?
        echo "$rc $name" >"$f"
    ) &
}

check_http() { # NAME URL [CURL ARGS...]
    local name=$1 url=$2
    shift 2
    check "$name ($url)" "${RUN[@]}" curl -s -o /dev/null --fail --max-time 3 "$@" "$url"
}

check_grpc() { # NAME TARGET [CLIENT ARGS...]
    local name=$1 target=$2
    shift 2
    check "$name ($target)" "${RUN[@]}" "$PY" "$LAB_DIR/hosts/grpc_client.py" health "$target" "$@"
}

section "1. Basic upstreams"
check_http "Blue (IP)" http://172.28.0.20:8080
check_http "Blue (DNS)" http://blue.pingora.local:8080
check_http "Green (IP)" http://172.28.0.21:8080
check_http "Green (DNS)" http://green.pingora.local:8080

section "2. Advanced upstream (nginx)"
check_http "HTTP (IP)" http://172.28.0.22
check_http "HTTP (DNS)" http://advanced.pingora.local
check_http "HTTPS (IP)" https://172.28.0.22 -k
check_http "HTTPS (DNS)" https://advanced.pingora.local -k
check_http "H2C (IP)" http://172.28.0.22:8081 --http2-prior-knowledge
check_http "H2C (DNS)" http://advanced.pingora.local:8081 --http2-prior-knowledge
MTLS="--cacert /keys/ca.crt --cert /keys/client.crt --key /keys/client.key"
# shellcheck disable=SC2086 # MTLS is a list of curl arguments
check_http "mTLS (IP)" https://172.28.0.22:8443 $MTLS
# shellcheck disable=SC2086
check_http "mTLS (DNS)" https://advanced.pingora.local:8443 $MTLS

section "3. gRPC upstream (health check)"
check_grpc "gRPC (IP)" 172.28.0.23:9000
check_grpc "gRPC (DNS)" grpc.pingora.local:9000
check_grpc "gRPC TLS (DNS)" grpc.pingora.local:9001 --ca /keys/ca.crt

wait

echo "--- Pingora City validation (from dev) ---"
failed=0
for f in "$OUT"/[0-9][0-9][0-9]; do
    read -r rc name <"$f"
    if [ "$rc" = - ]; then
        echo "--- $name ---"
    elif [ "$rc" -eq 0 ]; then
        echo "Checking $name... OK"
    else
        echo "Checking $name... FAILED ($(tail -n 1 "$f.err"))"
        failed=1
    fi
done
if [ "$failed" -ne 0 ]; then
    echo "--- Validation FAILED (logs in $LAB_RUN) ---"
    exit 1
fi
echo "--- Validation complete: all OK ---"
