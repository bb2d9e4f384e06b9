#!/usr/bin/env bash
# Traffic checks against the cluster made by up.sh: an Ingress becomes routes, endpoints follow
# a scale-up, the leader writes Ingress status, a deleted Ingress answers 404.
set -euo pipefail
cd "$(dirname "$0")"
URL=${URL:-http://localhost:8080}
TLS_PORT=${TLS_PORT:-8443}
NS=sluice-kind-test

# curl until the answer contains $2 (30 s)
expect() {
    local host=$1 want=$2 got=""
    for _ in $(seq 60); do
        got=$(curl -s -H "Host: $host" "$URL/" || true)
        if [[ "$got" == *"$want"* ]]; then
            echo "ok: $host -> $want"
            return 0
        fi
        sleep 0.5
    done
    echo "FAIL: $host: wanted '$want', got '$got'" >&2
    exit 1
}

kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
# a self-signed certificate for blue.kind.test, as a kubernetes.io/tls Secret
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=blue.kind.test -addext subjectAltName=DNS:blue.kind.test \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>/dev/null
kubectl -n "$NS" create secret tls blue-tls --cert "$tmp/cert.pem" --key "$tmp/key.pem" \
    --dry-run=client -o yaml | kubectl apply -f -
kubectl -n "$NS" apply -f app.yaml
kubectl -n "$NS" rollout status deployment/blue --timeout 120s
kubectl -n "$NS" rollout status deployment/green --timeout 120s

expect blue.kind.test "Response from BLUE"
expect green.kind.test "Response from GREEN"

# TLS with the Secret's certificate, by SNI
for _ in $(seq 60); do
    got=$(curl -s --cacert "$tmp/cert.pem" --resolve "blue.kind.test:$TLS_PORT:127.0.0.1" \
        "https://blue.kind.test:$TLS_PORT/" || true)
    [[ "$got" == *"Response from BLUE"* ]] && break
    sleep 0.5
done
[[ "$got" == *"Response from BLUE"* ]] || { echo "FAIL: https: '$got'" >&2; exit 1; }
echo "ok: https://blue.kind.test with the Secret's certificate"

# endpoints follow a scale-up (every answer still right, from 3 pods)
kubectl -n "$NS" scale deployment/blue --replicas 3
kubectl -n "$NS" rollout status deployment/blue --timeout 120s
for _ in $(seq 10); do expect blue.kind.test "Response from BLUE" >/dev/null; done
echo "ok: blue scaled to 3"

# status.loadBalancer written by the leader
for _ in $(seq 60); do
    addr=$(kubectl -n "$NS" get ingress demo -o jsonpath='{.status.loadBalancer.ingress[0].ip}')
    [ -n "$addr" ] && break
    sleep 0.5
done
[ -n "$addr" ] || { echo "FAIL: no Ingress status" >&2; exit 1; }
echo "ok: Ingress status $addr"

# a deleted Ingress answers 404
kubectl -n "$NS" delete ingress demo
for _ in $(seq 60); do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: blue.kind.test" "$URL/" || true)
    [ "$code" = 404 ] && break
    sleep 0.5
done
[ "$code" = 404 ] || { echo "FAIL: $code after deleting the Ingress" >&2; exit 1; }
echo "ok: 404 after the delete"

kubectl delete namespace "$NS" --wait=false
echo "kind test passed"
