"""Pods indexed by node, by job and by pool, kept up to date one pod at a time.

A pass asks every pod by node (GPU accounting, drains), by job (gangs) and by pool (spot
work). Computing those from the whole pod list costs a pass time in proportion to the
fleet; ``PodIndex`` is fed each change instead (by the operator's cache and the
simulator) and ``snapshot()`` rebuilds only the entries that changed since the last one
(the fleet-sized mappings are ``model.changes.Chunked``: a snapshot copies only chunks
with a change).

Every tuple in a snapshot keeps the order of ``pods`` (the order pods were first
added), exactly as the same index computed from scratch (``ClusterView`` without an
index, over the pods in that order) would, so a pass decides the same either way.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping

from valet.model.changes import REMOVED, Chunked, Producer
from valet.model.enums import PodKind
from valet.model.view import NodeUsage, Pod, ViewIndex, node_usage


def _node_of(pod: Pod) -> str | None:
    """The node a pod is indexed under: where it is bound, else where it is nominated."""
    if pod.node is not None:
        return pod.node
    if pod.nominated_node is not None and pod.live:
        return pod.nominated_node
    return None


def _owner_index(pod: Pod) -> tuple[str, str] | None:
    if pod.kind is PodKind.WORKER:
        return "job", pod.owner
    if pod.kind is PodKind.SPOT:
        return "pool", pod.owner
    return None


class PodIndex:
    """All pods by key, plus per-node, per-job and per-pool groups, updated in place."""

    def __init__(self, pods: Iterable[Pod] = ()) -> None:
        self._pods: dict[str, Pod] = {}
        self._order: dict[str, int] = {}  # pod key → when it was (last) first added
        self._counter = itertools.count()
        self._groups: dict[tuple[str, str], dict[str, Pod]] = {}
        self._member_of: dict[str, tuple[tuple[str, str], ...]] = {}  # pod key -> its groups
        self._dirty: set[tuple[str, str]] = set()
        self._unsorted: set[tuple[str, str]] = set()  # dirty groups out of pod order
        # As handed out in the last snapshot: by node, usage and pods by key are as large as
        # the fleet, so each snapshot shares what did not change with the one before.
        self._node_maps, self._usage_maps, self._key_maps = Producer(), Producer(), Producer()
        self._by_node: Chunked[tuple[Pod, ...]] | None = None
        self._usage: Chunked[NodeUsage] | None = None
        self._by_key: Chunked[Pod] | None = None
        self._changed: set[str] = set()  # pod keys put or removed since the last snapshot
        self._by_job: dict[str, tuple[Pod, ...]] = {}
        self._by_pool: dict[str, tuple[Pod, ...]] = {}
        for pod in pods:
            self.put(pod)

    @property
    def pods(self) -> Mapping[str, Pod]:
        return self._pods

    def put(self, pod: Pod) -> None:
        key = pod.key
        old = self._pods.get(key)
        self._pods[key] = pod
        self._changed.add(key)
        groups = self._groups_of(pod)
        if old is None:
            self._order[key] = next(self._counter)
            self._member_of[key] = groups
            self._join(pod, groups)
            return
        before = self._member_of[key]
        if groups != before:  # bound, say: it leaves only the groups it is no longer in
            self._leave(key, [g for g in before if g not in groups])
            self._join(pod, [g for g in groups if g not in before])
            self._member_of[key] = groups
        all_groups, dirty = self._groups, self._dirty
        for group in groups:
            members = all_groups[group]
            if key in members:
                members[key] = pod  # keeps its place in the group
                dirty.add(group)

    def remove(self, key: str) -> Pod | None:
        old = self._pods.pop(key, None)
        if old is not None:
            self._leave(key, self._member_of.pop(key))
            del self._order[key]
            self._changed.add(key)
        return old

    @staticmethod
    def _groups_of(pod: Pod) -> tuple[tuple[str, str], ...]:
        node, owner = _node_of(pod), _owner_index(pod)
        if node is None:
            return (owner,) if owner is not None else ()
        return (("node", node), owner) if owner is not None else (("node", node),)

    def _join(self, pod: Pod, groups: Iterable[tuple[str, str]]) -> None:
        seq = self._order[pod.key]
        for group in groups:
            members = self._groups.setdefault(group, {})
            if members and self._order[next(reversed(members))] > seq:
                self._unsorted.add(group)  # rejoined behind pods added after it
            members[pod.key] = pod
            self._dirty.add(group)

    def _leave(self, key: str, groups: Iterable[tuple[str, str]]) -> None:
        for group in groups:
            members = self._groups.get(group)
            if members is not None:
                members.pop(key, None)
                if not members:
                    del self._groups[group]
            self._dirty.add(group)

    def snapshot(self) -> ViewIndex:
        """The groups and every pod by key, as of now (later changes do not show)."""
        order = self._order
        by_node: dict[str, tuple[Pod, ...]] = {}
        usage: dict[str, NodeUsage] = {}
        for group in self._dirty:
            kind, name = group
            members = self._groups.get(group)
            if members and group in self._unsorted:
                ordered = sorted(members.values(), key=lambda p: order[p.key])
                members = self._groups[group] = {p.key: p for p in ordered}
            pods = tuple(members.values()) if members else ()
            if kind == "node":
                by_node[name] = pods or REMOVED
                found = node_usage(pods)
                usage[name] = found if found is not None else REMOVED
            elif kind == "job":
                self._by_job = _with(self._by_job, name, pods)
            else:
                self._by_pool = _with(self._by_pool, name, pods)
        self._dirty.clear()
        self._unsorted.clear()
        if by_node or self._by_node is None:
            self._by_node = self._node_maps.evolve(self._by_node, by_node)
        if usage or self._usage is None:
            self._usage = self._usage_maps.evolve(self._usage, usage)
        if self._changed or self._by_key is None:
            pods_now = self._pods
            changes = {k: pods_now.get(k, REMOVED) for k in self._changed}
            self._by_key = self._key_maps.evolve(self._by_key, changes)
            self._changed.clear()
        return ViewIndex(
            pods_by_node=self._by_node,
            workers_by_job=self._by_job,
            spot_by_pool=self._by_pool,
            usage=self._usage,
            keys=self._by_key,
        )

    def replace(self, key: str, **changes: object) -> None:
        pod = self._pods.get(key)
        if pod is not None:
            self.put(dataclasses.replace(pod, **changes))  # type: ignore[arg-type]


def _with(
    groups: dict[str, tuple[Pod, ...]], name: str, pods: tuple[Pod, ...]
) -> dict[str, tuple[Pod, ...]]:
    """A copy of ``groups`` (by job or by pool: a few dozen) with ``name`` set or removed."""
    out = dict(groups)
    if pods:
        out[name] = pods
    else:
        out.pop(name, None)
    return out
