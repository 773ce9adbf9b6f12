"""Planned maintenance (``valet.dev/maintenance``, ``kubectl valet drain/return``): table
tests of decide(), in the style of test_policy_decisions.py."""

from __future__ import annotations

import dataclasses

from tests.builders import NOW, RUNNING, job, node, pool, view, worker
from valet.model.enums import Health, JobPhase, NodeState, Reason
from valet.model.plan import (
    BindPod,
    EmitEvent,
    EvictPod,
    PatchJobStatus,
    RecordFault,
    RequestRemediation,
    SetCordon,
    SetNodeState,
)
from valet.policy import decide


def states(plan) -> dict[str, NodeState]:
    return {a.node: a.state for a in plan.of(SetNodeState)}


def reasons(plan) -> dict[str, Reason]:
    return {a.node: a.reason for a in plan.of(SetNodeState)}


def cordoned(n):
    return dataclasses.replace(n, unschedulable=True)


def _planned_cluster():
    nodes = [node("ok"), node("m", maintenance="bios update")]
    nodes.append(node("s1", NodeState.SPARE))
    pods = [worker("j-0-0", "ok", rank=0), worker("j-1-0", "m", rank=1)]
    return view(nodes, pods, [job(replicas=2, status=RUNNING)], [pool(1)])


def test_a_planned_drain_holds_the_node_and_records_no_fault() -> None:
    plan = decide(_planned_cluster(), NOW)
    assert states(plan)["m"] is NodeState.MAINTENANCE
    assert reasons(plan)["m"] is Reason.NODE_MAINTENANCE
    assert plan.of(RecordFault) == []  # lemon, breaker and heal figures are not touched
    assert SetCordon("m", True) in plan.of(SetCordon)
    (evicted,) = [a for a in plan.of(EvictPod) if a.name == "j-1-0"]
    assert evicted.reason is Reason.NODE_DRAINING
    events = [e for e in plan.of(EmitEvent) if e.name == "m"]
    assert any("bios update" in e.message for e in events)


def test_a_planned_swap_moves_the_worker_onto_a_spare_without_counting_a_heal() -> None:
    plan = decide(_planned_cluster(), NOW)
    binds = [a for a in plan.of(BindPod) if a.node == "s1"]
    assert len(binds) == 1
    (patch,) = plan.of(PatchJobStatus)
    assert patch.status.swaps == 0 and patch.status.last_heal is None
    assert patch.status.phase is JobPhase.RUNNING
    assert [e.reason for e in plan.of(EmitEvent) if e.kind == "TrainingJob"].count(
        Reason.PLANNED_SWAP
    ) == 1
    assert Reason.WORKER_SWAPPED not in [e.reason for e in plan.of(EmitEvent)]


def test_a_node_in_maintenance_stays_held_while_annotated() -> None:
    held = cordoned(node("m", NodeState.MAINTENANCE, maintenance="bios"))
    plan = decide(view([held], pools=[pool(0)]), NOW)
    assert states(plan) == {}
    assert plan.of(SetCordon) == [] and plan.of(RequestRemediation) == []


def test_a_returned_node_goes_back_to_the_buffer_without_remediation() -> None:
    back = cordoned(node("m", NodeState.MAINTENANCE))
    plan = decide(view([back], pools=[pool(1)]), NOW)
    assert states(plan) == {"m": NodeState.SPARE}
    assert reasons(plan) == {"m": Reason.NODE_RETURNED}
    assert plan.of(RequestRemediation) == [] and plan.of(RecordFault) == []
    assert SetCordon("m", False) in plan.of(SetCordon)


def test_a_fault_wins_over_a_planned_drain() -> None:
    failing = node(
        "m", health=Health.UNHEALTHY, signals=("xid:79",), since=NOW - 1, maintenance="bios"
    )
    plan = decide(view([failing], pools=[pool(0)]), NOW)
    assert states(plan) == {"m": NodeState.DRAINING}
    assert len(plan.of(RecordFault)) == 1


def test_a_node_healing_from_a_fault_finishes_before_maintenance() -> None:
    healing = node("m", NodeState.DRAINING, maintenance="bios")
    plan = decide(view([healing], pools=[pool(0)]), NOW)
    assert states(plan) == {"m": NodeState.HEALING}
