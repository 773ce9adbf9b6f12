"""What a cluster needs before valet runs there, as the chart would install it: valet's CRDs
(awaited until Established) and the two PriorityClasses. For the tests' real-API tier, the
demo and hand-run clusters; each function returns the paths it created, so a caller can
leave a cluster as it found it (``delete_all``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import yaml

from valet.k8s import errors
from valet.k8s.client import Api

CRD_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
PRIORITY_CLASS_PATH = "/apis/scheduling.k8s.io/v1/priorityclasses"
# name, value, preemption policy: as charts/valet/values.yaml creates them.
PRIORITY_CLASSES: tuple[tuple[str, int, str], ...] = (
    ("valet-training", 1000000, "PreemptLowerPriority"),
    ("valet-spot", -100, "Never"),
)


async def install_crds(api: Api, files: Iterable[Path], timeout: float = 30.0) -> list[str]:
    """Create (or update) each CRD and wait until the API server serves it."""
    made: list[str] = []
    for file in files:
        crd = yaml.safe_load(file.read_text())
        name = crd["metadata"]["name"]
        try:
            await api.call("POST", CRD_PATH, crd)
            made.append(f"{CRD_PATH}/{name}")
        except errors.AlreadyExistsError:
            current = await api.call("GET", f"{CRD_PATH}/{name}")
            crd["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await api.call("PUT", f"{CRD_PATH}/{name}", crd)
        await _established(api, name, timeout)
    return made


async def _established(api: Api, name: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        status = (await api.call("GET", f"{CRD_PATH}/{name}")).get("status") or {}
        if any(
            c["type"] == "Established" and c["status"] == "True"
            for c in status.get("conditions") or ()
        ):
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"CRD {name} not Established after {timeout}s")
        await asyncio.sleep(0.05)


async def create_priority_classes(
    api: Api, classes: Sequence[tuple[str, int, str]] = PRIORITY_CLASSES
) -> list[str]:
    """Create the PriorityClasses that do not exist yet."""
    made: list[str] = []
    for name, value, policy in classes:
        body = {
            "apiVersion": "scheduling.k8s.io/v1",
            "kind": "PriorityClass",
            "metadata": {"name": name},
            "value": value,
            "preemptionPolicy": policy,
        }
        with contextlib.suppress(errors.AlreadyExistsError):
            await api.call("POST", PRIORITY_CLASS_PATH, body)
            made.append(f"{PRIORITY_CLASS_PATH}/{name}")
    return made


async def delete_all(api: Api, paths: Iterable[str]) -> None:
    """Delete what the functions above made (gone already is fine)."""
    for path in paths:
        with contextlib.suppress(errors.NotFoundError):
            await api.call("DELETE", path)
