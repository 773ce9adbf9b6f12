"""Robustness: the operator killed at random points of a swap, and a flaky API server."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest

from tests.emulator.server import Chaos
from tests.integration.harness import (
    EMULATOR,
    Backend,
    Cluster,
    cluster,
    fast_options,
    labels,
    state_of,
)
from tests.integration.test_scenarios import phase_is, setup, workers
from valet.k8s import errors
from valet.k8s.client import Api

TRIALS = 20


async def _converged(c: Cluster, healthy: list[str]) -> dict[str, Any] | None:
    """Two workers, one per healthy node and rank, the job Running with its swap counted."""
    status = (await c.job()).get("status") or {}
    if status.get("phase") != "Running" or status.get("swaps") != 1:
        return None
    pods = await c.pods(c.train)
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    nodes = sorted(p["spec"].get("nodeName") or "" for p in live)
    ranks = sorted(labels(p)["valet.dev/rank"] for p in live)
    if nodes != sorted(healthy) or ranks != ["0", "1"]:
        return None
    return status


@pytest.mark.parametrize("seed", range(TRIALS))
async def test_operator_killed_during_a_swap_converges_without_duplicates(
    backend: Backend, seed: int
) -> None:
    rng = random.Random(seed)
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, gpus_per_pod=2, shards=24, notice=1))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        failed = (await workers(c))[0]["spec"]["nodeName"]
        await c.annotate_node(failed, {"valet.dev/sim-lemon": "true"})  # it stays out
        await c.fault(failed, gpu=1, xid=79)
        # Kill the operator somewhere between seeing the fault and finishing the swap.
        await asyncio.sleep(rng.uniform(0.0, 1.5))
        await c.stop_operator(graceful=False)
        await asyncio.sleep(rng.uniform(0.0, 0.5))
        await c.start_operator(fast_options())
        healthy = [n for n in c.nodes if n != failed]
        await c.until(lambda: _converged(c, healthy), timeout=30, what="converged after restart")
        # Every shard is done, running or pending exactly once.
        status = (await c.pool()).get("status") or {}
        shards = status["shards"][0]
        assert shards["doneCount"] + shards["running"] + shards["pending"] == 24
        spot = [p for p in await c.pods(c.batch) if not p["metadata"].get("deletionTimestamp")]
        running = Counter(labels(p)["valet.dev/shard"] for p in spot)
        assert all(n == 1 for n in running.values()), running


async def test_a_swap_whose_status_write_never_landed_is_counted_after_a_restart(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator stopped between binding a replacement and writing the job's status (the
    kills above found it under load): the new operator counts the swap from the pod, once."""
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, gpus_per_pod=2, shards=None, notice=1))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        binds = _lose_job_status_writes(c, monkeypatch)
        failed = (await workers(c))[0]["spec"]["nodeName"]
        await c.annotate_node(failed, {"valet.dev/sim-lemon": "true"})  # it stays out
        await c.fault(failed, gpu=1, xid=79)
        healthy = [n for n in c.nodes if n != failed]

        async def replacement_bound() -> bool:
            return sorted(p["spec"].get("nodeName") or "" for p in await workers(c)) == healthy

        await c.until(replacement_bound, what="the replacement bound to the spare")
        await c.stop_operator(graceful=False)
        monkeypatch.undo()
        assert binds, "the replacement was bound by a Binding, which stamps the pod"
        assert (await c.job())["status"].get("swaps", 0) == 0
        await c.start_operator(fast_options())
        status = await c.until(lambda: _converged(c, healthy), what="the swap counted")
        assert status["lastHeal"]["failedNode"] == failed


def _lose_job_status_writes(c: Cluster, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on the job's status writes fail, as if the operator stopped before each;
    returns the Bindings the operator posts meanwhile."""
    binds: list[str] = []
    call = Api.call

    async def losing(self: Api, method: str, path: str, *args: Any, **kw: Any) -> Any:
        if method == "PATCH" and path.endswith("/status") and "/trainingjobs/" in path:
            raise errors.TransientError(503, "ServiceUnavailable", "lost", method, path)
        if method == "POST" and path.endswith("/binding") and c.train in path:
            binds.append(path)
        return await call(self, method, path, *args, **kw)

    monkeypatch.setattr(Api, "call", losing)
    return binds


@pytest.mark.emulator_only  # a real API server cannot be made to fail 10% of requests
async def test_a_flaky_api_server_still_converges() -> None:
    chaos = Chaos(rate=0.10, seed=7)
    async with cluster(EMULATOR, 4, chaos=chaos) as c:
        await setup(c, c.spot_pool(spares=1, gpus_per_pod=2, shards=40, notice=1))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), timeout=60, what="job Running")
        failed = (await workers(c))[0]["spec"]["nodeName"]
        await c.fault(failed, gpu=0, xid=79)

        async def healed() -> bool:
            status = (await c.job()).get("status") or {}
            node = await c.node(failed)
            return (
                status.get("swaps") == 1
                and status.get("phase") == "Running"
                and state_of(node) in ("spare", "active")
            )

        await c.until(healed, timeout=60, what="swap and heal under 10% API errors")
        # The heal went through API errors: 19 to 38 of them across runs (how many requests
        # a run makes depends on timing), so the bound sits well below the fewest seen.
        assert chaos.injected >= 10
        ranks = sorted(labels(p)["valet.dev/rank"] for p in await workers(c))
        assert ranks == ["0", "1"]
