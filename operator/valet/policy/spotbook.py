"""SpotBook: each pool's spot pods as the last pass counted them, kept up to date pod by pod.

Settling spot work asks of every spot pod whether it needs a look (it finished, failed,
lost its node or its workload, or runs a shard already done) and counts the pool's live
pods, their GPUs and the shards they run. At a fleet's size that is thousands of pods a
pass, nearly all of them quiet. The book keeps the counts and indexes the few pods that
can need a look (by themselves, by node, by shard), and is fed only the pods that changed
since the last view (``model.changes`` hints; a full comparison otherwise), so settling
costs what changed. ``settle_spot`` asks the exact question of each candidate; a pod that
is no candidate is quiet by construction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TypeVar

from valet.model.enums import PodKind, PodPhase
from valet.model.shards import ShardSet
from valet.model.specs import SpotPoolSpec
from valet.model.view import ClusterView, Pod, Pool
from valet.policy.delta import changed_keys

ENDED = frozenset({PodPhase.SUCCEEDED, PodPhase.FAILED})
_K = TypeVar("_K")


class PoolSpot:
    """One pool's spot pods: counts by workload, and the pods that may need a look."""

    def __init__(self, spec: SpotPoolSpec, done: dict[str, ShardSet]) -> None:
        self.spec = spec
        self.workloads = {w.name: w for w in spec.workloads}
        self.done = done  # done shards by workload, as the pool's status said last
        self.pods: dict[str, Pod] = {}
        self.live_pods: Counter[str | None] = Counter()
        self.live_gpus: Counter[str | None] = Counter()
        # Shards of pods that hold GPUs or are about to (not finished, not failed), by
        # workload: how many such pods run each.
        self.running: dict[str | None, dict[int, int]] = {}
        # Of those, by workload of the spec, the shards done: always within ``running``.
        self.done_running: dict[str, set[int]] = {w: set() for w in self.workloads}
        self.by_shard: dict[tuple[str | None, int], set[str]] = {}  # running pods' keys
        self.by_node: dict[str, set[str]] = {}  # keys of pods bound there
        self.orphans: set[str] = set()  # nodes in by_node that the view does not hold
        # Pods not on their way out that need a look whatever their node and shard: ended,
        # not bound, or of a workload the spec no longer has (in its namespace).
        self.unquiet: set[str] = set()

    def add(self, pod: Pod, nodes: Mapping[str, object]) -> None:
        key, workload, shard, node = pod.key, pod.workload, pod.shard, pod.node
        self.pods[key] = pod
        if pod.live:
            self.live_pods[workload] += 1
            self.live_gpus[workload] += pod.gpus
        ended = pod.phase in ENDED
        if shard is not None and not ended:
            shards = self.running.setdefault(workload, {})
            shards[shard] = shards.get(shard, 0) + 1
            self.by_shard.setdefault((workload, shard), set()).add(key)
            done = self.done.get(workload or "")
            if done is not None and shard in done:
                self.done_running[workload or ""].add(shard)
        if node is not None:
            self.by_node.setdefault(node, set()).add(key)
            if node not in nodes:
                self.orphans.add(node)
        if not pod.deleting and (ended or node is None or not self._in_spec(pod)):
            self.unquiet.add(key)

    def remove(self, key: str) -> None:
        pod = self.pods.pop(key)
        workload, shard, node = pod.workload, pod.shard, pod.node
        if pod.live:
            self.live_pods[workload] -= 1
            self.live_gpus[workload] -= pod.gpus
        if shard is not None and pod.phase not in ENDED:
            shards = self.running[workload]
            shards[shard] -= 1
            if not shards[shard]:
                del shards[shard]
                self.done_running.get(workload or "", set()).discard(shard)
            _discard(self.by_shard, (workload, shard), key)
        if node is not None and not _discard(self.by_node, node, key):
            self.orphans.discard(node)
        self.unquiet.discard(key)

    def _in_spec(self, pod: Pod) -> bool:
        wl = self.workloads.get(pod.workload or "")
        return wl is not None and wl.namespace == pod.namespace

    def saw_done(self, workload: str, done: ShardSet) -> None:
        """The pool's status says these shards of ``workload`` are done now."""
        self.done[workload] = done
        self.done_running[workload] = {s for s in self.running.get(workload, ()) if s in done}

    def saw_nodes(self, names: Iterable[str], nodes: Mapping[str, object]) -> None:
        """These nodes joined, left or changed: pods on a node gone need a look."""
        for name in names:
            if name in self.by_node:
                if name in nodes:
                    self.orphans.discard(name)
                else:
                    self.orphans.add(name)

    def running_count(self, workload: str, finished: set[int], extra: Iterable[int]) -> int:
        """Shards running and not done, less ``finished``, plus ``extra``: how many."""
        running = self.running.get(workload, {})
        done = self.done_running.get(workload, set())
        count = len(running) - len(done)
        count -= sum(1 for s in finished if s in running and s not in done)
        undone = {s for s in extra if s not in finished and (s not in running or s in done)}
        return count + len(undone)


def _discard(index: dict[_K, set[str]], at: _K, key: str) -> bool:
    """Remove ``key`` from ``index[at]``; False when that left it empty (and gone)."""
    members = index[at]
    members.discard(key)
    if members:
        return True
    del index[at]
    return False


class SpotBook:
    """Every pool's ``PoolSpot``, synced with each view (see the module)."""

    def __init__(self) -> None:
        self.pools: dict[str, PoolSpot] = {}
        self._keys: Mapping[str, Pod] | None = None  # the view's pods by key, as last synced
        self._owner: dict[str, str] = {}  # spot pod key -> the pool book holding it

    def sync(self, view: ClusterView, touched: Iterable[str]) -> None:
        """Catch up with ``view``; ``touched``: nodes changed, joined or gone since the last."""
        keys = view.index.keys if view.index is not None else None
        specs_moved = self._sync_pools(view)
        if keys is None or self._keys is None or specs_moved:
            self._rebuild(view)
        elif keys is not self._keys:
            pod_of, nodes, put = keys.get, view.nodes, self._put
            for key in changed_keys(keys, self._keys):
                put(key, pod_of(key), nodes)
        self._keys = keys
        for book in self.pools.values():
            book.saw_nodes(touched, view.nodes)

    def _sync_pools(self, view: ClusterView) -> bool:
        """Books for the view's pools, with their done shards; True when a pool's spec (its
        workloads) changed, joined or left, and every book must be built again."""
        moved = len(view.pools) != len(self.pools)
        for pool in view.pools:
            book = self.pools.get(pool.name)
            if book is None or (book.spec is not pool.spec and book.spec != pool.spec):
                moved = True
                break
            for name in book.workloads:
                done = pool.status.done_shards(name)
                if done is not book.done[name] and done != book.done[name]:
                    book.saw_done(name, done)
        return moved

    def _rebuild(self, view: ClusterView) -> None:
        self.pools = {pool.name: _new_book(pool) for pool in view.pools}
        self._owner = {}
        for pods in view.spot_by_pool.values():
            for pod in pods:
                self._put(pod.key, pod, view.nodes)

    def _put(self, key: str, pod: Pod | None, nodes: Mapping[str, object]) -> None:
        owner = self._owner.get(key)
        if pod is not None and owner is not None and pod.owner == owner:
            book = self.pools[owner]
            if _counted_alike(book.pods[key], pod):  # started, say: nothing counted moved
                book.pods[key] = pod
                return
        owner = self._owner.pop(key, None)
        if owner is not None:
            self.pools[owner].remove(key)
        if pod is not None and pod.kind is PodKind.SPOT and pod.owner in self.pools:
            self.pools[pod.owner].add(pod, nodes)
            self._owner[key] = pod.owner


def _counted_alike(old: Pod, new: Pod) -> bool:
    """Do the two versions of a spot pod count and index the same (only phase and start
    time moved between Pending and Running, say)?"""
    return (
        old.node == new.node
        and old.workload == new.workload
        and old.shard == new.shard
        and old.gpus == new.gpus
        and old.live == new.live
        and old.deleting == new.deleting
        and (old.phase in ENDED) == (new.phase in ENDED)
        and old.kind is new.kind
    )


def _new_book(pool: Pool) -> PoolSpot:
    done = {w.name: pool.status.done_shards(w.name) for w in pool.spec.workloads}
    return PoolSpot(pool.spec, done)
