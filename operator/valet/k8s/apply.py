"""Applies a Plan to the cluster, idempotently, and feeds what each write returned to the cache.

The Plan's order is kept where it matters: its actions come in stages (node marks,
early status, pod actions, status, events) and a stage starts only when the one before
has finished, so a finished shard is recorded before its pod is deleted. Within a stage,
actions on different objects run concurrently and actions on one object in order.

Idempotence: creating what exists, deleting or evicting what is gone, and binding what
is bound are successes. Transient errors were already retried by ``Api``; a permanent
one is logged, counted, and reported as a Warning Event on the object.

Pods the API server refuses for good (403 from admission, e.g. a PriorityClass that does
not exist; 422, e.g. an invalid container in the template) put their owner on hold
(``rejected``): its pods are not tried again until its spec changes or
``retry_rejected_seconds`` pass, so a bad template costs one refusal a period, not one
a pass. The reconciler reports the hold on the owner's ``SpecValid`` condition.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import structlog

from valet.k8s import codec, errors
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import MERGE, Api, core_path, node_path, valet_path
from valet.model import remediation
from valet.model.enums import STATE_LABEL, EventType, PodKind
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
    SetOutOfService,
    SetSpareTaint,
)
from valet.model.timefmt import to_rfc3339

log = structlog.get_logger("valet.apply")
COMPONENT = "valet-operator"


@dataclasses.dataclass
class ApplyResult:
    applied: int = 0
    held: int = 0  # pod creations not tried: their owner's pods were refused (``Rejection``)
    failed: list[tuple[Action, errors.ApiError]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class Rejection:
    """The API server refused an owner's pod for good; its pods wait for a spec change."""

    kind: Kind  # JOB or POOL
    key: str  # "namespace/name" of a TrainingJob, the name of a SpotPool
    generation: int  # the owner's metadata.generation when refused
    message: str
    at: float


def _stage(action: Action) -> str:
    if isinstance(action, PatchJobStatus | PatchPoolStatus):
        return "status"
    if isinstance(action, EvictPod | DeletePod | CreatePod | BindPod):
        return "pods"
    if isinstance(action, EmitEvent):
        return "events"
    return "nodes"


def _target(action: Action) -> str:
    """The object an action writes: actions on one object run in order, others concurrently."""
    if isinstance(action, EmitEvent):
        return f"event/{id(action)}"
    kind, namespace, name = _involved(action)
    return f"{kind}/{namespace}/{name}"


class Applier:
    def __init__(
        self,
        api: Api,
        cache: Cache,
        *,
        clock: Callable[[], float] = time.time,
        concurrency: int = 32,
        on_error: Callable[[Action, errors.ApiError], None] | None = None,
        pod_defaults: codec.PodDefaults = codec.PodDefaults(),
    ) -> None:
        self.api, self.cache, self.clock = api, cache, clock
        self.pod_defaults = pod_defaults
        self._limit = asyncio.Semaphore(concurrency)
        self._seq = itertools.count()
        self.on_error = on_error
        self.rejected: dict[tuple[Kind, str], Rejection] = {}
        self.retry_rejected_seconds = 60.0

    async def apply(self, plan: Plan) -> ApplyResult:
        result = ApplyResult()
        for _, stage in itertools.groupby(plan.actions, key=_stage):
            chains: dict[str, list[Action]] = defaultdict(list)
            for action in stage:
                chains[_target(action)].append(action)
            await asyncio.gather(*(self._chain(c, result) for c in chains.values()))
        return result

    async def _chain(self, actions: list[Action], result: ApplyResult) -> None:
        if isinstance(actions[0], CreatePod) and self._held(actions[0]):
            result.held += 1
            return
        async with self._limit:
            for action in actions:
                try:
                    await self._apply(action)
                    result.applied += 1
                except errors.ApiError as err:
                    result.failed.append((action, err))
                    await self._report(action, err)
                    return  # later actions on this object built on the failed one

    async def _report(self, action: Action, err: errors.ApiError) -> None:
        log.warning("action failed", action=type(action).__name__, error=str(err))
        if self.on_error is not None:
            self.on_error(action, err)
        if isinstance(action, EmitEvent):
            return
        kind, namespace, name = _involved(action)
        message = f"{type(action).__name__} failed: {err.status} {err.reason}: {err.message}"
        with contextlib.suppress(errors.ApiError):  # best effort; the log line and metric stand
            await self.event(
                kind, namespace, name, EventType.WARNING, "ApplyFailed", message[:1000]
            )

    # --- one action --------------------------------------------------------------------

    async def _apply(self, action: Action) -> None:
        now = self.clock()
        match action:
            case SetNodeState(node=node, state=state):
                await self._patch_node(
                    node,
                    {
                        "metadata": {
                            "labels": {STATE_LABEL: state.value},
                            "annotations": {codec.STATE_SINCE: to_rfc3339(now)},
                        }
                    },
                )
            case SetCordon(node=node, cordoned=cordoned):
                await self._patch_node(node, {"spec": {"unschedulable": cordoned or None}})
            case SetSpareTaint(node=node, present=present):
                await self._update_node(
                    node, lambda raw: {"spec": {"taints": codec.spare_taint_patch(raw, present)}}
                )
            case SetOutOfService(node=node, present=present):
                await self._update_node(
                    node,
                    lambda raw: {
                        "spec": {"taints": codec.out_of_service_taint_patch(raw, present)}
                    },
                )
            case RecordFault(node=node, at=at):
                await self._update_node(
                    node,
                    lambda raw: {
                        "metadata": {
                            "annotations": {
                                codec.FAULT_HISTORY: codec.fault_history_after(
                                    codec.meta(raw).get("annotations") or {}, at
                                )
                            }
                        }
                    },
                )
            case RequestRemediation(node=node, kind=kind, attempt=attempt):
                request = remediation.request(kind, attempt, now)
                await self._patch_node(node, {"metadata": {"annotations": request}})
            case ClearRemediation(node=node, clear_faults=clear_faults):
                cleared: dict[str, None] = dict.fromkeys(remediation.ALL_KEYS)
                if clear_faults:
                    cleared[codec.FAULT_HISTORY] = None
                await self._patch_node(node, {"metadata": {"annotations": cleared}})
            case EvictPod(namespace=ns, name=name, grace_seconds=grace):
                await self._evict(ns, name, grace)
            case DeletePod(namespace=ns, name=name, force=force):
                await self._delete_pod(ns, name, force)
            case CreatePod():
                await self._create_pod(action)
            case BindPod(namespace=ns, name=name, node=node):
                await self._bind(ns, name, node)
            case PatchJobStatus(namespace=ns, name=name, status=status):
                await self._patch_status(
                    Kind.JOB, valet_path("trainingjobs", ns, name, "status"), status.to_dict()
                )
            case PatchPoolStatus(name=name, status=pool_status):
                await self._patch_status(
                    Kind.POOL, valet_path("spotpools", None, name, "status"), pool_status.to_dict()
                )
            case EmitEvent(kind=kind, namespace=ns, name=name, type=type_, reason=reason):
                await self.event(kind, ns, name, type_, reason.value, action.message)

    async def _patch_node(self, node: str, body: dict[str, Any]) -> None:
        try:
            raw = await self.api.call("PATCH", node_path(node), body, content_type=MERGE)
        except errors.NotFoundError:
            return  # the node left the cluster; the next pass forgets it
        self.cache.observe(Kind.NODE, raw)

    async def _update_node(self, node: str, change: Callable[[Any], dict[str, Any]]) -> None:
        """Read-modify-write with optimistic concurrency, for fields a merge patch would clobber."""
        for _ in range(5):
            raw = self.cache.raw[Kind.NODE].get(node)
            if raw is None:
                return
            body = change(raw)
            body.setdefault("metadata", {})["resourceVersion"] = codec.meta(raw).get(
                "resourceVersion"
            )
            try:
                raw = await self.api.call(
                    "PATCH", node_path(node), body, content_type=MERGE, retry_conflicts=False
                )
            except errors.ConflictError:
                fresh = await self.api.call("GET", node_path(node))
                self.cache.observe(Kind.NODE, fresh)
                continue
            except errors.NotFoundError:
                return
            self.cache.observe(Kind.NODE, raw)
            return
        raise errors.ConflictError(409, "Conflict", "node kept changing", "PATCH", node_path(node))

    async def _evict(self, namespace: str, name: str, grace: int) -> None:
        body = {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": namespace},
            "deleteOptions": {"gracePeriodSeconds": grace},
        }
        try:
            await self.api.call("POST", core_path("pods", namespace, name, "eviction"), body)
        except errors.NotFoundError:
            return
        self.cache.patch_pod(f"{namespace}/{name}", deleting=True)

    async def _delete_pod(self, namespace: str, name: str, force: bool = False) -> None:
        query = {"gracePeriodSeconds": "0"} if force else None
        try:
            raw = await self.api.call("DELETE", core_path("pods", namespace, name), query=query)
        except errors.NotFoundError:
            self.cache.observe(
                Kind.POD, {"metadata": {"namespace": namespace, "name": name}}, deleted=True
            )
            return
        if raw.get("kind") == "Pod":
            self.cache.observe(Kind.POD, raw)
        self.cache.patch_pod(f"{namespace}/{name}", deleting=True)

    async def _create_pod(self, a: CreatePod) -> None:
        if a.kind is PodKind.WORKER:
            job = self.cache.jobs.get(a.owner)
            if job is None:
                return  # deleted meanwhile
            manifest = codec.worker_manifest(job, a, self.pod_defaults)
        else:
            pool = self.cache.pools.get(a.owner)
            if pool is None:
                return
            manifest = codec.spot_manifest(pool, a, self.pod_defaults)
        owner = _owner(a)
        try:
            raw = await self.api.call("POST", core_path("pods", a.namespace), manifest)
        except errors.AlreadyExistsError:
            return  # an earlier pass (or a retried request) created it
        except (errors.ForbiddenError, errors.InvalidError) as err:
            self.rejected[owner] = Rejection(
                *owner, self._generation(*owner), err.message, self.clock()
            )
            raise
        self.rejected.pop(owner, None)
        self.cache.observe(Kind.POD, raw)

    def _generation(self, kind: Kind, key: str) -> int:
        return int(codec.meta(self.cache.raw[kind].get(key) or {}).get("generation") or 0)

    def _held(self, a: CreatePod) -> bool:
        """Whether ``a``'s owner is on hold: refused, unchanged since, and not yet due."""
        rejection = self.rejected.get(_owner(a))
        return (
            rejection is not None
            and self._generation(rejection.kind, rejection.key) == rejection.generation
            and self.clock() - rejection.at < self.retry_rejected_seconds
        )

    async def _bind(self, namespace: str, name: str, node: str) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        path = core_path("pods", namespace, name, "binding")
        key = f"{namespace}/{name}"
        try:
            await self.api.call("POST", path, body, retry_conflicts=False)
        except errors.ConflictError:
            # Already bound: an earlier attempt reached the server (a 504 after the work).
            # Unless the watch already told where, record it as ours, or the next pass
            # would bind (and count the swap) again.
            pod = self.cache.pods.get(key)
            if pod is not None and pod.node is not None:
                return
        self.cache.patch_pod(key, node=node)

    async def _patch_status(self, kind: Kind, path: str, status: dict[str, Any]) -> None:
        try:
            raw = await self.api.call("PATCH", path, {"status": status}, content_type=MERGE)
        except errors.NotFoundError:
            return  # deleted meanwhile
        self.cache.observe(kind, raw)

    async def event(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        type_: EventType | str,
        reason: str,
        message: str,
    ) -> None:
        now = to_rfc3339(self.clock())
        ns = namespace or "default"
        involved: dict[str, Any] = {"kind": kind, "name": name, "apiVersion": _API_VERSION[kind]}
        if namespace:
            involved["namespace"] = namespace
        uid = _uid(self.cache, kind, namespace, name)
        if uid:
            involved["uid"] = uid
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{name}.{time.time_ns():x}{next(self._seq)}", "namespace": ns},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": str(type_),
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        await self.api.call("POST", core_path("events", ns), body)

    async def ensure_service(self, job_key: str) -> None:
        job = self.cache.jobs.get(job_key)
        if job is None:
            return
        try:
            manifest = codec.service_manifest(job)
            await self.api.call("POST", core_path("services", job.namespace), manifest)
        except errors.AlreadyExistsError:
            pass

    async def delete_service(self, namespace: str, name: str) -> None:
        with contextlib.suppress(errors.NotFoundError):
            await self.api.call("DELETE", core_path("services", namespace, name))


_API_VERSION = {
    "TrainingJob": "valet.dev/v1alpha1",
    "SpotPool": "valet.dev/v1alpha1",
    "Node": "v1",
    "Pod": "v1",
}


def _uid(cache: Cache, kind: str, namespace: str | None, name: str) -> str:
    key = f"{namespace}/{name}" if namespace else name
    if kind == "TrainingJob":
        job = cache.jobs.get(key)
        return job.uid if job else ""
    if kind == "SpotPool":
        pool = cache.pools.get(key)
        return pool.uid if pool else ""
    raw = cache.raw.get(Kind(kind), {}).get(key) if kind in ("Node", "Pod") else None
    return str(codec.meta(raw).get("uid") or "") if raw else ""


def _owner(a: CreatePod) -> tuple[Kind, str]:
    return (Kind.JOB if a.kind is PodKind.WORKER else Kind.POOL), a.owner


def _involved(action: Action) -> tuple[str, str | None, str]:
    match action:
        case PatchJobStatus(namespace=ns, name=n):
            return "TrainingJob", ns, n
        case PatchPoolStatus(name=n):
            return "SpotPool", None, n
        case EvictPod(namespace=ns, name=n) | DeletePod(namespace=ns, name=n):
            return "Pod", ns, n
        case CreatePod(namespace=ns, name=n) | BindPod(namespace=ns, name=n):
            return "Pod", ns, n
    node = getattr(action, "node", "")
    return "Node", None, str(node)
