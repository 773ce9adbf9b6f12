"""PassMemo: the per-node verdicts a pass starts from, carried over to the next pass.

A pass begins by judging every node: its pool, whether its agent went silent (health
UNKNOWN), whether its kubelet is dead, whether new pods may go there. The cache and the
simulator keep a Node object identical while it does not change, so the next pass need
judge again only the nodes that changed, whose Lease moved, or whose verdict ages out
with time alone (a report going stale, a kubelet passing its grace): a deadline heap
says which. Per pool it also keeps what the pass would otherwise count over every node:
nodes by state, unknown health, nodes with a lifecycle step to take, nodes whose marks
(cordon, spare taint, fence) differ from their state, its spot pods (``SpotBook``) and
the order placement tries its nodes in (``Ranking``); and the jobs a pass left quiet.

A memo never changes a decision, only its cost: ``decide`` without one starts from an
empty memo, and a property test checks that a memo kept across passes decides as a fresh
one. Anything that is not monotone in time (a clock going back), a changed config or
changed pool selectors start it afresh.
"""

from __future__ import annotations

import bisect
import dataclasses
import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping

from valet.model.changes import follows
from valet.model.enums import Health, NodeState
from valet.model.view import ClusterView, Job, Node, NodeHealth, Pod
from valet.policy.capacity import GpuBook
from valet.policy.config import PolicyConfig
from valet.policy.delta import changed_keys, right_sized
from valet.policy.ranking import Ranking, Score, score
from valet.policy.spotbook import SpotBook

IN_SERVICE = frozenset({NodeState.ACTIVE, NodeState.SPARE})
OUT_OF_SERVICE = frozenset(
    {NodeState.DRAINING, NodeState.HEALING, NodeState.RETIRED, NodeState.MAINTENANCE}
)
CORDONED_STATES = frozenset(
    {
        NodeState.SUSPECT,
        NodeState.DRAINING,
        NodeState.HEALING,
        NodeState.RETIRED,
        NodeState.MAINTENANCE,
    }
)
FENCE_KEPT_STATES = (NodeState.DRAINING, NodeState.HEALING)

# A deadline is looked at again this much early: "older than" is judged as the pass does
# (``now - age > grace``), which float rounding can put an ulp before ``at + grace``.
_EARLY = 1e-3


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What the start of a pass makes of one node."""

    pool: str | None  # the first pool selecting it
    seen: Node  # as policy sees it: a dead node is unhealthy and not ready
    health: Health  # effective: UNKNOWN when the agent is silent beyond staleness
    dead: bool
    in_service: bool  # new pods may go here
    out_of_service: bool  # its pods must leave
    attention: bool  # lifecycle has a step to take (not healthy and in service)
    marks_off: bool  # cordon, spare taint or fence differ from what its state wants
    wake_key: float | None  # when it would be dead (less the view's lag), if it can die
    recheck_at: float  # from then, time alone may change this verdict


def dead_since(
    node: Node, beat: float | None, reference: float, now: float, grace: float
) -> float | None:
    """When the kubelet was last seen alive, if that is longer than ``grace`` ago: its
    heartbeat (``kubelet_heartbeat``) older than the grace at ``reference`` (the freshest
    Lease for a node with one, else now), or Ready not True for the whole grace."""
    if beat is not None and reference - beat > grace:
        return beat
    if not node.ready and node.ready_since is not None and now - node.ready_since > grace:
        return node.ready_since
    return None


def as_dead(node: Node, since: float) -> Node:
    """The node as policy sees a dead one: unhealthy with ``node-unreachable``, since the
    kubelet's last sign of life (so heal times count from there)."""
    health = NodeHealth(
        verdict=Health.UNHEALTHY,
        signals=("node-unreachable",),
        since=since,
        heartbeat=node.health.heartbeat,
        gpus=node.health.gpus,
    )
    return dataclasses.replace(node, health=health, ready=False)


def marks_differ(node: Node, state: NodeState | None, dead: bool) -> bool:
    """Do the node's cordon, spare taint or out-of-service fence differ from ``state``'s?"""
    fenced = dead or (node.out_of_service and state in FENCE_KEPT_STATES)
    return (
        (state in CORDONED_STATES) != node.unschedulable
        or (state is NodeState.SPARE) != node.spare_taint
        or fenced != node.out_of_service
    )


@dataclasses.dataclass(frozen=True)
class _Clock:
    """The times one pass judges against."""

    now: float
    lease_now: float  # now, or the freshest Lease when every Lease looks older
    stale_before: float


_Selector = tuple[str, tuple[tuple[str, str], ...], float]  # pool, labels, grace


def _judge(
    node: Node,
    beat: float | None,
    leased: bool,
    pools: Iterable[_Selector],
    c: _Clock,
    staleness: float,
) -> Verdict:
    """The verdict on one node: ``beat`` is its kubelet's heartbeat, ``leased`` whether
    that is a Lease (judged against ``lease_now``)."""
    pool: str | None = None
    seen, dead, wake_key = node, False, None
    recheck = math.inf
    labels = node.labels
    for pool_name, selector, grace in pools:  # the first pool selecting it
        if all(labels.get(k) == v for k, v in selector):
            pool = pool_name
            reference = c.lease_now if leased else c.now
            died_at = dead_since(node, beat, reference, c.now, grace)
            if died_at is not None:
                seen, dead = as_dead(node, died_at), True
            else:
                if beat is not None:
                    recheck = beat + grace
                    if node.state not in OUT_OF_SERVICE:
                        wake_key = beat + grace
                if not node.ready and node.ready_since is not None:
                    recheck = min(recheck, node.ready_since + grace)
            break
    heartbeat = seen.health.heartbeat
    if heartbeat is None or heartbeat < c.stale_before:
        health = Health.UNKNOWN
    else:
        health = seen.health.verdict
        recheck = min(recheck, heartbeat + staleness)
    state = seen.state
    in_service = state in IN_SERVICE and health is Health.HEALTHY and seen.ready
    return Verdict(
        pool=pool,
        seen=seen,
        health=health,
        dead=dead,
        in_service=in_service,
        out_of_service=state in OUT_OF_SERVICE,
        attention=not (
            health is Health.HEALTHY and state in IN_SERVICE and node.maintenance is None
        ),
        marks_off=marks_differ(seen, state, dead),
        wake_key=wake_key,
        recheck_at=recheck,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class QuietJob:
    """A job whose last reconcile wrote nothing: the same job and workers decide the same
    while none of its nodes changed and the nodes that did could not offer the room it
    lacked (see ``jobs._still_quiet``)."""

    job: Job
    workers: tuple[Pod, ...]
    nodes: frozenset[str]  # where its workers are bound or nominated
    # Placements the nodes that change must offer before the job could write (0: it is
    # not short of workers, and room does not wake it).
    room_wanted: int


class PoolBook:
    """One pool's nodes as judged, and what a pass counts over them."""

    def __init__(self) -> None:
        self.members: dict[str, Node] = {}  # name -> node as seen, in the view's order
        self.by_state: dict[NodeState | None, set[str]] = {}
        self.unknown = 0  # nodes whose health is UNKNOWN
        self.attention: set[str] = set()
        self.marks_off: set[str] = set()
        self.faulted: set[str] = set()  # nodes valet ever drained (``Node.faults``)
        self.last_faults: list[tuple[float, str]] = []  # (last fault, node) of those, sorted

    def add(self, name: str, v: Verdict) -> None:
        self.members[name] = v.seen
        self.by_state.setdefault(v.seen.state, set()).add(name)
        self.unknown += v.health is Health.UNKNOWN
        if v.attention:
            self.attention.add(name)
        if v.marks_off:
            self.marks_off.add(name)
        if v.seen.faults:
            self.faulted.add(name)
            bisect.insort(self.last_faults, (v.seen.faults[-1], name))

    def remove(self, name: str, v: Verdict) -> None:
        """Forget the verdict; ``members`` keeps its place until ``PassMemo._regroup``."""
        self.by_state[v.seen.state].discard(name)
        self.unknown -= v.health is Health.UNKNOWN
        self.attention.discard(name)
        self.marks_off.discard(name)
        if name in self.faulted:
            self.faulted.discard(name)
            at = bisect.bisect_left(self.last_faults, (v.seen.faults[-1], name))
            del self.last_faults[at]

    def right_size(self) -> None:
        """Sets that held the pool (all adopted, all marks off) shrink to what they hold."""
        self.by_state = {state: right_sized(names) for state, names in self.by_state.items()}
        self.attention = right_sized(self.attention)
        self.marks_off = right_sized(self.marks_off)
        self.faulted = right_sized(self.faulted)


class PassMemo:
    """Verdicts by node, kept up to date from one view to the next (see the module)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._settings: tuple[PolicyConfig, tuple[_Selector, ...]] | None = None
        self._clock: _Clock | None = None
        self.verdicts: dict[str, Verdict] = {}
        self._nodes: Mapping[str, Node] = {}  # as last seen, to find what changed
        self._leases: Mapping[str, float] = {}
        self.order: list[str] = []  # node names in the view's order
        self.position: dict[str, int] = {}
        self.pools: dict[str, PoolBook] = {}
        # Over every node, as a pass starts (a pass copies what it changes):
        self.states: dict[str, NodeState | None] = {}
        self.health: dict[str, Health] = {}
        self.in_service: set[str] = set()
        self.out_of_service: set[str] = set()
        self.suspect: set[str] = set()  # nodes in state suspect
        self.dead: dict[str, Node] = {}
        self._rechecks: list[tuple[float, str]] = []  # (recheck_at, node): a heap
        self._wakes: list[tuple[float, str]] = []  # (wake_key, node): a heap
        self.gpus = GpuBook()  # GPU accounting as the pass starts
        # Per job: the Job and worker tuple last seen, and the nodes it runs steadily on
        # (None: not steady whatever the nodes); see ``jobs._steady``.
        self.jobs: dict[str, tuple[Job, tuple[Pod, ...], frozenset[str] | None]] = {}
        self.quiet: dict[str, QuietJob] = {}  # see ``jobs._still_quiet``
        self.spot = SpotBook()  # spot pods by pool, counted
        self.rankings: dict[tuple[str, int], Ranking] = {}  # by pool and pod size
        # Node names by the value of a topology label, by label: built when first asked,
        # dropped when a node joins, leaves or is relabelled.
        self._domains: dict[str, dict[str | None, frozenset[str]]] = {}
        # Nodes whose Node, Lease, verdict or GPU usage changed since the last view.
        self.touched: set[str] = set()

    def update(self, view: ClusterView, now: float, config: PolicyConfig) -> float | None:
        """Judge what changed since the last view; returns the earliest time a live pool
        node's kubelet would pass its grace, as the lagging view will see it."""
        # Lease ages are judged against the freshest Lease seen, not the clock alone: when
        # every Lease looks old, it is this view that is behind (a slow pass, a lagging
        # watch) or the API server that is down, and no node is to be declared dead for it.
        freshest = max(view.leases.values(), default=now)
        lease_now = min(now, freshest)
        clock = _Clock(now, lease_now, now - config.staleness_seconds)
        selectors = tuple(
            (
                p.name,
                tuple(p.spec.node_selector.items()),
                p.spec.node_grace_seconds or config.node_grace_seconds,
            )
            for p in view.pools
        )
        last = self._clock
        if (
            (config, selectors) != self._settings
            or last is None
            or now < last.now
            or lease_now < last.lease_now
        ):
            self._reset()
            self._settings = (config, selectors)
            for p in view.pools:
                self.pools.setdefault(p.name, PoolBook())
        self._clock = clock

        nodes, leases, verdicts = view.nodes, view.leases, self.verdicts
        # A view's mappings never change once handed out: the same one is the same content.
        dirty = changed_keys(nodes, self._nodes) if nodes is not self._nodes else []
        if leases is not self._leases:
            dirty += [name for name in changed_keys(leases, self._leases) if name in nodes]
        previous, self._nodes, self._leases = self._nodes, nodes, leases
        horizon = now + _EARLY
        rechecks = self._rechecks
        while rechecks and rechecks[0][0] <= horizon:
            at, name = heapq.heappop(rechecks)
            v = verdicts.get(name)
            if v is not None and v.recheck_at == at:
                dirty.append(name)

        regroup = False
        staleness = config.staleness_seconds
        for name in dict.fromkeys(dirty):
            old = verdicts.pop(name, None)
            if old is not None:
                self._forget(name, old)
            node = nodes.get(name)
            if old is None or node is None or old.seen.labels != node.labels:
                self._domains.clear()
            if node is None:
                regroup = True
                continue
            beat, leased = view.kubelet_heartbeat(node), name in leases
            new = verdicts[name] = _judge(node, beat, leased, selectors, clock, staleness)
            regroup |= old is None or old.pool != new.pool
            self._note(name, new)
        successor = follows(nodes, previous)
        unmoved = nodes is previous or (successor is not None and not successor.reordered)
        if regroup or not unmoved:
            order = list(nodes)
            if regroup or order != self.order:  # joined, left, changed pool or moved
                self._regroup(order)
        self.touched = {*dirty, *self.gpus.update(view, dirty)}
        self.spot.sync(view, self.touched)
        for ranking in self.rankings.values():
            ranking.stale |= self.touched  # scored when next read
        if dirty:
            self.out_of_service = right_sized(self.out_of_service)
            self.suspect = right_sized(self.suspect)
            for book in self.pools.values():
                book.right_size()
        if len(self.jobs) > len(view.jobs) or len(self.quiet) > len(view.jobs):
            current = {job.key for job in view.jobs}  # forget jobs that are gone
            self.jobs = {k: v for k, v in self.jobs.items() if k in current}
            self.quiet = {k: v for k, v in self.quiet.items() if k in current}
        return self._next_death(clock)

    def _note(self, name: str, v: Verdict) -> None:
        self.states[name] = v.seen.state
        self.health[name] = v.health
        if v.in_service:
            self.in_service.add(name)
        if v.out_of_service:
            self.out_of_service.add(name)
        if v.seen.state is NodeState.SUSPECT:
            self.suspect.add(name)
        if v.dead:
            self.dead[name] = v.seen
        if v.pool is not None:
            self.pools[v.pool].add(name, v)
        if v.wake_key is not None:
            heapq.heappush(self._wakes, (v.wake_key, name))
        if v.recheck_at < math.inf:
            heapq.heappush(self._rechecks, (v.recheck_at, name))

    def _forget(self, name: str, v: Verdict) -> None:
        del self.states[name], self.health[name]
        self.in_service.discard(name)
        self.out_of_service.discard(name)
        self.suspect.discard(name)
        self.dead.pop(name, None)
        if v.pool is not None:
            self.pools[v.pool].remove(name, v)

    def _regroup(self, order: list[str]) -> None:
        """Nodes joined, left or changed pool: members again in the view's order."""
        self.order = order
        self.position = {name: i for i, name in enumerate(self.order)}
        for book in self.pools.values():
            book.members.clear()
        for name in self.order:
            v = self.verdicts[name]
            if v.pool is not None:
                self.pools[v.pool].members[name] = v.seen

    def _next_death(self, clock: _Clock) -> float | None:
        wakes, verdicts = self._wakes, self.verdicts
        while wakes:
            key, name = wakes[0]
            v = verdicts.get(name)
            if v is not None and v.wake_key == key:
                return key + (clock.now - clock.lease_now)
            heapq.heappop(wakes)
        return None

    def ranking(self, pool: str, gpus: int) -> Ranking:
        """The pool's nodes that could take a pod of ``gpus`` as the pass began, in the order
        placement tries them (``policy.ranking``); kept up to date from now on."""
        ranking = self.rankings.get((pool, gpus))
        if ranking is None:
            ranking = self.rankings[(pool, gpus)] = Ranking()
            ranking.stale.update(self.pools[pool].members if pool in self.pools else ())
        if ranking.stale:
            ranking.update((name, self._rank(name, pool, gpus)) for name in ranking.stale)
            ranking.stale = set()
        return ranking

    def domain_members(self, key: str, value: str) -> frozenset[str]:
        """The nodes whose label ``key`` is ``value`` (a topology domain)."""
        domains = self._domains.get(key)
        if domains is None:
            found: dict[str | None, set[str]] = {}
            for name, node in self._nodes.items():
                found.setdefault(node.labels.get(key), set()).add(name)
            domains = self._domains[key] = {v: frozenset(n) for v, n in found.items()}
        return domains.get(value, frozenset())

    def _rank(self, name: str, pool: str, gpus: int) -> Score | None:
        """Where a node ranks for a pod of ``gpus`` of ``pool`` (None: no candidate)."""
        verdict, book, state = self.verdicts.get(name), self.gpus, self.states.get(name)
        if verdict is None or verdict.pool != pool or name not in self.in_service:
            return None  # in service: active or spare, healthy and ready
        if name not in book.room:
            return None
        free, releasing = book.free.get(name, 0), book.releasing.get(name, 0)
        spot = book.spot_gpus.get(name, 0)
        return score(free, releasing, spot, state is NodeState.SPARE, gpus, name)

    def in_order(self, names: Iterable[str]) -> list[str]:
        """``names`` in the view's order of nodes."""
        return sorted(names, key=self.position.__getitem__)

    def pool_counts(self, pool: str) -> Counter[NodeState | None]:
        book = self.pools[pool]
        return Counter({s: len(names) for s, names in book.by_state.items() if names})
