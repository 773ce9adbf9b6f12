"""The agent end to end over HTTP: simulated GPUs → verdict → GPUHealthy on its Node → metrics."""

from __future__ import annotations

import json

import pytest
from kubernetes import client

from tests.agent.node_api import NodeAPI, gpu_node
from valet.agent.runner import Agent
from valet.agent.simulated import FAULTS_ANNOTATION, SimulatedBackend
from valet.k8s.node_publisher import NodePublisher
from valet.metrics import AgentMetrics
from valet.model import nodehealth
from valet.model.enums import Health


@pytest.fixture
def api():
    with NodeAPI({"gpu-1": gpu_node("gpu-1")}) as server:
        yield server


def make_agent(api: NodeAPI) -> tuple[Agent, AgentMetrics]:
    config = client.Configuration(host=api.url)
    core = client.CoreV1Api(client.ApiClient(config))
    publisher = NodePublisher(core, "gpu-1")

    def faults() -> str | None:
        return api.nodes["gpu-1"]["metadata"]["annotations"].get(FAULTS_ANNOTATION)

    metrics = AgentMetrics("gpu-1")
    return Agent(SimulatedBackend("gpu-1", 8, faults), publisher, metrics), metrics


def condition(api: NodeAPI) -> dict:
    return nodehealth.find_condition(api.node("gpu-1")["status"]["conditions"], "GPUHealthy")


def test_fault_flips_the_condition_and_clearing_restores_it(api: NodeAPI) -> None:
    agent, metrics = make_agent(api)
    agent.step(1000.0)
    assert condition(api)["status"] == "True"
    # Other detectors' conditions are kept: the patch merges by type.
    assert {c["type"] for c in api.node("gpu-1")["status"]["conditions"]} == {
        "Ready",
        "KernelDeadlock",
        "GPUHealthy",
    }

    api.nodes["gpu-1"]["metadata"]["annotations"][FAULTS_ANNOTATION] = json.dumps(
        [{"gpu": 3, "xid": 79}]
    )
    agent.step(1010.0)
    cond = condition(api)
    assert (cond["status"], cond["reason"]) == ("False", "XID79GPUFellOffBus")
    assert "GPU 3 (GPU-sim-gpu-1-3)" in cond["message"]
    detail = json.loads(api.node("gpu-1")["metadata"]["annotations"][nodehealth.ANNOTATION])
    assert detail["verdict"] == "unhealthy" and detail["gpus"][3]["signals"] == ["xid:79"]
    sample = metrics.registry.get_sample_value
    assert (
        sample("valet_gpu_healthy", {"node": "gpu-1", "gpu": "3", "uuid": "GPU-sim-gpu-1-3"}) == 0
    )
    assert sample("valet_gpu_xid_events_total", {"node": "gpu-1", "gpu": "3", "xid": "79"}) == 1

    # Remediation: the fault goes, the latch is cleared, the condition recovers.
    del api.nodes["gpu-1"]["metadata"]["annotations"][FAULTS_ANNOTATION]
    agent.classifier.clear()
    assert agent.step(1020.0).health is Health.HEALTHY
    assert condition(api)["status"] == "True"

    # The operator reads back exactly what the agent published.
    node = api.node("gpu-1")
    health = nodehealth.parse_node_health(
        node["status"]["conditions"], node["metadata"]["annotations"]
    )
    assert health.verdict is Health.HEALTHY and health.heartbeat == 1020.0


def test_heartbeat_every_probe_annotation_only_on_change(api: NodeAPI) -> None:
    agent, _ = make_agent(api)
    for t in (1.0, 2.0, 3.0):
        agent.step(t)
    patches = [r for r in api.requests if r[0] == "PATCH"]
    status_patches = [r for r in patches if r[1].endswith("/status")]
    annotation_patches = [r for r in patches if not r[1].endswith("/status")]
    assert len(status_patches) == 3 and len(annotation_patches) == 1
    assert all(r[2] == "application/strategic-merge-patch+json" for r in status_patches)
    assert condition(api)["lastHeartbeatTime"].startswith("1970-01-01T00:00:03")
    assert condition(api)["lastTransitionTime"].startswith("1970-01-01T00:00:01")


def test_valet_agent_once_prints_the_verdict(tmp_path, capsys) -> None:
    from valet import cli

    faults = tmp_path / "faults.json"
    faults.write_text(json.dumps([{"gpu": 1, "signal": "ecc-dbe"}]))
    code = cli.main(
        [
            "agent",
            "--backend",
            "simulated",
            "--node",
            "n1",
            "--gpus",
            "4",
            "--fault-file",
            str(faults),
            "--once",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    assert (report["health"], report["reason"]) == ("unhealthy", "DoubleBitECC")
    assert report["detail"]["gpus"][1]["healthy"] is False


def test_valet_agent_without_any_backend_says_what_to_set(capsys) -> None:
    import pynvml

    from valet import cli

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        pass
    else:
        pytest.skip("this machine has a working NVIDIA driver, so auto finds NVML")

    code = cli.main(["agent", "--node", "n1", "--once", "--dcgm-url", "http://127.0.0.1:1/metrics"])
    assert code == 2
    err = capsys.readouterr().err
    assert "NVML" in err and "DCGM" in err and "--backend simulated" in err
