#!/usr/bin/env bash
# `make run`: the demo (SPEC §8) in the foreground until Ctrl-C: demo upstreams on loopback
# (answering like the lab's blue and green), sluice in front of them (HTTP on 8080, HTTPS + h2 on
# 8443 with a self-signed certificate made on first run, admin on 10254), and sluice-watcher
# feeding sluice from the plain Kubernetes manifests in e2e/demo/ (edit them: routing follows).
set -eu
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

# The demo's TLS certificate (localhost, 127.0.0.1), made once.
mkdir -p build/demo
if [ ! -s build/demo/cert.pem ] || [ ! -s build/demo/key.pem ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout build/demo/key.pem -out build/demo/cert.pem 2>/dev/null
fi

$PY lab/hosts/http_echo.py --listen 127.0.0.1:18081 --text "'Response from BLUE'" --quiet &
pids+=($!)
$PY lab/hosts/http_echo.py --listen 127.0.0.1:18082 --text "'Response from GREEN'" --quiet &
pids+=($!)

build/sluice -c proxy/gateway/demo.yaml &
sluice_pid=$!
pids+=($sluice_pid)
for _ in $(seq 100); do
    curl -s -o /dev/null http://127.0.0.1:10254/healthz && break
    sleep 0.05
done
build/sluice-watcher --source files --manifests e2e/demo/ \
    --push http://127.0.0.1:10254/config --healthz-listen 127.0.0.1:10255 &
pids+=($!)

cat <<'TXT'

  sluice demo — routes come from the Kubernetes manifests in e2e/demo/ — try:
    curl http://127.0.0.1:8080/blue                         # 'Response from BLUE'
    curl http://127.0.0.1:8080/green                        # 'Response from GREEN'
    for i in 1 2 3 4; do curl -s http://127.0.0.1:8080/; done   # blue, green, blue, green
    curl -H 'Host: green.localhost' http://127.0.0.1:8080/  # 'Response from GREEN'
    curl --cacert build/demo/cert.pem https://localhost:8443/blue   # the same over TLS (HTTP/2)
    curl --http2-prior-knowledge http://127.0.0.1:8080/blue # h2c
    curl http://127.0.0.1:10254/config                      # what sluice-watcher pushed
    curl http://127.0.0.1:10254/metrics                     # Prometheus metrics
    curl http://127.0.0.1:10255/healthz                     # the watcher: ok once synced
  Edit e2e/demo/ingress.yaml or services.yaml (a path, an EndpointSlice port, ready: false):
  the routing changes live. Ctrl-C stops everything.

TXT
wait "$sluice_pid"
