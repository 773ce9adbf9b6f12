"""A real Prometheus server scrapes the chart's operator and a simulated agent, evaluates the
chart's alert rules, and sees ValetGPUUnhealthy go pending, then firing, after an XID 79.

The operator and the agent run as processes with the command lines the chart renders; the
node is a simulated one from the harness (its kubelet and Lease), whose GPU health the
agent process publishes (the harness's own health publishing is silenced for it). The node
is in no SpotPool, so the operator leaves it alone and the fault stays latched: this test
is about the alert path (agent → scrape → rule → alert), not the heal, which
tests/integration/test_scenarios.py covers.

Prometheus is Debian's ``prometheus`` package (``.ci/install-prometheus``); without it the
test is skipped, saying so. It listens on a free loopback port and reaches nothing else.

Timing: the rules are the chart's, rendered with one value changed, ``alerts.for``
``ValetGPUUnhealthy: 5s`` (the chart's default is 1m, whose timing
tests/chart/promtool/alerts_test.yaml proves in promtool), so the alert fires within
seconds; scrapes and rule evaluations run every second.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.chart.render import VARIANTS, pod_templates, prometheus_rules, render
from tests.integration.harness import Backend, cluster, free_port, until

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None,
    reason="prometheus is not installed: run .ci/install-prometheus "
    "(apt-get install -y --no-install-recommends prometheus, Debian's package)",
)

ALERT = "ValetGPUUnhealthy"
FOR = "5s"  # alerts.for.ValetGPUUnhealthy for this test; the chart's default is 1m
INTERVAL = "1s"  # scrape and rule evaluation


def _args(values: dict[str, Any], workload: str) -> list[str]:
    container = pod_templates(render(values))[workload]["spec"]["containers"][0]
    return list(container["args"])


@contextlib.asynccontextmanager
async def _process(*args: str, env: dict[str, str], log: Path) -> AsyncIterator[None]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *args, env=env, stdout=out, stderr=asyncio.subprocess.STDOUT
        )
        try:
            yield
        finally:
            if proc.returncode is None:
                proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _config(tmp: Path, operator_port: int, agent_port: int) -> Path:
    rules = prometheus_rules({"alerts": {"for": {ALERT: FOR}}})
    (tmp / "valet-rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = {
        "global": {"scrape_interval": INTERVAL, "evaluation_interval": INTERVAL},
        "rule_files": ["valet-rules.yaml"],
        "scrape_configs": [
            {
                "job_name": "valet-operator",
                "static_configs": [{"targets": [f"127.0.0.1:{operator_port}"]}],
            },
            {
                "job_name": "valet-agent",
                "static_configs": [{"targets": [f"127.0.0.1:{agent_port}"]}],
            },
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def test_prometheus_sees_gpu_unhealthy_go_pending_then_firing_after_an_xid_79(
    backend: Backend,
) -> None:
    assert PROMETHEUS is not None
    ports = {name: free_port() for name in ("op-m", "op-h", "ag-m", "ag-h", "prom")}
    operator_args = _args(
        {"operator": {"metricsPort": ports["op-m"], "healthPort": ports["op-h"]}},
        "Deployment/valet-operator",
    )
    agent_args = _args(
        {"agent": {
            **VARIANTS["simulated-agent"]["agent"], "intervalSeconds": 1,
            "metricsPort": ports["ag-m"], "healthPort": ports["ag-h"],
        }},
        "DaemonSet/valet-agent",
    )  # fmt: skip
    prom = f"http://127.0.0.1:{ports['prom']}"
    async with cluster(backend, 1) as c, aiohttp.ClientSession() as http:
        node = c.nodes[0]
        c.sim.silence(node)  # the agent process publishes this node's GPU health
        env = {
            **os.environ,
            "KUBECONFIG": c.kubeconfig,
            "NODE_NAME": node,
            "POD_NAME": "valet-operator-prom01",
            "POD_NAMESPACE": "valet-system",
        }
        with tempfile.TemporaryDirectory() as tmp_name:
            tmp = Path(tmp_name)
            config = _config(tmp, ports["op-m"], ports["ag-m"])
            valet = (sys.executable, "-m", "valet")
            async with (
                _process(*valet, *operator_args, env=env, log=tmp / "operator.log"),
                _process(*valet, *agent_args, env=env, log=tmp / "agent.log"),
                _process(
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{ports['prom']}",
                    "--log.level=warn",
                    env=env,
                    log=tmp / "prometheus.log",
                ),
            ):
                try:
                    await _scenario(c, node, http, prom)
                except BaseException:
                    for log in sorted(tmp.glob("*.log")):
                        print(f"--- {log.name}\n{log.read_text()[-3000:]}")
                    raise


async def _scenario(c: Any, node: str, http: aiohttp.ClientSession, prom: str) -> None:
    async def query(expr: str) -> list[dict[str, Any]]:
        async with http.get(f"{prom}/api/v1/query", params={"query": expr}) as r:
            body = await r.json()
        return list(body["data"]["result"]) if body.get("status") == "success" else []

    async def alerts() -> list[dict[str, Any]]:
        async with http.get(f"{prom}/api/v1/alerts") as r:
            body = await r.json()
        return list(body["data"]["alerts"])

    async def ready() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            async with http.get(f"{prom}/-/ready") as r:
                return r.status == 200
        return False

    await until(ready, timeout=30, what="Prometheus ready")

    # Both targets scraped, every GPU of the node healthy in Prometheus's store.
    async def scraping() -> bool:
        up = await query("up == 1")
        jobs = {s["metric"]["job"] for s in up}
        healthy = await query(f'valet_gpu_healthy{{node="{node}"}} == 1')
        return jobs == {"valet-operator", "valet-agent"} and len(healthy) == 8

    await until(scraping, timeout=30, what="Prometheus scraping the operator and 8 healthy GPUs")
    assert await query("valet_reconcile_duration_seconds_count"), "no operator metrics scraped"
    assert not await alerts(), "an alert before the fault"

    fault_wall, fault = time.time(), time.monotonic()
    await c.fault(node, gpu=3, xid=79)

    seen: dict[str, float] = {}
    firing: dict[str, Any] = {}
    deadline = fault + 30
    while "firing" not in seen:
        assert time.monotonic() < deadline, f"{ALERT} not firing 30 s after the fault: {seen}"
        for alert in await alerts():
            if alert["labels"]["alertname"] == ALERT and alert["labels"].get("node") == node:
                seen.setdefault(alert["state"], time.monotonic() - fault)
                if alert["state"] == "firing":
                    firing = alert
        await asyncio.sleep(0.1)

    assert "pending" in seen, f"{ALERT} went firing without being seen pending: {seen}"
    assert seen["pending"] < seen["firing"]
    assert firing["labels"] == {
        "alertname": ALERT,
        "severity": "critical",
        "node": node,
        "gpu": "3",
        "uuid": firing["labels"]["uuid"],
        "instance": firing["labels"]["instance"],
        "job": "valet-agent",
    }
    assert firing["annotations"]["summary"] == f"GPU 3 on node {node} is unhealthy"
    assert firing["annotations"]["runbook_url"] == "docs/runbook.md#valetgpuunhealthy"
    # Prometheus's own record: when the condition first held (the alert went pending).
    active_at = dt.datetime.fromisoformat(firing["activeAt"].replace("Z", "+00:00")).timestamp()
    # No other rule fires on a fleet whose only trouble is one GPU. ValetXIDBurst is left
    # out: the simulated backend reports a latched injected XID again on every probe (one
    # event a second here), so valet_gpu_xid_events_total counts a burst that a real GPU,
    # reporting the event once, would not.
    others = {a["labels"]["alertname"] for a in await alerts()} - {ALERT, "ValetXIDBurst"}
    assert not others, f"other alerts on a healthy fleet but one GPU: {others}"
    print(
        f"\n{c.backend.name}: XID 79 injected → {ALERT} pending after {seen['pending']:.2f} s"
        f" (Prometheus activeAt {active_at - fault_wall:.2f} s), firing after"
        f" {seen['firing']:.2f} s (for: {FOR}, scrape and evaluation every {INTERVAL})"
    )
