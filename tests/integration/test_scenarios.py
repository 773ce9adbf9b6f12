"""End-to-end scenarios through the API: the real operator and simulated GPU nodes, each on
the emulator and on a real API server (the ``backend`` fixture, see conftest.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.harness import (
    EMULATOR,
    Backend,
    Cluster,
    cluster,
    create_priority_classes,
    fast_options,
    labels,
    state_of,
)
from valet.k8s.client import MERGE, core_path, valet_path
from valet.k8s.codec import PodDefaults
from valet.simnodes.kubelet import FAIL_ANNOTATION

PRIORITIES = PodDefaults(worker_priority_class="valet-training", spot_priority_class="valet-spot")


async def setup(
    c: Cluster,
    pool: dict[str, Any] | None = None,
    pod_defaults: PodDefaults = PodDefaults(),
    retry_rejected_seconds: float | None = None,
    **options: Any,
) -> None:
    await c.namespace(c.train)
    await c.namespace(c.batch)
    opts = dataclasses.replace(fast_options(**options), pod_defaults=pod_defaults)
    if retry_rejected_seconds is not None:
        loop = dataclasses.replace(opts.loop, retry_rejected_seconds=retry_rejected_seconds)
        opts = dataclasses.replace(opts, loop=loop)
    await c.start_operator(opts)
    if pool is not None:
        await c.apply(pool)


async def workers(c: Cluster, job: str = "llm") -> list[dict[str, Any]]:
    pods = await c.pods(c.train, f"valet.dev/job={job}")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def phase_is(c: Cluster, phase: str, job: str = "llm") -> dict[str, Any] | None:
    status = (await c.job(job)).get("status") or {}
    return status if status.get("phase") == phase else None


def metric(c: Cluster, name: str, **match: str) -> float:
    assert c.operator is not None
    text = generate_latest(c.operator.metrics.registry).decode()
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in match.items()):
                total += sample.value
    return total


async def metric_is(c: Cluster, value: float, name: str, **match: str) -> None:
    async def reached() -> bool:
        return metric(c, name, **match) == value

    await c.until(reached, timeout=10, what=f"{name}{match} == {value}")


async def test_training_job_is_gang_placed_bound_and_running(backend: Backend) -> None:
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=0, shards=None), PRIORITIES)
        await c.apply(c.training_job(replicas=3, min_replicas=3))
        status = await c.until(lambda: phase_is(c, "Running"), what="job Running")
        assert status["replicas"] == 3 and status["selector"] == "valet.dev/job=llm"
        pods = await workers(c)
        assert sorted(p["spec"]["nodeName"] for p in pods) == c.nodes
        for pod in pods:
            assert pod["spec"]["schedulerName"] == "valet"
            assert pod["spec"]["priorityClassName"] == "valet-training"
            env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
            assert env["PET_NNODES"] == "3:3" and env["PET_NPROC_PER_NODE"] == "8"
            assert env["PET_RDZV_ENDPOINT"] == f"llm-0.llm.{c.train}.svc:29400"
            assert pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"
            assert pod["metadata"]["ownerReferences"][0]["kind"] == "TrainingJob"
        # The Service is created at the end of the pass that writes the status.
        service = await c.until(
            lambda: c.get(core_path("services", c.train, "llm")), what="Service"
        )
        assert service["spec"]["clusterIP"] == "None"
        ready = await c.until(lambda: _ready(c, 3), what="workers ready")
        assert ready


async def _ready(c: Cluster, count: int) -> bool:
    status = (await c.job()).get("status") or {}
    return status.get("readyReplicas") == count


async def test_spot_pool_labels_and_taints_spares_and_packs_spot_pods(backend: Backend) -> None:
    async with cluster(backend, 4) as c:
        await setup(c, c.spot_pool(spares=2, gpus_per_pod=2, shards=100), PRIORITIES)

        async def packed() -> dict[str, Any] | None:
            status = (await c.pool()).get("status") or {}
            return status if status.get("spotGPUs") == 32 else None

        status = await c.until(packed, what="all 32 GPUs packed")
        assert status["spares"] == 2 and status["sparesTarget"] == 2
        assert status["shards"][0]["running"] == 16 and status["shards"][0]["pending"] == 84
        nodes = [await c.node(n) for n in c.nodes]
        spares = [n for n in nodes if state_of(n) == "spare"]
        assert len(spares) == 2
        for node in spares:
            assert {"key": "valet.dev/spare", "value": "true", "effect": "NoSchedule"} in node[
                "spec"
            ]["taints"]

        async def sixteen() -> list[dict[str, Any]] | None:  # status is written before pods
            spot = await c.pods(c.batch)
            bound = all(p["spec"].get("nodeName") for p in spot)
            return spot if len(spot) == 16 and bound else None

        spot = await c.until(sixteen, what="16 spot pods bound")
        assert all(p["spec"]["schedulerName"] == "valet" for p in spot)
        assert all(p["spec"]["priorityClassName"] == "valet-spot" for p in spot)
        assert all(
            {"key": "valet.dev/spare", "operator": "Exists", "effect": "NoSchedule"}
            in p["spec"]["tolerations"]
            for p in spot
        )
        assert sorted(p["metadata"]["labels"]["valet.dev/shard"] for p in spot) == sorted(
            str(i) for i in range(16)
        )


async def test_xid79_swaps_the_worker_onto_a_spare_and_heals_the_node(backend: Backend) -> None:
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, gpus_per_pod=2, notice=1))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")

        async def spare_packed() -> str | None:
            for name in c.nodes:
                node = await c.node(name)
                if state_of(node) == "spare":
                    spot = await c.pods(c.batch)
                    if sum(1 for p in spot if p["spec"].get("nodeName") == name) == 4:
                        return name
            return None

        spare = await c.until(spare_packed, what="the spare packed with spot pods")
        victim_node = (await workers(c))[0]["spec"]["nodeName"]
        await c.fault(victim_node, gpu=3, xid=79)

        async def draining() -> bool:
            return state_of(await c.node(victim_node)) in ("draining", "healing")

        await c.until(draining, what="failed node draining")
        # The spare's spot pods are evicted with the pool's notice, not killed.

        async def preempted_with_notice() -> bool:  # one Event per evicted spot pod
            events = await c.items(core_path("events", c.batch))
            told = [e for e in events if e["reason"] == "SpotPreempted"]
            return len(told) == 4 and all("with 1s notice" in e["message"] for e in told)

        await c.until(preempted_with_notice, what="the spare's 4 spot pods evicted with notice")

        async def swapped() -> dict[str, Any] | None:
            status = (await c.job()).get("status") or {}
            return status if status.get("swaps") == 1 and status.get("phase") == "Running" else None

        status = await c.until(swapped, what="the swap")
        heal = status["lastHeal"]
        assert heal["failedNode"] == victim_node and heal["spare"] == spare
        assert 0 < heal["seconds"] < 10
        assert sorted(p["spec"]["nodeName"] for p in await workers(c)) == sorted(
            n for n in c.nodes if n != victim_node
        )
        # Metrics are set once the pass that wrote the status has applied all its actions.
        await metric_is(c, 1, "valet_swaps_total", job="llm")
        await metric_is(c, 1, "valet_heal_latency_seconds_count", pool=c.pool_name)
        await metric_is(c, 4, "valet_preemptions_total", pool=c.pool_name)

        async def running_timed() -> dict[str, Any] | None:
            heal = ((await c.job()).get("status") or {}).get("lastHeal") or {}
            return heal if "secondsToRunning" in heal else None

        heal = await c.until(running_timed, what="lastHeal.secondsToRunning")
        assert heal["seconds"] <= heal["secondsToRunning"] < 10
        await metric_is(c, 1, "valet_heal_to_running_seconds_count", pool=c.pool_name)

        async def back_in_pool() -> bool:
            node = await c.node(victim_node)
            return state_of(node) in ("spare", "active") and not node["spec"].get("unschedulable")

        await c.until(back_in_pool, timeout=30, what="healed node back in the pool")
        node = await c.node(victim_node)
        assert "valet.dev/sim-faults" not in node["metadata"]["annotations"]
        assert "valet.dev/remediation" not in node["metadata"]["annotations"]  # hand-shake done

        async def told() -> bool:  # Events are written after the node's own changes
            events = await c.items(core_path("events", "default"))
            reasons = {e["reason"] for e in events if e["involvedObject"]["name"] == victim_node}
            return {"NodeDraining", "RemediationRequested", "NodeHealing", "NodeHealed"} <= reasons

        await c.until(told, what="the node's Events tell the heal")


async def test_no_spare_shrinks_the_job_and_it_regrows_when_the_node_returns(
    backend: Backend,
) -> None:
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=3, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        failed = (await workers(c))[0]["spec"]["nodeName"]
        await c.annotate_node(failed, {"valet.dev/sim-lemon": "true"})  # stays broken
        await c.fault(failed, gpu=0, xid=48)
        status = await c.until(lambda: phase_is(c, "Degraded"), what="job shrunk")
        assert status["replicas"] == 2
        assert len(await workers(c)) == 2
        # The node is repaired by hand and returns: the job grows back.
        await c.annotate_node(failed, {"valet.dev/sim-lemon": None, "valet.dev/sim-faults": None})
        c.sim.nodes[failed].classifier.clear()
        await c.until(lambda: phase_is(c, "Running"), timeout=40, what="job regrown")
        assert len(await workers(c)) == 3


async def test_below_min_replicas_the_job_waits(backend: Backend) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.annotate_node(c.nodes[0], {"valet.dev/sim-lemon": "true"})
        await c.fault(c.nodes[0], gpu=1, xid=79)
        status = await c.until(lambda: phase_is(c, "Waiting"), what="job Waiting")
        assert status["replicas"] < 2
        conditions = {cond["type"]: cond for cond in status["conditions"]}
        assert conditions["Ready"]["status"] == "False"


async def test_kubectl_scale_resizes_the_job_within_its_range(backend: Backend) -> None:
    async with cluster(backend, 4) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=1, max_replicas=4))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        scale = valet_path("trainingjobs", c.train, "llm", "scale")
        await c.api.call("PATCH", scale, {"spec": {"replicas": 4}}, content_type=MERGE)

        async def four() -> bool:
            status = (await c.job()).get("status") or {}
            return status.get("replicas") == 4 and status.get("phase") == "Running"

        await c.until(four, what="scaled up to 4")
        assert (await c.get(scale))["status"]["replicas"] == 4
        await c.api.call("PATCH", scale, {"spec": {"replicas": 1}}, content_type=MERGE)

        async def one() -> bool:
            return len(await workers(c)) == 1 and bool(await phase_is(c, "Running"))

        await c.until(one, what="scaled down to 1")


async def test_a_preempted_shard_is_requeued_and_completes_exactly_once(backend: Backend) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, gpus_per_pod=8, shards=6, runtime=1.5, notice=0))
        completions: dict[str, list[str]] = {}

        async def record() -> None:
            async for event in c.api.watch(core_path("pods", c.batch)):
                pod = event["object"]
                if (pod.get("status") or {}).get("phase") == "Succeeded":
                    shard = labels(pod)["valet.dev/shard"]
                    names = completions.setdefault(shard, [])
                    if pod["metadata"]["name"] not in names:
                        names.append(pod["metadata"]["name"])

        recorder = asyncio.create_task(record())
        try:
            await c.until(lambda: _spot_running(c, 2), what="two shards running")
            # A training job claims a node: its running shard is preempted mid-run.
            await c.apply(c.training_job(replicas=1, min_replicas=1))
            await c.until(lambda: phase_is(c, "Running"), what="job Running")

            async def all_done() -> dict[str, Any] | None:
                status = (await c.pool()).get("status") or {}
                shards = status.get("shards") or [{}]
                return status if shards[0].get("done") == "0-5" else None

            status = await c.until(all_done, timeout=40, what="all shards done")
            assert status["preemptions"] >= 1
            assert status["shards"][0]["pending"] == 0
        finally:
            recorder.cancel()
        assert sorted(completions) == [str(i) for i in range(6)]
        assert all(len(names) == 1 for names in completions.values()), completions


async def _spot_running(c: Cluster, count: int) -> bool:
    pods = await c.pods(c.batch)
    return sum(1 for p in pods if (p.get("status") or {}).get("phase") == "Running") == count


async def test_a_lemon_node_is_retired(backend: Backend) -> None:
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, shards=None, lemon_failures=2))
        await c.apply(c.training_job(replicas=1, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        node = (await workers(c))[0]["spec"]["nodeName"]
        await c.fault(node, gpu=2, xid=94)

        # Out of service first: the fault history is written a moment before the state label,
        # so "in service with a history" alone can be seen before the drain even began.
        await c.until(lambda: _state(c, node, "healing"), what="first fault being healed")

        async def healed_once() -> bool:
            return state_of(await c.node(node)) in ("spare", "active")

        await c.until(healed_once, what="first heal")
        await c.fault(node, gpu=2, xid=94)

        async def retired() -> dict[str, Any] | None:
            n = await c.node(node)
            return n if state_of(n) == "retired" else None

        n = await c.until(retired, what="lemon retired")
        assert n["spec"]["unschedulable"] is True

        async def lemon_event() -> bool:  # Events are written after the node's own changes
            events = await c.items(core_path("events", "default"))
            return any(
                e["reason"] == "LemonNode" and e["involvedObject"]["name"] == node for e in events
            )

        await c.until(lemon_event, what="LemonNode Event")


async def test_a_dead_node_is_replaced_within_its_grace_and_returns_to_the_buffer(
    backend: Backend,
) -> None:
    """The host of a worker goes down (kubelet and agent with it): after the pool's grace
    the worker is replaced on the spare, the stale pods are force-deleted behind the
    out-of-service taint (none is left Terminating), and the node comes back through a
    reboot it answers when it returns."""
    grace = 3
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=1, gpus_per_pod=2, notice=1, node_grace=grace))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.until(lambda: _spare_count(c, 1), what="a spare")
        victim = (await workers(c))[0]
        dead = victim["spec"]["nodeName"]
        c.sim.kill(dead)
        killed_at = time.time()

        async def replaced() -> dict[str, Any] | None:
            status = (await c.job()).get("status") or {}
            pods = await workers(c)
            running = [p for p in pods if (p.get("status") or {}).get("phase") == "Running"]
            on = sorted(p["spec"].get("nodeName") or "" for p in running)
            ok = status.get("swaps") == 1 and len(running) == 2 and dead not in on
            return status if ok else None

        status = await c.until(replaced, timeout=grace + 15, what="worker replaced")
        took = time.time() - killed_at
        print(f"\n{backend.name}: host down → replacement Running in {took:.2f}s (grace {grace}s)")
        assert took < grace + 5, f"replacement Running {took:.1f}s after the host died"
        assert status["lastHeal"]["failedNode"] == dead
        node = await c.node(dead)
        assert state_of(node) in ("draining", "healing")
        assert {"key": "node.kubernetes.io/out-of-service", "value": "nodeshutdown",
                "effect": "NoExecute"} in node["spec"]["taints"]  # fmt: skip

        async def nothing_left_on_it() -> bool:
            everything = await c.pods(c.train) + await c.pods(c.batch)
            return not [p for p in everything if p["spec"].get("nodeName") == dead]

        await c.until(nothing_left_on_it, what="no pod left (Terminating or not) on the dead node")
        await c.until(lambda: _state(c, dead, "healing"), what="healing: a reboot requested")
        await c.sim.revive(dead)

        async def back() -> dict[str, Any] | None:
            n = await c.node(dead)
            fenced = any(t["key"] == "node.kubernetes.io/out-of-service"
                         for t in n["spec"].get("taints") or ())  # fmt: skip
            return n if state_of(n) in ("spare", "active") and not fenced else None

        await c.until(back, timeout=30, what="the node back in the buffer, unfenced")
        assert len(await workers(c)) == 2


async def _spare_count(c: Cluster, count: int) -> bool:
    status = (await c.pool()).get("status") or {}
    return status.get("spares") == count


async def _state(c: Cluster, node: str, state: str) -> bool:
    return state_of(await c.node(node)) == state


async def test_a_mass_failure_trips_the_circuit_breaker_instead_of_draining_the_pool(
    backend: Backend,
) -> None:
    async with cluster(backend, 6) as c:
        await setup(c, c.spot_pool(spares=1, shards=None, breaker_percent=20))
        await c.until(lambda: _all_adopted(c, 6), what="nodes adopted")
        for name in c.nodes[:4]:
            await c.fault(name, gpu=0, xid=79)

        async def tripped() -> dict[str, Any] | None:
            status = (await c.pool()).get("status") or {}
            conds = {x["type"]: x for x in status.get("conditions") or ()}
            breaker = conds.get("CircuitBreakerOpen", {})
            return status if breaker.get("status") == "True" else None

        await c.until(tripped, what="breaker open")
        states = [state_of(await c.node(n)) for n in c.nodes[:4]]
        assert sum(1 for s in states if s in ("draining", "healing")) == 1, states


async def _all_adopted(c: Cluster, count: int) -> bool:
    nodes = await c.items("/api/v1/nodes")
    return sum(1 for n in nodes if state_of(n)) == count


async def test_a_silent_agent_makes_the_node_unknown_not_drained(backend: Backend) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None), staleness_seconds=2.0)
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        c.sim.silence(c.nodes[1])

        async def unknown() -> dict[str, Any] | None:
            status = (await c.pool()).get("status") or {}
            return status if status.get("nodes", {}).get("unknown") == 1 else None

        await c.until(unknown, what="node unknown")
        assert state_of(await c.node(c.nodes[1])) == "active"
        assert len(await workers(c)) == 2
        assert (await c.job())["status"]["phase"] == "Running"


async def test_deleting_a_training_job_cleans_up_its_pods_and_service(backend: Backend) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.until(lambda: c.get(core_path("services", c.train, "llm")), what="Service")
        await c.api.call("DELETE", valet_path("trainingjobs", c.train, "llm"))

        async def gone() -> bool:
            pods = await c.pods(c.train)
            services = await c.items(core_path("services", c.train))
            return not pods and not services

        await c.until(gone, what="pods and Service removed")


async def test_a_job_deleted_while_the_operator_is_down_is_garbage_collected(
    real_api: Backend,
) -> None:
    """The owner references valet writes hold on their own: Kubernetes' garbage collector
    removes the workers and the Service. Real API only: the emulator has no collector."""
    assert real_api.plane is None or real_api.plane.has_controllers
    async with cluster(real_api, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.until(lambda: c.get(core_path("services", c.train, "llm")), what="Service")
        await c.stop_operator()
        await c.api.call("DELETE", valet_path("trainingjobs", c.train, "llm"))

        async def collected() -> bool:
            pods = await c.pods(c.train)
            services = await c.items(core_path("services", c.train))
            return not pods and not services

        await c.until(collected, timeout=60, what="pods and Service garbage-collected")


async def test_a_failed_worker_is_restarted(backend: Backend) -> None:
    async with cluster(backend, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        first = (await workers(c))[0]["metadata"]["name"]
        await c.api.call(
            "PATCH",
            core_path("pods", c.train, first),
            {"metadata": {"annotations": {FAIL_ANNOTATION: "true"}}},
            content_type=MERGE,
        )

        async def restarted() -> dict[str, Any] | None:
            status = (await c.job()).get("status") or {}
            names = [p["metadata"]["name"] for p in await workers(c)]
            ok = status.get("restarts") == 1 and first not in names and len(names) == 2
            return status if ok and status.get("phase") == "Running" else None

        await c.until(restarted, what="worker restarted")


@pytest.mark.emulator_only  # a real API server's CEL refuses this edit (tests/crds)
async def test_an_invalid_spec_edit_is_reported_and_the_last_valid_spec_keeps_running() -> None:
    """Defence in depth, for a CRD older than the operator: the operator's own parser."""
    async with cluster(EMULATOR, 2) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        await c.apply(c.training_job(replicas=2, min_replicas=1))
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        await c.api.call(
            "PATCH",
            valet_path("trainingjobs", c.train, "llm"),
            {"spec": {"minReplicas": 5}},
            content_type=MERGE,
        )
        cond = await c.until(lambda: spec_valid(c, False), what="SpecValid False")
        assert cond["reason"] == "InvalidSpec"
        assert "minReplicas" in cond["message"] and "keeps running" in cond["message"]
        assert len(await workers(c)) == 2
        await c.until(lambda: event(c, c.train, "InvalidSpec"), what="InvalidSpec Event")


async def spec_valid(c: Cluster, valid: bool, job: str = "llm") -> dict[str, Any] | None:
    status = (await c.job(job)).get("status") or {}
    cond = {x["type"]: x for x in status.get("conditions") or ()}.get("SpecValid")
    return cond if cond and cond["status"] == str(valid) else None


async def event(c: Cluster, namespace: str, reason: str) -> list[dict[str, Any]]:
    events = await c.items(core_path("events", namespace))
    return [e for e in events if e["reason"] == reason]


async def test_an_edit_whose_pods_the_api_server_refuses_is_reported_once_and_workers_stay(
    backend: Backend,
) -> None:
    """The schema takes any pod template; admission refuses a PriorityClass that does not
    exist. Valet says so on the job, tries again only when the spec changes (or once per
    retry period), and the running workers are left alone."""
    async with cluster(backend, 3) as c:
        await setup(c, c.spot_pool(spares=0, shards=None))
        job = c.training_job(replicas=2, min_replicas=1, max_replicas=3)
        await c.apply(job)
        await c.until(lambda: phase_is(c, "Running"), what="job Running")
        running = sorted(p["metadata"]["name"] for p in await workers(c))
        template = job["spec"]["template"]
        template["spec"]["priorityClassName"] = "no-such-class"
        path = valet_path("trainingjobs", c.train, "llm")
        spec = {"spec": {"replicas": 3, "template": template}}
        await c.api.call("PATCH", path, spec, content_type=MERGE)
        cond = await c.until(lambda: spec_valid(c, False), what="SpecValid False")
        assert cond["reason"] == "PodsRejected"
        assert "no PriorityClass with name no-such-class" in cond["message"], cond
        assert sorted(p["metadata"]["name"] for p in await workers(c)) == running
        await c.until(lambda: event(c, c.train, "PodsRejected"), what="PodsRejected Event")
        # Held, not retried every pass: passes go on, the refusals do not.
        assert c.operator is not None
        refused = metric(c, "valet_action_errors_total", action="CreatePod")
        passes = c.operator.reconciler.passes
        await c.until(lambda: _passes_since(c, passes, 3), what="three more passes", timeout=10)
        assert metric(c, "valet_action_errors_total", action="CreatePod") == refused
        assert len(await event(c, c.train, "PodsRejected")) == 1
        # Fixed: the third worker is created and the condition clears.
        fixed = {"spec": {"template": {"spec": {"priorityClassName": None}}}}
        await c.api.call("PATCH", path, fixed, content_type=MERGE)
        await c.until(lambda: spec_valid(c, True), what="SpecValid True")
        await c.until(lambda: _count(c, 3), what="the third worker")


async def _passes_since(c: Cluster, passes: int, more: int) -> bool:
    assert c.operator is not None
    return c.operator.reconciler.passes >= passes + more


async def _count(c: Cluster, n: int) -> bool:
    return len(await workers(c)) == n


async def test_a_missing_priority_class_is_reported_not_retried_every_pass(
    backend: Backend,
) -> None:
    """``valet operator --worker-priority-class X`` on a cluster without X (no chart): the
    job says why it has no workers; creating X lets it run without a restart."""
    async with cluster(backend, 2) as c:
        missing = f"valet-training-{c.scope.id}"
        await setup(
            c,
            c.spot_pool(spares=0, shards=None),
            PodDefaults(worker_priority_class=missing),
            retry_rejected_seconds=1.0,
        )
        await c.apply(c.training_job(replicas=2, min_replicas=2))
        cond = await c.until(lambda: spec_valid(c, False), what="SpecValid False")
        assert f"no PriorityClass with name {missing}" in cond["message"], cond
        assert not await workers(c)
        try:
            await create_priority_classes(c.api, [(missing, 1000, "PreemptLowerPriority")])
            await c.until(lambda: phase_is(c, "Running"), what="job Running once X exists")
            await c.until(lambda: spec_valid(c, True), what="SpecValid True")
        finally:
            if c.backend.real:
                await c.api.call("DELETE", f"/apis/scheduling.k8s.io/v1/priorityclasses/{missing}")
