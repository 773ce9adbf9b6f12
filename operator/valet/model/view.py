"""ClusterView: the frozen snapshot of nodes, pods, jobs and pools that policy decides over."""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Collection, Container, Iterable, Mapping

from valet.model.enums import (
    FaultAction,
    Health,
    NodeState,
    PodKind,
    PodPhase,
    Remediation,
    RemediationResult,
)
from valet.model.faults import worst
from valet.model.specs import SpotPoolSpec, SpotPoolStatus, TrainingJobSpec, TrainingJobStatus


@dataclasses.dataclass(frozen=True)
class GpuStatus:
    index: int
    uuid: str = ""
    healthy: bool = True
    signals: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class NodeHealth:
    """What the node agent and other detectors publish about a node."""

    verdict: Health = Health.HEALTHY
    signals: tuple[str, ...] = ()
    since: float | None = None  # when the verdict last changed
    heartbeat: float | None = None  # last report; None = never reported
    gpus: tuple[GpuStatus, ...] = ()

    @property
    def action(self) -> FaultAction:
        rule = worst(self.signals)
        return rule.action if rule else FaultAction.NONE


@dataclasses.dataclass(frozen=True)
class RemediationStatus:
    requested: Remediation | None = None
    requested_at: float | None = None
    attempts: int = 0
    result: RemediationResult | None = None
    finished_at: float | None = None


@dataclasses.dataclass(frozen=True)
class Node:
    name: str
    gpus: int
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    state: NodeState | None = None
    state_since: float = 0.0
    unschedulable: bool = False
    spare_taint: bool = False
    out_of_service: bool = False  # Kubernetes' out-of-service taint is on it
    ready: bool = True
    ready_since: float | None = None  # lastTransitionTime of the Ready condition
    ready_heartbeat: float | None = None  # lastHeartbeatTime of the Ready condition
    health: NodeHealth = NodeHealth()
    remediation: RemediationStatus = RemediationStatus()
    faults: tuple[float, ...] = ()  # times valet drained this node, for lemon detection
    maintenance: str | None = None  # reason of a planned drain (valet.dev/maintenance)


@dataclasses.dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    kind: PodKind
    gpus: int
    owner: str  # TrainingJob key "ns/name", SpotPool name, or "" for other pods
    node: str | None = None
    phase: PodPhase = PodPhase.PENDING
    deleting: bool = False
    rank: int | None = None
    workload: str | None = None
    shard: int | None = None
    nominated_node: str | None = None
    replaces_node: str | None = None
    fault_at: float | None = None
    healed_at: float | None = None  # a replacement's bind, stamped on it by the Binding
    created_at: float = 0.0
    started_at: float | None = None
    # Derived once (policy asks these of every pod on every pass):
    # holds_gpus: bound and not finished, so its GPUs are taken (also while deleting);
    # live: neither finished nor on its way out.
    key: str = dataclasses.field(init=False, repr=False, compare=False)
    holds_gpus: bool = dataclasses.field(init=False, repr=False, compare=False)
    live: bool = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        terminal = self.phase in _TERMINAL
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")
        object.__setattr__(self, "holds_gpus", self.node is not None and not terminal)
        object.__setattr__(self, "live", not self.deleting and not terminal)


_TERMINAL = frozenset({PodPhase.SUCCEEDED, PodPhase.FAILED})


@dataclasses.dataclass(frozen=True)
class Job:
    namespace: str
    name: str
    spec: TrainingJobSpec
    status: TrainingJobStatus = TrainingJobStatus()
    uid: str = ""
    created_at: float = 0.0
    deleting: bool = False
    key: str = dataclasses.field(init=False, repr=False, compare=False)  # "namespace/name"

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.namespace}/{self.name}")


@dataclasses.dataclass(frozen=True)
class Pool:
    name: str
    spec: SpotPoolSpec
    status: SpotPoolStatus = SpotPoolStatus()
    uid: str = ""


@dataclasses.dataclass(frozen=True)
class NodeUsage:
    """What the pods on one node take, as a pass starts: the start of its GPU accounting."""

    used: int  # GPUs of pods bound here (and not finished) or nominated here
    bound: int  # GPUs of pods bound here and not finished (also while deleting)
    releasing: int  # of those, GPUs of pods on their way out
    spot: tuple[Pod, ...]  # spot pods bound here and not deleting
    workers: bool  # a worker is bound or nominated here


def node_usage(pods: Iterable[Pod]) -> NodeUsage | None:
    """The usage of a node from its pods (``pods_by_node``); None when nothing takes GPUs."""
    used = bound = releasing = 0
    spot: list[Pod] = []
    workers = counted = False
    for pod in pods:
        if not pod.holds_gpus and not (pod.node is None and pod.live):
            continue  # finished; or only indexed here, nominated but on its way out
        counted = True
        used += pod.gpus
        if pod.kind is PodKind.WORKER:
            workers = True
        if pod.holds_gpus:
            bound += pod.gpus
            if pod.deleting:
                releasing += pod.gpus
            elif pod.kind is PodKind.SPOT:
                spot.append(pod)
    if not counted:
        return None
    return NodeUsage(used, bound, releasing, tuple(spot), workers)


@dataclasses.dataclass(frozen=True)
class ViewIndex:
    """Pods grouped as policy asks for them; kept incrementally by ``PodIndex``."""

    pods_by_node: Mapping[str, tuple[Pod, ...]]
    workers_by_job: Mapping[str, tuple[Pod, ...]]
    spot_by_pool: Mapping[str, tuple[Pod, ...]]
    usage: Mapping[str, NodeUsage]
    keys: Mapping[str, Pod]  # every pod by key

    @functools.cached_property
    def pods(self) -> Collection[Pod]:
        """Every pod, in no particular order (a view of ``keys``; the same one each time)."""
        return self.keys.values()


@dataclasses.dataclass(frozen=True)
class ClusterView:
    """Whoever builds a view never changes its mappings afterwards (a new view gets new
    ones): ``PassMemo`` relies on it. Keeping an unchanged Node, Pod or NodeUsage the same
    object from one view to the next is what makes the memo cheap."""

    nodes: Mapping[str, Node]
    # Every pod: in order without an index (the groups below keep it); with one, the
    # index's pods by key (``index.pods``), in no particular order.
    pods: Collection[Pod] = ()
    jobs: tuple[Job, ...] = ()
    pools: tuple[Pool, ...] = ()
    # renewTime of each node's Lease in kube-node-lease: the kubelet's heartbeat (a real
    # kubelet renews it every 10 s, and refreshes the Ready condition only every few minutes).
    leases: Mapping[str, float] = dataclasses.field(default_factory=dict)
    # The groups below, precomputed by whoever keeps the pods (the same as computed here).
    index: ViewIndex | None = dataclasses.field(default=None, compare=False, repr=False)

    def kubelet_heartbeat(self, node: Node) -> float | None:
        """The kubelet's last sign of life: its Lease, else the Ready heartbeat."""
        lease = self.leases.get(node.name)
        return lease if lease is not None else node.ready_heartbeat

    @functools.cached_property
    def pods_by_node(self) -> Mapping[str, tuple[Pod, ...]]:
        """Pods bound to each node (in any phase), or nominated to it and live."""
        if self.index is not None:
            return self.index.pods_by_node
        index: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            if pod.node is not None:
                index[pod.node].append(pod)
            elif pod.nominated_node is not None and pod.live:
                index[pod.nominated_node].append(pod)
        return {k: tuple(v) for k, v in index.items()}

    @functools.cached_property
    def workers_by_job(self) -> Mapping[str, tuple[Pod, ...]]:
        if self.index is not None:
            return self.index.workers_by_job
        index: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            if pod.kind is PodKind.WORKER:
                index[pod.owner].append(pod)
        return {k: tuple(v) for k, v in index.items()}

    @functools.cached_property
    def spot_by_pool(self) -> Mapping[str, tuple[Pod, ...]]:
        if self.index is not None:
            return self.index.spot_by_pool
        index: dict[str, list[Pod]] = defaultdict(list)
        for pod in self.pods:
            if pod.kind is PodKind.SPOT:
                index[pod.owner].append(pod)
        return {k: tuple(v) for k, v in index.items()}

    @functools.cached_property
    def pod_keys(self) -> Container[str]:
        """``namespace/name`` of every pod."""
        if self.index is not None:
            return self.index.keys
        return frozenset(pod.key for pod in self.pods)

    @functools.cached_property
    def usage(self) -> Mapping[str, NodeUsage]:
        """What the pods on each node take (only nodes where something does)."""
        if self.index is not None:
            return self.index.usage
        found = {name: node_usage(pods) for name, pods in self.pods_by_node.items()}
        return {name: usage for name, usage in found.items() if usage is not None}
