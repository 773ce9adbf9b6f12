"""Raw Kubernetes objects ↔ valet's frozen model: parsing at the edge, manifests on the way out.

Everything valet persists lives on the objects themselves, so a restarted operator
reads back the same view (DESIGN §5):

- Node: label ``valet.dev/state``; annotations for when the state began, the drain history
  (lemon detection) and the remediation hand-shake with the node agent; the spare taint;
  ``spec.unschedulable`` for cordon.
- Pod: labels for kind, owner, rank, workload and shard; annotations for the nominated
  node, the node a worker replaces and when that node's fault was seen.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from valet.model import nodehealth, remediation
from valet.model.enums import (
    GPU_RESOURCE,
    GROUP,
    JOB_LABEL,
    MAINTENANCE_ANNOTATION,
    OUT_OF_SERVICE_TAINT,
    POOL_LABEL,
    SPARE_TAINT,
    STATE_LABEL,
    Health,
    NodeState,
    PodKind,
    PodPhase,
)
from valet.model.plan import CreatePod
from valet.model.specs import SpotPoolSpec, SpotPoolStatus, TrainingJobSpec, TrainingJobStatus
from valet.model.timefmt import from_rfc3339, to_rfc3339
from valet.model.view import Job, Node, NodeHealth, Pod, Pool

Raw = Mapping[str, Any]

# Node annotations.
STATE_SINCE = f"{GROUP}/state-since"
FAULT_HISTORY = f"{GROUP}/fault-history"
# Pod labels and annotations.
KIND_LABEL = f"{GROUP}/kind"
RANK_LABEL = f"{GROUP}/rank"
WORKLOAD_LABEL = f"{GROUP}/workload"
SHARD_LABEL = f"{GROUP}/shard"
NOMINATED = f"{GROUP}/nominated-node"
REPLACES = f"{GROUP}/replaces-node"
FAULT_AT = f"{GROUP}/fault-at"
HEALED_AT = f"{GROUP}/healed-at"
SCHEDULER_NAME = "valet"
RENDEZVOUS_PORT = 29400
FAULT_HISTORY_LIMIT = 20


@dataclasses.dataclass(frozen=True)
class DetectorRule:
    """Another detector's node condition or taint that means the node is unhealthy."""

    condition: str | None = None  # condition type, e.g. "GpuDriverProblem" (NPD)
    bad_status: str = "True"
    taint: str | None = None  # taint key, e.g. "nvidia.com/gpu-error" (NVSentinel)
    signal: str = "node-problem"


@dataclasses.dataclass(frozen=True)
class NodeReadConfig:
    detectors: tuple[DetectorRule, ...] = ()
    staleness_seconds: float = 120.0  # a detector condition older than this is ignored


@dataclasses.dataclass(frozen=True)
class PodDefaults:
    """What valet adds to every pod it creates unless the template says otherwise."""

    worker_priority_class: str | None = None  # high, so nothing preempts a training worker
    spot_priority_class: str | None = None  # low and never preempting


# --- reading -------------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any, *, keep_nulls: bool = False) -> Any:
    """``patch`` applied to ``target`` as a JSON merge patch (RFC 7386). With
    ``keep_nulls``, two patches made into one: a null stays, to delete when it is sent."""
    if not isinstance(patch, Mapping):
        return patch
    merged = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None and not keep_nulls:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value, keep_nulls=keep_nulls)
    return merged


def meta(raw: Raw) -> Mapping[str, Any]:
    value = raw.get("metadata")
    return value if isinstance(value, Mapping) else {}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def gpu_count(resources: Mapping[str, Any] | None) -> int:
    return _int((resources or {}).get(GPU_RESOURCE), 0)


def node_from(raw: Raw, config: NodeReadConfig, now: float) -> Node:
    md, spec, status = meta(raw), raw.get("spec") or {}, raw.get("status") or {}
    labels = dict(md.get("labels") or {})
    annotations: Mapping[str, str] = md.get("annotations") or {}
    conditions: Sequence[Mapping[str, Any]] = status.get("conditions") or ()
    state_text = labels.get(STATE_LABEL)
    state = NodeState(state_text) if state_text in _STATES else None
    taints = spec.get("taints") or ()
    ready = nodehealth.find_condition(conditions, "Ready") or {}
    return Node(
        name=str(md.get("name")),
        gpus=gpu_count(status.get("allocatable")) or gpu_count(status.get("capacity")),
        labels=labels,
        state=state,
        state_since=from_rfc3339(annotations.get(STATE_SINCE), 0.0),
        unschedulable=bool(spec.get("unschedulable")),
        spare_taint=any(t.get("key") == SPARE_TAINT for t in taints),
        out_of_service=any(t.get("key") == OUT_OF_SERVICE_TAINT for t in taints),
        ready=not ready or ready.get("status") == "True",
        ready_since=from_rfc3339(ready.get("lastTransitionTime"), 0.0) or None,
        ready_heartbeat=from_rfc3339(ready.get("lastHeartbeatTime"), 0.0) or None,
        health=_health(conditions, annotations, taints, config, now),
        remediation=remediation.parse(annotations),
        faults=_fault_history(annotations),
        maintenance=annotations.get(MAINTENANCE_ANNOTATION),
    )


_STATES = frozenset(s.value for s in NodeState)


def _health(
    conditions: Sequence[Mapping[str, Any]],
    annotations: Mapping[str, str],
    taints: Sequence[Mapping[str, Any]],
    config: NodeReadConfig,
    now: float,
) -> NodeHealth:
    health = nodehealth.parse_node_health(conditions, annotations)
    extra: list[str] = []
    since: float | None = None
    for rule in config.detectors:
        if rule.condition is not None:
            cond = nodehealth.find_condition(conditions, rule.condition)
            if cond is None or cond.get("status") != rule.bad_status:
                continue
            beat = from_rfc3339(cond.get("lastHeartbeatTime"), now)
            if now - beat > config.staleness_seconds:
                continue  # a silent detector is unknown, never unhealthy
            extra.append(rule.signal)
            changed = from_rfc3339(cond.get("lastTransitionTime"), now)
            since = changed if since is None else min(since, changed)
        if rule.taint is not None and any(t.get("key") == rule.taint for t in taints):
            extra.append(rule.signal)
            since = since if since is not None else health.since
    if not extra:
        return health
    signals = tuple(dict.fromkeys((*health.signals, *extra)))
    if health.verdict is Health.UNHEALTHY:
        return dataclasses.replace(health, signals=signals)
    # Another detector overrides the agent's "healthy"; its heartbeat keeps the node known.
    return dataclasses.replace(
        health,
        verdict=Health.UNHEALTHY,
        signals=signals,
        since=since if since is not None else now,
        heartbeat=health.heartbeat if health.heartbeat is not None else now,
    )


def _fault_history(annotations: Mapping[str, str]) -> tuple[float, ...]:
    try:
        values = json.loads(annotations.get(FAULT_HISTORY) or "[]")
    except ValueError:
        return ()
    if not isinstance(values, list):
        return ()
    return tuple(sorted(from_rfc3339(v) for v in values if from_rfc3339(v, -1.0) >= 0))


def fault_history_after(annotations: Mapping[str, str], at: float) -> str:
    """The fault-history annotation with ``at`` appended (bounded, idempotent)."""
    times = [t for t in _fault_history(annotations) if abs(t - at) > 1e-3]
    times = sorted([*times, at])[-FAULT_HISTORY_LIMIT:]
    return json.dumps([to_rfc3339(t) for t in times])


def pod_requests_gpus(raw: Raw) -> int:
    spec = raw.get("spec") or {}
    total = 0
    for container in spec.get("containers") or ():
        resources = container.get("resources") or {}
        total += gpu_count(resources.get("limits")) or gpu_count(resources.get("requests"))
    return total


_PHASES = frozenset(p.value for p in PodPhase)


def pod_from(raw: Raw) -> Pod | None:
    """A pod valet accounts for: one of its own, or any other pod holding GPUs; else None."""
    md, spec, status = meta(raw), raw.get("spec") or {}, raw.get("status") or {}
    labels: Mapping[str, str] = md.get("labels") or {}
    annotations: Mapping[str, str] = md.get("annotations") or {}
    kind_text = labels.get(KIND_LABEL)
    kind = PodKind(kind_text) if kind_text in (PodKind.WORKER, PodKind.SPOT) else PodKind.OTHER
    gpus = pod_requests_gpus(raw)
    if kind is PodKind.OTHER and not gpus:
        return None
    namespace = str(md.get("namespace") or "default")
    if kind is PodKind.WORKER:
        owner = f"{namespace}/{labels.get(JOB_LABEL, '')}"
    elif kind is PodKind.SPOT:
        owner = labels.get(POOL_LABEL, "")
    else:
        owner = ""
    phase_text = status.get("phase") or "Pending"
    fault_at, healed_at = annotations.get(FAULT_AT), annotations.get(HEALED_AT)
    return Pod(
        namespace=namespace,
        name=str(md.get("name")),
        kind=kind,
        gpus=gpus,
        owner=owner,
        node=spec.get("nodeName") or None,
        phase=PodPhase(phase_text) if phase_text in _PHASES else PodPhase.UNKNOWN,
        deleting=bool(md.get("deletionTimestamp")),
        rank=_int(labels[RANK_LABEL]) if RANK_LABEL in labels else None,
        workload=labels.get(WORKLOAD_LABEL),
        shard=_int(labels[SHARD_LABEL]) if SHARD_LABEL in labels else None,
        nominated_node=annotations.get(NOMINATED),
        replaces_node=annotations.get(REPLACES),
        fault_at=from_rfc3339(fault_at) if fault_at else None,
        healed_at=from_rfc3339(healed_at) if healed_at else None,
        created_at=from_rfc3339(md.get("creationTimestamp"), 0.0),
        started_at=from_rfc3339(status.get("startTime"), 0.0) or None,
    )


def job_from(raw: Raw) -> Job:
    """Raises ``SpecError`` for a spec the operator cannot run."""
    md = meta(raw)
    return Job(
        namespace=str(md.get("namespace") or "default"),
        name=str(md.get("name")),
        spec=TrainingJobSpec.parse(raw.get("spec") or {}),
        status=TrainingJobStatus.parse(raw.get("status") or {}),
        uid=str(md.get("uid") or ""),
        created_at=from_rfc3339(md.get("creationTimestamp"), 0.0),
        deleting=bool(md.get("deletionTimestamp")),
    )


def pool_from(raw: Raw) -> Pool:
    """Raises ``SpecError`` for a spec the operator cannot run."""
    md = meta(raw)
    return Pool(
        name=str(md.get("name")),
        spec=SpotPoolSpec.parse(raw.get("spec") or {}),
        status=SpotPoolStatus.parse(raw.get("status") or {}),
        uid=str(md.get("uid") or ""),
    )


# --- writing -------------------------------------------------------------------------------


def owner_reference(api_version: str, kind: str, name: str, uid: str) -> dict[str, Any]:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _env(pairs: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in pairs.items()]


def _merge_env(container: dict[str, Any], pairs: Mapping[str, str]) -> None:
    mine = set(pairs)
    kept = [e for e in container.get("env") or () if e.get("name") not in mine]
    container["env"] = [*kept, *_env(pairs)]


def _with_gpus(container: dict[str, Any], gpus: int) -> None:
    resources = container.setdefault("resources", {})
    for key in ("limits", "requests"):
        resources.setdefault(key, {})[GPU_RESOURCE] = str(gpus)


def _pod_shell(
    template: Raw,
    a: CreatePod,
    labels: dict[str, str],
    owner: dict[str, Any],
    priority_class: str | None,
) -> dict[str, Any]:
    tmeta = dict(template.get("metadata") or {})
    spec = json.loads(json.dumps(template.get("spec") or {}))  # deep copy of plain JSON
    annotations = dict(tmeta.get("annotations") or {})
    if a.nominated_node:
        annotations[NOMINATED] = a.nominated_node
    if a.replaces_node:
        annotations[REPLACES] = a.replaces_node
    if a.fault_at is not None:
        annotations[FAULT_AT] = to_rfc3339(a.fault_at)
    spec["schedulerName"] = SCHEDULER_NAME
    spec.setdefault("restartPolicy", "Never")
    if priority_class and "priority" not in spec:
        spec.setdefault("priorityClassName", priority_class)
    containers = spec.get("containers") or [{"name": "main", "image": "busybox"}]
    spec["containers"] = containers
    _with_gpus(containers[0], a.gpus)
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": a.name,
            "namespace": a.namespace,
            "labels": {**(tmeta.get("labels") or {}), **labels},
            "annotations": annotations,
            "ownerReferences": [owner],
        },
        "spec": spec,
    }


def worker_manifest(
    job: Job, a: CreatePod, defaults: PodDefaults = PodDefaults()
) -> dict[str, Any]:
    """A worker pod: the job's template, valet as scheduler, and elastic torchrun's env."""
    rank = a.rank if a.rank is not None else 0
    labels = {KIND_LABEL: PodKind.WORKER.value, JOB_LABEL: job.name, RANK_LABEL: str(rank)}
    owner = owner_reference(f"{GROUP}/v1alpha1", "TrainingJob", job.name, job.uid)
    pod = _pod_shell(job.spec.template, a, labels, owner, defaults.worker_priority_class)
    spec = job.spec
    host = f"{job.name}-{rank}"
    pod["spec"]["hostname"] = host
    pod["spec"]["subdomain"] = job.name
    rendezvous = f"{job.name}-0.{job.name}.{job.namespace}.svc:{RENDEZVOUS_PORT}"
    env = {
        # torchrun reads PET_* as its command-line options (elastic launch).
        "PET_RDZV_BACKEND": "c10d",
        "PET_RDZV_ENDPOINT": rendezvous,
        "PET_RDZV_ID": job.uid or job.key,
        "PET_NNODES": f"{spec.min_replicas}:{spec.max_replicas}",
        "PET_NPROC_PER_NODE": str(spec.gpus_per_replica),
        "PET_MAX_RESTARTS": str(spec.healing.max_restarts),
        "VALET_JOB": job.name,
        "VALET_RANK_HINT": str(rank),
    }
    for container in pod["spec"]["containers"]:
        _merge_env(container, env)
    return pod


def spot_manifest(
    pool: Pool, a: CreatePod, defaults: PodDefaults = PodDefaults()
) -> dict[str, Any]:
    """A spot pod: the workload's template, its shard in env and labels, the pool as owner."""
    workload = next(w for w in pool.spec.workloads if w.name == a.workload)
    labels = {KIND_LABEL: PodKind.SPOT.value, POOL_LABEL: pool.name, WORKLOAD_LABEL: workload.name}
    env = {"VALET_POOL": pool.name, "VALET_WORKLOAD": workload.name}
    if a.shard is not None:
        labels[SHARD_LABEL] = str(a.shard)
        env["VALET_SHARD"] = str(a.shard)
        env["VALET_SHARDS"] = str(workload.shards)
    owner = owner_reference(f"{GROUP}/v1alpha1", "SpotPool", pool.name, pool.uid)
    pod = _pod_shell(workload.template, a, labels, owner, defaults.spot_priority_class)
    pod["spec"]["tolerations"] = [
        *(pod["spec"].get("tolerations") or ()),
        {"key": SPARE_TAINT, "operator": "Exists", "effect": "NoSchedule"},
    ]
    for container in pod["spec"]["containers"]:
        _merge_env(container, env)
    return pod


def service_manifest(job: Job) -> dict[str, Any]:
    """The headless Service giving workers stable DNS names for the rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": job.name,
            "namespace": job.namespace,
            "labels": {JOB_LABEL: job.name},
            "ownerReferences": [
                owner_reference(f"{GROUP}/v1alpha1", "TrainingJob", job.name, job.uid)
            ],
        },
        "spec": {
            "clusterIP": "None",
            "selector": {KIND_LABEL: PodKind.WORKER.value, JOB_LABEL: job.name},
            "publishNotReadyAddresses": True,
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT}],
        },
    }


def spare_taint_patch(raw: Raw, present: bool) -> list[dict[str, Any]]:
    """The node's taints with the spare taint added or removed (other taints kept)."""
    return _taint_patch(raw, {"key": SPARE_TAINT, "value": "true", "effect": "NoSchedule"}, present)


def out_of_service_taint_patch(raw: Raw, present: bool) -> list[dict[str, Any]]:
    """The node's taints with Kubernetes' out-of-service taint added or removed."""
    taint = {"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}
    return _taint_patch(raw, taint, present)


def _taint_patch(raw: Raw, taint: dict[str, str], present: bool) -> list[dict[str, Any]]:
    key = taint["key"]
    taints = [t for t in (raw.get("spec") or {}).get("taints") or () if t.get("key") != key]
    if present:
        taints.append(taint)
    return taints


def lease_renewed(raw: Raw) -> tuple[str, float | None]:
    """A node Lease's node name and renewTime (epoch seconds)."""
    spec = raw.get("spec") or {}
    return str(meta(raw).get("name")), from_rfc3339(spec.get("renewTime"), 0.0) or None
