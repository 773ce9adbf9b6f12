"""What a kubelet does for pods bound to simulated nodes, as pure decisions over pod objects.

Admission as the kubelet does it (a pod that does not fit the node's allocatable GPUs
fails with ``OutOfnvidia.com/gpu``), Pending → Running after a start-up delay, a pod
being deleted goes after its grace period, a pod may finish after a runtime or be made
to fail. ``Kubelet.see`` returns what to do and when; ``SimNodes`` does the I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from valet.k8s import codec
from valet.model.enums import GPU_RESOURCE, GROUP
from valet.model.timefmt import to_rfc3339

RUNTIME_ANNOTATION = f"{GROUP}/sim-runtime-seconds"
FAIL_ANNOTATION = f"{GROUP}/sim-fail"
OUT_OF_GPU = f"OutOf{GPU_RESOURCE}"


@dataclasses.dataclass(frozen=True)
class Step:
    """One thing to do to a pod: at ``at``, ``kind`` is start / finish / fail / reject / remove."""

    at: float
    kind: str
    key: str
    node: str
    message: str = ""


@dataclasses.dataclass
class _PodState:
    node: str
    gpus: int
    admitted: bool = False
    terminal: bool = False
    scheduled: set[str] = dataclasses.field(default_factory=set)


class Kubelet:
    def __init__(self, allocatable: Mapping[str, int], startup_seconds: float) -> None:
        self.allocatable = allocatable
        self.startup_seconds = startup_seconds
        self.pods: dict[str, _PodState] = {}

    def used(self, node: str, but: str = "") -> int:
        return sum(
            s.gpus
            for k, s in self.pods.items()
            if s.node == node and s.admitted and not s.terminal and k != but
        )

    def see(self, raw: Mapping[str, Any], now: float, deleted: bool = False) -> list[Step]:
        md, spec = codec.meta(raw), raw.get("spec") or {}
        key = f"{md.get('namespace')}/{md.get('name')}"
        node = str(spec.get("nodeName") or "")
        if deleted or node not in self.allocatable:
            self.pods.pop(key, None)
            return []
        status = raw.get("status") or {}
        phase = status.get("phase") or "Pending"
        state = self.pods.get(key)
        if state is None:
            state = self.pods[key] = _PodState(node, codec.pod_requests_gpus(raw))
        state.terminal = phase in ("Succeeded", "Failed")
        steps: list[Step] = []

        def once(kind: str, at: float, message: str = "") -> None:
            if kind not in state.scheduled:
                state.scheduled.add(kind)
                steps.append(Step(at, kind, key, node, message))

        if md.get("deletionTimestamp"):
            grace = float(md.get("deletionGracePeriodSeconds") or 0)
            once("remove", now + grace)
            return steps
        if state.terminal:
            return steps
        annotations = md.get("annotations") or {}
        if annotations.get(FAIL_ANNOTATION) == "true":
            once("fail", now, "made to fail")
            return steps
        if phase == "Pending" and not state.admitted:
            if self.used(node, but=key) + state.gpus > self.allocatable[node]:
                once(
                    "reject",
                    now,
                    f"Node didn't have enough resource: {GPU_RESOURCE}, requested: {state.gpus},"
                    f" used: {self.used(node, but=key)}, capacity: {self.allocatable[node]}",
                )
                state.terminal = True
                return steps
            state.admitted = True
            once("start", now + self.startup_seconds)
        runtime = annotations.get(RUNTIME_ANNOTATION)
        if phase == "Running" and runtime:
            once("finish", now + float(runtime))
        return steps


def status_patch(step: Step, now: float) -> dict[str, Any] | None:
    """The pod status a step writes (None for ``remove``, which deletes the pod)."""
    stamp = to_rfc3339(now)
    if step.kind == "start":
        return {
            "status": {
                "phase": "Running",
                "startTime": stamp,
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}],
            }
        }
    if step.kind == "finish":
        return {"status": {"phase": "Succeeded", "reason": "Completed"}}
    if step.kind == "fail":
        return {"status": {"phase": "Failed", "reason": "Error", "message": step.message}}
    if step.kind == "reject":
        return {"status": {"phase": "Failed", "reason": OUT_OF_GPU, "message": step.message}}
    return None
