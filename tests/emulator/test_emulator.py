"""The emulator layer is tested too: the Kubernetes semantics the operator relies on,
over HTTP with valet's own client."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.emulator.server import kubeconfig, serve
from valet.k8s import errors
from valet.k8s.client import (
    JSON_PATCH,
    MERGE,
    STRATEGIC,
    Api,
    RetryPolicy,
    core_path,
    load_api_client,
    node_path,
    valet_path,
)

NO_RETRY = RetryPolicy(attempts=1)


@contextlib.asynccontextmanager
async def emulated() -> AsyncIterator[Api]:
    async with serve() as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)), retry=NO_RETRY)
            try:
                yield api
            finally:
                api.close()


def pod(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "spec": {"containers": []}}


async def test_server_sets_metadata_and_generate_name() -> None:
    async with emulated() as api:
        created = await api.call(
            "POST", core_path("pods", "default"), {"metadata": {"generateName": "w-"}}
        )
        md = created["metadata"]
        assert md["name"].startswith("w-") and len(md["name"]) > 2
        assert md["uid"] and md["creationTimestamp"] and md["generation"] == 1
        assert int(md["resourceVersion"]) > 0 and created["status"]["phase"] == "Pending"
        with pytest.raises(errors.AlreadyExistsError):
            await api.call("POST", core_path("pods", "default"), {"metadata": {"name": md["name"]}})


async def test_namespaces_are_a_resource_and_required() -> None:
    async with emulated() as api:
        with pytest.raises(errors.NotFoundError):
            await api.call("POST", core_path("pods", "nope"), pod("a"))
        await api.call("POST", core_path("namespaces", None), {"metadata": {"name": "nope"}})
        assert (await api.call("GET", core_path("namespaces", None, "nope")))["kind"] == "Namespace"
        await api.call("POST", core_path("pods", "nope"), pod("a"))


async def test_label_and_field_selectors_filter_lists() -> None:
    async with emulated() as api:
        for name, kind in (("a", "worker"), ("b", "spot"), ("c", "worker")):
            await api.call("POST", core_path("pods", "default"), pod(name, kind=kind))
        workers = await api.call(
            "GET", core_path("pods", None), query={"labelSelector": "kind=worker"}
        )
        assert [p["metadata"]["name"] for p in workers["items"]] == ["a", "c"]
        not_spot = await api.call(
            "GET", core_path("pods", None), query={"labelSelector": "kind notin (spot)"}
        )
        assert len(not_spot["items"]) == 2
        by_name = await api.call(
            "GET", core_path("pods", None), query={"fieldSelector": "metadata.name=b"}
        )
        assert [p["metadata"]["name"] for p in by_name["items"]] == ["b"]


async def test_status_subresource_is_split_from_the_object() -> None:
    async with emulated() as api:
        body = {"metadata": {"name": "j"}, "spec": {"replicas": 1}, "status": {"phase": "X"}}
        created = await api.call("POST", valet_path("trainingjobs", "default"), body)
        assert "status" not in created  # ignored on create
        path = valet_path("trainingjobs", "default", "j")
        await api.call("PATCH", path, {"status": {"phase": "Running"}}, content_type=MERGE)
        assert "status" not in await api.call("GET", path)
        await api.call(
            "PATCH", path + "/status", {"status": {"phase": "Running"}}, content_type=MERGE
        )
        after = await api.call(
            "PATCH", path + "/status", {"spec": {"replicas": 9}}, content_type=MERGE
        )
        assert after["status"]["phase"] == "Running" and after["spec"]["replicas"] == 1


async def test_put_checks_the_resource_version_and_json_patch_test_fails_with_422() -> None:
    async with emulated() as api:
        created = await api.call(
            "POST",
            core_path("configmaps", "default"),
            {"metadata": {"name": "c"}, "data": {"k": "1"}},
        )
        path = core_path("configmaps", "default", "c")
        created["data"]["k"] = "2"
        updated = await api.call("PUT", path, created)
        assert updated["data"]["k"] == "2"
        with pytest.raises(errors.ConflictError):
            await api.call("PUT", path, created, retry_conflicts=False)  # stale resourceVersion
        with pytest.raises(errors.InvalidError):
            await api.call(
                "PATCH",
                path,
                [{"op": "test", "path": "/data/k", "value": "1"}],
                content_type=JSON_PATCH,
            )


async def test_strategic_merge_merges_conditions_by_type() -> None:
    async with emulated() as api:
        await api.call("POST", node_path(), {"metadata": {"name": "n"}})
        conds = [{"type": "Ready", "status": "True"}, {"type": "Other", "status": "False"}]
        await api.call(
            "PATCH",
            node_path("n", status=True),
            {"status": {"conditions": conds}},
            content_type=STRATEGIC,
        )
        patch = {"status": {"conditions": [{"type": "Ready", "status": "False"}]}}
        node = await api.call("PATCH", node_path("n", status=True), patch, content_type=STRATEGIC)
        assert {c["type"]: c["status"] for c in node["status"]["conditions"]} == {
            "Ready": "False",
            "Other": "False",
        }


async def test_binding_eviction_and_graceful_deletion_of_pods() -> None:
    async with emulated() as api:
        await api.call("POST", core_path("pods", "default"), pod("p"))
        binding = {"target": {"kind": "Node", "name": "n1"}}
        await api.call("POST", core_path("pods", "default", "p", "binding"), binding)
        assert (await api.call("GET", core_path("pods", "default", "p")))["spec"][
            "nodeName"
        ] == "n1"
        with pytest.raises(errors.ConflictError):
            await api.call(
                "POST", core_path("pods", "default", "p", "binding"), binding, retry_conflicts=False
            )
        eviction = {"deleteOptions": {"gracePeriodSeconds": 7}}
        await api.call("POST", core_path("pods", "default", "p", "eviction"), eviction)
        leaving = await api.call("GET", core_path("pods", "default", "p"))
        assert leaving["metadata"]["deletionGracePeriodSeconds"] == 7  # bound: it stays its grace
        await api.call(
            "DELETE", core_path("pods", "default", "p"), query={"gracePeriodSeconds": "0"}
        )
        with pytest.raises(errors.NotFoundError):
            await api.call("GET", core_path("pods", "default", "p"))
        with pytest.raises(errors.NotFoundError):
            await api.call("POST", core_path("pods", "default", "p", "eviction"), eviction)


async def test_scale_subresource_reads_and_writes_replicas() -> None:
    async with emulated() as api:
        await api.call(
            "POST",
            valet_path("trainingjobs", "default"),
            {"metadata": {"name": "j"}, "spec": {"replicas": 2}},
        )
        scale = valet_path("trainingjobs", "default", "j", "scale")
        assert (await api.call("GET", scale))["spec"]["replicas"] == 2
        await api.call("PATCH", scale, {"spec": {"replicas": 5}}, content_type=MERGE)
        assert (await api.call("GET", valet_path("trainingjobs", "default", "j")))["spec"][
            "replicas"
        ] == 5


async def test_watch_streams_changes_and_resumes_from_a_resource_version() -> None:
    async with emulated() as api:
        await api.call("POST", core_path("pods", "default"), pod("first"))
        seen: list[tuple[str, str]] = []

        async def watch() -> None:
            async for event in api.watch(core_path("pods", "default"), {"labelSelector": "w"}):
                seen.append((event["type"], event["object"]["metadata"]["name"]))
                if len(seen) == 3:
                    return

        task = asyncio.create_task(watch())
        await api.call("POST", core_path("pods", "default"), pod("second", w="1"))
        await api.call("POST", core_path("pods", "default"), pod("ignored"))
        await api.call("DELETE", core_path("pods", "default", "second"))
        await api.call("POST", core_path("pods", "default"), pod("third", w="1"))
        await asyncio.wait_for(task, 5)
        assert seen == [("ADDED", "second"), ("DELETED", "second"), ("ADDED", "third")]
