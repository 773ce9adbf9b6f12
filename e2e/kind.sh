#!/usr/bin/env bash
# Valet end to end on kind with simulated GPUs:
#   1. create a kind cluster (e2e/kind-config.yaml: one control plane, four workers);
#   2. advertise nvidia.com/gpu: 8 on each worker (a node status patch, as Kubernetes
#      documents for extended resources);
#   3. build the image and load it into the cluster;
#   4. install charts/valet with the simulated agent (e2e/kind-values.yaml);
#   5. smoke: a TrainingJob and a SpotPool on the workers, an XID 79 on a worker's node,
#      the job swapped onto the spare and the node healed, all by the installed operator
#      and agent DaemonSet;
#   6. the integration scenarios CI runs against the emulator (e2e/run-scenarios.sh),
#      with the installed operator scaled to zero so the scenarios' own operator acts.
# Needs docker, kind, kubectl and helm. KEEP_CLUSTER=1 leaves the cluster running.
set -euo pipefail
cd "$(dirname "$0")/.."
CLUSTER=${CLUSTER:-valet}
KUBECONFIG_PATH=${KUBECONFIG_PATH:-$PWD/.e2e-kubeconfig}

missing=()
for tool in docker kind kubectl helm; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "e2e/kind.sh: missing ${missing[*]}; install them (Docker engine, kind >= 0.23, kubectl, helm 3 or 4) or run the same scenarios against the emulator with 'make test'" >&2
  exit 2
fi
if ! docker info >/dev/null 2>&1; then
  echo "e2e/kind.sh: the Docker engine is not reachable ('docker info' failed); start it, or run the scenarios against the emulator with 'make test'" >&2
  exit 2
fi

export KUBECONFIG=$KUBECONFIG_PATH
k() { kubectl --kubeconfig "$KUBECONFIG_PATH" "$@"; }
until_true() {  # until_true SECONDS WHAT COMMAND...: poll a condition, fail with WHAT on timeout
  local deadline=$((SECONDS + $1)) what=$2; shift 2
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then echo "e2e: timed out waiting for $what" >&2; return 1; fi
    sleep 2
  done
  echo "e2e: $what"
}
cleanup() {
  if [[ -z "${KEEP_CLUSTER:-}" ]]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

kind create cluster --name "$CLUSTER" --config e2e/kind-config.yaml --kubeconfig "$KUBECONFIG_PATH" --wait 120s
workers=$(k get nodes -l valet.dev/kind-gpu=true -o name)
for node in $workers; do
  k patch "$node" --subresource=status --type=json \
    -p '[{"op":"add","path":"/status/capacity/nvidia.com~1gpu","value":"8"}]'
done
until_true 60 "8 GPUs advertised on every worker" \
  bash -c "[[ \$(kubectl get nodes -l valet.dev/kind-gpu=true -o jsonpath='{.items[*].status.allocatable.nvidia\.com/gpu}') == '8 8 8 8' ]]"

docker build -t valet:e2e .
kind load docker-image valet:e2e --name "$CLUSTER"
docker pull busybox:1.37 && kind load docker-image busybox:1.37 --name "$CLUSTER"

helm install valet charts/valet --namespace valet-system --create-namespace \
  --values e2e/kind-values.yaml --wait --timeout 5m
k -n valet-system rollout status deploy/valet-operator --timeout=120s
k -n valet-system rollout status ds/valet-agent --timeout=120s
until_true 60 "GPUHealthy=True on every worker" bash -c \
  "[[ \$(kubectl get nodes -l valet.dev/kind-gpu=true -o jsonpath='{.items[*].status.conditions[?(@.type==\"GPUHealthy\")].status}') == 'True True True True' ]]"

# --- smoke: the installed operator and agents heal a job -----------------------------
k apply -f e2e/kind-smoke.yaml
until_true 180 "TrainingJob llm Running" bash -c \
  "[[ \$(kubectl -n smoke-train get tj llm -o jsonpath='{.status.phase}') == Running ]]"
until_true 120 "the spare packed with spot pods" bash -c \
  "(( \$(kubectl get sp kind -o jsonpath='{.status.spotGPUs}') > 0 ))"
victim=$(k -n smoke-train get pods -l valet.dev/job=llm -o jsonpath='{.items[0].spec.nodeName}')
make install >/dev/null
.venv/bin/valet sim --kubeconfig "$KUBECONFIG_PATH" fault "$victim" --gpu 3 --xid 79
until_true 120 "the job swapped off $victim" bash -c \
  "[[ \$(kubectl -n smoke-train get tj llm -o jsonpath='{.status.swaps}') -ge 1 && \$(kubectl -n smoke-train get tj llm -o jsonpath='{.status.phase}') == Running ]]"
until_true 180 "$victim healed and back in the pool" bash -c \
  "[[ \$(kubectl get node $victim -o jsonpath='{.metadata.labels.valet\.dev/state}') =~ ^(spare|active)$ ]]"
k -n smoke-train get tj,pods -o wide
k get sp kind
k delete -f e2e/kind-smoke.yaml --wait=true --timeout=180s

# --- the CI scenarios against this cluster ------------------------------------------
k -n valet-system scale deploy/valet-operator --replicas=0
k -n valet-system rollout status deploy/valet-operator --timeout=60s
VALET_E2E_KUBECONFIG=$KUBECONFIG_PATH e2e/run-scenarios.sh "$@"
