#!/usr/bin/env bash
# Runs the integration scenarios (tests/integration) against a real cluster instead of the
# emulator: the CRDs are installed, simulated GPU nodes and the operator run from here.
#   VALET_E2E_KUBECONFIG=~/.kube/config e2e/run-scenarios.sh [pytest args]
# The cluster needs no GPUs. Use a throw-away cluster: the scenarios create and fault nodes.
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
exec .venv/bin/pytest tests/integration -m "not emulator_only" "$@"
