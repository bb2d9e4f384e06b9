#!/usr/bin/env bash
# Creates a kind cluster, builds the sluice image, loads it into the cluster and installs
# sluice with the Helm chart (INSTALL=manifests: with manifests/ instead).
# Needs: docker, kind, kubectl, and helm unless INSTALL=manifests. See docs/install.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
CLUSTER=${CLUSTER:-sluice}
IMAGE=${IMAGE:-sluice:dev}
INSTALL=${INSTALL:-helm}

kind get clusters | grep -qx "$CLUSTER" ||
    kind create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml --wait 120s
docker build -t "$IMAGE" .
kind load docker-image "$IMAGE" --name "$CLUSTER"

if [ "$INSTALL" = manifests ]; then
    kubectl apply -f manifests/
    # the image just loaded, and the NodePort that kind maps to localhost:8080
    kubectl -n sluice set image deployment/sluice-controller \
        admin-token="$IMAGE" sluice="$IMAGE" watcher="$IMAGE"
    kubectl -n sluice patch service sluice-controller --type merge -p \
        '{"spec":{"type":"NodePort","ports":[{"name":"http","port":80,"targetPort":"http","nodePort":30080},{"name":"https","port":443,"targetPort":"https","nodePort":30443}]}}'
    kubectl -n sluice rollout status deployment/sluice-controller --timeout 180s
else
    helm upgrade --install sluice charts/sluice --namespace sluice --create-namespace \
        --set controller.image.image="${IMAGE%%:*}" --set controller.image.tag="${IMAGE##*:}" \
        --set controller.replicaCount=2 \
        --set controller.service.type=NodePort --set controller.service.nodePorts.http=30080 \
        --set controller.service.nodePorts.https=30443 \
        --wait --timeout 180s
fi
kubectl -n sluice get pods -o wide
