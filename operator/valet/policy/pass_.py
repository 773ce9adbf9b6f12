"""The scratch state of one decide() pass: effective node states, actions, events, wake-up."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Mapping

from valet.model.enums import EventType, Health, NodeState, Reason
from valet.model.plan import Action, DeletePod, EmitEvent, EvictPod, SetNodeState
from valet.model.view import ClusterView, Node, Pod
from valet.policy.config import PolicyConfig
from valet.policy.delta import Scratch, ScratchSet
from valet.policy.memo import IN_SERVICE, OUT_OF_SERVICE, PassMemo


@dataclasses.dataclass
class Pass:
    view: ClusterView
    now: float
    config: PolicyConfig
    states: Scratch[NodeState | None]  # state of each node after this pass's transitions
    health: Mapping[str, Health]  # effective health (staleness applied)
    memo: PassMemo  # the verdicts this pass started from, and their counts per pool
    node_actions: list[Action] = dataclasses.field(default_factory=list)
    pod_actions: list[Action] = dataclasses.field(default_factory=list)
    status_actions: list[Action] = dataclasses.field(default_factory=list)
    early_status_actions: list[Action] = dataclasses.field(default_factory=list)
    events: list[EmitEvent] = dataclasses.field(default_factory=list)
    preemptions: Counter[str] = dataclasses.field(default_factory=Counter)  # by pool
    evicted: dict[str, Pod] = dataclasses.field(default_factory=dict)  # pods evicted/deleted now
    breaker_open: set[str] = dataclasses.field(default_factory=set)  # pool names
    wake_at: float | None = None
    _created: set[str] = dataclasses.field(default_factory=set)  # pod keys created now
    # Nodes that take new pods (active or spare, healthy, ready) and nodes that must be left.
    in_service: ScratchSet = dataclasses.field(default_factory=lambda: ScratchSet(set()))
    out_of_service: set[str] = dataclasses.field(default_factory=set)
    targets: dict[str, int] = dataclasses.field(default_factory=dict)  # buffer target by pool
    # Pool nodes whose kubelet is gone: their pods are force-deleted, since none will end.
    dead: set[str] = dataclasses.field(default_factory=set)
    changed: set[str] = dataclasses.field(default_factory=set)  # nodes whose state changed

    def new_pod_name(self, namespace: str, prefix: str) -> str:
        """The first ``prefix-N`` name free in the namespace (pods still terminating count)."""
        taken, created = self.view.pod_keys, self._created
        n = 0
        while (key := f"{namespace}/{prefix}-{n}") in taken or key in created:
            n += 1
        created.add(key)
        return f"{prefix}-{n}"

    def fault_time(self, node_name: str | None) -> float:
        """When the fault that sent this node away was first seen."""
        node = self.view.nodes.get(node_name or "")
        if node is None:
            return self.now
        if node.health.verdict is Health.UNHEALTHY and node.health.since is not None:
            return node.health.since
        return node.faults[-1] if node.faults else self.now

    def wake(self, at: float) -> None:
        """Ask for another pass at ``at`` even if nothing changes in the cluster."""
        if at > self.now and (self.wake_at is None or at < self.wake_at):
            self.wake_at = at

    def event(
        self,
        kind: str,
        namespace: str | None,
        name: str,
        reason: Reason,
        message: str,
        type_: EventType = EventType.NORMAL,
    ) -> None:
        self.events.append(EmitEvent(kind, namespace, name, type_, reason, message))

    def node_event(self, node: str, reason: Reason, message: str, warning: bool = False) -> None:
        self.event(
            "Node", None, node, reason, message, EventType.WARNING if warning else EventType.NORMAL
        )

    def delete_pod(self, pod: Pod, reason: Reason) -> None:
        force = pod.node in self.dead
        self.pod_actions.append(DeletePod(pod.namespace, pod.name, reason, force=force))
        self.evicted[pod.key] = pod

    def evict_pod(self, pod: Pod, grace_seconds: int, reason: Reason) -> None:
        """Evict with notice; on a dead node nobody would act on it: force-delete instead."""
        if pod.node in self.dead:
            self.delete_pod(pod, reason)
            return
        self.pod_actions.append(EvictPod(pod.namespace, pod.name, grace_seconds, reason))
        self.evicted[pod.key] = pod

    def set_state(self, node: str, state: NodeState, reason: Reason, message: str) -> None:
        self.states[node] = state
        self.changed.add(node)
        self._classify(node)
        self.node_actions.append(SetNodeState(node, state, reason))
        warn = state in (NodeState.DRAINING, NodeState.RETIRED, NodeState.SUSPECT)
        self.node_event(node, reason, message, warning=warn)

    def _classify(self, name: str) -> None:
        """Keep in_service / out_of_service in step with a node's state (the latter, a few
        nodes, copied from the memo's on the pass's first change)."""
        if self.out_of_service is self.memo.out_of_service:
            self.out_of_service = set(self.out_of_service)
        state = self.states[name]
        if (
            state in IN_SERVICE
            and self.health[name] is Health.HEALTHY
            and self.view.nodes[name].ready
        ):
            self.in_service.add(name)
        else:
            self.in_service.discard(name)
        if state in OUT_OF_SERVICE:
            self.out_of_service.add(name)
        else:
            self.out_of_service.discard(name)

    def names_in(self, pool: str, state: NodeState | None) -> set[str]:
        """The pool's nodes in ``state`` as of now (this pass's transitions applied)."""
        names = self.memo.pools[pool].by_state.get(state, set())
        if not self.changed:
            return set(names)
        states, verdicts = self.states, self.memo.verdicts
        moved = {n for n in self.changed if verdicts[n].pool == pool}
        return (names - moved) | {n for n in moved if states[n] is state}

    def nodes_in(self, pool: str, state: NodeState | None) -> list[Node]:
        """The pool's nodes in ``state`` as of now, in the view's order."""
        members = self.memo.pools[pool].members
        return [members[n] for n in self.memo.in_order(self.names_in(pool, state))]

    def state_counts(self, pool: str) -> Counter[NodeState | None]:
        """How many of the pool's nodes are in each state as of now."""
        counts = self.memo.pool_counts(pool)
        before, verdicts = self.memo.states, self.memo.verdicts
        for name in self.changed:
            if verdicts[name].pool == pool:
                counts[before[name]] -= 1
                counts[self.states[name]] += 1
        return +counts  # without the states that emptied

    def writes(self) -> tuple[int, ...]:
        """How much this pass has written so far: equal before and after a step that wrote
        nothing (actions only grow within a pass)."""
        return (
            len(self.node_actions),
            len(self.pod_actions),
            len(self.status_actions),
            len(self.early_status_actions),
            len(self.events),
        )

    def placeable(self, node: Node) -> bool:
        """May new pods go here: active or spare, healthy and ready."""
        return node.name in self.in_service

    def bad(self, node_name: str | None) -> bool:
        """Workers there must move: the node is gone, draining, healing or retired."""
        if node_name is None:
            return False
        return node_name in self.out_of_service or node_name not in self.view.nodes
