"""`valet agent`'s loop with the simulated backend against the API emulator: a fault flips
GPUHealthy, the operator's remediation request is carried out once, the condition clears."""

from __future__ import annotations

from tests.agent.emulated_agent import request_remediation, step, until_answered, with_agent
from valet.agent.remediation import Cap
from valet.agent.runner import Agent
from valet.agent.simulated import (
    FAULTS_ANNOTATION,
    LEMON_ANNOTATION,
)
from valet.k8s.client import MERGE, Api, node_path
from valet.model import remediation
from valet.model.enums import Remediation
from valet.simnodes.nodes import inject_fault


async def test_fault_remediation_and_recovery_through_the_api() -> None:
    async def scenario(api: Api, agent: Agent) -> None:
        condition, _ = await step(agent)
        assert condition["status"] == "True"
        await inject_fault(api, "n1", 3, 79, None)
        condition, _ = await step(agent)
        assert condition["status"] == "False" and condition["reason"] == "XID79GPUFellOffBus"
        await request_remediation(api, Remediation.REBOOT, 1)
        answered = await until_answered(api, agent)
        assert answered[remediation.RESULT] == "succeeded"
        assert remediation.STARTED_AT in answered and FAULTS_ANNOTATION not in answered
        condition, _ = await step(agent)
        assert condition["status"] == "True"
        # The answer is given once: more probes leave it as it is.
        before = answered[remediation.FINISHED_AT]
        _, after = await step(agent)
        assert after[remediation.FINISHED_AT] == before

    await with_agent(Cap(), scenario)


async def test_a_lemon_fails_and_the_cap_refuses_more_attempts() -> None:
    async def scenario(api: Api, agent: Agent) -> None:
        await api.call(
            "PATCH",
            node_path("n1"),
            {"metadata": {"annotations": {LEMON_ANNOTATION: "true"}}},
            content_type=MERGE,
        )
        await inject_fault(api, "n1", 0, 48, None)
        await request_remediation(api, Remediation.GPU_RESET, 1)
        assert (await until_answered(api, agent))[remediation.RESULT] == "failed"
        await request_remediation(api, Remediation.REBOOT, 2)
        refused = await until_answered(api, agent)
        assert refused[remediation.RESULT] == "failed"
        assert refused[remediation.MESSAGE].startswith("cap: 1 remediations")
        condition, _ = await step(agent)
        assert condition["status"] == "False"  # still broken: nothing cleared it

    await with_agent(Cap(max_attempts=1), scenario)
