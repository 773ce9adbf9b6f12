"""The simulated node agent of one node, n1, run step by step against the API emulator."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client as k8s_client

from tests.emulator.server import Emulator, kubeconfig, serve
from valet.agent.classify import Classifier
from valet.agent.remediation import Cap, Remediator
from valet.agent.runner import Agent
from valet.agent.simulated import FAULTS_ANNOTATION, SimulatedBackend, SimulatedExecutor
from valet.k8s.client import MERGE, Api, load_api_client, node_path
from valet.k8s.node_publisher import NodePublisher
from valet.metrics import AgentMetrics
from valet.model import remediation
from valet.model.enums import Remediation


async def with_agent(cap: Cap, test: Any, *, watch: bool = False) -> Emulator:
    """Run ``test(api, agent)`` with the simulated agent of node n1 against the emulator,
    which it returns (its request record included). With ``watch``, the backend watches the
    Node for injected faults once the agent's loop starts its events."""
    async with serve() as (emulator, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)))
            await api.call("POST", node_path(), {"metadata": {"name": "n1"}})
            agent_client = load_api_client(str(path), component="agent")
            publisher = NodePublisher(k8s_client.CoreV1Api(agent_client), "n1")
            classifier = Classifier()
            backend = SimulatedBackend(
                "n1",
                8,
                lambda: publisher.current()[1].get(FAULTS_ANNOTATION),
                watch=publisher.watch if watch else None,
            )
            remediator = Remediator(SimulatedExecutor(0.05), cap, classifier.clear)
            agent = Agent(backend, publisher, AgentMetrics("n1"), classifier, remediator)
            try:
                await test(api, agent)
            finally:
                api.close()
    return emulator


async def step(agent: Agent) -> dict[str, Any]:
    # The sync client stays off the event loop, which also serves the emulator.
    await asyncio.to_thread(agent.step, time.time())
    return await asyncio.to_thread(agent.publisher.current)  # type: ignore[return-value]


async def until_answered(api: Api, agent: Agent) -> dict[str, str]:
    for _ in range(100):
        await asyncio.to_thread(agent.step, time.time())
        node = await api.call("GET", node_path("n1"))
        annotations: dict[str, str] = node["metadata"]["annotations"]
        if remediation.RESULT in annotations:
            return annotations
        await asyncio.sleep(0.02)
    raise AssertionError("the agent never answered the remediation request")


async def request_remediation(api: Api, kind: Remediation, attempt: int) -> None:
    body = {"metadata": {"annotations": remediation.request(kind, attempt, time.time())}}
    await api.call("PATCH", node_path("n1"), body, content_type=MERGE)
