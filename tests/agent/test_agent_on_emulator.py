"""`valet agent`'s loop with the simulated backend against the API emulator: a fault flips
GPUHealthy, the operator's remediation request is carried out once, the condition clears."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from tests.emulator.server import kubeconfig, serve
from valet.agent.classify import Classifier
from valet.agent.remediation import Cap, Remediator
from valet.agent.runner import Agent
from valet.agent.simulated import (
    FAULTS_ANNOTATION,
    LEMON_ANNOTATION,
    SimulatedBackend,
    SimulatedExecutor,
)
from valet.k8s.client import MERGE, Api, load_api_client, node_path
from valet.k8s.node_publisher import NodePublisher
from valet.metrics import AgentMetrics
from valet.model import remediation
from valet.model.enums import Remediation
from valet.simnodes.nodes import inject_fault


async def _with_agent(cap: Cap, test: Any) -> None:
    async with serve() as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)))
            await api.call("POST", node_path(), {"metadata": {"name": "n1"}})
            publisher = NodePublisher(k8s_client.CoreV1Api(load_api_client(str(path))), "n1")
            classifier = Classifier()
            backend = SimulatedBackend(
                "n1", 8, lambda: publisher.current()[1].get(FAULTS_ANNOTATION)
            )
            remediator = Remediator(SimulatedExecutor(0.05), cap, classifier.clear)
            agent = Agent(backend, publisher, AgentMetrics("n1"), classifier, remediator)
            try:
                await test(api, agent)
            finally:
                api.close()


async def _step(agent: Agent) -> dict[str, Any]:
    # The sync client stays off the event loop, which also serves the emulator.
    await asyncio.to_thread(agent.step, time.time())
    return await asyncio.to_thread(agent.publisher.current)  # type: ignore[return-value]


async def _until_answered(api: Api, agent: Agent) -> dict[str, str]:
    for _ in range(100):
        await asyncio.to_thread(agent.step, time.time())
        node = await api.call("GET", node_path("n1"))
        annotations: dict[str, str] = node["metadata"]["annotations"]
        if remediation.RESULT in annotations:
            return annotations
        await asyncio.sleep(0.02)
    raise AssertionError("the agent never answered the remediation request")


async def _request(api: Api, kind: Remediation, attempt: int) -> None:
    body = {"metadata": {"annotations": remediation.request(kind, attempt, time.time())}}
    await api.call("PATCH", node_path("n1"), body, content_type=MERGE)


async def test_fault_remediation_and_recovery_through_the_api() -> None:
    async def scenario(api: Api, agent: Agent) -> None:
        condition, _ = await _step(agent)
        assert condition["status"] == "True"
        await inject_fault(api, "n1", 3, 79, None)
        condition, _ = await _step(agent)
        assert condition["status"] == "False" and condition["reason"] == "XID79GPUFellOffBus"
        await _request(api, Remediation.REBOOT, 1)
        answered = await _until_answered(api, agent)
        assert answered[remediation.RESULT] == "succeeded"
        assert remediation.STARTED_AT in answered and FAULTS_ANNOTATION not in answered
        condition, _ = await _step(agent)
        assert condition["status"] == "True"
        # The answer is given once: more probes leave it as it is.
        before = answered[remediation.FINISHED_AT]
        _, after = await _step(agent)
        assert after[remediation.FINISHED_AT] == before

    await _with_agent(Cap(), scenario)


async def test_a_lemon_fails_and_the_cap_refuses_more_attempts() -> None:
    async def scenario(api: Api, agent: Agent) -> None:
        await api.call(
            "PATCH",
            node_path("n1"),
            {"metadata": {"annotations": {LEMON_ANNOTATION: "true"}}},
            content_type=MERGE,
        )
        await inject_fault(api, "n1", 0, 48, None)
        await _request(api, Remediation.GPU_RESET, 1)
        assert (await _until_answered(api, agent))[remediation.RESULT] == "failed"
        await _request(api, Remediation.REBOOT, 2)
        refused = await _until_answered(api, agent)
        assert refused[remediation.RESULT] == "failed"
        assert refused[remediation.MESSAGE].startswith("cap: 1 remediations")
        condition, _ = await _step(agent)
        assert condition["status"] == "False"  # still broken: nothing cleared it

    await _with_agent(Cap(max_attempts=1), scenario)
