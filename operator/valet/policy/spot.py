"""Spot work on idle GPUs: shard accounting, clean-up, and weighted bin-packing.

A shard is done once a pod that ran it succeeded (recorded in pool status before
the pod is deleted), running while a pod for it holds GPUs, and pending otherwise:
a preempted shard returns to the queue; a done one is never started again.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Iterable, Iterator, Mapping

from valet.model.enums import NodeState, PodKind, PodPhase, Reason
from valet.model.plan import BindPod, CreatePod
from valet.model.shards import ShardSet
from valet.model.specs import Workload
from valet.model.view import Node, Pod, Pool
from valet.policy.buffer import hot_spares
from valet.policy.capacity import Capacity
from valet.policy.jobs import preempt
from valet.policy.pass_ import Pass
from valet.policy.spotbook import ENDED, PoolSpot


@dataclasses.dataclass
class PoolLedger:
    """What this pass learnt about a pool's spot work, over what the memo's book counted."""

    book: PoolSpot  # the pool's spot pods as the pass began (read only)
    finished: dict[str, set[int]]  # workload -> shards done in this pass
    gpu_seconds: float = 0.0

    @property
    def done(self) -> Mapping[str, ShardSet]:
        """Workload -> done shards, as recorded in pool status."""
        return self.book.done

    def running_count(self, workload: str, extra: Iterable[int]) -> int:
        """Shards running and neither done nor finished (in this pass), with ``extra``."""
        return self.book.running_count(workload, self.finished[workload], extra)

    def live(self, ps: Pass, pool: str, workload: str | None = None) -> tuple[int, int]:
        """Live spot pods of the pool (of one workload, else all) not evicted in this pass,
        and their GPUs."""
        book = self.book
        if workload is None:
            pods, gpus = book.live_pods.total(), book.live_gpus.total()
        else:
            pods, gpus = book.live_pods[workload], book.live_gpus[workload]
        for p in ps.evicted.values():
            if (
                p.kind is PodKind.SPOT
                and p.owner == pool
                and p.live
                and (workload is None or p.workload == workload)
            ):
                pods, gpus = pods - 1, gpus - p.gpus
        return pods, gpus


def settle_spot(ps: Pass, cap: Capacity) -> dict[str, PoolLedger]:
    """Record finished shards, clear finished pods, move spot pods off bad nodes: the pods
    the book names as candidates, in the view's order (see ``policy.spotbook``)."""
    ledgers: dict[str, PoolLedger] = {}
    leaving, nodes = _leaving(ps), ps.view.nodes
    for pool in ps.view.pools:
        book = ps.memo.spot.pools[pool.name]
        ledger = ledgers[pool.name] = PoolLedger(book, {w: set() for w in book.workloads})
        done, finished, workloads = book.done, ledger.finished, book.workloads
        for pod in _candidates(ps, book, leaving, pool.name):
            workload, shard, node = pod.workload, pod.shard, pod.node
            wl = workloads.get(workload or "")
            was_done = shard is not None and wl is not None and shard in done[wl.name]
            quiet = (  # bound where it may stay, as its workload wants: what most pods are
                pod.phase not in ENDED
                and node is not None
                and node not in leaving
                and node in nodes
                and wl is not None
                and wl.namespace == pod.namespace
                and not was_done
                and (shard is None or shard not in finished[wl.name])
            )
            if not quiet:
                _settle(ps, cap, pool, ledger, wl, pod)
    for owner, pods in ps.view.spot_by_pool.items():
        if owner not in ledgers:  # the pool is gone
            for pod in pods:
                if not pod.deleting:
                    ps.delete_pod(pod, Reason.WORKER_REMOVED)
    return ledgers


def _candidates(ps: Pass, book: PoolSpot, leaving: set[str], pool: str) -> list[Pod]:
    """The pool's spot pods that may not be quiet, not on their way out, in the view's
    order: those the book marks (ended, unbound, out of spec), those on leaving nodes and
    on nodes gone, and those running a shard done, or one finished by a pod among these."""
    look = set(book.unquiet)
    by_node, by_shard, pods = book.by_node, book.by_shard, book.pods
    for name in by_node.keys() & leaving:
        look |= by_node[name]
    for name in book.orphans:
        look |= by_node[name]
    for workload, shards in book.done_running.items():
        for shard in shards:
            look |= by_shard[(workload, shard)]
    for pod in [pods[k] for k in look]:
        if pod.phase is PodPhase.SUCCEEDED and pod.shard is not None:
            look |= by_shard.get((pod.workload, pod.shard), set())
    found = [pod for key in look if not (pod := pods[key]).deleting]
    if len(found) > 1:
        position = {id(p): i for i, p in enumerate(ps.view.spot_by_pool.get(pool, ()))}
        found.sort(key=lambda p: position[id(p)])
    return found


def _leaving(ps: Pass) -> set[str]:
    """Nodes spot pods leave: out of service, or suspect (as of now in this pass)."""
    suspect = set(ps.memo.suspect)
    for name in ps.changed:
        if ps.states[name] is NodeState.SUSPECT:
            suspect.add(name)
        else:
            suspect.discard(name)
    return suspect | ps.out_of_service


def _settle(
    ps: Pass, cap: Capacity, pool: Pool, ledger: PoolLedger, wl: Workload | None, pod: Pod
) -> None:
    if pod.deleting:
        return
    started = pod.started_at if pod.started_at is not None else ps.now
    if pod.phase is PodPhase.SUCCEEDED:
        if wl is not None and pod.shard is not None:
            ledger.finished[wl.name].add(pod.shard)
        ledger.gpu_seconds += pod.gpus * max(0.0, ps.now - started)
        ps.delete_pod(pod, Reason.SHARD_DONE)
    elif pod.phase is PodPhase.FAILED:
        ps.delete_pod(pod, Reason.SHARD_REQUEUED)
    elif wl is None or wl.namespace != pod.namespace:
        ps.delete_pod(pod, Reason.WORKER_REMOVED)  # its workload left the spec
    elif pod.shard is not None and (
        pod.shard in ledger.done[wl.name] or pod.shard in ledger.finished[wl.name]
    ):
        ps.delete_pod(pod, Reason.SHARD_DONE)  # never run a done shard twice
    elif pod.node is None:
        node = ps.view.nodes.get(pod.nominated_node or "")
        if node is not None and ps.placeable(node) and cap.try_bind(node, pod.gpus):
            ps.pod_actions.append(BindPod(pod.namespace, pod.name, node.name))
        else:
            ps.delete_pod(pod, Reason.WORKER_REMOVED)
    elif ps.bad(pod.node) or ps.states.get(pod.node) is NodeState.SUSPECT:
        cap.remove_spot(pod)
        if wl.shards is None:
            ledger.gpu_seconds += pod.gpus * max(0.0, ps.now - started)
        preempt(ps, pod, f"node {pod.node} leaving service", Reason.NODE_DRAINING)


def _pending(ps: Pass, pool: Pool, wl: Workload, ledger: PoolLedger) -> Iterator[int | None]:
    if wl.shards is not None:
        running, finished = ledger.book.running.get(wl.name, {}), ledger.finished[wl.name]
        missing = ledger.done[wl.name].missing(wl.shards)
        yield from (i for i in missing if i not in running and i not in finished)
        return
    live, _ = ledger.live(ps, pool.name, wl.name)
    limit = wl.max_pods if wl.max_pods is not None else 1 << 30
    for _ in range(max(0, limit - live)):
        yield None


def pack_spot(ps: Pass, cap: Capacity, ledgers: dict[str, PoolLedger]) -> None:
    """Fill idle GPUs, spares first and fullest first, sharing by workload weight; hot
    spares stay empty (their spot pods leave with notice). At most
    ``max_spot_pods_per_pass`` pods a pass; the rest in the passes right after."""
    limit = ps.config.max_spot_pods_per_pass
    budget = limit if limit is not None else math.inf
    for pool in ps.view.pools:
        hot = {n.name for n in hot_spares(ps, pool, cap)}
        for name in sorted(hot):
            for pod in list(cap.spot.get(name, ())):
                if pod.live and pod.key not in ps.evicted:
                    cap.remove_spot(pod)
                    preempt(ps, pod, f"keeping {name} a hot spare", Reason.HOT_SPARE)
        if not pool.spec.workloads:
            continue
        members = ps.memo.pools[pool.name].members
        nodes = [
            members[name]
            for name in (cap.free_now() & cap.room) & ps.in_service
            if name in members and name not in hot
        ]
        if not nodes:
            continue
        queues = {wl.name: _pending(ps, pool, wl, ledgers[pool.name]) for wl in pool.spec.workloads}
        ledger = ledgers[pool.name]
        using = {wl.name: ledger.live(ps, pool.name, wl.name)[1] for wl in pool.spec.workloads}
        active = list(pool.spec.workloads)
        fits = _Fits(ps, cap, nodes)
        while active:
            wl = min(active, key=lambda w: (using[w.name] / w.weight, w.name))
            node = fits.best(wl.gpus_per_pod)
            item = next(queues[wl.name], StopIteration) if node is not None else StopIteration
            if node is None or item is StopIteration:
                active.remove(wl)
                continue
            if budget <= 0:  # more to place: in the next pass
                ps.wake(ps.now + _NEXT_CHUNK_SECONDS)
                return
            shard = item if isinstance(item, int) else None
            _create(ps, pool, wl, shard, node)
            budget -= 1
            cap.free[node] -= wl.gpus_per_pod
            cap.bound[node] += wl.gpus_per_pod
            using[wl.name] += wl.gpus_per_pod
            fits.taken(node)


class _Fits:
    """The node a spot pod of some size goes to: spares first, then the fullest that fits
    (best fit), then by name. One heap per pod size: a node that GPUs were taken from is
    pushed again with what is left, and its older entry is dropped when it surfaces."""

    def __init__(self, ps: Pass, cap: Capacity, nodes: list[Node]) -> None:
        self.cap = cap
        self.rank = {n.name: ps.states[n.name] is not NodeState.SPARE for n in nodes}
        self.heaps: dict[int, list[tuple[bool, int, str]]] = {}

    def best(self, gpus: int) -> str | None:
        free = self.cap.free
        heap = self.heaps.get(gpus)
        if heap is None:
            heap = [(rank, free[n], n) for n, rank in self.rank.items() if free[n] >= gpus]
            heapq.heapify(heap)
            self.heaps[gpus] = heap
        while heap:
            _, was, name = heap[0]
            now = free[name]
            if now == was:
                return name
            heapq.heappop(heap)  # outdated: ``taken`` pushed what is left
        return None

    def taken(self, name: str) -> None:
        free = self.cap.free[name]
        for gpus, heap in self.heaps.items():
            if free >= gpus:
                heapq.heappush(heap, (self.rank[name], free, name))


_NEXT_CHUNK_SECONDS = 0.001


def _create(ps: Pass, pool: Pool, wl: Workload, shard: int | None, node: str) -> None:
    prefix = f"{pool.name}-{wl.name}" + (f"-s{shard}" if shard is not None else "")
    name = ps.new_pod_name(wl.namespace, prefix)
    ps.pod_actions.append(
        CreatePod(
            namespace=wl.namespace,
            name=name,
            kind=PodKind.SPOT,
            owner=pool.name,
            gpus=wl.gpus_per_pod,
            workload=wl.name,
            shard=shard,
            nominated_node=node,
        )
    )
    ps.pod_actions.append(BindPod(wl.namespace, name, node))
