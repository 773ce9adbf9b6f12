"""Hot spares end to end: with a 60 s spot notice, a failure takes the hot spare at once;
a burst beyond the hot spares still gives every spot pod its notice."""

from __future__ import annotations

import statistics
import time
from typing import Any

from tests.integration.harness import Backend, Cluster, cluster, state_of
from tests.integration.test_scenarios import phase_is, setup, workers
from valet.k8s.client import core_path

FAULTS = 20


async def _hot_spare(c: Cluster) -> str | None:
    """A spare with no spot pod on it (its GPUs are free now)."""
    spot = await c.pods(c.batch)
    used = {p["spec"].get("nodeName") for p in spot}
    for name in c.nodes:
        if state_of(await c.node(name)) == "spare" and name not in used:
            return name
    return None


async def _running_elsewhere(c: Cluster, swaps: int, gone: str) -> bool:
    status = (await c.job()).get("status") or {}
    pods = await workers(c)
    running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
    return (
        status.get("swaps") == swaps
        and len(running) == 2
        and all(p["spec"]["nodeName"] != gone for p in running)
    )


async def test_a_single_fault_heals_in_seconds_despite_a_60s_notice(backend: Backend) -> None:
    async with cluster(backend, 4) as c:
        # Every node fails in turn, several times within the breaker's and the lemon
        # rule's windows: this test is about the swaps, so neither may step in.
        pool = c.spot_pool(
            spares=2,
            hot=1,
            gpus_per_pod=2,
            notice=60,
            shards=None,
            breaker_percent=100,
            lemon_failures=FAULTS + 1,
        )
        workloads = pool["spec"].pop("workloads")
        await setup(c, pool)  # the job first, so that it waits no notice to start
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.apply({**pool, "spec": {**pool["spec"], "workloads": workloads}})
        seconds: list[float] = []
        for swap in range(1, FAULTS + 1):
            await c.until(lambda: _hot_spare(c), timeout=60, what="a hot spare")
            victim = (await workers(c))[0]["spec"]["nodeName"]
            injected = time.monotonic()
            await c.fault(victim, gpu=swap % 8, xid=79)
            await c.until(
                lambda s=swap, v=victim: _running_elsewhere(c, s, v),
                timeout=30,
                what=f"fault {swap}: replacement Running",
            )
            seconds.append(time.monotonic() - injected)

            async def timed(v: str = victim) -> dict[str, Any] | None:
                heal = ((await c.job()).get("status") or {}).get("lastHeal") or {}
                ok = heal.get("failedNode") == v and "secondsToRunning" in heal
                return heal if ok else None

            heal = await c.until(timed, what=f"fault {swap}: lastHeal timed to Running")
            assert heal["seconds"] <= heal["secondsToRunning"] < 10, heal  # this heal's own

            async def returned(v: str = victim) -> bool:
                return state_of(await c.node(v)) in ("spare", "active")

            await c.until(returned, timeout=60, what=f"fault {swap}: {victim} healed")
        seconds.sort()
        p50, p99 = statistics.median(seconds), seconds[-1]
        print(f"\n{backend.name}: injection → Running over {FAULTS} faults: "
              f"p50 {p50:.2f}s, p99 {p99:.2f}s")  # fmt: skip
        assert p50 < 2.0, seconds
        # Nothing spot was evicted for a swap: only to keep a spare hot.
        events = await c.items(core_path("events", c.batch))
        assert not [e for e in events if "a replacement worker" in e.get("message", "")]


async def test_a_burst_beyond_the_hot_spares_honours_every_notice(backend: Backend) -> None:
    notice = 5
    async with cluster(backend, 4) as c:
        await setup(c, c.spot_pool(spares=2, hot=1, gpus_per_pod=2, notice=notice, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.until(lambda: _hot_spare(c), what="a hot spare")

        async def packed_spare() -> bool:
            spot = await c.pods(c.batch)
            return len(spot) == 4  # the other spare is full: 4 pods of 2 GPUs

        await c.until(packed_spare, what="the cold spare packed")
        doomed = sorted(p["spec"]["nodeName"] for p in await workers(c))
        faulted = time.monotonic()
        for node in doomed:
            await c.fault(node, gpu=0, xid=79)

        async def both_replaced() -> dict[str, Any] | None:
            status = (await c.job()).get("status") or {}
            pods = await workers(c)
            running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            ok = status.get("swaps") == 2 and len(running) == 2
            return (
                status
                if ok and not {p["spec"]["nodeName"] for p in running} & set(doomed)
                else None
            )

        await c.until(both_replaced, timeout=notice + 30, what="both workers replaced")
        assert time.monotonic() - faulted >= notice  # the second waited out the notice
        events = await c.items(core_path("events", c.batch))
        told = [e for e in events if e["reason"] in ("SpotPreempted", "HotSpare")]
        assert len(told) == 4 and all(f"with {notice}s notice" in e["message"] for e in told)
