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
        assert chaos.injected > 20
        ranks = sorted(labels(p)["valet.dev/rank"] for p in await workers(c))
        assert ranks == ["0", "1"]
