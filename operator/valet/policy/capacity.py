"""GPU accounting for one pass, node choice for workers, and spot victim choice.

Choosing is kept apart from acting: ``place`` returns Placements as data, ``commit``
reserves them in the scratch accounting, and the callers turn them into actions.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set

from valet.model.enums import NodeState
from valet.model.view import ClusterView, Node, NodeUsage, Pod
from valet.policy.delta import Scratch, changed_keys, right_sized
from valet.policy.ranking import score


@dataclasses.dataclass(frozen=True)
class Placement:
    node: str
    victims: tuple[Pod, ...]  # spot pods to evict so the worker fits
    bind_now: bool  # the GPUs are free already
    claims_spare: bool


def choose_victims(spot_pods: Iterable[Pod], need: int) -> tuple[Pod, ...]:
    """The spot pods to evict to free ``need`` GPUs, evicting as few GPUs as it can.

    Best fit first (the smallest pod that covers what is left), else the largest;
    among equals the youngest, which loses the least work.
    """
    pool = sorted(spot_pods, key=lambda p: (p.gpus, -(p.started_at or p.created_at), p.name))
    chosen: list[Pod] = []
    while need > 0 and pool:
        fit = next((p for p in pool if p.gpus >= need), None)
        pick = fit if fit is not None else pool[-1]
        pool.remove(pick)
        chosen.append(pick)
        need -= pick.gpus
    return tuple(chosen) if need <= 0 else ()


class GpuBook:
    """GPU accounting as a pass starts, kept from one view to the next: only nodes whose
    usage (``ClusterView.usage``, identical while unchanged) or node changed are counted
    again."""

    def __init__(self) -> None:
        self._usage: Mapping[str, NodeUsage] = {}
        self.free: dict[str, int] = {}
        self.bound: dict[str, int] = {}
        self.releasing: dict[str, int] = {}
        self.spot: dict[str, tuple[Pod, ...]] = {}
        self.spot_gpus: dict[str, int] = {}  # what those spot pods hold
        # Nodes where no worker is bound or nominated: the few a busy fleet has idle.
        self.no_workers: set[str] = set()
        self.some_free: set[str] = set()  # nodes with any GPUs free: few in a packed fleet
        # Nodes with any GPUs free, releasing or held by spot pods: the only ones that can
        # take a pod. A pass only takes GPUs, so it stays a superset all pass long.
        self.room: set[str] = set()

    def update(self, view: ClusterView, touched: Iterable[str]) -> list[str]:
        """Recount the nodes whose usage changed, and the ``touched`` nodes (changed, joined
        or gone since the last update); returns the nodes whose usage changed."""
        usage, nodes = view.usage, view.nodes
        used = changed_keys(usage, self._usage) if usage is not self._usage else []
        self._usage = usage  # never changed once handed out
        for name in dict.fromkeys([*used, *touched]):
            self._count(name, nodes.get(name), usage.get(name))
        self.no_workers = right_sized(self.no_workers)
        self.some_free = right_sized(self.some_free)
        self.room = right_sized(self.room)
        return used

    def _count(self, name: str, node: Node | None, use: NodeUsage | None) -> None:
        """Count one node again: each table and set is written once (a node's entry is
        absent where its count is zero; every node of the view has ``free``)."""
        if node is None:
            for table in (self.free, self.bound, self.releasing, self.spot, self.spot_gpus):
                table.pop(name, None)
            for members in (self.no_workers, self.some_free, self.room):
                members.discard(name)
            return
        spot: tuple[Pod, ...] = ()
        if use is None:
            free, bound, releasing, workers = node.gpus, 0, 0, False
        else:
            free, bound, releasing = node.gpus - use.used, use.bound, use.releasing
            spot, workers = use.spot, use.workers
        spot_gpus = sum(p.gpus for p in spot) if spot else 0
        self.free[name] = free
        if bound:
            self.bound[name] = bound
        else:
            self.bound.pop(name, None)
        if releasing:
            self.releasing[name] = releasing
        else:
            self.releasing.pop(name, None)
        if spot:
            self.spot[name], self.spot_gpus[name] = spot, spot_gpus
        else:
            self.spot.pop(name, None)
            self.spot_gpus.pop(name, None)
        if workers:
            self.no_workers.discard(name)
        else:
            self.no_workers.add(name)
        if free > 0:
            self.some_free.add(name)
        else:
            self.some_free.discard(name)
        if free + releasing + spot_gpus > 0:
            self.room.add(name)
        else:
            self.room.discard(name)


class Capacity:
    """Free, releasing and evictable GPUs per node, updated as the pass places pods."""

    def __init__(self, view: ClusterView, book: GpuBook | None = None) -> None:
        if book is None:
            book = GpuBook()
            book.update(view, view.nodes)
        self.free: Scratch[int] = Scratch(book.free)
        self.bound: Scratch[int] = Scratch(book.bound, 0)
        self.releasing: Scratch[int] = Scratch(book.releasing, 0)
        # Tuples, replaced rather than changed: they are shared with the view's index.
        self.spot: Scratch[tuple[Pod, ...]] = Scratch(book.spot)
        # Read only, as the pass began: see GpuBook.
        self.no_workers: Set[str] = book.no_workers
        self.some_free: Set[str] = book.some_free  # see free_now
        self.room: Set[str] = book.room
        # Nodes of ``room`` this pass's placements left without any: a gang placed after
        # another need not score them (room only shrinks within a pass).
        self.spent: set[str] = set()

    def free_now(self) -> set[str]:
        """Nodes with GPUs free as of now: free as the pass began, or changed by it."""
        return {name for name in self.some_free | dict.keys(self.free) if self.free[name] > 0}

    def remove_spot(self, pod: Pod) -> None:
        """A spot pod is being evicted this pass: its GPUs are on their way out."""
        node = pod.node
        on_node = self.spot.get(node, ()) if node is not None else ()
        if node is not None and pod in on_node:
            i = on_node.index(pod)
            self.spot[node] = on_node[:i] + on_node[i + 1 :]
            self.releasing[node] += pod.gpus

    def place(
        self,
        nodes: Sequence[Node],
        states: Scratch[NodeState | None],
        count: int,
        gpus: int,
        domain: tuple[str, str | None],
    ) -> list[Placement]:
        """Up to ``count`` placements of ``gpus`` each, fewest and fullest nodes first.

        Order: nodes where the GPUs are free now, then spares, then fewest spot GPUs
        evicted (``ranking.score``), same topology domain, least free left (best fit), name.
        """
        topo_key, topo_value = domain
        # Reads only, until the placements are chosen: a gang reads most of the fleet.
        free_of, releasing_of = self.free.flat().get, self.releasing.flat().get
        spot_of, state_of = self.spot.flat().get, states.flat().get
        scored: list[tuple[int, int, int, int, int, str]] = []
        for node in nodes:
            name = node.name
            spot = spot_of(name, ())
            spot_gpus = sum(p.gpus for p in spot) if spot else 0
            spare = state_of(name) is NodeState.SPARE
            rank = score(free_of(name, 0), releasing_of(name, 0), spot_gpus, spare, gpus, name)
            if rank is None:
                continue  # most nodes of a busy fleet have nothing to offer
            topo = 0 if topo_value is None or node.labels.get(topo_key) == topo_value else 1
            scored.append((*rank[:3], topo, *rank[3:]))
        # In order, as far as the placements read: a gang of a few hundred reads few of
        # thousands of candidates (the names make every entry distinct).
        heapq.heapify(scored)
        ordered = (heapq.heappop(scored)[-1] for _ in range(len(scored)))
        return self.place_in_order(ordered, states, count, gpus)

    def place_in_order(
        self, names: Iterable[str], states: Mapping[str, NodeState | None], count: int, gpus: int
    ) -> list[Placement]:
        """Up to ``count`` placements of ``gpus`` each, on ``names`` in the order given (as
        ``place`` orders them), each node taking as many as it can."""
        result: list[Placement] = []
        for name in names:
            free, releasing = self.free.get(name, 0), self.releasing.get(name, 0)
            spot = list(self.spot.get(name, ()))
            while len(result) < count:
                need = gpus - free - releasing
                victims = choose_victims(spot, need) if need > 0 else ()
                if need > 0 and not victims:
                    break
                for v in victims:
                    spot.remove(v)
                    releasing += v.gpus
                result.append(
                    Placement(
                        node=name,
                        victims=victims,
                        bind_now=free >= gpus,
                        claims_spare=states.get(name) is NodeState.SPARE,
                    )
                )
                free -= gpus  # below zero: waiting for releasing GPUs
            if len(result) >= count:
                break
        return result

    def commit(self, placements: Iterable[Placement], gpus: int) -> None:
        for pl in placements:
            self.free[pl.node] -= gpus
            if pl.bind_now:
                self.bound[pl.node] += gpus
            for v in pl.victims:
                self.remove_spot(v)
            if self.free[pl.node] + self.releasing[pl.node] <= 0 and not self.spot.get(pl.node):
                self.spent.add(pl.node)

    def try_bind(self, node: Node, gpus: int) -> bool:
        """Bind a nominated pod if the node's bound pods leave room (kubelet admission)."""
        if self.bound[node.name] + gpus <= node.gpus:
            self.bound[node.name] += gpus
            return True
        return False


def topology_domain(view: ClusterView, workers: Iterable[Pod], key: str) -> tuple[str, str | None]:
    """The topology domain most of a job's bound workers share, to keep a swap nearby."""
    counts = Counter(
        view.nodes[w.node].labels.get(key)
        for w in workers
        if w.node is not None and w.node in view.nodes
    )
    counts.pop(None, None)
    return key, (counts.most_common(1)[0][0] if counts else None)
