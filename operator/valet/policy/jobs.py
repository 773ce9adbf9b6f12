"""TrainingJobs: gang placement, swaps onto spares, elastic shrink/regrow, restarts, status.

Per job, in priority order: retire workers whose node went bad (their ranks become
replacements carrying the fault time), count application failures against the
restart budget, bind nominated replacements once their GPUs are free, then place
missing workers as a gang (at least ``minReplicas`` in total, or nothing).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Iterator
from operator import attrgetter, itemgetter

from valet.model.enums import (
    JOB_LABEL,
    ConditionType,
    EventType,
    JobPhase,
    NodeState,
    PodKind,
    PodPhase,
    Reason,
)
from valet.model.plan import BindPod, CreatePod, PatchJobStatus
from valet.model.specs import Condition, LastHeal, TrainingJobStatus, set_condition
from valet.model.view import Job, Node, Pod
from valet.policy.capacity import Capacity, Placement, choose_victims, topology_domain
from valet.policy.memo import QuietJob
from valet.policy.pass_ import Pass
from valet.policy.ranking import Score, score

# Read of every worker in C: a job of a few hundred workers is reconciled in full after
# each change to any of them, and a Python loop over them per question added up.
_phase, _node, _live = attrgetter("phase"), attrgetter("node"), attrgetter("live")
_deleting = attrgetter("deleting")


@dataclasses.dataclass
class _Heal:
    """Bookkeeping of one job in this pass."""

    restarts: int
    backoff_until: float
    swaps: int
    last_heal: LastHeal | None
    binds: int = 0  # workers bound in this pass
    planned_swaps: int = 0  # workers moved off nodes in planned maintenance in this pass
    lost: dict[int, tuple[str | None, float | None]] = dataclasses.field(default_factory=dict)


def reconcile_jobs(ps: Pass, cap: Capacity) -> None:
    jobs = sorted(ps.view.jobs, key=lambda j: (-j.spec.priority, j.created_at, j.key))
    known = {job.key for job in jobs}
    for owner, workers in ps.view.workers_by_job.items():
        if owner not in known:
            for w in workers:
                if not w.deleting:
                    ps.delete_pod(w, Reason.WORKER_REMOVED)
    for job in jobs:
        if not job.deleting:
            _reconcile(ps, cap, job)


def _reconcile(ps: Pass, cap: Capacity, job: Job) -> None:
    workers = ps.view.workers_by_job.get(job.key, ())
    status = job.status
    if status.phase is not None and status.phase.terminal:
        for w in workers:
            if w.live:
                ps.delete_pod(w, Reason.WORKER_REMOVED)
        return
    if _steady(ps, job, workers) or _still_quiet(ps, job, workers):
        return
    wrote = ps.writes()
    room_wanted = _reconcile_fully(ps, cap, job, workers)
    if room_wanted is None or ps.writes() != wrote:
        ps.memo.quiet.pop(job.key, None)
        return
    if room_wanted:
        # The nodes this pass wrote about before the job's turn: the cluster may still
        # hold what they offered as the pass began (the writes may never land).
        written = ps.changed.union(
            cap.free.written(), cap.bound.written(), cap.releasing.written(), cap.spot.written()
        )
        room_wanted -= _offered(ps, job, written)
        if room_wanted <= 0:
            ps.memo.quiet.pop(job.key, None)
            return
    nodes = {n for w in workers if (n := w.node or w.nominated_node) is not None}
    ps.memo.quiet[job.key] = QuietJob(job, workers, frozenset(nodes), room_wanted)


def _still_quiet(ps: Pass, job: Job, workers: tuple[Pod, ...]) -> bool:
    """The job and its workers are as when a reconcile last wrote nothing, and would write
    nothing again: none of its nodes changed, and (if it is short of workers) the nodes
    that changed since cannot offer the placements it lacked then.

    A gang's placements are the sum of what each candidate node can take, up to the need.
    A node that did not change offers at most what it did then; one that changed, at most
    what ``_offered`` counts for it when it last changed (its room as that pass began:
    a pass only takes room). So the placements the job lacked are counted down as nodes
    change, and it is decided again once they could be there."""
    quiet = ps.memo.quiet.get(job.key)
    if quiet is None or quiet.job is not job or quiet.workers is not workers:
        return False
    changed = ps.memo.touched | ps.changed
    if not quiet.nodes.isdisjoint(changed):
        return False
    if not quiet.room_wanted:
        return True
    offered = _offered(ps, job, changed)
    if offered >= quiet.room_wanted:
        return False
    if offered:
        ps.memo.quiet[job.key] = dataclasses.replace(quiet, room_wanted=quiet.room_wanted - offered)
    return True


def _offered(ps: Pass, job: Job, names: Iterable[str]) -> int:
    """At most how many of the job's workers ``names`` could take: the workers their room
    (free, releasing and spot GPUs as the pass began) holds, on the nodes of the job's pool
    in service as the pass began or now."""
    memo, pool, gpus = ps.memo, job.spec.pool, job.spec.gpus_per_replica
    book, verdicts, offered = memo.gpus, memo.verdicts, 0
    for name in names:
        if (
            name in book.room
            and (name in memo.in_service or name in ps.in_service)
            and (home := verdicts[name].pool) is not None
            and (pool is None or home == pool)
        ):
            room = book.free.get(name, 0) + book.releasing.get(name, 0)
            offered += max(0, room + book.spot_gpus.get(name, 0)) // gpus
    return offered


def _reconcile_fully(ps: Pass, cap: Capacity, job: Job, workers: tuple[Pod, ...]) -> int | None:
    """Reconcile one job; returns how many more placements than it found room for it would
    take to place any worker (0: it is not short of workers), or None when time alone will
    change what it does (a restart backoff) or it finished."""
    spec, old = job.spec, job.status
    if PodPhase.SUCCEEDED in map(_phase, workers):
        for w in workers:
            if w.live:
                ps.delete_pod(w, Reason.JOB_SUCCEEDED)
        _finish(ps, job, JobPhase.SUCCEEDED, Reason.JOB_SUCCEEDED, "a worker completed")
        return None

    heal = _Heal(old.restarts, old.backoff_until, old.swaps, old.last_heal)
    _count_unrecorded_swaps(ps, job, workers, heal)
    keep = _sort_out_workers(ps, job, workers, heal)
    if heal.restarts > spec.healing.max_restarts:
        for w in keep:
            ps.delete_pod(w, Reason.BACKOFF_LIMIT)
        _finish(ps, job, JobPhase.FAILED, Reason.BACKOFF_LIMIT, f"{heal.restarts} restarts")
        return None
    keep = _bind_nominated(ps, cap, job, keep, heal)

    target = spec.target
    if len(keep) > target:
        extras = sorted(keep, key=lambda w: (w.node is not None, -(w.rank or 0)))[
            : len(keep) - target
        ]
        for w in extras:
            ps.delete_pod(w, Reason.SCALED_DOWN)
        keep = [w for w in keep if w not in extras]

    placed: list[tuple[int, Placement]] = []
    need = target - len(keep)
    backoff = need > 0 and ps.now < heal.backoff_until
    room_wanted = 0
    if backoff:
        ps.wake(heal.backoff_until)
    elif need > 0:
        placed, found = _place_gang(ps, cap, job, keep, need)
        _act_on_placements(ps, job, placed, heal)
        if len(placed) < need:
            room_wanted = max(1, spec.min_replicas - len(keep) - found)

    _report(ps, job, keep, placed, heal, target)
    return None if backoff else room_wanted


# A replacement seen Running this long after its bind is not timed (a status written before
# runningTime existed, or a pass that came late): better no figure than a wrong one.
_RUNNING_WINDOW_SECONDS = 600.0


def _running_since(ps: Pass, last: LastHeal | None, keep: list[Pod]) -> LastHeal | None:
    """Record when the last swap's replacement was first seen Running."""
    if last is None or last.running_at is not None:
        return last
    if ps.now - last.bound_at > _RUNNING_WINDOW_SECONDS:
        return last
    for w in keep:
        replaced = w.replaces_node == last.failed_node and w.node == last.spare
        if replaced and w.phase is PodPhase.RUNNING:
            return dataclasses.replace(last, running_at=ps.now)
    return last


def _steady(ps: Pass, job: Job, workers: tuple[Pod, ...]) -> bool:
    """All target workers running on good nodes and already reported so: nothing to do.
    What the job and its workers say is kept in the memo while they are the same objects."""
    seen = ps.memo.jobs.get(job.key)
    if seen is None or seen[0] is not job or seen[1] is not workers:
        seen = ps.memo.jobs[job.key] = (job, workers, _steady_on(job, workers))
    nodes = seen[2]
    return nodes is not None and ps.out_of_service.isdisjoint(nodes)


def _steady_on(job: Job, workers: tuple[Pod, ...]) -> frozenset[str] | None:
    """The nodes of a job whose every target worker runs and was reported so, else None."""
    status, target = job.status, job.spec.target
    if status.phase is not JobPhase.RUNNING or len(workers) != target:
        return None
    if status.replicas != target or status.ready_replicas != target:
        return None
    if any(p is not PodPhase.RUNNING for p in set(map(_phase, workers))):
        return None
    if not all(map(_live, workers)):
        return None
    nodes = frozenset(map(_node, workers))
    if None in nodes:
        return None
    last = status.last_heal
    if next(_unrecorded(workers, last), None) is not None:
        return None
    return nodes


# A stamp read back from the wire (milliseconds) may differ from the status's copy of the
# same time by this much; two binds a pass apart are always further apart.
_STAMP_SLACK_SECONDS = 0.001


def _unrecorded(workers: Iterable[Pod], last: LastHeal | None) -> Iterator[tuple[float, str, Pod]]:
    """When and where each worker bound as a heal the job's status does not count yet was
    bound (most workers were never a heal: they are passed over at once)."""
    since = last.bound_at + _STAMP_SLACK_SECONDS if last is not None else -math.inf
    for w in workers:
        if w.healed_at is not None and w.node is not None and w.healed_at > since:
            yield w.healed_at, w.node, w


def _count_unrecorded_swaps(ps: Pass, job: Job, workers: tuple[Pod, ...], heal: _Heal) -> None:
    """Count the swaps bound but never written to the status: the operator stopped between
    the bind and the status write. The bind stamped ``healed_at`` on the pod, so the count
    is recovered from the cluster, once (``lastHeal`` then records the latest of them)."""
    for healed_at, node, w in sorted(_unrecorded(workers, heal.last_heal), key=itemgetter(0, 1)):
        heal.swaps += 1
        fault_at = w.fault_at if w.fault_at is not None else healed_at
        heal.last_heal = LastHeal(w.replaces_node or "", node, fault_at, healed_at)
        ps.event(
            "TrainingJob",
            job.namespace,
            job.name,
            Reason.WORKER_SWAPPED,
            f"{w.name} replaced a worker of {w.replaces_node} on {node} after "
            f"{heal.last_heal.seconds:.1f}s (counted after an operator restart)",
        )


def _sort_out_workers(ps: Pass, job: Job, workers: tuple[Pod, ...], heal: _Heal) -> list[Pod]:
    """Remove workers from bad nodes and failed ones; return the workers that stay."""
    leaving, nodes = ps.out_of_service, ps.view.nodes  # as ``Pass.bad`` reads them
    placed = list(map(_node, workers))
    if (
        None not in placed
        and not any(map(_deleting, workers))
        and PodPhase.FAILED not in map(_phase, workers)
        and leaving.isdisjoint(placed)
        and all(map(nodes.__contains__, placed))
    ):
        return list(workers)  # every worker bound and staying: the loop below keeps all
    keep: list[Pod] = []
    for w in workers:
        at = w.node if w.node is not None else w.nominated_node
        on_bad = at is not None and (at in leaving or at not in nodes)
        if w.deleting:
            if on_bad and w.rank is not None and w.node is not None:
                heal.lost.setdefault(w.rank, (w.node, ps.fault_time(w.node)))
            continue
        if on_bad:
            if w.node is None:  # nominated replacement whose target failed before binding
                heal.lost[w.rank or 0] = (w.replaces_node, w.fault_at)
                ps.delete_pod(w, Reason.WORKER_REMOVED)
            else:
                heal.lost[w.rank or 0] = (w.node, ps.fault_time(w.node))
                if w.phase.terminal:
                    ps.delete_pod(w, Reason.NODE_DRAINING)
                else:
                    ps.evict_pod(w, ps.config.worker_grace_seconds, Reason.NODE_DRAINING)
            continue
        if w.phase is PodPhase.FAILED:
            heal.restarts += 1
            delay = job.spec.healing.backoff_seconds * 2 ** min(heal.restarts - 1, 16)
            heal.backoff_until = ps.now + min(delay, ps.config.max_backoff_seconds)
            ps.delete_pod(w, Reason.WORKER_FAILED)
            ps.event(
                "TrainingJob",
                job.namespace,
                job.name,
                Reason.WORKER_FAILED,
                f"worker {w.name} failed; restart {heal.restarts}",
                EventType.WARNING,
            )
            continue
        if w.node is None and w.nominated_node is None:
            ps.delete_pod(w, Reason.WORKER_REMOVED)  # created but never placed: place afresh
            continue
        keep.append(w)
    return keep


def _bind_nominated(ps: Pass, cap: Capacity, job: Job, keep: list[Pod], heal: _Heal) -> list[Pod]:
    """Bind replacements whose GPUs have been freed; make sure their victims are leaving."""
    if None not in map(_node, keep):
        return keep  # every worker bound already
    result: list[Pod] = []
    for w in keep:
        if w.node is not None or w.nominated_node is None:
            result.append(w)
            continue
        node = ps.view.nodes[w.nominated_node]
        if not ps.placeable(node):
            heal.lost[w.rank or 0] = (w.replaces_node, w.fault_at)
            ps.delete_pod(w, Reason.WORKER_REMOVED)
            continue
        result.append(w)
        if cap.try_bind(node, w.gpus):
            _bind(ps, job, w.namespace, w.name, node.name, w.replaces_node, w.fault_at, heal)
            continue
        deficit = cap.bound[node.name] + w.gpus - node.gpus - cap.releasing[node.name]
        if deficit > 0:
            for victim in choose_victims(cap.spot.get(node.name, ()), deficit):
                cap.remove_spot(victim)
                preempt(ps, victim, f"a replacement worker of {job.key}")
    return result


def _bind(
    ps: Pass,
    job: Job,
    namespace: str,
    name: str,
    node: str,
    replaces: str | None,
    fault_at: float | None,
    heal: _Heal,
) -> None:
    heal.binds += 1
    planned = replaces is not None and _planned(ps, replaces)
    healed = replaces is not None and not planned
    ps.pod_actions.append(BindPod(namespace, name, node, healed_at=ps.now if healed else None))
    if planned:
        # A planned swap off a node in maintenance: not a heal, so neither ``swaps`` nor
        # ``lastHeal`` (nor the heal metrics they feed) count it; its Event says so.
        heal.planned_swaps += 1
        ps.event(
            "TrainingJob",
            job.namespace,
            job.name,
            Reason.PLANNED_SWAP,
            f"{name} moved off {replaces} (planned maintenance) onto {node}",
        )
    elif replaces is not None:
        heal.swaps += 1
        heal.last_heal = LastHeal(
            replaces, node, fault_at if fault_at is not None else ps.now, ps.now
        )
        ps.event(
            "TrainingJob",
            job.namespace,
            job.name,
            Reason.WORKER_SWAPPED,
            f"{name} replaces a worker of {replaces} on {node} after {heal.last_heal.seconds:.1f}s",
        )


def _planned(ps: Pass, node_name: str) -> bool:
    """Was this node left for planned maintenance (not for a fault)?"""
    node = ps.view.nodes.get(node_name)
    if node is None or node.maintenance is None:
        return False
    return ps.states.get(node_name) is NodeState.MAINTENANCE


def preempt(ps: Pass, victim: Pod, why: str, reason: Reason = Reason.SPOT_PREEMPTED) -> None:
    """Evict a spot pod with its pool's notice (the caller settles the GPU accounting)."""
    pool = next((p for p in ps.view.pools if p.name == victim.owner), None)
    notice = pool.spec.notice_seconds if pool else 30
    ps.evict_pod(victim, notice, reason)
    ps.preemptions[victim.owner] += 1
    ps.event(
        "Pod",
        victim.namespace,
        victim.name,
        reason,
        f"preempted with {notice}s notice for {why}",
        EventType.WARNING,
    )


def candidate_nodes(ps: Pass, cap: Capacity, job: Job, allow_spares: bool) -> list[Node]:
    """Pool nodes (of the job's pool, if it names one) that may take its workers: in
    service, spares only if allowed, with some room (in no particular order)."""
    pool = job.spec.pool
    wanted = (NodeState.ACTIVE, NodeState.SPARE) if allow_spares else (NodeState.ACTIVE,)
    states, verdicts, nodes = ps.states, ps.memo.verdicts, ps.view.nodes
    written, before = states.written(), states.below.get  # read in C but for a few
    names = cap.room & ps.in_service
    names -= cap.spent
    return [
        nodes[name]
        for name in names
        if (states[name] if name in written else before(name)) in wanted
        and (home := verdicts[name].pool) is not None
        and (pool is None or home == pool)
    ]


def _ranked(
    ps: Pass,
    cap: Capacity,
    pool: str,
    gpus: int,
    allow_spares: bool,
    domain: Callable[[], tuple[str, str | None]],
) -> Iterator[str]:
    """The pool's candidate nodes in the order ``Capacity.place`` would try them, read from
    the memo's ranking (as the pass began) with the nodes this pass wrote about scored
    afresh: within each class of the ranking, the job's topology domain first (found
    only once there is a candidate: a waiting job mostly has none)."""
    written = ps.changed.union(cap.free.written(), cap.releasing.written(), cap.spot.written())
    states, verdicts = ps.states, ps.memo.verdicts
    wanted = (NodeState.ACTIVE, NodeState.SPARE) if allow_spares else (NodeState.ACTIVE,)
    fresh: list[Score] = []
    for name in written:
        state = states.get(name)
        if (
            name in cap.room
            and name in ps.in_service
            and state in wanted
            and verdicts[name].pool == pool
        ):
            spot = sum(p.gpus for p in cap.spot.get(name, ()))
            free, releasing = cap.free.get(name, 0), cap.releasing.get(name, 0)
            rank = score(free, releasing, spot, state is NodeState.SPARE, gpus, name)
            if rank is not None:
                fresh.append(rank)
    fresh.sort()
    ranking = ps.memo.ranking(pool, gpus)
    kept = (s for s in ranking.entries if s[4] not in written and (allow_spares or not s[1]))
    fresh_by_name = {s[4]: s for s in fresh}

    def now(name: str) -> Score | None:
        """The node's entry among those merged below, if any."""
        if name in written:
            return fresh_by_name.get(name)
        s = ranking.scores.get(name)
        return s if s is not None and (allow_spares or not s[1]) else None

    nearby: frozenset[str] | None = None  # the job's domain (None: not found yet)
    everywhere = False  # the job has no domain
    merged = heapq.merge(kept, fresh) if fresh else kept  # merge() costs a Python step each
    for group, members in itertools.groupby(merged, key=itemgetter(0, 1, 2)):
        if nearby is None:
            topo_key, topo_value = domain()
            everywhere = topo_value is None
            members_of = ps.memo.domain_members
            nearby = frozenset() if topo_value is None else members_of(topo_key, topo_value)
        if everywhere:
            yield from (s[4] for s in members)
            continue
        # The domain's nodes of this class first (a class may hold every spare: found from
        # the domain's few nodes, not by reading the class), then the rest in order.
        first = sorted(s for name in nearby if (s := now(name)) is not None and s[:3] == group)
        yield from (s[4] for s in first)
        taken = {s[4] for s in first}
        yield from (s[4] for s in members if s[4] not in taken)


_FEW = 16  # workers placed from the memo's ranking; more (a gang) are scored in full


def _place_gang(
    ps: Pass, cap: Capacity, job: Job, keep: list[Pod], need: int
) -> tuple[list[tuple[int, Placement]], int]:
    """The workers placed (all of the gang's minimum, or none), and how many placements
    the pool had room for (at most: when the gang cannot fit at all, a bound from the
    candidates' GPUs)."""
    spec = job.spec
    allow_spares = job.status.started and spec.healing.use_buffer
    gpus = spec.gpus_per_replica

    def domain() -> tuple[str, str | None]:
        return topology_domain(ps.view, keep, spec.topology_key)

    # The same placements either way: a few workers (a swap) from the memo's ranking of the
    # pool; a gang from every candidate scored, skipped at once if it cannot fit at all.
    if spec.pool is not None and need <= _FEW:
        ranked = _ranked(ps, cap, spec.pool, gpus, allow_spares, domain)
        placements = cap.place_in_order(ranked, ps.states, need, gpus)
    else:
        nodes = candidate_nodes(ps, cap, job, allow_spares)
        most = sum(n.gpus // gpus for n in nodes)  # gpusPerReplica >= 1
        if len(keep) + min(most, need) < spec.min_replicas:
            return [], most  # not enough of the gang fits, however it is placed (waiting)
        placements = cap.place(nodes, ps.states, need, gpus, domain())
    if len(keep) + len(placements) < spec.min_replicas:
        return [], len(placements)  # all of the gang or nothing
    cap.commit(placements, spec.gpus_per_replica)
    taken = {w.rank for w in keep}
    ranks = [r for r in range(spec.max_replicas + len(keep) + need) if r not in taken]
    return list(zip(ranks, placements, strict=False)), len(placements)


def _act_on_placements(
    ps: Pass, job: Job, placed: list[tuple[int, Placement]], heal: _Heal
) -> None:
    for rank, pl in placed:
        if pl.claims_spare and ps.states.get(pl.node) is NodeState.SPARE:
            ps.set_state(
                pl.node,
                NodeState.ACTIVE,
                Reason.NODE_CLAIMED,
                f"claimed from the buffer by {job.key}",
            )
        for victim in pl.victims:
            preempt(ps, victim, f"a worker of {job.key}")
        replaces, fault_at = heal.lost.get(rank, (None, None))
        name = ps.new_pod_name(job.namespace, f"{job.name}-{rank}")
        ps.pod_actions.append(
            CreatePod(
                namespace=job.namespace,
                name=name,
                kind=PodKind.WORKER,
                owner=job.key,
                gpus=job.spec.gpus_per_replica,
                rank=rank,
                nominated_node=pl.node,
                replaces_node=replaces,
                fault_at=fault_at,
            )
        )
        if pl.bind_now:
            _bind(ps, job, job.namespace, name, pl.node, replaces, fault_at, heal)


def _report(
    ps: Pass,
    job: Job,
    keep: list[Pod],
    placed: list[tuple[int, Placement]],
    heal: _Heal,
    target: int,
) -> None:
    old, spec = job.status, job.spec
    total = len(keep) + len(placed)
    where = list(map(_node, keep))
    bound = heal.binds + len(keep) - where.count(None)
    if None in where:
        ready = sum(1 for w in keep if w.node is not None and w.phase is PodPhase.RUNNING)
    else:
        ready = list(map(_phase, keep)).count(PodPhase.RUNNING)
    if target == 0:
        phase, message = JobPhase.WAITING, "scaled to zero"
    elif total < spec.min_replicas:
        phase = JobPhase.WAITING if old.started else JobPhase.PENDING
        message = f"{total} of at least {spec.min_replicas} workers placeable; waiting for capacity"
    elif bound < total:
        phase = JobPhase.HEALING if old.started else JobPhase.PENDING
        message = f"{bound}/{target} workers bound, {total - bound} waiting for GPUs"
    elif total < target:
        phase, message = JobPhase.DEGRADED, f"shrunk to {total}/{target} workers"
    else:
        phase, message = JobPhase.RUNNING, f"{total}/{target} workers bound"

    conditions = set_condition(
        old.conditions,
        Condition(ConditionType.READY, phase is JobPhase.RUNNING, phase.value, message, ps.now),
    )
    conditions = set_condition(
        conditions,
        Condition(
            ConditionType.DEGRADED,
            phase in (JobPhase.DEGRADED, JobPhase.HEALING, JobPhase.WAITING),
            phase.value,
            message,
            ps.now,
        ),
    )
    status = TrainingJobStatus(
        phase=phase,
        replicas=total,
        ready_replicas=ready,
        selector=f"{JOB_LABEL}={job.name}",
        restarts=heal.restarts,
        swaps=heal.swaps,
        last_heal=_running_since(ps, heal.last_heal, keep),
        conditions=conditions,
        message=message,
        backoff_until=heal.backoff_until,
    )
    if phase is not old.phase:
        _phase_event(ps, job, old.phase, phase, message)
    if status != old:
        ps.status_actions.append(PatchJobStatus(job.namespace, job.name, status))


def _phase_event(ps: Pass, job: Job, old: JobPhase | None, new: JobPhase, message: str) -> None:
    reason = {
        JobPhase.WAITING: Reason.JOB_WAITING,
        JobPhase.DEGRADED: Reason.JOB_SHRUNK,
        JobPhase.PENDING: Reason.GANG_UNSCHEDULABLE,
    }.get(new)
    if new is JobPhase.RUNNING:
        if old is JobPhase.HEALING:
            return  # the swap has its own event
        grown = old in (JobPhase.DEGRADED, JobPhase.WAITING)
        reason = Reason.JOB_GROWN if grown else Reason.GANG_PLACED
    if reason is None:
        return
    warn = new in (JobPhase.WAITING, JobPhase.DEGRADED, JobPhase.PENDING)
    ps.event(
        "TrainingJob",
        job.namespace,
        job.name,
        reason,
        message,
        EventType.WARNING if warn else EventType.NORMAL,
    )


def _finish(ps: Pass, job: Job, phase: JobPhase, reason: Reason, message: str) -> None:
    old = job.status
    ready = Condition(ConditionType.READY, False, phase.value, message, ps.now)
    status = dataclasses.replace(
        old,
        phase=phase,
        replicas=0,
        ready_replicas=0,
        message=message,
        conditions=set_condition(old.conditions, ready),
    )
    ps.status_actions.append(PatchJobStatus(job.namespace, job.name, status))
    warn = phase is JobPhase.FAILED
    ps.event(
        "TrainingJob",
        job.namespace,
        job.name,
        reason,
        message,
        EventType.WARNING if warn else EventType.NORMAL,
    )
