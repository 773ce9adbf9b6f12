"""The chart's RBAC is what the code needs, no less and no more: run the real operator
and the real agent against the emulator through swap, preemption, healing, leader
election and clean-up, record every request they make, and hold it against the rules
the chart grants (tests/chart/test_rbac.py pins those rules)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Iterable

import pytest

from tests.agent.emulated_agent import request_remediation, step, until_answered, with_agent
from tests.chart.render import VARIANTS, render
from tests.chart.test_rbac import Rule, rules_by_subject
from tests.emulator.server import Request
from tests.integration.harness import EMULATOR, cluster, fast_options, state_of
from valet.agent.readings import EventSource
from valet.agent.remediation import Cap
from valet.agent.runner import Agent
from valet.k8s.client import Api, core_path, valet_path
from valet.model.enums import Remediation
from valet.simnodes.nodes import inject_fault

# Emulator-only: it records requests inside the emulator (tests/chart/test_real_api.py runs
# the operator and agent with the chart's own RBAC on a real API server).
pytestmark = pytest.mark.emulator_only
GRANTED = rules_by_subject(render(VARIANTS["ha-operator"]))

# Granted, but no scenario here makes the call.
UNEXERCISED: dict[Rule, str] = {
    ("", "nodes", "get", ""): "re-read after a conflicting node patch (409), which needs a race",
    ("", "events", "patch", ""): (
        "the count of an Event that recurs (same object, reason, message); this scenario"
        " repeats none, tests/integration/test_api_flow.py does"
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions", "list", ""): (
        "Kopf watches CRDs to notice new ones; the emulator serves no CRD objects"
    ),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch", ""): (
        "Kopf watches CRDs to notice new ones; the emulator serves no CRD objects"
    ),
}


def allowed(request: Request, rules: set[Rule]) -> Rule | None:
    for rule in rules:
        group, resource, verb, name = rule
        if (group, resource, verb) == (request.group, request.resource, request.verb) and (
            not name or name == request.name
        ):
            return rule
    return None


def check(requests: Iterable[Request], rules: set[Rule]) -> set[Rule]:
    """Fail on any request the rules deny; return the rules the requests used."""
    used, denied = set(), []
    for request in requests:
        rule = allowed(request, rules)
        if rule is None:
            denied.append(f"{request.verb} {request.group or 'core'}/{request.resource}")
        else:
            used.add(rule)
    assert not denied, f"RBAC would deny: {sorted(set(denied))}"
    return used


async def test_the_operator_needs_exactly_its_rbac() -> None:
    async with cluster(EMULATOR, 3) as c:
        for ns in (c.train, c.batch, "valet-system"):
            await c.namespace(ns)
        options = dataclasses.replace(
            fast_options(), leader_election=True, lease_namespace="valet-system"
        )
        await c.start_operator(options)
        await c.apply(c.spot_pool(spares=1, gpus_per_pod=2, notice=0, shards=40))
        await c.apply(c.training_job(replicas=2, min_replicas=1))

        async def running_with_spare_packed() -> bool:
            status = (await c.job()).get("status") or {}
            pool = (await c.pool()).get("status") or {}
            return status.get("phase") == "Running" and pool.get("spotGPUs") == 8

        await c.until(running_with_spare_packed, what="job Running, spare packed")
        victim = next(p["spec"]["nodeName"] for p in await c.pods(c.train, "valet.dev/job=llm"))
        await c.fault(victim, gpu=0, xid=79)

        async def healed() -> bool:
            status = (await c.job()).get("status") or {}
            node = await c.node(victim)
            return status.get("swaps") == 1 and state_of(node) in ("spare", "active")

        await c.until(healed, what="swap, then the node healed")
        await c.api.call("DELETE", valet_path("trainingjobs", c.train, "llm"))

        async def cleaned() -> bool:
            services = await c.items(core_path("services", c.train))
            return not services and not await c.pods(c.train)

        await c.until(cleaned, what="the job's pods and Service removed")
        await c.stop_operator()
        assert c.emulator is not None
        requests = [
            r for r in c.emulator.requests if r.user_agent.startswith(("valet-operator/", "kopf/"))
        ]
    rules = GRANTED["valet-operator"]
    used = check(requests, rules)
    assert rules - used <= UNEXERCISED.keys(), (
        f"granted, never used: {rules - used - UNEXERCISED.keys()}"
    )


async def test_the_agent_needs_exactly_its_rbac() -> None:
    async def scenario(api: Api, agent: Agent) -> None:
        await step(agent)
        await inject_fault(api, "n1", 3, 79, None)
        await step(agent)
        await request_remediation(api, Remediation.REBOOT, 1)
        await until_answered(api, agent)

    emulator = await with_agent(Cap(3, 3600), scenario)
    requests = [r for r in emulator.requests if r.user_agent.startswith("valet-agent/")]
    assert requests and all(r.name == "n1" for r in requests), "the agent touched another node"
    rules = GRANTED["valet-agent"]
    assert check(requests, rules) == rules


async def test_the_simulated_agent_needs_exactly_its_rbac() -> None:
    """The chart's simulated agent also watches its own Node, for injected faults."""

    async def scenario(api: Api, agent: Agent) -> None:
        assert isinstance(agent.backend, EventSource)
        woken = threading.Event()
        agent.backend.start_events(woken.set)
        try:
            await step(agent)
            await inject_fault(api, "n1", 3, 79, None)
            assert await asyncio.to_thread(woken.wait, 10), "the watch never saw the fault"
            await step(agent)
            await request_remediation(api, Remediation.REBOOT, 1)
            await until_answered(api, agent)
        finally:
            agent.backend.close()

    emulator = await with_agent(Cap(3, 3600), scenario, watch=True)
    requests = [r for r in emulator.requests if r.user_agent.startswith("valet-agent/")]
    own = [r.name == "n1" or r.query.get("fieldSelector") == "metadata.name=n1" for r in requests]
    assert requests and all(own), "the agent touched another node"
    rules = rules_by_subject(render(VARIANTS["simulated-agent"]))["valet-agent"]
    assert check(requests, rules) == rules
