"""decide(view, now) -> Plan: one level-triggered pass over the whole cluster.

1. advance every pool node through its lifecycle (drain, heal, retire, breaker);
2. settle spot work (finished shards recorded, pods off failing nodes);
3. rebalance the healing buffer to its target;
4. reconcile TrainingJobs: swaps, gang placement, elastic shrink and regrow;
5. pack idle GPUs with spot work;
6. report pool status, and order the plan so that recorded facts precede deletions.
"""

from __future__ import annotations

from collections import Counter

from valet.model.enums import ConditionType, EventType, NodeState, PodKind, Reason
from valet.model.plan import CreatePod, EmitEvent, PatchPoolStatus, Plan
from valet.model.specs import Condition, ShardStatus, SpotPoolStatus, set_condition
from valet.model.view import ClusterView, Pool
from valet.policy import buffer, jobs, lifecycle, spot
from valet.policy.capacity import Capacity
from valet.policy.config import PolicyConfig
from valet.policy.memo import PassMemo
from valet.policy.pass_ import Pass

DEFAULT_CONFIG = PolicyConfig()


def decide(
    view: ClusterView,
    now: float,
    config: PolicyConfig = DEFAULT_CONFIG,
    memo: PassMemo | None = None,
) -> Plan:
    """The plan for ``view`` at ``now``. A caller that decides pass after pass keeps one
    ``memo`` for all of them: the plan is the same, at a cost in proportion to what changed."""
    ps = lifecycle.new_pass(view, now, config, memo if memo is not None else PassMemo())
    lifecycle.advance_nodes(ps)
    cap = Capacity(ps.view, ps.memo.gpus)
    ledgers = spot.settle_spot(ps, cap)
    buffer.rebalance(ps, cap)
    jobs.reconcile_jobs(ps, cap)
    spot.pack_spot(ps, cap, ledgers)
    for pool in view.pools:
        _report_pool(ps, pool, ledgers[pool.name])
        lifecycle.sync_marks(ps, pool)
    actions = (
        *ps.node_actions,
        *ps.early_status_actions,
        *ps.pod_actions,
        *ps.status_actions,
        *_bulk_to_pools(ps),
    )
    return Plan(actions=actions, wake_at=ps.wake_at)


# Bookkeeping a whole fleet goes through at once (the first pass over a new pool, a buffer
# resized): more than BULK_EVENTS nodes alike in one pass make one Event on their pool.
BULK_REASONS = frozenset({Reason.NODE_ADOPTED, Reason.NODE_SPARE, Reason.NODE_RELEASED})
BULK_EVENTS = 10
BULK_NAMES_SHOWN = 5


def _bulk_to_pools(ps: Pass) -> list[EmitEvent]:
    """The pass's Events, with bulk node bookkeeping summed up on the pool."""

    def key(e: EmitEvent) -> tuple[Reason, EventType, str] | None:
        return (
            (e.reason, e.type, e.message) if e.kind == "Node" and e.reason in BULK_REASONS else None
        )

    sizes = Counter(k for e in ps.events if (k := key(e)) is not None)
    bulk = {k for k, n in sizes.items() if n > BULK_EVENTS}
    if not bulk:
        return ps.events
    verdicts = ps.memo.verdicts
    kept: list[EmitEvent] = []
    names: dict[tuple[str, Reason, EventType, str], list[str]] = {}
    for e in ps.events:
        k = key(e)
        v = verdicts.get(e.name)
        if k in bulk and v is not None and v.pool is not None:
            names.setdefault((v.pool, *k), []).append(e.name)
        else:
            kept.append(e)
    for (pool, reason, type_, message), nodes in names.items():
        shown = ", ".join(nodes[:BULK_NAMES_SHOWN])
        if len(nodes) > BULK_NAMES_SHOWN:
            shown += f" and {len(nodes) - BULK_NAMES_SHOWN} more"
        summary = f"{len(nodes)} nodes: {message} ({shown})"
        kept.append(EmitEvent("SpotPool", None, pool, type_, reason, summary))
    return kept


def _report_pool(ps: Pass, pool: Pool, ledger: spot.PoolLedger) -> None:
    old = pool.status
    by_state = Counter({str(s or "new"): c for s, c in ps.state_counts(pool.name).items()})
    unknown = ps.memo.pools[pool.name].unknown
    if unknown:
        by_state["unknown"] = unknown
    spares = by_state.get(NodeState.SPARE.value, 0)
    target = buffer.buffer_target(ps, pool)

    created = [
        a
        for a in ps.pod_actions
        if isinstance(a, CreatePod) and a.kind is PodKind.SPOT and a.owner == pool.name
    ]
    live_pods, live_gpus = ledger.live(ps, pool.name)
    shard_status = []
    for wl in pool.spec.workloads:
        if wl.shards is None:
            continue
        done = ledger.done[wl.name].union(ledger.finished[wl.name])
        starting = [a.shard for a in created if a.workload == wl.name and a.shard is not None]
        running = ledger.running_count(wl.name, starting)
        shard_status.append(ShardStatus(wl.name, wl.shards, done, running))

    exhausted = spares < target
    conditions = set_condition(
        old.conditions,
        Condition(
            ConditionType.BUFFER_EXHAUSTED,
            exhausted,
            Reason.BUFFER_EXHAUSTED if exhausted else Reason.BUFFER_READY,
            f"{spares}/{target} spares",
            ps.now,
        ),
    )
    tripped = pool.name in ps.breaker_open
    conditions = set_condition(
        conditions,
        Condition(
            ConditionType.CIRCUIT_BREAKER_OPEN,
            tripped,
            Reason.CIRCUIT_BREAKER_OPEN if tripped else "Closed",
            "mass failure: draining held, alerting instead" if tripped else "",
            ps.now,
        ),
    )
    status = SpotPoolStatus(
        spares=spares,
        spares_target=target,
        nodes=dict(sorted(by_state.items())),
        spot_gpus=live_gpus + sum(a.gpus for a in created),
        spot_pods=live_pods + len(created),
        preemptions=old.preemptions + ps.preemptions[pool.name],
        spot_gpu_seconds=old.spot_gpu_seconds + ledger.gpu_seconds,
        shards=tuple(shard_status),
        conditions=conditions,
    )
    for cond in conditions:
        before = next((c for c in old.conditions if c.type == cond.type), None)
        if cond.status and (before is None or not before.status):
            ps.event(
                "SpotPool", None, pool.name, Reason(cond.reason), cond.message, EventType.WARNING
            )
    if status != old:
        ps.early_status_actions.append(PatchPoolStatus(pool.name, status))
