"""SimCluster: an in-memory cluster that applies Plans the way the API server and kubelet do.

Evicted pods leave after their grace period, bound pods start after a start-up
delay, remediation finishes after its repair time. ``advance(now)`` plays time
forward; ``next_deadline()`` tells the event loop when something happens next.

``view()`` costs what changed since the last view, not the fleet: a node is frozen again
only when touched, pods are indexed (``PodIndex``) one change at a time, and every object
that did not change (each Node, Pod, Job and Pool; the node mapping, the pod, job and pool
tuples and the pod index; the whole view when nothing changed) is the very same object
(``is``) as in the previous view, so that policy can reuse what it derived from it. A view
handed out is never mutated afterwards.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import operator
from collections.abc import Callable, Mapping
from typing import TypeVar

from valet.model.changes import Producer
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
from valet.model.podindex import PodIndex
from valet.model.specs import SpotPoolSpec, SpotPoolStatus, TrainingJobSpec, TrainingJobStatus
from valet.model.view import (
    ClusterView,
    Job,
    Node,
    NodeHealth,
    Pod,
    Pool,
    RemediationStatus,
    ViewIndex,
)

_T = TypeVar("_T")

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
        # The last view's parts; None (or a name in _stale) where something changed since.
        self._nodes_view: dict[str, Node] | None = None
        self._node_maps = Producer()  # the views' nodes, each saying what changed
        self._stale: set[str] = set()
        # The current Pod of each PodRec, indexed by node, job and pool one change at a time.
        self._index = PodIndex()
        self._pods_index: ViewIndex | None = None
        self._jobs_view: tuple[Job, ...] = ()
        self._pools_view: tuple[Pool, ...] = ()
        self._view: ClusterView | None = None
        # Keys of pods created, changed or gone since the reader last cleared it (the fleet
        # meters running workers from it); None: nobody reads it.
        self.changed_pods: set[str] | None = None
        self.on_action: list[Callable[[Action, float], None]] = []
        self.delete_grace_seconds = 30.0
        self._timers: list[tuple[float, int, str, str]] = []
        self._on_node: dict[str, set[str]] = {}
        self._seq = 0
        self._handlers: dict[str, Callable[[str, float], bool]] = {
            "gone": self._on_gone,
            "running": self._on_running,
            "finish": self._on_finish,
            "remediation": self._on_remediation,
        }

    # --- building -----------------------------------------------------------------------

    def add_node(self, name: str, gpus: int = 8, labels: Mapping[str, str] | None = None) -> None:
        self.nodes[name] = NodeRec(name, gpus, dict(labels or {}))
        self._nodes_view = None

    def add_job(self, namespace: str, name: str, spec: TrainingJobSpec, now: float = 0.0) -> None:
        self.jobs[f"{namespace}/{name}"] = Job(namespace, name, spec, created_at=now)

    def add_pool(self, name: str, spec: SpotPoolSpec) -> None:
        self.pools[name] = Pool(name, spec)

    # --- what policy sees ---------------------------------------------------------------

    def touch(self, node: str) -> None:
        """The node's record changed: freeze it again for the next view."""
        if node in self.nodes:
            self._stale.add(node)

    def view(self) -> ClusterView:
        nodes = self._nodes_view
        if nodes is None:
            every = {name: rec.freeze() for name, rec in self.nodes.items()}
            nodes = self._node_maps.hand_out(every, every, reordered=True)
        elif self._stale:
            changed = {}
            for name in self._stale:
                frozen = self.nodes[name].freeze()
                if frozen != nodes[name]:  # touched, yet as it was: keep the old one
                    changed[name] = frozen
            if changed:  # copy on write: the views already handed out stay as they were
                nodes = self._node_maps.hand_out(nodes, changed, reordered=False, overlay=changed)
        self._stale.clear()
        if self._pods_index is None:
            self._pods_index = self._index.snapshot()
        index = self._pods_index
        jobs = _same_or(self._jobs_view, tuple(self.jobs.values()))
        pools = _same_or(self._pools_view, tuple(self.pools.values()))
        last = self._view
        if (
            last is None
            or nodes is not last.nodes
            or index is not last.index
            or jobs is not last.jobs
            or pools is not last.pools
        ):
            last = self._view = ClusterView(
                nodes=nodes, pods=index.pods, jobs=jobs, pools=pools, index=index
            )
        self._nodes_view, self._jobs_view, self._pools_view = nodes, jobs, pools
        return last

    # --- faults -------------------------------------------------------------------------

    def set_health(self, node: str, verdict: Health, signals: tuple[str, ...], now: float) -> None:
        rec = self.nodes[node]
        rec.health = NodeHealth(verdict=verdict, signals=signals, since=now, heartbeat=now)
        self.touch(node)

    def pods_on(self, node: str) -> frozenset[str]:
        """Keys of the pods ever bound to a node and not gone yet."""
        return frozenset(self._on_node.get(node, ()))

    def fail_pod(self, key: str) -> None:
        self._set_pod(key, phase=PodPhase.FAILED)

    # --- applying plans -----------------------------------------------------------------

    def apply(self, plan: Plan, now: float) -> None:
        actions = plan.actions
        for i, action in enumerate(actions):
            if type(action) is CreatePod:
                self._create(action, now, bind=_bind_after(actions, i + 1, action))
            else:
                self._apply(action, now)
            for hook in self.on_action:
                hook(action, now)

    def _apply(self, action: Action, now: float) -> None:
        match action:  # the commonest actions first (a case costs an isinstance)
            case BindPod(namespace=ns, name=name, node=node, healed_at=healed_at):
                self._bind(f"{ns}/{name}", node, now, healed_at)
            case DeletePod(namespace=ns, name=name):
                self._terminate(f"{ns}/{name}", now, self.delete_grace_seconds)
            case EmitEvent():
                self.events.append(action)
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
            case PatchJobStatus(namespace=ns, name=name, status=status):
                self._patch_job(f"{ns}/{name}", status)
            case PatchPoolStatus(name=name, status=pool_status):
                self._patch_pool(name, pool_status)

    def _create(self, a: CreatePod, now: float, bind: BindPod | None = None) -> None:
        """Create the pod; ``bind``: the next action, which binds it. No view comes between
        the two, so the pod is created bound (or failed, as ``_bind`` would leave it), and
        the bind then finds it so."""
        key = f"{a.namespace}/{a.name}"
        if key in self.pods:
            return  # AlreadyExists: creating is idempotent
        node = bind.node if bind is not None else None
        fits = node is None or self._admit(key, node, a.gpus)
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
            node=node,
            phase=PodPhase.PENDING if fits else PodPhase.FAILED,
            healed_at=bind.healed_at if bind is not None else None,
        )
        rec = self.pods[key] = PodRec(pod)
        self._put_pod(key, pod)
        if node is not None and fits:
            self._start(rec, key, now)

    def _bind(self, key: str, node: str, now: float, healed_at: float | None = None) -> None:
        rec = self.pods.get(key)
        if rec is None or rec.pod.node is not None:
            return
        if not self._admit(key, node, rec.pod.gpus):
            self._set_pod(key, node=node, phase=PodPhase.FAILED, healed_at=healed_at)
            return
        self._set_pod(key, node=node, healed_at=healed_at)
        self._start(rec, key, now)

    def _admit(self, key: str, node: str, gpus: int) -> bool:
        """Bind the pod to the node's pods; False when the kubelet rejects it for want of
        GPUs (admission: OutOfnvidia.com/gpu)."""
        on_node = self._on_node.setdefault(node, set())
        used = sum(self.pods[k].pod.gpus for k in on_node if self.pods[k].pod.holds_gpus)
        on_node.add(key)
        return used + gpus <= self.nodes[node].gpus

    def _start(self, rec: PodRec, key: str, now: float) -> None:
        """A pod bound: it runs after the start-up delay (a spot pod, for a drawn runtime)."""
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
        rec.pod = _replace_pod(rec.pod, changes)
        self._put_pod(key, rec.pod)

    def _put_pod(self, key: str, pod: Pod) -> None:
        """Every pod created or changed comes through here (and every pod gone, _drop_pod)."""
        self._index.put(pod)
        self._pods_index = None
        if self.changed_pods is not None:
            self.changed_pods.add(key)

    def _drop_pod(self, key: str) -> PodRec:
        rec = self.pods.pop(key)
        self._index.remove(key)
        self._pods_index = None
        if self.changed_pods is not None:
            self.changed_pods.add(key)
        return rec

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
        if what == "running":
            return rec.running_at == at
        return (rec.gone_at if what == "gone" else rec.finish_at) == at

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
                changed = self._handlers[what](key, at) or changed
        return changed

    def _on_gone(self, key: str, at: float) -> bool:
        node = self._drop_pod(key).pod.node
        if node is not None:
            self._on_node[node].discard(key)
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


def _bind_after(actions: tuple[Action, ...], at: int, create: CreatePod) -> BindPod | None:
    """The action at ``at`` when it binds the pod ``create`` makes."""
    bind = actions[at] if at < len(actions) else None
    if (
        isinstance(bind, BindPod)
        and bind.name == create.name
        and bind.namespace == create.namespace
    ):
        return bind
    return None


def _same_or(last: tuple[_T, ...], now: tuple[_T, ...]) -> tuple[_T, ...]:
    """``last`` when it holds the very same objects as ``now`` (so it stays the same)."""
    if len(last) == len(now) and all(a is b for a, b in zip(last, now, strict=True)):
        return last
    return now


_POD_FIELDS = tuple(f.name for f in dataclasses.fields(Pod) if f.init)
_pod_values = operator.attrgetter(*_POD_FIELDS)


def _replace_pod(pod: Pod, changes: Mapping[str, object]) -> Pod:
    """``dataclasses.replace(pod, **changes)`` at half the cost (the simulator replaces
    pods some 150,000 times in a 16k-GPU run): the init fields are copied, the changes laid
    over them, and ``__post_init__`` derives the rest, as ``Pod(...)`` would."""
    if not _FAST_REPLACE:
        return dataclasses.replace(pod, **changes)  # type: ignore[arg-type]
    new = object.__new__(Pod)
    state = new.__dict__
    state.update(zip(_POD_FIELDS, _pod_values(pod), strict=True))
    state.update(changes)
    new.__post_init__()
    return new


# The shortcut needs what it relies on: fields kept in __dict__ and derived in __post_init__.
_FAST_REPLACE = "__slots__" not in vars(Pod) and hasattr(Pod, "__post_init__")
