#!/usr/bin/env bash
# Runs the integration scenarios (tests/integration) against a real cluster: the `real`
# run of every scenario uses VALET_E2E_KUBECONFIG instead of envtest.
#   VALET_E2E_KUBECONFIG=~/.kube/config e2e/run-scenarios.sh [pytest args]
# The cluster needs no GPUs. Each scenario works in names of its own (namespaces
# train-<id>/batch-<id>, nodes gpu-<id>-NNN, SpotPool pool-<id>) and deletes them at its
# end; CRDs and PriorityClasses the run installed are removed at the end of the run, so
# the cluster is left as it was found. Still, prefer a throw-away cluster: the scenarios
# create and fault simulated nodes, and the operator they start reconciles cluster-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VALET_E2E_KUBECONFIG:-}" ]]; then
  echo "e2e: set VALET_E2E_KUBECONFIG to the kubeconfig of a throw-away cluster" >&2
  exit 2
fi
if [[ ! -r "$VALET_E2E_KUBECONFIG" ]]; then
  echo "e2e: cannot read $VALET_E2E_KUBECONFIG" >&2
  exit 2
fi
make install >/dev/null
exec .venv/bin/pytest tests/integration -m "not emulator_only" -k "real" "$@"
