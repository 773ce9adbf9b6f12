"""The healing buffer: keep each pool's target number of spares, no more, no fewer; keep
``buffer.hot`` of them unpacked, so that a failure takes one at once."""

from __future__ import annotations

import math

from valet.model.enums import NodeState, Reason
from valet.model.view import Node, Pool
from valet.policy.capacity import Capacity
from valet.policy.pass_ import Pass


def buffer_target(ps: Pass, pool: Pool) -> int:
    """Spares wanted: a count, or a percent of the pool's nodes that are not retired.

    Lifecycle has run when this is asked, so retirements are final for the pass.
    """
    if pool.name not in ps.targets:
        retired = ps.state_counts(pool.name)[NodeState.RETIRED]
        nodes = len(ps.memo.pools[pool.name].members)
        ps.targets[pool.name] = pool.spec.buffer.target(nodes - retired)
    return ps.targets[pool.name]


def spares_of(ps: Pass, pool: Pool) -> list[Node]:
    return ps.nodes_in(pool.name, NodeState.SPARE)


def rebalance(ps: Pass, cap: Capacity) -> None:
    """Release spares beyond target; promote idle healthy active nodes up to target."""
    for pool in ps.view.pools:
        target = buffer_target(ps, pool)
        spares = ps.names_in(pool.name, NodeState.SPARE)
        if len(spares) > target:
            # The most packed go first: spot work stays where it runs, and an empty spare (a
            # hot one, or one that just came back healed) stays in the buffer.
            by_packing = sorted(spares, key=lambda n: (cap.free[n], n))
            for name in by_packing[: len(spares) - target]:
                ps.set_state(name, NodeState.ACTIVE, Reason.NODE_RELEASED, "buffer above target")
        missing = target - len(spares)
        if missing <= 0:
            continue
        verdicts, states = ps.memo.verdicts, ps.states
        idle = [
            name
            for name in (cap.no_workers & ps.in_service) - spares
            if verdicts[name].pool == pool.name and states.get(name) is NodeState.ACTIVE
        ]
        for name in sorted(idle)[:missing]:
            ps.set_state(
                name, NodeState.SPARE, Reason.NODE_SPARE, f"held in the buffer of {pool.name}"
            )


# --- hot spares ---------------------------------------------------------------------------

HOT_RISK = 0.01  # "auto": more failures than hot spares within one notice, at most this likely
FAILURE_WINDOW_SECONDS = 7 * 24 * 3600.0  # the pool's failure rate is observed over this


def auto_hot(failures_per_second: float, notice_seconds: float, risk: float = HOT_RISK) -> int:
    """The smallest k such that more than k failures within one notice period are less
    likely than ``risk``, failures being Poisson: P(N > k) < risk, N ~ Poisson(rate·notice).
    At least 1: the first failure is the one users notice."""
    mean = failures_per_second * notice_seconds
    k, cdf = 0, _poisson_pmf(0, mean)
    while 1.0 - cdf >= risk and k < 100_000:
        k += 1
        cdf += _poisson_pmf(k, mean)
    return max(1, k)


def _poisson_pmf(k: int, mean: float) -> float:
    if mean <= 0:
        return 1.0 if k == 0 else 0.0
    return math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))


def hot_target(ps: Pass, pool: Pool) -> int:
    """Spares to keep unpacked: the pool's count, or ``auto_hot`` over its observed failures."""
    buf = pool.spec.buffer
    if buf.hot_auto:
        since = ps.now - FAILURE_WINDOW_SECONDS
        book = ps.memo.pools[pool.name]
        failures = sum(1 for n in book.faulted for t in book.members[n].faults if t >= since)
        return auto_hot(failures / FAILURE_WINDOW_SECONDS, pool.spec.notice_seconds)
    return buf.hot or 0


def hot_spares(ps: Pass, pool: Pool, cap: Capacity) -> list[Node]:
    """The spares kept hot: fewest live spot GPUs first (a spare being cleared has none, so
    it stays chosen while its pods serve their notice), then fewest GPUs held at all (a
    spare already empty beats one still clearing)."""
    want = hot_target(ps, pool)
    if want <= 0:
        return []
    spares = [n for n in spares_of(ps, pool) if ps.placeable(n)]

    def key(node: Node) -> tuple[int, int, str]:
        packed = sum(
            p.gpus for p in cap.spot.get(node.name, ()) if p.live and p.key not in ps.evicted
        )
        return packed, node.gpus - cap.free[node.name], node.name

    return sorted(spares, key=key)[:want]
