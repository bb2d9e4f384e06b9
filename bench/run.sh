#!/usr/bin/env bash
# sluice bench: side-by-side benchmark of sluice, nginx, HAProxy and h2o (SPEC §10).
# `make bench` runs this after building. Method, knobs and output: bench/README.md.
#
#   bench/run.sh                                  everything (about 5 minutes)
#   BENCH_ONLY=nginx,haproxy bench/run.sh         only some proxies (also: h2o, sluice, direct)
#   BENCH_SCENARIOS=h1 BENCH_DURATION=5 bench/run.sh
#   SLUICE_BENCH_BIN=build/tools/sl-forward       sluice program (default), or a full template:
#   SLUICE_BENCH_CMD='build/sluice -c x.yaml --port {port} --up {upstream_port}'
#   SLUICE_BENCH_H2_CMD='... {port} {upstream_port} {cert} {key}'   (default: sl-forward with
#                                                   --tls-cert {cert} --tls-key {key} --h2)
#   BENCH_SCENARIOS=tls bench/run.sh              TLS handshakes/s only (sl-tlsload; the gateway
#   SLUICE_BENCH_TLS_CMD='other/sluice -c {conf}'  build/sluice with bench/conf/sluice-tls.yaml)
#   BENCH_GATEWAY=0                               skip the gateway part (bench/lib/gateway.py)
#   BENCH_SCENARIOS=tcp bench/run.sh              only the layer-4 scenario (bench/lib/tcp.py:
#   BENCH_TCP=0                                   sluice protocol: tcp vs HAProxy/nginx); skip it
#
# Writes only under build/bench/. Every process it starts is stopped on exit, failure or Ctrl-C.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
[ -x "$PY" ] || PY=$(command -v python3)
OUT="$ROOT/build/bench"
mkdir -p "$OUT"

cleanup() {
    # bench.py stops what it started; this catches whatever is left if it was killed hard.
    "$PY" "$ROOT/bench/lib/bench.py" --cleanup || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 10,000 idle connections need that many descriptors in the proxy and in the client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
export PYTHONIOENCODING=utf-8 PYTHONDONTWRITEBYTECODE=1

cd "$ROOT"
if [ "${BENCH_SCENARIOS:-}" = tcp ]; then
    "$PY" "$ROOT/bench/lib/tcp.py"
    exit $?
fi
"$PY" "$ROOT/bench/lib/bench.py" &
child=$!
# Wait in a loop: `wait` returns early when a trapped signal arrives; pass it on and keep
# waiting so the child's own cleanup finishes before ours.
trap 'kill -INT $child 2>/dev/null' INT
trap 'kill -TERM $child 2>/dev/null' TERM
rc=0
while :; do
    wait "$child"; rc=$?
    kill -0 "$child" 2>/dev/null || break
done
# The gateway's own figures (cost over the engine, router scaling, reconfiguration).
if [ "$rc" -eq 0 ] && [ "${BENCH_GATEWAY:-1}" = 1 ]; then
    "$PY" "$ROOT/bench/lib/gateway.py" || rc=1
fi
# Layer 4: sluice `protocol: tcp` against HAProxy `mode tcp` and nginx `stream {}`.
if [ "$rc" -eq 0 ] && [ "${BENCH_TCP:-1}" = 1 ]; then
    "$PY" "$ROOT/bench/lib/tcp.py" || rc=1
fi
exit "$rc"
