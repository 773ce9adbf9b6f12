"""``kubectl valet`` (valet.kubectl) against the real operator and simulated nodes, on the
emulator and on a real API server (the ``backend`` fixture): status, why, a planned drain
and return, and a fault drill."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import pytest
import yaml

from tests.integration.harness import Backend, Cluster, cluster, fast_options, state_of
from valet import kubectl
from valet.k8s.client import core_path


async def setup(c: Cluster, pool: dict[str, Any]) -> None:
    await c.namespace(c.train)
    await c.namespace(c.batch)
    await c.start_operator(fast_options())
    await c.apply(pool)


async def valet(c: Cluster, capsys: pytest.CaptureFixture[str], *args: str, rc: int = 0) -> str:
    """Run ``kubectl valet ARGS`` with this cluster's kubeconfig: its stdout (its stderr when
    ``rc`` is not 0). The operator logs to this process's stdout, so the command writes to
    a buffer of its own."""
    capsys.readouterr()
    out = io.StringIO()
    code = await kubectl.main_async(["--kubeconfig", c.kubeconfig, *args], stdout=out)
    err = capsys.readouterr().err
    assert code == rc, err
    return out.getvalue() if rc == 0 else err


async def valet_json(c: Cluster, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    return json.loads(await valet(c, capsys, *args, "-o", "json"))


async def workers(c: Cluster) -> list[dict[str, Any]]:
    pods = await c.pods(c.train, "valet.dev/job=llm")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def running(c: Cluster, ready: int = 2) -> dict[str, Any] | None:
    status = (await c.job()).get("status") or {}
    ok = status.get("phase") == "Running" and status.get("readyReplicas") == ready
    return status if ok else None


async def test_why_explains_a_pending_job_and_status_shows_pool_and_job(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=1, shards=None))

        async def spare_held() -> bool:
            return ((await c.pool()).get("status") or {}).get("spares") == 1

        await c.until(spare_held, what="one spare held")
        # Two whole nodes wanted, one in service: the other is the healing buffer.
        await c.apply(c.training_job(replicas=2, min_replicas=2))

        async def pending() -> bool:
            return ((await c.job()).get("status") or {}).get("phase") == "Pending"

        await c.until(pending, what="job Pending")
        why = await valet_json(c, capsys, "why", "llm", "-n", c.train)
        assert why["phase"] == "Pending"
        sentence = why["why"]
        assert sentence.startswith(f"{c.train}/llm is Pending: ")
        assert f"pool {c.pool_name}" in sentence and "at least 2" in sentence
        text = await valet(c, capsys, "-n", c.train, "why", "llm")
        assert "is Pending" in text

        data = await valet_json(c, capsys, "status", "--pool", c.pool_name)
        (pool,) = data["pools"]
        assert pool["name"] == c.pool_name
        assert (pool["spares"], pool["sparesTarget"]) == (1, 1)
        assert pool["nodes"] == {"active": 1, "spare": 1} and not pool["breakerOpen"]
        (job,) = data["jobs"]
        assert (job["name"], job["phase"], job["desired"]) == ("llm", "Pending", 2)
        table = await valet(c, capsys, "status", "--pool", c.pool_name)
        assert c.pool_name in table and "Pending" in table and "1/1" in table
        assert yaml.safe_load(await valet(c, capsys, "status", "--pool", c.pool_name, "-o", "yaml"))

        missing = await valet(c, capsys, "why", "nope", "-n", c.train, rc=1)
        assert "not found" in missing


async def test_planned_drain_moves_the_worker_without_a_fault_and_return_brings_it_back(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, shards=None, notice=1))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: running(c), what="job Running")
        nodes = [await c.node(n) for n in c.nodes]
        (spare,) = [n["metadata"]["name"] for n in nodes if state_of(n) == "spare"]
        target = (await workers(c))[0]["spec"]["nodeName"]

        out = await valet(c, capsys, "drain", target, "--reason", "BIOS update")
        assert f"node/{target} marked for maintenance" in out

        async def moved() -> list[str] | None:
            placed = sorted(w["spec"].get("nodeName") or "" for w in await workers(c))
            done = len(placed) == 2 and target not in placed and "" not in placed
            return placed if done else None

        placed = await c.until(moved, what="the worker moved off the drained node")
        assert spare in placed
        status = await c.until(lambda: running(c), what="job Running again")
        assert status["swaps"] == 0 and "lastHeal" not in status  # not a heal

        node = await c.node(target)
        assert state_of(node) == "maintenance" and node["spec"].get("unschedulable")
        annotations = node["metadata"].get("annotations") or {}
        assert "valet.dev/fault-history" not in annotations  # no fault recorded
        assert "valet.dev/remediation" not in annotations
        events = await c.items(core_path("events", c.train))
        assert any(e["reason"] == "PlannedSwap" for e in events)

        data = await valet_json(c, capsys, "status", "--pool", c.pool_name)
        (held,) = [n for n in data["unhealthyNodes"] if n["name"] == target]
        assert held["state"] == "maintenance" and held["reason"] == "maintenance: BIOS update"

        async def counted() -> bool:
            pool = (await valet_json(c, capsys, "status", "--pool", c.pool_name))["pools"][0]
            return pool["nodes"].get("maintenance") == 1

        await c.until(counted, what="the pool counting the node in maintenance")
        # Held: several passes later it is still out of the pool, and still empty.
        await asyncio.sleep(1.5)
        node = await c.node(target)
        assert state_of(node) == "maintenance"
        assert all(w["spec"].get("nodeName") != target for w in await workers(c))

        out = await valet(c, capsys, "return", target)
        assert "returned" in out

        async def back() -> bool:
            n = await c.node(target)
            return state_of(n) in ("spare", "active") and not n["spec"].get("unschedulable")

        await c.until(back, what="the node back in the pool")
        annotations = (await c.node(target))["metadata"].get("annotations") or {}
        assert "valet.dev/maintenance" not in annotations
        assert "valet.dev/fault-history" not in annotations
        assert ((await c.job()).get("status") or {}).get("swaps") == 0
        again = await valet(c, capsys, "return", target, rc=1)
        assert "not in maintenance" in again


async def test_fault_drill_drains_a_simulated_node(
    backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))

        async def adopted() -> bool:
            return state_of(await c.node(c.nodes[0])) == "active"

        await c.until(adopted, what="node adopted")
        data = await valet_json(c, capsys, "fault", c.nodes[0], "--xid", "79", "--gpu", "1")
        assert data["faults"] == [{"gpu": 1, "xid": 79}]

        async def drained() -> bool:
            node = await c.node(c.nodes[0])
            history = (node["metadata"].get("annotations") or {}).get("valet.dev/fault-history")
            return bool(history) and state_of(node) != "active"

        await c.until(drained, what="the faulted node drained, its fault recorded")
        # The plain entry point (a fresh event loop, as kubectl runs it).
        code = await asyncio.to_thread(
            kubectl.main, ["--kubeconfig", c.kubeconfig, "status", "--pool", c.pool_name]
        )
        assert code == 0
        assert c.pool_name in capsys.readouterr().out
