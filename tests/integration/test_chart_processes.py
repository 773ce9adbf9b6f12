"""The chart's own command lines, run as processes against the emulator: what `helm install`
with the simulated agent starts on a cluster, minus the kubelet. The operator runs with
the HA variant's arguments (leader election, priority classes); the agent with the
simulated variant's. A fault injected with `valet sim fault` turns GPUHealthy False and
the operator drains the node."""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from tests.chart.render import VARIANTS, pod_templates, render
from tests.emulator.server import kubeconfig, serve
from tests.integration.harness import free_port, spot_pool, until
from valet.k8s.client import Api, core_path, load_api_client, node_path, valet_path


def _args(values: dict[str, Any], workload: str) -> list[str]:
    container = pod_templates(render(values))[workload]["spec"]["containers"][0]
    return list(container["args"])


def _condition(node: dict[str, Any], kind: str) -> str | None:
    for condition in (node.get("status") or {}).get("conditions") or ():
        if condition["type"] == kind:
            return str(condition["status"])
    return None


async def test_the_charts_operator_and_agent_command_lines_run_and_drain_a_faulty_node() -> None:
    ports = {name: free_port() for name in ("op-m", "op-h", "ag-m", "ag-h")}
    operator_args = _args(
        {**VARIANTS["ha-operator"], "operator": {
            "replicas": 2, "metricsPort": ports["op-m"], "healthPort": ports["op-h"],
        }},
        "Deployment/valet-operator",
    )  # fmt: skip
    agent_args = _args(
        {"agent": {
            **VARIANTS["simulated-agent"]["agent"], "intervalSeconds": 1,
            "metricsPort": ports["ag-m"], "healthPort": ports["ag-h"],
        }},
        "DaemonSet/valet-agent",
    )  # fmt: skip
    async with serve() as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)))
            await api.call(
                "POST", core_path("namespaces", None), {"metadata": {"name": "valet-system"}}
            )
            gpus = {"nvidia.com/gpu": "8"}
            node = {
                "metadata": {"name": "gpu-0", "labels": {"valet.dev/simulated": "true"}},
                "status": {"allocatable": gpus, "capacity": gpus},
            }
            await api.call("POST", node_path(), node)
            await api.call("POST", valet_path("spotpools", None), spot_pool(spares=0, shards=None))
            env = {
                **os.environ,
                "KUBECONFIG": str(path),
                "POD_NAME": "valet-operator-abc12",
                "POD_NAMESPACE": "valet-system",
                "NODE_NAME": "gpu-0",
            }
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "valet",
                    *args,
                    env=env,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL,
                )
                for args in (operator_args, agent_args)
            ]
            try:

                async def active() -> bool:
                    raw = await api.call("GET", node_path("gpu-0"))
                    labels = raw["metadata"].get("labels") or {}
                    return _condition(raw, "GPUHealthy") == "True" and (
                        labels.get("valet.dev/state") == "active"
                    )

                await until(active, what="the agent's GPUHealthy=True and the node active")
                lease = await api.call(
                    "GET",
                    "/apis/coordination.k8s.io/v1/namespaces/valet-system/leases/valet-operator",
                )
                assert lease["spec"]["holderIdentity"] == "valet-operator-abc12"
                fault = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "valet", "sim", "fault", "gpu-0", "--gpu", "2",
                    "--xid", "79", env=env, stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                assert await fault.wait() == 0

                async def drained() -> bool:
                    raw = await api.call("GET", node_path("gpu-0"))
                    state = (raw["metadata"].get("labels") or {}).get("valet.dev/state")
                    return _condition(raw, "GPUHealthy") == "False" and state in (
                        "draining", "healing",
                    )  # fmt: skip

                await until(drained, what="GPUHealthy=False and the node drained")
            finally:
                for proc in procs:
                    proc.terminate()
                await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 20)
                api.close()
