"""The watch stream the operator's cache is fed from (``Api.watch``)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.harness import Backend, cluster
from valet.k8s.client import MERGE, node_path


async def test_a_watch_event_longer_than_aiohttps_line_limit_arrives_whole(
    backend: Backend,
) -> None:
    """A Node with many images is one watch line of hundreds of KiB (aiohttp's own line
    reader refuses more than twice its read buffer: 512 KiB)."""
    async with cluster(backend, 1) as c:
        name = f"{c.nodes[0]}-images"
        images = [{"names": [f"registry.example/img-{i:04d}:{'x' * 200}"]} for i in range(3000)]
        seen: list[dict[str, Any]] = []

        async def watch() -> None:
            async for event in c.api.watch(node_path(), {"fieldSelector": f"metadata.name={name}"}):
                seen.append(event["object"])

        task = asyncio.create_task(watch())
        try:
            body = {"metadata": {"name": name}, "status": {"images": images}}
            await c.api.call("POST", node_path(), body)
            await c.api.call("PATCH", node_path(name, status=True), body, content_type=MERGE)

            async def arrived() -> dict[str, Any] | None:
                return next((o for o in seen if o.get("status", {}).get("images")), None)

            got = await c.until(arrived, what="the node with its images")
            assert len(got["status"]["images"]) == 3000
        finally:
            task.cancel()
            await c.api.call("DELETE", node_path(name))
