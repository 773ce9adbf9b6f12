"""The applier against the API server: writes it answered oddly, and how many it makes.

A bind answered with 504 after the server bound the pod is retried, and the retry gets
409 (already bound). The cache must then hold the pod as bound, or the next pass binds it
again and counts the swap twice (found by the 10%-errors chaos test)."""

from __future__ import annotations

import asyncio
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.emulator.server import Chaos, kubeconfig, serve
from tests.integration.harness import FAST_RETRY, Backend, cluster
from valet.k8s.apply import Applier
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import MERGE, Api, core_path, load_api_client, node_path
from valet.k8s.codec import FAULT_HISTORY
from valet.model import remediation
from valet.model.enums import (
    OUT_OF_SERVICE_TAINT,
    SPARE_TAINT,
    STATE_LABEL,
    EventType,
    NodeState,
    Reason,
    Remediation,
)
from valet.model.plan import (
    BindPod,
    ClearRemediation,
    DeletePod,
    EmitEvent,
    EvictPod,
    Plan,
    RecordFault,
    RequestRemediation,
    SetCordon,
    SetNodeState,
    SetOutOfService,
    SetSpareTaint,
)
from valet.model.timefmt import to_rfc3339


async def test_a_bind_answered_with_a_timeout_leaves_the_pod_bound_in_the_cache() -> None:
    chaos = Chaos(rate=1.0, faults=("timeout-after-work",), only="/binding")
    async with serve(chaos) as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)), retry=FAST_RETRY)
            pod = {
                "metadata": {
                    "name": "llm-w1",
                    "namespace": "default",
                    "labels": {"valet.dev/kind": "worker", "valet.dev/job": "llm"},
                },
                "spec": {"schedulerName": "valet", "containers": [{"name": "c", "image": "x"}]},
            }
            cache = Cache()
            cache.observe(Kind.POD, await api.call("POST", core_path("pods", "default"), pod))
            try:
                result = await Applier(api, cache).apply(
                    Plan((BindPod("default", "llm-w1", "gpu-7"),))
                )
                server = await api.call("GET", core_path("pods", "default", "llm-w1"))
            finally:
                api.close()
    assert chaos.injected >= 1 and not result.failed
    assert server["spec"]["nodeName"] == "gpu-7"
    assert cache.pods["default/llm-w1"].node == "gpu-7"  # no watch ran: the applier said so


async def test_a_name_deleted_twice_then_created_again_is_in_the_cache(backend: Backend) -> None:
    """A worker force-deleted off a dead host, twice (two passes before the watch told the
    first; the second answered 404), then its replacement created under the same name: the
    cache must hold the replacement, or the operator places its rank again and never counts
    the swap (the demo's lemon step on kube-apiserver, about 1 run in 6)."""
    async with cluster(backend, 1) as c:
        await c.namespace(c.train)
        pod = {
            "metadata": {
                "name": "llm-1-0",
                "namespace": c.train,
                "labels": {"valet.dev/kind": "worker", "valet.dev/job": "llm"},
            },
            "spec": {"schedulerName": "valet", "containers": [{"name": "c", "image": "x"}]},
        }
        key, pods = f"{c.train}/llm-1-0", core_path("pods", c.train)
        cache = Cache()
        cache.observe(Kind.POD, await c.api.call("POST", pods, pod))
        assert key in cache.pods
        applier = Applier(c.api, cache)
        delete = Plan((DeletePod(c.train, "llm-1-0", Reason.NODE_DRAINING, force=True),))
        for _ in range(2):
            assert not (await applier.apply(delete)).failed
        assert key not in cache.pods
        cache.observe(Kind.POD, await c.api.call("POST", pods, pod))
        assert key in cache.pods


class CountingApi:
    """The API, counting the writes that succeeded per path; Events wait for ``events``."""

    def __init__(self, api: Api) -> None:
        self.api, self.writes = api, Counter[str]()
        self.calls: list[str] = []  # in the order they were made
        self.events = asyncio.Event()
        self.events.set()

    async def call(self, method: str, path: str, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(path)
        if "/events" in path:
            await self.events.wait()
        answer = await self.api.call(method, path, *args, **kwargs)
        if method != "GET":
            self.writes[path] += 1
        return answer


async def test_a_nodes_marks_of_one_pass_are_one_write(backend: Backend) -> None:
    """A burst moves hundreds of nodes, each with several marks (state, cordon, taints,
    fault history, remediation): each node takes one write, the marks computed in order,
    and what valet does not own (another taint) is kept."""
    async with cluster(backend, 1) as c:
        name = c.nodes[0]
        other = {"key": "example.com/maintenance", "value": "x", "effect": "NoSchedule"}
        await c.api.call(
            "PATCH", node_path(name), {"spec": {"taints": [other]}}, content_type=MERGE
        )
        cache = Cache()
        cache.observe(Kind.NODE, await c.node(name))
        api = CountingApi(c.api)
        applier = Applier(api, cache)  # type: ignore[arg-type]
        fault = 1_790_000_000.0
        drain = Plan(
            (
                RecordFault(name, fault, "xid-79"),
                SetNodeState(name, NodeState.DRAINING, Reason.NODE_DRAINING),
                SetCordon(name, True),
                SetSpareTaint(name, True),
                SetOutOfService(name, True),
                SetSpareTaint(name, False),  # computed after the one before: both taints kept
                RequestRemediation(name, Remediation.REBOOT, 1),
            )
        )
        assert not (await applier.apply(drain)).failed
        assert api.writes == {node_path(name): 1}
        drained = await c.node(name)
        annotations = drained["metadata"]["annotations"]
        assert drained["metadata"]["labels"][STATE_LABEL] == "draining"
        assert drained["spec"]["unschedulable"] is True
        assert [t["key"] for t in drained["spec"]["taints"]] == [other["key"], OUT_OF_SERVICE_TAINT]
        assert to_rfc3339(fault) in annotations[FAULT_HISTORY]
        assert annotations[remediation.REQUEST] == "reboot"

        back = Plan(
            (
                SetNodeState(name, NodeState.SPARE, Reason.NODE_SPARE),
                SetCordon(name, False),
                SetOutOfService(name, False),
                SetSpareTaint(name, True),
                ClearRemediation(name, clear_faults=True),
            )
        )
        assert not (await applier.apply(back)).failed
        assert api.writes == {node_path(name): 2}
        spare = await c.node(name)
        assert spare["metadata"]["labels"][STATE_LABEL] == "spare"
        assert not spare["spec"].get("unschedulable")
        assert [t["key"] for t in spare["spec"]["taints"]] == [other["key"], SPARE_TAINT]
        left = spare["metadata"].get("annotations") or {}
        assert not {remediation.REQUEST, FAULT_HISTORY} & left.keys()


async def test_a_pass_does_not_wait_for_its_events(backend: Backend) -> None:
    """A burst's pass emits hundreds of Events; they are written after it, in the
    background, so the next pass (the next heal) does not wait behind them."""
    async with cluster(backend, 1) as c:
        name = c.nodes[0]
        cache = Cache()
        cache.observe(Kind.NODE, await c.node(name))
        api = CountingApi(c.api)
        api.events.clear()  # the API server takes no Event until the pass is applied
        applier = Applier(api, cache)  # type: ignore[arg-type]
        events = tuple(
            EmitEvent("Node", None, name, EventType.NORMAL, Reason.NODE_DRAINING, f"fault {i}")
            for i in range(12)
        )
        plan = Plan((SetNodeState(name, NodeState.DRAINING, Reason.NODE_DRAINING), *events))
        result = await asyncio.wait_for(applier.apply(plan), 10)
        assert not result.failed
        assert (await c.node(name))["metadata"]["labels"][STATE_LABEL] == "draining"
        assert not [p for p in api.writes if "/events" in p]
        api.events.set()
        await asyncio.wait_for(applier.flush(), 30)
        written = [
            e
            for e in await c.items(core_path("events", "default"))
            if e["involvedObject"]["name"] == name and e["reason"] == "NodeDraining"
        ]
        assert sum(e["count"] for e in written) == len(events)  # some combined, none lost


async def test_what_a_job_waits_for_is_written_first(backend: Backend) -> None:
    """In a burst the writes queue at the client's rate limit: the replacement's bind goes
    first, then the evictions that free its spare (their notice starts when written),
    then the hot-spare refill, whatever the plan's order."""
    async with cluster(backend, 1) as c:
        await c.namespace(c.batch)
        api = CountingApi(c.api)
        applier = Applier(api, Cache(), concurrency=4)  # type: ignore[arg-type]
        refill = [EvictPod(c.batch, f"spot-{i}", 60, Reason.HOT_SPARE) for i in range(12)]
        for_the_spare = EvictPod(c.batch, "spot-x", 60, Reason.SPOT_PREEMPTED)
        bind = BindPod(c.batch, "llm-1-0", c.nodes[0])
        await applier.apply(Plan((*refill, for_the_spare, bind)))
        pods = [p.rsplit("/pods/", 1)[1] for p in api.calls if "/pods/" in p]
        assert pods[:2] == ["llm-1-0/binding", "spot-x/eviction"]
        assert len(pods) == 2 + len(refill)
