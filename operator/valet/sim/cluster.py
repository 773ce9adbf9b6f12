"""SimCluster: an in-memory cluster that applies Plans the way the API server and kubelet do.

Evicted pods leave after their grace period, bound pods start after a start-up
delay, remediation finishes after its repair time. ``advance(now)`` plays time
forward; ``next_deadline()`` tells the event loop when something happens next.
Frozen views of unchanged nodes are cached, so a pass over thousands of nodes is cheap.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Callable, Mapping

from valet.model.enums import (
    Health,
    NodeState,
    PodKind,
    PodPhase,
    Remediation,
    RemediationResult,
)
from valet.model.plan import (
    Action,
    BindPod,
    ClearRemediation,
    CreatePod,
    DeletePod,
    EmitEvent,
    EvictPod,
    PatchJobStatus,
    PatchPoolStatus,
    Plan,
    RecordFault,
    RequestRemediation,
    SetCordon,
    SetNodeState,
    SetSpareTaint,
)
from valet.model.specs import SpotPoolSpec, SpotPoolStatus, TrainingJobSpec, TrainingJobStatus
from valet.model.view import (
    ClusterView,
    Job,
    Node,
    NodeHealth,
    Pod,
    Pool,
    RemediationStatus,
)

# Returns (seconds the remediation takes, whether it succeeds) for a node and kind.
RemediationModel = Callable[["NodeRec", Remediation], tuple[float, bool]]


def _instant_success(node: NodeRec, kind: Remediation) -> tuple[float, bool]:
    return 0.0, True


@dataclasses.dataclass
class NodeRec:
    name: str
    gpus: int
    labels: dict[str, str]
    state: NodeState | None = None
    state_since: float = 0.0
    unschedulable: bool = False
    spare_taint: bool = False
    health: NodeHealth = NodeHealth(heartbeat=0.0)
    remediation: RemediationStatus = RemediationStatus()
    remediation_due: float | None = None
    remediation_ok: bool = True
    faults: list[float] = dataclasses.field(default_factory=list)
    ready: bool = True

    def freeze(self) -> Node:
        return Node(
            name=self.name,
            gpus=self.gpus,
            labels=self.labels,
            state=self.state,
            state_since=self.state_since,
            unschedulable=self.unschedulable,
            spare_taint=self.spare_taint,
            ready=self.ready,
            health=self.health,
            remediation=self.remediation,
            faults=tuple(self.faults),
        )


@dataclasses.dataclass
class PodRec:
    pod: Pod
    gone_at: float | None = None  # deletion completes
    running_at: float | None = None  # start-up completes
    runtime: float | None = None  # for spot pods: seconds of work until Succeeded
    finish_at: float | None = None


class SimCluster:
    def __init__(
        self,
        *,
        startup_seconds: float = 0.0,
        remediation: RemediationModel = _instant_success,
        spot_runtime: Callable[[Pod], float | None] = lambda pod: None,
        finish_grid: float = 0.0,
    ) -> None:
        self.finish_grid = finish_grid
        self.nodes: dict[str, NodeRec] = {}
        self.pods: dict[str, PodRec] = {}
        self.jobs: dict[str, Job] = {}
        self.pools: dict[str, Pool] = {}
        self.events: list[EmitEvent] = []
        self.startup_seconds = startup_seconds
        self.remediation_model = remediation
        self.spot_runtime = spot_runtime
        self._frozen: dict[str, Node] = {}
        self._pods_view: tuple[Pod, ...] | None = None
        self.on_action: list[Callable[[Action, float], None]] = []
        self.delete_grace_seconds = 30.0
        self._timers: list[tuple[float, int, str, str]] = []
        self._on_node: dict[str, set[str]] = {}
        self._seq = 0

    # --- building -----------------------------------------------------------------------

    def add_node(self, name: str, gpus: int = 8, labels: Mapping[str, str] | None = None) -> None:
        self.nodes[name] = NodeRec(name, gpus, dict(labels or {}))

    def add_job(self, namespace: str, name: str, spec: TrainingJobSpec, now: float = 0.0) -> None:
        self.jobs[f"{namespace}/{name}"] = Job(namespace, name, spec, created_at=now)

    def add_pool(self, name: str, spec: SpotPoolSpec) -> None:
        self.pools[name] = Pool(name, spec)

    # --- what policy sees ---------------------------------------------------------------

    def touch(self, node: str) -> None:
        self._frozen.pop(node, None)

    def view(self) -> ClusterView:
        nodes = {}
        for name, rec in self.nodes.items():
            frozen = self._frozen.get(name)
            if frozen is None:
                frozen = self._frozen[name] = rec.freeze()
            nodes[name] = frozen
        if self._pods_view is None:
            self._pods_view = tuple(rec.pod for rec in self.pods.values())
        return ClusterView(
            nodes=nodes,
            pods=self._pods_view,
            jobs=tuple(self.jobs.values()),
            pools=tuple(self.pools.values()),
        )

    # --- faults -------------------------------------------------------------------------

    def set_health(self, node: str, verdict: Health, signals: tuple[str, ...], now: float) -> None:
        rec = self.nodes[node]
        rec.health = NodeHealth(verdict=verdict, signals=signals, since=now, heartbeat=now)
        self.touch(node)

    def fail_pod(self, key: str) -> None:
        self._set_pod(key, phase=PodPhase.FAILED)

    # --- applying plans -----------------------------------------------------------------

    def apply(self, plan: Plan, now: float) -> None:
        for action in plan:
            self._apply(action, now)
            for hook in self.on_action:
                hook(action, now)

    def _apply(self, action: Action, now: float) -> None:
        match action:
            case SetNodeState(node=name, state=state):
                rec = self.nodes[name]
                rec.state, rec.state_since = state, now
                self.touch(name)
            case SetCordon(node=name, cordoned=cordoned):
                self.nodes[name].unschedulable = cordoned
                self.touch(name)
            case SetSpareTaint(node=name, present=present):
                self.nodes[name].spare_taint = present
                self.touch(name)
            case RecordFault(node=name, at=at):
                self.nodes[name].faults.append(at)
                self.touch(name)
            case RequestRemediation(node=name, kind=kind, attempt=attempt):
                rec = self.nodes[name]
                took, ok = self.remediation_model(rec, kind)
                rec.remediation = RemediationStatus(kind, now, attempt)
                rec.remediation_due, rec.remediation_ok = now + took, ok
                self._timer(now + took, "remediation", name)
                self.touch(name)
            case ClearRemediation(node=name):
                rec = self.nodes[name]
                rec.remediation, rec.remediation_due = RemediationStatus(), None
                self.touch(name)
            case EvictPod(namespace=ns, name=name, grace_seconds=grace):
                self._terminate(f"{ns}/{name}", now, grace)
            case DeletePod(namespace=ns, name=name):
                self._terminate(f"{ns}/{name}", now, self.delete_grace_seconds)
            case CreatePod():
                self._create(action, now)
            case BindPod(namespace=ns, name=name, node=node):
                self._bind(f"{ns}/{name}", node, now)
            case PatchJobStatus(namespace=ns, name=name, status=status):
                self._patch_job(f"{ns}/{name}", status)
            case PatchPoolStatus(name=name, status=pool_status):
                self._patch_pool(name, pool_status)
            case EmitEvent():
                self.events.append(action)

    def _create(self, a: CreatePod, now: float) -> None:
        key = f"{a.namespace}/{a.name}"
        if key in self.pods:
            return  # AlreadyExists: creating is idempotent
        pod = Pod(
            namespace=a.namespace,
            name=a.name,
            kind=a.kind,
            gpus=a.gpus,
            owner=a.owner,
            rank=a.rank,
            workload=a.workload,
            shard=a.shard,
            nominated_node=a.nominated_node,
            replaces_node=a.replaces_node,
            fault_at=a.fault_at,
            created_at=now,
        )
        self.pods[key] = PodRec(pod)
        self._pods_view = None

    def _bind(self, key: str, node: str, now: float) -> None:
        rec = self.pods.get(key)
        if rec is None or rec.pod.node is not None:
            return
        on_node = self._on_node.setdefault(node, set())
        used = sum(self.pods[k].pod.gpus for k in on_node if self.pods[k].pod.holds_gpus)
        on_node.add(key)
        if used + rec.pod.gpus > self.nodes[node].gpus:
            # kubelet admission: OutOfnvidia.com/gpu
            self._set_pod(key, node=node, phase=PodPhase.FAILED)
            return
        self._set_pod(key, node=node)
        rec.running_at = now + self.startup_seconds
        self._timer(rec.running_at, "running", key)
        if rec.pod.kind is PodKind.SPOT:
            rec.runtime = self.spot_runtime(rec.pod)

    def _terminate(self, key: str, now: float, grace: float) -> None:
        rec = self.pods.get(key)
        if rec is None:
            return
        # Nothing runs for an unbound or finished pod: it goes at once.
        if rec.pod.node is None or rec.pod.phase.terminal or grace <= 0:
            self._on_gone(key, now)
            return
        at = now + grace
        if rec.gone_at is None or at < rec.gone_at:
            rec.gone_at = at
            self._timer(at, "gone", key)
        if not rec.pod.deleting:
            self._set_pod(key, deleting=True)

    def _set_pod(self, key: str, **changes: object) -> None:
        rec = self.pods[key]
        rec.pod = dataclasses.replace(rec.pod, **changes)  # type: ignore[arg-type]
        self._pods_view = None

    def _patch_job(self, key: str, status: TrainingJobStatus) -> None:
        if key in self.jobs:
            self.jobs[key] = dataclasses.replace(self.jobs[key], status=status)

    def _patch_pool(self, name: str, status: SpotPoolStatus) -> None:
        if name in self.pools:
            self.pools[name] = dataclasses.replace(self.pools[name], status=status)

    # --- time ---------------------------------------------------------------------------

    def _timer(self, at: float, what: str, key: str) -> None:
        self._seq += 1
        heapq.heappush(self._timers, (at, self._seq, what, key))

    def _due(self, at: float, what: str, key: str) -> bool:
        """Is this timer still the live one (records move on; stale timers are skipped)?"""
        if what == "remediation":
            node = self.nodes.get(key)
            return node is not None and node.remediation_due == at
        rec = self.pods.get(key)
        if rec is None:
            return False
        return {"gone": rec.gone_at, "running": rec.running_at, "finish": rec.finish_at}[what] == at

    def next_deadline(self) -> float:
        while self._timers:
            at, _, what, key = self._timers[0]
            if self._due(at, what, key):
                return at
            heapq.heappop(self._timers)
        return math.inf

    def advance(self, now: float) -> bool:
        """Play every deadline up to ``now``; True when anything policy reads changed."""
        changed = False
        while self._timers and self._timers[0][0] <= now:
            at, _, what, key = heapq.heappop(self._timers)
            if self._due(at, what, key):
                changed = getattr(self, f"_on_{what}")(key, at) or changed
        return changed

    def _on_gone(self, key: str, at: float) -> bool:
        node = self.pods.pop(key).pod.node
        if node is not None:
            self._on_node[node].discard(key)
        self._pods_view = None
        return True

    def _on_running(self, key: str, at: float) -> bool:
        rec = self.pods[key]
        rec.running_at = None
        if rec.pod.phase is not PodPhase.PENDING or rec.pod.deleting:
            return False
        self._set_pod(key, phase=PodPhase.RUNNING, started_at=at)
        if rec.runtime is not None:
            rec.finish_at = at + rec.runtime
            if self.finish_grid:
                rec.finish_at = math.ceil(rec.finish_at / self.finish_grid) * self.finish_grid
            self._timer(rec.finish_at, "finish", key)
        # Policy treats a starting and a running spot pod alike: no pass needed for it.
        return rec.pod.kind is not PodKind.SPOT

    def _on_finish(self, key: str, at: float) -> bool:
        rec = self.pods[key]
        rec.finish_at = None
        if rec.pod.deleting:
            return False
        self._set_pod(key, phase=PodPhase.SUCCEEDED)
        return True

    def _on_remediation(self, name: str, at: float) -> bool:
        rec = self.nodes[name]
        rec.remediation_due = None
        ok = rec.remediation_ok
        result = RemediationResult.SUCCEEDED if ok else RemediationResult.FAILED
        rec.remediation = dataclasses.replace(rec.remediation, result=result, finished_at=at)
        if ok and rec.remediation.requested is not Remediation.DIAGNOSE:
            rec.health = NodeHealth(Health.HEALTHY, (), since=at, heartbeat=at)
        self.touch(name)
        return True
