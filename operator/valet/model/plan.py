"""The Plan: typed actions that policy returns and the k8s layer (or the simulator) applies.

Actions are idempotent intents; applying them in order converges the cluster. A Plan
can be logged, dry-run and asserted on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import TypeVar

from valet.model.enums import EventType, NodeState, PodKind, Reason, Remediation
from valet.model.specs import SpotPoolStatus, TrainingJobStatus


@dataclasses.dataclass(frozen=True)
class SetNodeState:
    node: str
    state: NodeState
    reason: Reason


@dataclasses.dataclass(frozen=True)
class SetCordon:
    node: str
    cordoned: bool


@dataclasses.dataclass(frozen=True)
class SetSpareTaint:
    node: str
    present: bool


@dataclasses.dataclass(frozen=True)
class SetOutOfService:
    """Kubernetes' out-of-service taint (NoExecute) on a node whose kubelet is gone."""

    node: str
    present: bool


@dataclasses.dataclass(frozen=True)
class RecordFault:
    """Append a drain to the node's fault history (lemon detection)."""

    node: str
    at: float
    signal: str


@dataclasses.dataclass(frozen=True)
class RequestRemediation:
    node: str
    kind: Remediation
    attempt: int


@dataclasses.dataclass(frozen=True)
class ClearRemediation:
    node: str
    clear_faults: bool = False


@dataclasses.dataclass(frozen=True)
class EvictPod:
    """Evict through the Eviction API, giving the pod grace_seconds of notice."""

    namespace: str
    name: str
    grace_seconds: int
    reason: Reason


@dataclasses.dataclass(frozen=True)
class DeletePod:
    """Delete a pod; ``force`` (grace 0) for a pod on a dead node, which no kubelet will end."""

    namespace: str
    name: str
    reason: Reason
    force: bool = False


@dataclasses.dataclass(frozen=True)
class CreatePod:
    """Create a pod (schedulerName valet) from its owner's template; not yet bound."""

    namespace: str
    name: str
    kind: PodKind
    owner: str
    gpus: int
    rank: int | None = None
    workload: str | None = None
    shard: int | None = None
    nominated_node: str | None = None
    replaces_node: str | None = None
    fault_at: float | None = None


@dataclasses.dataclass(frozen=True)
class BindPod:
    """Bind a pod to a node. A worker that heals a job carries ``healed_at`` (the bind's
    time) onto the pod, so a swap whose status write was lost is still counted."""

    namespace: str
    name: str
    node: str
    healed_at: float | None = None


@dataclasses.dataclass(frozen=True)
class PatchJobStatus:
    namespace: str
    name: str
    status: TrainingJobStatus


@dataclasses.dataclass(frozen=True)
class PatchPoolStatus:
    name: str
    status: SpotPoolStatus


@dataclasses.dataclass(frozen=True)
class EmitEvent:
    kind: str  # "TrainingJob" | "SpotPool" | "Node" | "Pod"
    namespace: str | None
    name: str
    type: EventType
    reason: Reason
    message: str


NodeAction = (  # marks on a Node object
    SetNodeState
    | SetCordon
    | SetSpareTaint
    | SetOutOfService
    | RecordFault
    | RequestRemediation
    | ClearRemediation
)
Action = (
    NodeAction
    | EvictPod
    | DeletePod
    | CreatePod
    | BindPod
    | PatchJobStatus
    | PatchPoolStatus
    | EmitEvent
)


_A = TypeVar("_A")


@dataclasses.dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...] = ()
    wake_at: float | None = None  # run another pass then, even if nothing changes

    def __iter__(self) -> Iterator[Action]:
        return iter(self.actions)

    def __len__(self) -> int:
        return len(self.actions)

    def of(self, kind: type[_A]) -> list[_A]:
        return [a for a in self.actions if isinstance(a, kind)]
