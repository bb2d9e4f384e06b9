#!/bin/sh
# Installs the Debian packages sluice needs to build, test, benchmark and run its lab.
# Idempotent: only missing packages are installed, and the script says which.
set -eu

# Build: compiler, libraries (headers from -dev packages), llhttp C sources.
BUILD="build-essential pkg-config libuv1-dev libssl-dev libnghttp2-dev libcurl4-openssl-dev
libcjson-dev libc-ares-dev libyaml-dev node-llhttp libpcre2-dev libcriterion-dev"
# Tests: real peers and the Debian Python used by the e2e suites.
TEST="python3 python3-pytest python3-requests python3-h2 python3-grpcio python3-grpc-tools
python3-websockets python3-kubernetes python3-yaml curl nghttp2-client netcat-openbsd socat
openssl iproute2 procps psmisc nginx-light squid dnsmasq-base prometheus sslscan wrk"
# Quality tools for `make check`.
CHECK="clang-format cppcheck"
# Benchmarks: the peers we compare against.
# libnginx-mod-stream: nginx's stream module, the nginx row of the tcp (layer 4) scenario.
BENCH="haproxy h2o util-linux libnginx-mod-stream"

# `make test` runs the static checks too, so their tools are part of the test set.
want="$BUILD $TEST $CHECK"
case "${1:-}" in
    --all) want="$want $CHECK $BENCH" ;;
    --check) want="$want $CHECK" ;;
    --bench) want="$want $BENCH" ;;
esac

missing=""
for p in $want; do
    st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$st" in
        *"install ok installed"*) ;;
        *) missing="$missing $p" ;;
    esac
done
[ -z "$missing" ] && exit 0

echo "deps: installing:$missing"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q >/dev/null
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
