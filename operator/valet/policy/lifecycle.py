"""Node lifecycle (DESIGN §4): active / spare / suspect / draining / healing / retired.

Health comes in as the agent's verdict; staleness, hysteresis, the remediation cap,
lemon retirement and the mass-failure circuit breaker are decided here.
"""

from __future__ import annotations

import dataclasses

from valet.model.enums import (
    FaultAction,
    Health,
    NodeState,
    PodKind,
    Reason,
    Remediation,
    RemediationResult,
)
from valet.model.faults import worst
from valet.model.plan import (
    ClearRemediation,
    RecordFault,
    RequestRemediation,
    SetCordon,
    SetOutOfService,
    SetSpareTaint,
)
from valet.model.view import ClusterView, Node, Pool
from valet.policy.config import PolicyConfig
from valet.policy.delta import Scratch, ScratchSet
from valet.policy.memo import CORDONED_STATES, FENCE_KEPT_STATES, PassMemo
from valet.policy.pass_ import Pass

# States a planned drain (``valet.dev/maintenance``) takes a node from; a node draining or
# healing for a fault finishes that first, and a retired one stays retired.
_MAINTAINABLE = frozenset({NodeState.ACTIVE, NodeState.SPARE, NodeState.SUSPECT})


def new_pass(view: ClusterView, now: float, config: PolicyConfig, memo: PassMemo) -> Pass:
    """Start a pass from ``memo`` brought up to date: a node whose agent is silent beyond
    staleness (or never spoke) is UNKNOWN; a pool node whose kubelet is silent beyond the
    grace is dead (``memo.dead_since``). The memo is the caller's, kept from its last pass
    (or new: the plan is the same)."""
    death = memo.update(view, now, config)
    if memo.dead:
        view = dataclasses.replace(view, nodes={**view.nodes, **memo.dead})
    ps = Pass(
        view=view,
        now=now,
        config=config,
        states=Scratch(memo.states),
        health=memo.health,
        memo=memo,
        in_service=ScratchSet(memo.in_service),
        out_of_service=memo.out_of_service,  # copied on write (Pass._classify)
        dead=set(memo.dead),
    )
    if death is not None:
        ps.wake(death)  # when the next kubelet would pass its grace
    return ps


def is_lemon(node: Node, pool: Pool, now: float) -> bool:
    window = pool.spec.lemon.window_seconds
    return sum(1 for t in node.faults if now - t <= window) >= pool.spec.lemon.failures


def advance_nodes(ps: Pass) -> None:
    """Move each pool node with a step to take one step through its lifecycle: those not
    healthy and in service, or planned for maintenance (``Verdict.attention``)."""
    for pool in ps.view.pools:
        book = ps.memo.pools[pool.name]
        to_drain: list[Node] = []
        for name in ps.memo.in_order(book.attention):
            node = book.members[name]
            if _step(ps, node, pool):
                to_drain.append(node)
        _drain_within_breaker(ps, pool, to_drain)


def _step(ps: Pass, node: Node, pool: Pool) -> bool:
    """One lifecycle step for a node; returns True when it should start draining."""
    state, health, cfg, now = node.state, ps.health[node.name], ps.config, ps.now
    since = node.health.since if node.health.since is not None else now
    action = node.health.action if health is not Health.UNKNOWN else FaultAction.NONE
    hard = health is Health.UNHEALTHY and action.drains

    if state is None:
        ps.set_state(node.name, NodeState.ACTIVE, Reason.NODE_ADOPTED, f"joined pool {pool.name}")
        return hard
    if state is NodeState.MAINTENANCE:
        if node.maintenance is None:  # returned: back to the buffer, no remediation
            ps.set_state(node.name, NodeState.SPARE, Reason.NODE_RETURNED, "back from maintenance")
            return hard
        return False  # held out of the pool; its pods leave as from a draining node
    if node.maintenance is not None and state in _MAINTAINABLE and not hard:
        # Planned: no fault is recorded (lemon, breaker and heal figures stay as they are).
        ps.set_state(
            node.name,
            NodeState.MAINTENANCE,
            Reason.NODE_MAINTENANCE,
            f"planned maintenance: {node.maintenance or 'no reason given'}",
        )
        return False
    if state in (NodeState.ACTIVE, NodeState.SPARE):
        if hard:
            return True
        if health is Health.SUSPECT or (health is Health.UNHEALTHY and not action.drains):
            if now - since >= cfg.suspect_after_seconds:
                signals = ", ".join(node.health.signals) or "soft signal"
                ps.set_state(node.name, NodeState.SUSPECT, Reason.NODE_SUSPECT, signals)
            else:
                ps.wake(since + cfg.suspect_after_seconds)
        # UNKNOWN (a silent agent) is never a reason to drain; pool status counts it.
        return False
    if state is NodeState.SUSPECT:
        if hard:
            return True
        if health is Health.HEALTHY:
            if now - since >= cfg.recover_after_seconds:
                ps.set_state(node.name, NodeState.ACTIVE, Reason.NODE_RECOVERED, "signals cleared")
            else:
                ps.wake(since + cfg.recover_after_seconds)
        return False
    if state is NodeState.DRAINING:
        _finish_drain(ps, node, pool)
    elif state is NodeState.HEALING:
        _heal(ps, node, pool, health, since)
    return False


def _drain_within_breaker(ps: Pass, pool: Pool, to_drain: list[Node]) -> None:
    """Drain the failing nodes unless too many of the pool failed within the window."""
    if not to_drain:
        return
    breaker = pool.spec.circuit_breaker
    book = ps.memo.pools[pool.name]
    # Other nodes that failed within the window; a node failing again counts once.
    failing = {n.name for n in to_drain}
    recent = 0
    for at, name in reversed(book.last_faults):  # the latest first
        if ps.now - at > breaker.window_seconds:
            break
        recent += name not in failing
    # A single failure always drains, however small the pool.
    allowed = max(1, int(len(book.members) * breaker.max_failed_percent / 100)) - recent
    for i, node in enumerate(sorted(to_drain, key=lambda n: n.name)):
        if i >= allowed:
            ps.breaker_open.add(pool.name)
            ps.node_event(
                node.name,
                Reason.CIRCUIT_BREAKER_OPEN,
                f"not draining: more than {breaker.max_failed_percent}% of pool {pool.name}"
                f" failed within {breaker.window_seconds}s",
                warning=True,
            )
            continue
        rule = worst(node.health.signals)
        signal = rule.signal if rule else "unknown"
        fault_at = node.health.since if node.health.since is not None else ps.now
        ps.node_actions.append(RecordFault(node.name, fault_at, signal))
        message = f"{rule.reason if rule else 'fault'}: {rule.description if rule else ''}"
        ps.set_state(node.name, NodeState.DRAINING, Reason.NODE_DRAINING, message)


def _finish_drain(ps: Pass, node: Node, pool: Pool) -> None:
    """Once no worker or spot pod holds the node, retire a lemon or start remediation."""
    ours = [
        p
        for p in ps.view.pods_by_node.get(node.name, ())
        if p.kind in (PodKind.WORKER, PodKind.SPOT) and (p.holds_gpus or p.live)
    ]
    if node.name in ps.dead:  # no kubelet will finish what is terminating there
        for pod in ours:
            if pod.deleting and pod.key not in ps.evicted:
                ps.delete_pod(pod, Reason.NODE_DRAINING)
    if ours:
        return
    rule = worst(node.health.signals)
    if (rule is not None and rule.action is FaultAction.RETIRE) or is_lemon(node, pool, ps.now):
        reason = Reason.LEMON if is_lemon(node, pool, ps.now) else Reason.NODE_RETIRED
        ps.set_state(node.name, NodeState.RETIRED, reason, "retired: needs a person (RMA)")
        return
    kind = (rule.remediation if rule else None) or Remediation.REBOOT
    ps.set_state(node.name, NodeState.HEALING, Reason.NODE_HEALING, f"remediating with {kind}")
    _request(ps, node, kind, 1)


def _request(ps: Pass, node: Node, kind: Remediation, attempt: int) -> None:
    ps.node_actions.append(RequestRemediation(node.name, kind, attempt))
    ps.node_event(node.name, Reason.REMEDIATION_REQUESTED, f"{kind} (attempt {attempt})")
    ps.wake(ps.now + ps.config.remediation_timeout_seconds)


def _heal(ps: Pass, node: Node, pool: Pool, health: Health, since: float) -> None:
    rem, cfg, now = node.remediation, ps.config, ps.now
    if rem.requested is None:
        rule = worst(node.health.signals)
        _request(ps, node, (rule.remediation if rule else None) or Remediation.REBOOT, 1)
        return
    timed_out = (
        rem.result is None
        and rem.requested_at is not None
        and now - rem.requested_at >= cfg.remediation_timeout_seconds
    )
    if rem.result is None and not timed_out:
        return
    failed = rem.result is RemediationResult.FAILED or timed_out
    if not failed and rem.requested is not Remediation.DIAGNOSE:
        _request(ps, node, Remediation.DIAGNOSE, rem.attempts)
        return
    if not failed and health is Health.HEALTHY:
        if now - since >= cfg.recover_after_seconds:
            ps.node_actions.append(ClearRemediation(node.name))
            ps.set_state(node.name, NodeState.SPARE, Reason.NODE_HEALED, "passed diagnostics")
        else:
            ps.wake(since + cfg.recover_after_seconds)
        return
    if not failed and health is Health.UNKNOWN:
        return  # wait for the agent to speak
    if rem.attempts >= pool.spec.max_remediations:
        ps.node_event(
            node.name, Reason.REMEDIATION_FAILED, f"{rem.attempts} remediations failed", True
        )
        ps.set_state(node.name, NodeState.RETIRED, Reason.NODE_RETIRED, "remediation cap reached")
        return
    _request(ps, node, Remediation.REBOOT, rem.attempts + 1)


def sync_marks(ps: Pass, pool: Pool) -> None:
    """Cordon and spare taint follow each node's final state of this pass: nodes whose
    marks differed as the pass began (``Verdict.marks_off``), and those it moved."""
    states, actions, book = ps.states, ps.node_actions, ps.memo.pools[pool.name]
    moved = {name for name in ps.changed if name in book.members}
    for name in ps.memo.in_order(book.marks_off | moved):
        node, state = book.members[name], states[name]
        cordon = state in CORDONED_STATES
        if cordon != node.unschedulable:
            actions.append(SetCordon(node.name, cordon))
        spare = state is NodeState.SPARE
        if spare != node.spare_taint:
            actions.append(SetSpareTaint(node.name, spare))
        # The fence of a dead node stays until it has been remediated and returns.
        fenced = node.name in ps.dead or (node.out_of_service and state in FENCE_KEPT_STATES)
        if fenced != node.out_of_service:
            actions.append(SetOutOfService(node.name, fenced))
