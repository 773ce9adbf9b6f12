"""TrainingJob and SpotPool specs and statuses, parsed once from raw manifests.

Defaults here equal the CRD's (``crds/``), so a manifest that skipped API-server
defaulting (an emulator, an old object) parses to the same spec. ``minReplicas`` has no
default in the CRD: left out, it is 1, or 0 while ``replicas`` is 0, here and in the CRD's
CEL rules alike. Names, label values and pod templates are checked by the CRD only.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from valet.model import _parse as p
from valet.model.enums import JobPhase, NodeState
from valet.model.errors import SpecError
from valet.model.shards import ShardSet
from valet.model.timefmt import from_rfc3339, to_rfc3339

Raw = Mapping[str, Any]
DEFAULT_TOPOLOGY_KEY = "topology.kubernetes.io/zone"
PRIORITY_RANGE = (-1000, 1000)  # the CRD's bounds of spec.priority
_PHASES = frozenset(p.value for p in JobPhase)
_NODE_COUNT_KEYS = ("new", *(s.value for s in NodeState), "unknown")


# --- TrainingJob -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HealingPolicy:
    use_buffer: bool = True
    max_restarts: int = 10
    backoff_seconds: int = 10


@dataclasses.dataclass(frozen=True)
class TrainingJobSpec:
    replicas: int
    min_replicas: int
    max_replicas: int
    gpus_per_replica: int
    pool: str | None = None
    priority: int = 0
    healing: HealingPolicy = HealingPolicy()
    topology_key: str = DEFAULT_TOPOLOGY_KEY
    template: Raw = dataclasses.field(default_factory=dict, compare=False, repr=False)

    @property
    def target(self) -> int:
        """Workers wanted now: replicas, never above maxReplicas."""
        return min(self.replicas, self.max_replicas)

    @classmethod
    def parse(cls, raw: Raw, path: str = "spec") -> TrainingJobSpec:
        replicas = p.integer(raw, "replicas", path, default=1, minimum=0)
        min_replicas = p.integer(raw, "minReplicas", path, default=min(1, replicas), minimum=0)
        max_replicas = p.integer(raw, "maxReplicas", path, default=max(replicas, min_replicas))
        if not min_replicas <= replicas <= max_replicas:
            raise SpecError(
                f"{path}.replicas",
                f"must satisfy minReplicas ({min_replicas}) <= replicas ({replicas})"
                f" <= maxReplicas ({max_replicas})",
            )
        healing = p.mapping(raw, "healing", path)
        hpath = f"{path}.healing"
        pool = raw.get("pool")
        return cls(
            replicas=replicas,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
            gpus_per_replica=p.integer(raw, "gpusPerReplica", path, default=8, minimum=1),
            pool=p.string(raw, "pool", path) if pool is not None else None,
            priority=p.integer(
                raw,
                "priority",
                path,
                default=0,
                minimum=PRIORITY_RANGE[0],
                maximum=PRIORITY_RANGE[1],
            ),
            healing=HealingPolicy(
                use_buffer=p.boolean(healing, "useBuffer", hpath, default=True),
                max_restarts=p.integer(healing, "maxRestarts", hpath, default=10, minimum=0),
                backoff_seconds=p.integer(healing, "backoffSeconds", hpath, default=10, minimum=0),
            ),
            topology_key=p.string(raw, "topologyKey", path, default=DEFAULT_TOPOLOGY_KEY),
            template=p.mapping(raw, "template", path, required=True),
        )


@dataclasses.dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""
    since: float = 0.0  # lastTransitionTime, epoch seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "status": "True" if self.status else "False",
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": to_rfc3339(self.since),
        }

    @classmethod
    def parse(cls, raw: Raw) -> Condition:
        return cls(
            type=str(raw.get("type", "")),
            status=raw.get("status") == "True",
            reason=str(raw.get("reason", "")),
            message=str(raw.get("message", "")),
            since=from_rfc3339(raw.get("lastTransitionTime")),
        )


def set_condition(conditions: tuple[Condition, ...], new: Condition) -> tuple[Condition, ...]:
    """Replace the condition of new's type, keeping its transition time if status is unchanged."""
    old = next((c for c in conditions if c.type == new.type), None)
    if old is not None and old.status == new.status:
        new = dataclasses.replace(new, since=old.since)
    return (*(c for c in conditions if c.type != new.type), new)


@dataclasses.dataclass(frozen=True)
class LastHeal:
    """The last swap: from the fault (the agent's verdict changing, or the kubelet's last
    heartbeat) to the replacement bound (the operator's part), and to it Running (what the
    user sees, start-up included)."""

    failed_node: str
    spare: str
    fault_at: float
    bound_at: float
    running_at: float | None = None

    @property
    def seconds(self) -> float:
        return max(0.0, self.bound_at - self.fault_at)

    @property
    def seconds_to_running(self) -> float | None:
        return None if self.running_at is None else max(0.0, self.running_at - self.fault_at)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "failedNode": self.failed_node,
            "spare": self.spare,
            "faultTime": to_rfc3339(self.fault_at),
            "boundTime": to_rfc3339(self.bound_at),
            "seconds": round(self.seconds, 3),
        }
        # Explicit nulls: status is merge-patched, and a new heal must not keep the last
        # one's Running time.
        out["runningTime"] = to_rfc3339(self.running_at) if self.running_at is not None else None
        out["secondsToRunning"] = (
            round(self.seconds_to_running or 0.0, 3) if self.running_at is not None else None
        )
        return out


@dataclasses.dataclass(frozen=True)
class TrainingJobStatus:
    phase: JobPhase | None = None
    replicas: int = 0
    ready_replicas: int = 0
    selector: str = ""
    restarts: int = 0
    swaps: int = 0
    last_heal: LastHeal | None = None
    conditions: tuple[Condition, ...] = ()
    message: str = ""
    backoff_until: float = 0.0

    @property
    def started(self) -> bool:
        """The gang ran at least once: healing may now draw on the buffer."""
        return self.phase not in (None, JobPhase.PENDING)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": self.phase.value if self.phase else None,
            "replicas": self.replicas,
            "readyReplicas": self.ready_replicas,
            "selector": self.selector,
            "restarts": self.restarts,
            "swaps": self.swaps,
            "conditions": [c.to_dict() for c in self.conditions],
            "message": self.message,
        }
        if self.backoff_until:
            out["backoffUntil"] = to_rfc3339(self.backoff_until)
        if self.last_heal is not None:
            out["lastHeal"] = self.last_heal.to_dict()
        return out

    @classmethod
    def parse(cls, raw: Raw) -> TrainingJobStatus:
        phase = raw.get("phase")
        heal = raw.get("lastHeal")
        return cls(
            phase=JobPhase(phase) if isinstance(phase, str) and phase in _PHASES else None,
            replicas=int(raw.get("replicas") or 0),
            ready_replicas=int(raw.get("readyReplicas") or 0),
            selector=str(raw.get("selector") or ""),
            restarts=int(raw.get("restarts") or 0),
            swaps=int(raw.get("swaps") or 0),
            last_heal=LastHeal(
                failed_node=str(heal.get("failedNode", "")),
                spare=str(heal.get("spare", "")),
                fault_at=from_rfc3339(heal.get("faultTime")),
                bound_at=from_rfc3339(heal.get("boundTime")),
                running_at=from_rfc3339(heal.get("runningTime"), 0.0) or None,
            )
            if isinstance(heal, Mapping)
            else None,
            conditions=tuple(Condition.parse(c) for c in raw.get("conditions") or ()),
            message=str(raw.get("message") or ""),
            backoff_until=from_rfc3339(raw.get("backoffUntil")),
        )


# --- SpotPool ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Buffer:
    count: int | None = None
    percent: int | None = None
    # Spares kept unpacked so that a failure takes one at once: a count, or "auto" (sized
    # from the pool's failure rate and notice, see valet.policy.buffer.auto_hot).
    hot: int | None = None
    hot_auto: bool = False

    def target(self, pool_size: int) -> int:
        if self.count is not None:
            return min(self.count, pool_size)
        if self.percent is not None:
            return math.ceil(pool_size * self.percent / 100)
        return 0


@dataclasses.dataclass(frozen=True)
class LemonPolicy:
    failures: int = 3
    window_seconds: int = 7 * 24 * 3600


@dataclasses.dataclass(frozen=True)
class CircuitBreaker:
    max_failed_percent: int = 20
    window_seconds: int = 600


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    namespace: str
    gpus_per_pod: int = 1
    weight: int = 1
    shards: int | None = None
    max_pods: int | None = None
    template: Raw = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class SpotPoolSpec:
    node_selector: Mapping[str, str]
    buffer: Buffer = Buffer()
    notice_seconds: int = 30
    lemon: LemonPolicy = LemonPolicy()
    circuit_breaker: CircuitBreaker = CircuitBreaker()
    max_remediations: int = 3
    allowed_namespaces: tuple[str, ...] = ()
    workloads: tuple[Workload, ...] = ()
    node_grace_seconds: int | None = None  # kubelet silence that makes a node dead

    @classmethod
    def parse(cls, raw: Raw, path: str = "spec") -> SpotPoolSpec:
        selector = p.string_map(raw, "nodeSelector", path)
        if not selector:
            raise SpecError(f"{path}.nodeSelector", "must select nodes with at least one label")
        buf = p.mapping(raw, "buffer", path)
        bpath = f"{path}.buffer"
        hot = buf.get("hot")
        hot_auto = hot == "auto"
        buffer = Buffer(
            count=p.optional_integer(buf, "count", bpath, minimum=0),
            percent=p.optional_integer(buf, "percent", bpath, minimum=0),
            hot=None if hot_auto else p.optional_integer(buf, "hot", bpath, minimum=0),
            hot_auto=hot_auto,
        )
        if buffer.count is not None and buffer.percent is not None:
            raise SpecError(bpath, "give count or percent, not both")
        if buffer.percent is not None and buffer.percent > 100:
            raise SpecError(f"{bpath}.percent", f"must be <= 100, not {buffer.percent}")
        pre = p.mapping(raw, "preemption", path)
        lemon = p.mapping(raw, "lemon", path)
        breaker = p.mapping(raw, "circuitBreaker", path)
        remediation = p.mapping(raw, "remediation", path)
        allowed = p.string_list(raw, "allowedNamespaces", path)
        workloads = tuple(
            _parse_workload(w, f"{path}.workloads[{i}]", allowed)
            for i, w in enumerate(raw.get("workloads") or ())
        )
        names = [w.name for w in workloads]
        for name in names:
            if names.count(name) > 1:
                raise SpecError(
                    f"{path}.workloads",
                    f"workload name {name!r} is used more than once: give each workload its own",
                )
        return cls(
            node_selector=selector,
            buffer=buffer,
            notice_seconds=p.integer(
                pre, "noticeSeconds", f"{path}.preemption", default=30, minimum=0, maximum=3600
            ),
            lemon=LemonPolicy(
                failures=p.integer(lemon, "failures", f"{path}.lemon", default=3, minimum=1),
                window_seconds=p.integer(
                    lemon, "windowSeconds", f"{path}.lemon", default=7 * 24 * 3600, minimum=60
                ),
            ),
            circuit_breaker=CircuitBreaker(
                max_failed_percent=p.integer(
                    breaker,
                    "maxFailedPercent",
                    f"{path}.circuitBreaker",
                    default=20,
                    minimum=1,
                    maximum=100,
                ),
                window_seconds=p.integer(
                    breaker, "windowSeconds", f"{path}.circuitBreaker", default=600, minimum=10
                ),
            ),
            max_remediations=p.integer(
                remediation, "maxAttempts", f"{path}.remediation", default=3, minimum=1
            ),
            allowed_namespaces=allowed,
            node_grace_seconds=p.optional_integer(raw, "nodeGraceSeconds", path, minimum=1),
            workloads=workloads,
        )


def _parse_workload(raw: Any, path: str, allowed: tuple[str, ...]) -> Workload:
    if not isinstance(raw, Mapping):
        raise SpecError(path, "must be an object")
    namespace = p.string(raw, "namespace", path)
    if namespace not in allowed:
        raise SpecError(f"{path}.namespace", f"{namespace!r} is not in allowedNamespaces")
    return Workload(
        name=p.string(raw, "name", path),
        namespace=namespace,
        gpus_per_pod=p.integer(raw, "gpusPerPod", path, default=1, minimum=1),
        weight=p.integer(raw, "weight", path, default=1, minimum=1, maximum=1000),
        shards=p.optional_integer(raw, "shards", path, minimum=1),
        max_pods=p.optional_integer(raw, "maxPods", path, minimum=0),
        template=p.mapping(raw, "template", path, required=True),
    )


@dataclasses.dataclass(frozen=True)
class ShardStatus:
    workload: str
    total: int
    done: ShardSet = ShardSet()
    running: int = 0

    @property
    def pending(self) -> int:
        return self.total - len(self.done) - self.running

    def to_dict(self) -> dict[str, Any]:
        return {
            "workload": self.workload,
            "total": self.total,
            "done": self.done.format(),
            "doneCount": len(self.done),
            "running": self.running,
            "pending": self.pending,
        }


@dataclasses.dataclass(frozen=True)
class SpotPoolStatus:
    spares: int = 0
    spares_target: int = 0
    nodes: Mapping[str, int] = dataclasses.field(default_factory=dict)
    spot_gpus: int = 0
    spot_pods: int = 0
    preemptions: int = 0
    spot_gpu_seconds: float = 0.0
    shards: tuple[ShardStatus, ...] = ()
    conditions: tuple[Condition, ...] = ()

    def done_shards(self, workload: str) -> ShardSet:
        return next((s.done for s in self.shards if s.workload == workload), ShardSet())

    def to_dict(self) -> dict[str, Any]:
        return {
            "spares": self.spares,
            "sparesTarget": self.spares_target,
            # Every state, zeros included: a merge patch keeps keys it does not mention.
            "nodes": {s: self.nodes.get(s, 0) for s in _NODE_COUNT_KEYS} | dict(self.nodes),
            "spotGPUs": self.spot_gpus,
            "spotPods": self.spot_pods,
            "preemptions": self.preemptions,
            "spotGPUSeconds": round(self.spot_gpu_seconds, 3),
            "shards": [s.to_dict() for s in self.shards],
            "conditions": [c.to_dict() for c in self.conditions],
        }

    @classmethod
    def parse(cls, raw: Raw) -> SpotPoolStatus:
        return cls(
            spares=int(raw.get("spares") or 0),
            spares_target=int(raw.get("sparesTarget") or 0),
            nodes={str(k): int(v) for k, v in (raw.get("nodes") or {}).items() if v},
            spot_gpus=int(raw.get("spotGPUs") or 0),
            spot_pods=int(raw.get("spotPods") or 0),
            preemptions=int(raw.get("preemptions") or 0),
            spot_gpu_seconds=float(raw.get("spotGPUSeconds") or 0.0),
            shards=tuple(
                ShardStatus(
                    workload=str(s.get("workload", "")),
                    total=int(s.get("total") or 0),
                    done=ShardSet.parse(str(s.get("done") or ""), "status.shards.done"),
                    running=int(s.get("running") or 0),
                )
                for s in raw.get("shards") or ()
            ),
            conditions=tuple(Condition.parse(c) for c in raw.get("conditions") or ()),
        )
