"""The watch streams the operator's cache is fed from (``Api.watch``, ``Operator._watch``)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.harness import Backend, cluster, fast_options
from valet.handlers.operator import Operator
from valet.k8s.cache import Kind
from valet.k8s.client import MERGE, core_path, node_path


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


async def test_a_pod_deleted_while_the_watch_was_down_is_forgotten_when_it_lists_again(
    backend: Backend,
) -> None:
    """A watch that has to list again (410 Gone, an error) hands the operator the whole
    listing, which replaces its pods, as an informer does: a deletion while the watch was
    down never arrives as an event, and no periodic relist of the fleet catches it."""
    async with cluster(backend, 1) as c:
        pod = {
            "metadata": {"name": "gone-while-unwatched"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "image": "registry.example/c:1",
                        "resources": {"limits": {"nvidia.com/gpu": "1"}},  # valet counts it
                    }
                ]
            },
        }
        await c.namespace(c.train)
        await c.api.call("POST", core_path("pods", c.train), pod)
        operator = Operator(fast_options(), api=c.api)
        await operator.initial_sync()
        key = f"{c.train}/gone-while-unwatched"
        assert key in operator.cache.pods
        await c.api.call(
            "DELETE", core_path("pods", c.train, "gone-while-unwatched"), {"gracePeriodSeconds": 0}
        )
        # The pod watch starting again without a version, as after an error:
        watch = operator._watch(core_path("pods", None), "", operator._feed(Kind.POD))
        task = asyncio.create_task(watch)
        try:

            async def forgotten() -> bool:
                return key not in operator.cache.pods

            await c.until(forgotten, what="the deleted pod gone from the operator's cache")
        finally:
            task.cancel()
