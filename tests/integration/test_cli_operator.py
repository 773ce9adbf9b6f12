"""`valet operator` as a process (the production entry point) against the emulator."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
import yaml

from tests.emulator.server import kubeconfig, serve
from tests.integration.harness import free_port, spot_pool
from valet.k8s.client import Api, load_api_client, node_path, valet_path


async def test_valet_operator_process_adopts_nodes_and_serves_metrics_and_health() -> None:
    async with serve() as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)))
            node = {
                "metadata": {"name": "n1", "labels": {"valet.dev/simulated": "true"}},
                "status": {"allocatable": {"nvidia.com/gpu": "8"}},
            }
            await api.call("POST", node_path(), node)
            await api.call("POST", valet_path("spotpools", None), spot_pool(shards=None))
            metrics, health = free_port(), free_port()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "valet", "operator", "--kubeconfig", str(path),
                "--metrics-port", str(metrics), "--health-port", str(health),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for _ in range(300):
                    labels = (await api.call("GET", node_path("n1")))["metadata"]["labels"]
                    if "valet.dev/state" in labels:
                        break
                    await asyncio.sleep(0.05)
                assert labels.get("valet.dev/state") == "active", (
                    labels
                )  # never reported: not a spare
                async with aiohttp.ClientSession() as http:
                    # Metrics are set at the end of the pass that labelled the node.
                    for _ in range(100):
                        async with http.get(f"http://127.0.0.1:{metrics}/metrics") as r:
                            text = await r.text()
                        if 'valet_nodes{pool="pool",state="unknown"} 1.0' in text:
                            break
                        await asyncio.sleep(0.05)
                    assert "valet_reconcile_duration_seconds_count" in text
                    assert 'valet_nodes{pool="pool",state="unknown"} 1.0' in text
                    async with http.get(f"http://127.0.0.1:{health}/healthz") as r:
                        assert r.status == 200
            finally:
                proc.terminate()
                await asyncio.wait_for(proc.wait(), 20)
                api.close()
