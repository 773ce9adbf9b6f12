"""Applies a Plan to the cluster, idempotently, and feeds what each write returned to the cache.

The Plan's order is kept where it matters: its actions come in stages (node marks,
early status, pod actions, status) and a stage starts only when the one before has
finished, so a finished shard is recorded before its pod is deleted. Within a stage,
actions on different objects run concurrently (what a training job waits for first) and
actions on one object in order; a node's marks of one pass are one write. A pass's
Events are written in the background, a few at a time, as client-go's recorder does: a
burst's hundreds of Events never hold up the next pass.

A pod created and bound in the same pass (its GPUs are free now) is created on its node
(``spec.nodeName``): one write where a Binding would take two.

Idempotence: creating what exists, deleting or evicting what is gone, and binding what
is bound are successes. Transient errors were already retried by ``Api``; a permanent
one is logged, counted, and reported as a Warning Event on the object.

Pods the API server refuses for good (403 from admission, e.g. a PriorityClass that does
not exist; 422, e.g. an invalid container in the template) put their owner on hold
(``rejected``): its pods are not tried again until its spec changes or
``retry_rejected_seconds`` pass, so a bad template costs one refusal a period, not one
a pass. The reconciler reports the hold on the owner's ``SpecValid`` condition.

Events are correlated as client-go's recorder does (``Applier.event``): a recurring Event
is one object whose ``count`` grows, and many similar ones about an object become one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import time
import weakref
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import structlog

from valet.k8s import codec, errors
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import MERGE, Api, core_path, node_path, valet_path
from valet.model import remediation
from valet.model.enums import STATE_LABEL, EventType, PodKind, Reason
from valet.model.plan import (
    Action,
    BindPod,
    ClearRemediation,
    CreatePod,
    DeletePod,
    EmitEvent,
    EvictPod,
    NodeAction,
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
from valet.model.timefmt import from_rfc3339, to_rfc3339

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


def _urgency(chain: list[Action]) -> int:
    """Which writes of a stage go first when the client's rate limit makes them queue (a
    burst): what a training job waits for, then the spot evictions that free its spares
    (their notice starts when they are written), then the rest."""
    match chain[0]:
        case CreatePod(kind=PodKind.WORKER) | BindPod():
            return 0
        case DeletePod(reason=Reason.NODE_DRAINING) | EvictPod(reason=Reason.NODE_DRAINING):
            return 0
        case EvictPod(reason=Reason.SPOT_PREEMPTED):
            return 1
    return 2


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
        event_concurrency: int = 4,
        on_error: Callable[[Action, errors.ApiError], None] | None = None,
        pod_defaults: codec.PodDefaults = codec.PodDefaults(),
    ) -> None:
        self.api, self.cache, self.clock = api, cache, clock
        self.pod_defaults = pod_defaults
        self._limit = asyncio.Semaphore(concurrency)
        self._event_limit = asyncio.Semaphore(event_concurrency)
        self._background: set[asyncio.Task[None]] = set()  # Events being written
        self._seq = itertools.count()
        self.on_error = on_error
        self.rejected: dict[tuple[Kind, str], Rejection] = {}
        self.retry_rejected_seconds = 60.0
        self._events = _EventCorrelator()

    async def apply(self, plan: Plan) -> ApplyResult:
        """Apply ``plan`` and return once all but its Events are written (``flush``
        waits for those)."""
        result = ApplyResult()
        for name, stage in itertools.groupby(plan.actions, key=_stage):
            if name == "events":
                for action in stage:
                    task = asyncio.create_task(self._event_in_background(action))
                    self._background.add(task)
                    task.add_done_callback(self._background.discard)
                continue
            chains: dict[str, list[Action]] = defaultdict(list)
            for action in stage:
                chains[_target(action)].append(action)
            ordered = sorted(chains.values(), key=_urgency)  # first in line for the rate limit
            await asyncio.gather(*(self._chain(c, result) for c in ordered))
        return result

    async def flush(self) -> None:
        """Wait until the Events of the passes applied so far are written."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    async def close(self) -> None:
        """Drop the Events not yet written (they are best effort, as in client-go)."""
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def _event_in_background(self, action: Action) -> None:
        async with self._event_limit:
            try:
                await self._apply(action)
            except errors.ApiError as err:
                await self._report(action, err)

    async def _chain(self, actions: list[Action], result: ApplyResult) -> None:
        if isinstance(actions[0], CreatePod) and self._held(actions[0]):
            result.held += 1
            return
        async with self._limit:
            if isinstance(actions[0], NodeAction):
                try:
                    await self._write_node(actions[0].node, actions)  # type: ignore[arg-type]
                    result.applied += len(actions)
                except errors.ApiError as err:
                    result.failed.append((actions[0], err))
                    await self._report(actions[0], err)
                return
            pair = _created_bound(actions)
            if pair is not None:  # one write: the pod created on its node
                create, bind = pair
                try:
                    await self._create_pod(create, bind)
                    result.applied += 2
                except errors.ApiError as err:
                    result.failed.append((create, err))
                    await self._report(create, err)
                    return
                actions = actions[2:]
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
        match action:
            case EvictPod(namespace=ns, name=name, grace_seconds=grace):
                await self._evict(ns, name, grace)
            case DeletePod(namespace=ns, name=name, force=force):
                await self._delete_pod(ns, name, force)
            case CreatePod():
                await self._create_pod(action)
            case BindPod(namespace=ns, name=name, node=node, healed_at=healed_at):
                await self._bind(ns, name, node, healed_at)
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

    async def _write_node(self, node: str, actions: list[NodeAction]) -> None:
        """A pass's actions on one node, in one write (a burst moves hundreds of nodes)."""
        now = self.clock()
        if any(isinstance(a, _READS_NODE) for a in actions):
            await self._update_node(node, lambda raw: _node_patch(actions, raw, now))
        else:
            await self._patch_node(node, _node_patch(actions, {}, now))

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

    async def _create_pod(self, a: CreatePod, bind: BindPod | None = None) -> None:
        """Create the pod; with ``bind``, already bound (``spec.nodeName`` and what the
        Binding would stamp on it), in one write instead of two."""
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
        if bind is not None:
            manifest["spec"]["nodeName"] = bind.node
            if bind.healed_at is not None:
                manifest["metadata"]["annotations"][codec.HEALED_AT] = to_rfc3339(bind.healed_at)
        owner = _owner(a)
        try:
            raw = await self.api.call("POST", core_path("pods", a.namespace), manifest)
        except errors.AlreadyExistsError:
            # An earlier pass (or a retried request) created it, perhaps not yet bound.
            if bind is not None:
                await self._bind(a.namespace, a.name, bind.node, bind.healed_at)
            return
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

    async def _bind(self, namespace: str, name: str, node: str, healed_at: float | None) -> None:
        metadata: dict[str, Any] = {"name": name, "namespace": namespace}
        stamp = to_rfc3339(healed_at) if healed_at is not None else None
        if stamp is not None:
            # The API server copies a Binding's annotations onto the pod, in the same write.
            metadata["annotations"] = {codec.HEALED_AT: stamp}
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
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
        self.cache.patch_pod(key, node=node, healed_at=from_rfc3339(stamp) if stamp else None)

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
        """Record an Event, correlated as client-go's recorder does (``EventCorrelator``).

        - The same Event again (object and its uid, type, reason, message, source) is a
          PATCH of the first one's ``count`` and ``lastTimestamp``, not a new object.
        - From the ``AGGREGATE_MAX_EVENTS``-th distinct message of similar Events (same
          object, type and reason) within ``AGGREGATE_INTERVAL_SECONDS`` of the last one,
          they go to one Event "(combined from similar events): <latest message>", whose
          count grows the same way.
        - Occurrences of one Event that arrive while it is being written are folded into
          the next write (one PATCH adding them all to ``count``).
        - A PATCH answered 404 (the Event expired, or was deleted) creates it anew.

        Legacy core/v1 Events (no ``eventTime``, so no ``series``): ``count`` occurrences
        between ``firstTimestamp`` and ``lastTimestamp``. What was written is remembered
        for ``EVENT_CACHE_SIZE`` keys, least recently used first out."""
        now = self.clock()
        involved: dict[str, Any] = {"kind": kind, "name": name, "apiVersion": _API_VERSION[kind]}
        if namespace:
            involved["namespace"] = namespace
        uid = _uid(self.cache, kind, namespace, name)
        if uid:
            involved["uid"] = uid
        similar: _Key = (
            COMPONENT,
            kind,
            namespace or "",
            name,
            uid,
            involved["apiVersion"],
            str(type_),
            reason,
        )
        key, message = self._events.correlate(similar, message, now)
        queued = self._events.queued.get(key)
        if queued is not None:  # a write of this Event is under way: ride on the next one
            queued.count += 1
            queued.message, queued.last = message, now
            await asyncio.shield(queued.done)
            return
        pending = _Occurrences(
            namespace or "default",
            involved,
            str(type_),
            reason,
            message,
            first=now,
            last=now,
            done=asyncio.get_running_loop().create_future(),
        )
        self._events.queued[key] = pending
        lock = self._events.lock(key)
        try:
            async with lock:
                if self._events.queued.get(key) is pending:
                    del self._events.queued[key]  # later occurrences queue for the next write
                await self._write_event(key, pending)
        except BaseException as err:
            if self._events.queued.get(key) is pending:
                del self._events.queued[key]
            if isinstance(err, asyncio.CancelledError):
                pending.done.cancel()
            else:
                pending.done.set_exception(err)
                pending.done.exception()  # retrieved: those riding on it re-raise it
            raise
        pending.done.set_result(None)

    async def _write_event(self, key: _EventKey, pending: _Occurrences) -> None:
        ns = pending.namespace
        logged = self._events.logged.get(key)
        if logged is not None:
            body = {
                "count": logged.count + pending.count,
                "lastTimestamp": to_rfc3339(pending.last),
                "message": pending.message,
            }
            try:
                await self.api.call(
                    "PATCH", core_path("events", ns, logged.name), body, content_type=MERGE
                )
            except errors.NotFoundError:
                self._events.logged.pop(key)  # expired (the API server's --event-ttl)
            else:
                logged.count += pending.count
                return
        name = f"{pending.involved['name']}.{time.time_ns():x}{next(self._seq)}"
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": pending.involved,
            "reason": pending.reason,
            "message": pending.message,
            "type": pending.type,
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": to_rfc3339(pending.first),
            "lastTimestamp": to_rfc3339(pending.last),
            "count": pending.count,
        }
        raw = await self.api.call("POST", core_path("events", ns), body)
        self._events.logged.put(
            key, _Logged(str(codec.meta(raw).get("name") or name), pending.count)
        )

    async def ensure_service(self, job_key: str) -> None:
        """Create the job's headless Service unless it exists: read first, so that a
        restarted operator writes none of those the last one created."""
        job = self.cache.jobs.get(job_key)
        if job is None:
            return
        with contextlib.suppress(errors.NotFoundError):
            await self.api.call("GET", core_path("services", job.namespace, job.name))
            return
        try:
            manifest = codec.service_manifest(job)
            await self.api.call("POST", core_path("services", job.namespace), manifest)
        except errors.AlreadyExistsError:
            pass

    async def delete_service(self, namespace: str, name: str) -> None:
        with contextlib.suppress(errors.NotFoundError):
            await self.api.call("DELETE", core_path("services", namespace, name))


# --- Event correlation (client-go's tools/record/events_cache.go) ------------------------

AGGREGATE_MAX_EVENTS = 10  # distinct messages of similar Events before they are combined
AGGREGATE_INTERVAL_SECONDS = 600.0  # a similar Event this long after the last starts afresh
AGGREGATE_PREFIX = "(combined from similar events): "
EVENT_CACHE_SIZE = 4096  # keys remembered, per cache

_Key = tuple[str, ...]  # source, object (kind, namespace, name, uid, apiVersion), type, reason
_EventKey = tuple[_Key, str | None]  # and the message; None: the aggregate Event
K = TypeVar("K")
V = TypeVar("V")


class _Lru(Generic[K, V]):
    def __init__(self, size: int = EVENT_CACHE_SIZE) -> None:
        self.size = size
        self._items: collections.OrderedDict[K, V] = collections.OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def pop(self, key: K) -> None:
        self._items.pop(key, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclasses.dataclass
class _Similar:
    """client-go's aggregateRecord: the distinct messages seen, and when the last came."""

    messages: set[str]
    last: float


@dataclasses.dataclass
class _Logged:
    """client-go's eventLog: the Event written for a key, and its count so far."""

    name: str
    count: int


@dataclasses.dataclass
class _Occurrences:
    """Occurrences of one Event not written yet (the first, and any arriving meanwhile)."""

    namespace: str
    involved: dict[str, Any]
    type: str
    reason: str
    message: str
    first: float
    last: float
    done: asyncio.Future[None]
    count: int = 1


class _EventCorrelator:
    def __init__(self) -> None:
        self.similar: _Lru[_Key, _Similar] = _Lru()
        self.logged: _Lru[_EventKey, _Logged] = _Lru()
        self.queued: dict[_EventKey, _Occurrences] = {}
        self._locks: weakref.WeakValueDictionary[_EventKey, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )

    def correlate(self, similar: _Key, message: str, now: float) -> tuple[_EventKey, str]:
        """The Event an occurrence belongs to, and the message it shows
        (``EventAggregator.EventAggregate``)."""
        record = self.similar.get(similar)
        if record is None or now - record.last > AGGREGATE_INTERVAL_SECONDS:
            record = _Similar(set(), now)
        record.messages.add(message)
        record.last = now
        self.similar.put(similar, record)
        if len(record.messages) < AGGREGATE_MAX_EVENTS:
            return (similar, message), message
        record.messages.pop()  # as client-go: the set never grows past the maximum
        return (similar, None), AGGREGATE_PREFIX + message

    def lock(self, key: _EventKey) -> asyncio.Lock:
        """One write at a time per Event; kept while someone holds or awaits it."""
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock


_API_VERSION = {
    "TrainingJob": "valet.dev/v1alpha1",
    "SpotPool": "valet.dev/v1alpha1",
    "Node": "v1",
    "Pod": "v1",
}


_READS_NODE = (SetSpareTaint, SetOutOfService, RecordFault)  # computed from the node's fields


def _node_patch(actions: list[NodeAction], raw: codec.Raw, now: float) -> dict[str, Any]:
    """One merge patch that writes ``actions`` in order onto the node ``raw``: each is
    computed from the node as the ones before it left it."""
    patch: dict[str, Any] = {}
    node: Any = raw
    for action in actions:
        step = _node_action_patch(action, node, now)
        patch = codec.merge_patch(patch, step, keep_nulls=True)
        node = codec.merge_patch(node, step)
    return patch


def _node_action_patch(action: NodeAction, raw: codec.Raw, now: float) -> dict[str, Any]:
    match action:
        case SetNodeState(state=state):
            return {
                "metadata": {
                    "labels": {STATE_LABEL: state.value},
                    "annotations": {codec.STATE_SINCE: to_rfc3339(now)},
                }
            }
        case SetCordon(cordoned=cordoned):
            return {"spec": {"unschedulable": cordoned or None}}
        case SetSpareTaint(present=present):
            return {"spec": {"taints": codec.spare_taint_patch(raw, present)}}
        case SetOutOfService(present=present):
            return {"spec": {"taints": codec.out_of_service_taint_patch(raw, present)}}
        case RecordFault(at=at):
            annotations = codec.meta(raw).get("annotations") or {}
            history = codec.fault_history_after(annotations, at)
            return {"metadata": {"annotations": {codec.FAULT_HISTORY: history}}}
        case RequestRemediation(kind=kind, attempt=attempt):
            return {"metadata": {"annotations": remediation.request(kind, attempt, now)}}
        case ClearRemediation(clear_faults=clear_faults):
            cleared: dict[str, None] = dict.fromkeys(remediation.ALL_KEYS)
            if clear_faults:
                cleared[codec.FAULT_HISTORY] = None
            return {"metadata": {"annotations": cleared}}


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


def _created_bound(actions: list[Action]) -> tuple[CreatePod, BindPod] | None:
    """A pod created and bound in the same pass (its GPUs are free now)."""
    if len(actions) >= 2:
        create, bind = actions[0], actions[1]
        if isinstance(create, CreatePod) and isinstance(bind, BindPod):
            return create, bind
    return None


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
