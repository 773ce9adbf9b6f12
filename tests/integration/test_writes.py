"""What the operator writes: one request for a pod placed on free GPUs, and nothing at all
when a restarted operator (upgrade, eviction, leader hand-over) adopts a running fleet."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

from tests.integration.harness import FAST_SIM, Backend, Cluster, cluster, fast_options
from tests.integration.test_scenarios import phase_is, setup
from valet.handlers.operator import NODE_LEASES, Operator
from valet.k8s.client import Api, core_path


async def quiet(c: Cluster) -> bool:
    """The operator has settled: the job's workers run and its last pass had nothing to do."""
    assert c.operator is not None
    reconciler = c.operator.reconciler
    status = await phase_is(c, "Running")
    ready = status is not None and status.get("readyReplicas") == 2
    return ready and reconciler.passes > 2 and not reconciler.last_plan


def record_writes(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every write the operator's client sends from now on about this test's objects, as
    "METHOD path" (earlier tests' namespaces may still be terminating on a real server, and
    the operator rightly cleans up after their jobs)."""
    writes: list[str] = []
    call = Api.call

    async def recording(self: Api, method: str, path: str, *args: Any, **kw: Any) -> Any:
        ours = c.scope.id in path or c.scope.id in json.dumps(args[:1], default=str)
        if method != "GET" and ours and self.api_client.user_agent.startswith("valet-operator"):
            writes.append(f"{method} {path}")
        return await call(self, method, path, *args, **kw)

    monkeypatch.setattr(Api, "call", recording)
    return writes


async def test_workers_placed_on_free_gpus_are_created_on_their_nodes_in_one_write(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        writes = record_writes(c, monkeypatch)
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        pods = [w for w in writes if w.startswith("POST") and "/pods" in w]
        assert pods == [f"POST {core_path('pods', c.train)}"] * 2
        workers = await c.pods(c.train)
        assert sorted(w["spec"]["nodeName"] for w in workers) == sorted(c.nodes)


async def test_a_restarted_operator_adopts_a_steady_fleet_without_writing(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Kubelets renew their Lease every 0.5 s but post Ready only every 6 s, longer than the
    # 3 s grace (a real kubelet: 10 s and 5 min): the new operator must judge by the Leases.
    sim = dataclasses.replace(FAST_SIM, probe_seconds=6.0, lease_seconds=0.5)
    async with cluster(backend, 4, sim=sim) as c:
        await setup(c, c.spot_pool(spares=1, shards=None, gpus_per_pod=2), node_grace_seconds=3.0)
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: quiet(c), what="job Running and the pool packed")
        spot_pods = {p["metadata"]["name"] for p in await c.pods(c.batch)}
        assert spot_pods and c.operator is not None
        options = c.operator.options
        await c.stop_operator()

        writes = record_writes(c, monkeypatch)
        operator = await c.start_operator(options)
        await c.until(lambda: quiet(c), what="the new operator settled")
        assert operator.reconciler.passes > 2
        assert writes == [], "\n".join(writes)
        assert {p["metadata"]["name"] for p in await c.pods(c.batch)} == spot_pods
        assert await c.items(core_path("services", c.train))


async def test_the_first_pass_has_every_kubelet_lease(backend: Backend) -> None:
    """The first pass may run before any watch event: the start-up listing carries the
    Leases, or nodes whose Ready heartbeat is older than the grace look dead (a restart
    at 1,000 nodes drained 300 live ones in the scale benchmark)."""
    async with cluster(backend, 3) as c:
        await c.until(lambda: all_leases(c), what="every node's Lease")
        operator = Operator(fast_options(), api=c.api)
        await operator.initial_sync()  # what start() does before the reconciler runs
        assert set(c.nodes) <= set(operator.cache.leases)
        view = operator.cache.view()
        assert all(view.kubelet_heartbeat(view.nodes[n]) == view.leases[n] for n in c.nodes)


async def all_leases(c: Cluster) -> bool:
    leases = await c.items(NODE_LEASES)
    return set(c.nodes) <= {lease["metadata"]["name"] for lease in leases}
