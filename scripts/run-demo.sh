#!/usr/bin/env bash
# `make run`: the demo (SPEC §8) in the foreground until Ctrl-C: demo upstreams on loopback
# (answering like the lab's blue and green) and sluice in front of them.
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

$PY lab/hosts/http_echo.py --listen 127.0.0.1:18081 --text "'Response from BLUE'" --quiet &
pids+=($!)
$PY lab/hosts/http_echo.py --listen 127.0.0.1:18082 --text "'Response from GREEN'" --quiet &
pids+=($!)

cat <<'TXT'

  sluice demo — try:
    curl http://127.0.0.1:8080/blue                 # 'Response from BLUE'
    curl http://127.0.0.1:8080/green                # 'Response from GREEN'
    for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done   # blue 3 : green 1
    curl http://127.0.0.1:10254/config              # the running config (admin API)
    curl http://127.0.0.1:10254/metrics             # Prometheus metrics
    curl -X PUT --data '{"upstreams":{"g":{"backends":["127.0.0.1:18082"]}},
         "routes":[{"match":{"path":"/"},"upstream":"g"}]}' http://127.0.0.1:10254/config
  Ctrl-C stops everything.

TXT
build/sluice -c proxy/gateway/demo.yaml &
pids+=($!)
wait "${pids[-1]}"
