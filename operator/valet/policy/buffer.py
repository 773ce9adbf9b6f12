"""The healing buffer: keep each pool's target number of spares, no more, no fewer."""

from __future__ import annotations

from valet.model.enums import NodeState, Reason
from valet.model.view import Node, Pool
from valet.policy.capacity import Capacity
from valet.policy.pass_ import Pass


def buffer_target(ps: Pass, pool: Pool) -> int:
    """Spares wanted: a count, or a percent of the pool's nodes that are not retired.

    Lifecycle has run when this is asked, so retirements are final for the pass.
    """
    if pool.name not in ps.targets:
        nodes = ps.pool_nodes[pool.name]
        retired = sum(1 for n in nodes if ps.states[n.name] is NodeState.RETIRED)
        ps.targets[pool.name] = pool.spec.buffer.target(len(nodes) - retired)
    return ps.targets[pool.name]


def spares_of(ps: Pass, pool: Pool) -> list[Node]:
    return [n for n in ps.pool_nodes[pool.name] if ps.states[n.name] is NodeState.SPARE]


def rebalance(ps: Pass, cap: Capacity) -> None:
    """Release spares beyond target; promote idle healthy active nodes up to target."""
    for pool in ps.view.pools:
        target = buffer_target(ps, pool)
        spares = spares_of(ps, pool)
        for node in sorted(spares, key=lambda n: n.name, reverse=True)[
            : max(0, len(spares) - target)
        ]:
            ps.set_state(node.name, NodeState.ACTIVE, Reason.NODE_RELEASED, "buffer above target")
        missing = target - len(spares)
        if missing <= 0:
            continue
        idle = [
            n
            for n in ps.pool_nodes[pool.name]
            if ps.states[n.name] is NodeState.ACTIVE
            and n.name not in cap.workers_on
            and ps.placeable(n)
        ]
        for node in sorted(idle, key=lambda n: n.name)[:missing]:
            ps.set_state(
                node.name, NodeState.SPARE, Reason.NODE_SPARE, f"held in the buffer of {pool.name}"
            )
