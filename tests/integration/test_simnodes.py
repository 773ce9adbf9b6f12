"""Simulated nodes keep their kubelet Lease fresh on its own period, whatever the probe's."""

from __future__ import annotations

from tests.integration.harness import Backend, cluster
from valet.model.timefmt import from_rfc3339
from valet.simnodes.nodes import SimConfig


async def test_the_lease_is_renewed_on_its_period_even_with_a_slow_probe(backend: Backend) -> None:
    slow_probe = SimConfig(probe_seconds=60, lease_seconds=0.2, startup_seconds=0.2)
    async with cluster(backend, 1, sim=slow_probe) as c:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{c.nodes[0]}"
        first = from_rfc3339((await c.get(path))["spec"]["renewTime"])

        async def renewed_twice() -> bool:
            renewed = from_rfc3339((await c.get(path))["spec"]["renewTime"])
            return renewed >= first + 0.3

        await c.until(renewed_twice, timeout=5, what="the Lease renewed within a probe period")
