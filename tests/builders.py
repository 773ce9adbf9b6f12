"""Small builders for test objects: nodes, pods, jobs, pools, views."""

from __future__ import annotations

from typing import Any

from valet.model.enums import Health, JobPhase, NodeState, PodKind, PodPhase
from valet.model.specs import SpotPoolSpec, TrainingJobSpec, TrainingJobStatus
from valet.model.view import ClusterView, Job, Node, NodeHealth, Pod, Pool

NOW = 10_000.0
POOL_LABELS = {"pool": "a", "topology.kubernetes.io/zone": "z1"}


def node(
    name: str,
    state: NodeState | None = NodeState.ACTIVE,
    gpus: int = 8,
    health: Health = Health.HEALTHY,
    signals: tuple[str, ...] = (),
    since: float = 0.0,
    heartbeat: float | None = NOW,
    **kw: Any,
) -> Node:
    labels = kw.pop("labels", POOL_LABELS)
    return Node(
        name=name,
        gpus=gpus,
        labels=labels,
        state=state,
        spare_taint=state is NodeState.SPARE,
        unschedulable=state
        in (NodeState.SUSPECT, NodeState.DRAINING, NodeState.HEALING, NodeState.RETIRED),
        health=NodeHealth(health, signals, since=since, heartbeat=heartbeat),
        **kw,
    )


def worker(
    name: str, node_name: str | None, job: str = "ns/j", rank: int = 0, gpus: int = 8, **kw: Any
) -> Pod:
    ns = job.split("/")[0]
    kw.setdefault("phase", PodPhase.RUNNING if node_name else PodPhase.PENDING)
    return Pod(ns, name, PodKind.WORKER, gpus, job, node=node_name, rank=rank, **kw)


def spot(
    name: str,
    node_name: str | None,
    gpus: int = 1,
    shard: int | None = None,
    pool: str = "p",
    workload: str = "inf",
    **kw: Any,
) -> Pod:
    kw.setdefault("phase", PodPhase.RUNNING)
    kw.setdefault("started_at", 0.0)
    return Pod(
        "batch",
        name,
        PodKind.SPOT,
        gpus,
        pool,
        node=node_name,
        workload=workload,
        shard=shard,
        **kw,
    )


def job(
    name: str = "j",
    replicas: int = 2,
    min_replicas: int | None = None,
    gpus: int = 8,
    status: TrainingJobStatus | None = None,
    **spec: Any,
) -> Job:
    raw = {
        "replicas": replicas,
        "minReplicas": replicas if min_replicas is None else min_replicas,
        "gpusPerReplica": gpus,
        "pool": "p",
        "template": {},
        **spec,
    }
    return Job("ns", name, TrainingJobSpec.parse(raw), status or TrainingJobStatus())


def pool(
    buffer: int = 1,
    workloads: list[dict[str, Any]] | None = None,
    status: Any = None,
    hot: int | str | None = None,
    **spec: Any,
) -> Pool:
    raw = {
        "nodeSelector": {"pool": "a"},
        "buffer": {"count": buffer, **({"hot": hot} if hot is not None else {})},
        "allowedNamespaces": ["batch"],
        "workloads": workloads or [],
        **spec,
    }
    parsed = SpotPoolSpec.parse(raw)
    return Pool("p", parsed, status) if status is not None else Pool("p", parsed)


def workload(name: str = "inf", gpus: int = 1, shards: int | None = None, **kw: Any) -> dict:
    return {
        "name": name,
        "namespace": "batch",
        "gpusPerPod": gpus,
        "shards": shards,
        "template": {},
        **kw,
    }


def view(
    nodes: list[Node], pods: list[Pod] = (), jobs: list[Job] = (), pools: list[Pool] | None = None
) -> ClusterView:
    return ClusterView(
        nodes={n.name: n for n in nodes},
        pods=tuple(pods),
        jobs=tuple(jobs),
        pools=tuple(pools if pools is not None else [pool()]),
    )


RUNNING = TrainingJobStatus(phase=JobPhase.RUNNING)
