"""The operator's informer-style cache: the latest state of Nodes, Pods, TrainingJobs and
SpotPools, fed by watch events and by the answers to valet's own writes.

Each object keeps its ``resourceVersion``; an update older than what is cached is
dropped, so a late watch event never rolls back what a write already showed
(read-your-writes), and a tombstone keeps a deleted object from coming back.
``view()`` returns the frozen ``ClusterView`` that policy decides over.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from valet.k8s import codec
from valet.model.errors import SpecError
from valet.model.podindex import PodIndex
from valet.model.view import ClusterView, Job, Node, Pod, Pool

Raw = Mapping[str, Any]
TOMBSTONES = 10_000
DEFAULT_NODE_CONFIG = codec.NodeReadConfig()


class Kind(enum.StrEnum):
    NODE = "Node"
    POD = "Pod"
    JOB = "TrainingJob"
    POOL = "SpotPool"


@dataclasses.dataclass(frozen=True)
class Invalid:
    """A TrainingJob or SpotPool with a spec valet cannot run (its last valid one runs)."""

    kind: Kind
    namespace: str | None
    name: str
    uid: str
    resource_version: str
    error: SpecError


def _rv(raw: Raw) -> int | None:
    try:
        return int(codec.meta(raw).get("resourceVersion") or "")
    except ValueError:
        return None


def _without_heartbeat(node: Node) -> Node:
    return dataclasses.replace(
        node, ready_heartbeat=None, health=dataclasses.replace(node.health, heartbeat=None)
    )


def key_of(raw: Raw) -> str:
    md = codec.meta(raw)
    ns = md.get("namespace")
    return f"{ns}/{md.get('name')}" if ns else str(md.get("name"))


class Cache:
    def __init__(
        self,
        node_config: codec.NodeReadConfig = DEFAULT_NODE_CONFIG,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.node_config = node_config
        self.clock = clock or time.time
        self.raw: dict[Kind, dict[str, Raw]] = {k: {} for k in Kind}
        self.nodes: dict[str, Node] = {}
        self._pod_index = PodIndex()
        self.jobs: dict[str, Job] = {}
        self.pools: dict[str, Pool] = {}
        self.leases: dict[str, float] = {}  # node name → its kubelet Lease's renewTime
        self.invalid: dict[tuple[Kind, str], Invalid] = {}
        self.deleted_jobs: list[Job] = []  # for the Service clean-up
        self._versions: dict[tuple[Kind, str], int] = {}
        self._tombstones: OrderedDict[tuple[Kind, str], int] = OrderedDict()
        self.generation = 0  # bumps on every change policy can see

    # --- feeding -------------------------------------------------------------------------

    def observe(self, kind: Kind, raw: Raw, deleted: bool = False) -> bool:
        """Apply one watch event or write result; True when the view changed."""
        key = key_of(raw)
        rv, ident = _rv(raw), (kind, key)
        known = self._versions.get(ident)
        dead = self._tombstones.get(ident)
        if rv is not None:
            # The same version again is an echo of what is cached (the watch event of our
            # own write, after a local note such as a bind); a deletion at it is not.
            if known is not None and (rv < known or (rv == known and not deleted)):
                return False
            if dead is not None and rv <= dead:
                return False
        if deleted:
            return self._forget(kind, key, rv)
        if rv is not None:
            self._versions[ident] = rv
        self._tombstones.pop(ident, None)
        self.raw[kind][key] = raw
        changed = getattr(self, f"_upsert_{kind.name.lower()}")(key, raw)
        if changed:
            self.generation += 1
        return bool(changed)

    def replace(self, kind: Kind, items: list[Raw], list_version: str | None) -> bool:
        """A full listing: what it lacks and the cache has from before it is gone (a relist).

        The watch can miss a deletion: one that happened between a listing and the start
        of a watch never arrives as an event. True when the view changed.
        """
        try:
            listed_at = int(list_version or "")
        except ValueError:
            listed_at = None
        changed = False
        listed = {key_of(item) for item in items}
        for key in [k for k in self.raw[kind] if k not in listed]:
            seen = self._versions.get((kind, key))
            if listed_at is None or seen is None or seen <= listed_at:
                changed = self._forget(kind, key, listed_at) or changed
        for item in items:
            changed = self.observe(kind, item) or changed
        return changed

    def _forget(self, kind: Kind, key: str, rv: int | None) -> bool:
        ident = (kind, key)
        known = self._versions.pop(ident, None)
        # Without a version (a delete answered 404), the last one seen: later events of the
        # same object stay out, and a new object of the same name (newer) comes in.
        dead = rv if rv is not None else known
        if dead is not None:
            self._tombstones[ident] = dead
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)
        self.raw[kind].pop(key, None)
        self.invalid.pop(ident, None)
        gone: Any
        if kind is Kind.POD:
            gone = self._pod_index.remove(key)
        else:
            store: dict[str, Any] = {  # type: ignore[assignment]  # one dict per kind
                Kind.NODE: self.nodes,
                Kind.JOB: self.jobs,
                Kind.POOL: self.pools,
            }[kind]
            gone = store.pop(key, None)
        if gone is None:
            return False
        if kind is Kind.JOB:
            self.deleted_jobs.append(gone)
        self.generation += 1
        return True

    def _upsert_node(self, key: str, raw: Raw) -> bool:
        node = codec.node_from(raw, self.node_config, self.clock())
        old = self.nodes.get(key)
        self.nodes[key] = node
        # A fresh heartbeat alone needs no pass: staleness is checked on the periodic resync.
        return old is None or _without_heartbeat(old) != _without_heartbeat(node)

    def _upsert_pod(self, key: str, raw: Raw) -> bool:
        pod = codec.pod_from(raw)
        old = self.pods.get(key)
        if pod is None:
            return self._pod_index.remove(key) is not None
        if old == pod:
            return False
        self._pod_index.put(pod)
        return True

    def _upsert_job(self, key: str, raw: Raw) -> bool:
        return self._upsert_spec(Kind.JOB, key, raw, codec.job_from, self.jobs)

    def _upsert_pool(self, key: str, raw: Raw) -> bool:
        return self._upsert_spec(Kind.POOL, key, raw, codec.pool_from, self.pools)

    def _upsert_spec(
        self,
        kind: Kind,
        key: str,
        raw: Raw,
        parse: Callable[[Raw], Any],
        store: dict[str, Any],
    ) -> bool:
        try:
            obj = parse(raw)
        except SpecError as err:
            # A bad edit keeps the last good spec running; a job never valid is not run at all.
            md = codec.meta(raw)
            self.invalid[(kind, key)] = Invalid(
                kind,
                md.get("namespace"),
                str(md.get("name")),
                str(md.get("uid") or ""),
                str(md.get("resourceVersion") or ""),
                err,
            )
            return False
        self.invalid.pop((kind, key), None)
        # Stored even when equal: equality leaves out what policy does not read (the pod
        # template), and the next pod must be built from the latest one.
        changed: bool = store.get(key) != obj
        store[key] = obj
        return changed

    def patch_pod(self, key: str, **changes: Any) -> None:
        """What a write did to a pod before its watch event arrives (bind, eviction)."""
        if key in self.pods:
            self._pod_index.replace(key, **changes)
            self.generation += 1

    # --- reading -------------------------------------------------------------------------

    def observe_lease(self, raw: Raw, deleted: bool = False) -> float:
        """A kubelet's Lease (kube-node-lease) renewed; returns the seconds since the renewal
        before (infinite for the first), so a node coming back can wake the reconciler."""
        name, renewed = codec.lease_renewed(raw)
        before = self.leases.pop(name, None) if deleted else self.leases.get(name)
        if deleted or renewed is None:
            return 0.0
        self.leases[name] = max(renewed, before or renewed)
        return renewed - before if before is not None else float("inf")

    @property
    def pods(self) -> Mapping[str, Pod]:
        return self._pod_index.pods

    def replace_leases(self, items: list[Raw]) -> None:
        """A full listing of the node Leases: renewals as they are, Leases gone forgotten."""
        listed = set()
        for item in items:
            self.observe_lease(item)
            listed.add(codec.lease_renewed(item)[0])
        for name in [n for n in self.leases if n not in listed]:
            del self.leases[name]

    def view(self) -> ClusterView:
        index = self._pod_index.snapshot()
        return ClusterView(
            nodes=dict(self.nodes),
            pods=index.pods,
            index=index,
            jobs=tuple(self.jobs.values()),
            pools=tuple(self.pools.values()),
            leases=dict(self.leases),
        )
