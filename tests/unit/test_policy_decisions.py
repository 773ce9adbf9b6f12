"""Table tests of decide(): one named case per decision, built from small builders."""

from __future__ import annotations

import dataclasses

import pytest

from tests.builders import NOW, RUNNING, job, node, pool, spot, view, worker, workload
from valet.model.enums import Health, JobPhase, NodeState, PodKind, PodPhase, Reason, Remediation
from valet.model.enums import RemediationResult as Result
from valet.model.plan import (
    BindPod,
    CreatePod,
    DeletePod,
    EmitEvent,
    EvictPod,
    PatchJobStatus,
    PatchPoolStatus,
    RecordFault,
    RequestRemediation,
    SetNodeState,
    SetOutOfService,
    SetSpareTaint,
)
from valet.model.shards import ShardSet
from valet.model.specs import ShardStatus, SpotPoolStatus, TrainingJobStatus
from valet.model.view import ClusterView, RemediationStatus
from valet.policy import PolicyConfig, decide

CFG = PolicyConfig()


def states(plan) -> dict[str, NodeState]:
    return {a.node: a.state for a in plan.of(SetNodeState)}


def job_status(plan) -> TrainingJobStatus:
    (patch,) = plan.of(PatchJobStatus)
    return patch.status


def worker_binds(plan) -> list[BindPod]:
    workers = {a.name for a in created(plan)} | {"j-1-1"}
    return [a for a in plan.of(BindPod) if a.name in workers]


def created(plan, kind=PodKind.WORKER) -> list[CreatePod]:
    return [a for a in plan.of(CreatePod) if a.kind is kind]


# --- gang placement ------------------------------------------------------------------------


def test_gang_binds_every_worker_on_active_nodes_and_leaves_the_spare_alone() -> None:
    plan = decide(
        view([node("a"), node("b"), node("s", NodeState.SPARE)], jobs=[job(replicas=2)]), NOW
    )
    assert sorted(a.node for a in plan.of(BindPod)) == ["a", "b"]
    assert job_status(plan).phase is JobPhase.RUNNING
    assert "s" not in states(plan)


def test_gang_is_all_of_min_replicas_or_nothing() -> None:
    plan = decide(
        view([node("a"), node("b")], jobs=[job(replicas=3, min_replicas=3)], pools=[pool(0)]), NOW
    )
    assert plan.of(CreatePod) == []
    status = job_status(plan)
    assert status.phase is JobPhase.PENDING
    assert "3" in status.message


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(node("x", health=Health.UNHEALTHY, signals=("xid:79",)), id="unhealthy"),
        pytest.param(
            node("x", NodeState.SUSPECT, health=Health.SUSPECT, signals=("thermal-throttle",)),
            id="suspect",
        ),
        pytest.param(node("x", NodeState.DRAINING), id="draining"),
        pytest.param(node("x", NodeState.HEALING), id="healing"),
        pytest.param(node("x", NodeState.RETIRED), id="retired"),
        pytest.param(node("x", heartbeat=NOW - 3600), id="silent-agent"),
        pytest.param(node("x", heartbeat=None), id="never-reported"),
    ],
)
def test_never_places_a_worker_on_a_node_out_of_service(bad) -> None:
    plan = decide(
        view([bad, node("a")], jobs=[job(replicas=2, min_replicas=1)], pools=[pool(0)]), NOW
    )
    assert [a.node for a in plan.of(BindPod)] == ["a"]


def test_spot_pods_on_a_node_already_suspect_are_moved_off_with_notice() -> None:
    # Suspect since the last pass (not just now): its spot pods still leave.
    suspect = node("x", NodeState.SUSPECT, health=Health.SUSPECT, signals=("xid:48",), since=NOW)
    pods = [spot("x-s0", "x", shard=0), spot("a-s1", "a", shard=1)]
    plan = decide(view([suspect, node("a")], pods, pools=[pool(0, [workload(shards=4)])]), NOW)
    assert "x" not in states(plan)  # no transition in this pass
    (moved,) = plan.of(EvictPod)
    assert (moved.name, moved.reason) == ("x-s0", Reason.NODE_DRAINING)


def test_prefers_fewer_fuller_nodes_and_never_overcommits() -> None:
    other = worker("other", "a", job="ns/other", gpus=6)
    plan = decide(
        view(
            [node("a"), node("b"), node("c")],
            pods=[other],
            jobs=[job(replicas=4, gpus=2, min_replicas=4)],
            pools=[pool(0)],
        ),
        NOW,
    )
    binds = [a.node for a in plan.of(BindPod)]
    assert sorted(binds) == ["a", "b", "b", "b"]  # a's last 2 GPUs, then one node filled


# --- healing buffer ------------------------------------------------------------------------


def test_buffer_promotes_idle_nodes_to_target_and_taints_them() -> None:
    busy = worker("w", "a", job="ns/j")
    plan = decide(
        view(
            [node("a"), node("b"), node("c")],
            pods=[busy],
            jobs=[job(replicas=1, status=RUNNING)],
            pools=[pool(2)],
        ),
        NOW,
    )
    assert states(plan) == {"b": NodeState.SPARE, "c": NodeState.SPARE}
    assert {a.node for a in plan.of(SetSpareTaint) if a.present} == {"b", "c"}


def test_buffer_releases_spares_above_target() -> None:
    plan = decide(
        view([node("s1", NodeState.SPARE), node("s2", NodeState.SPARE)], pools=[pool(1)]), NOW
    )
    assert list(states(plan).values()) == [NodeState.ACTIVE]


# --- swap ----------------------------------------------------------------------------------


def _failing_cluster(spare_spots: dict[str, int], notice: int = 45):
    failing = node(
        "bad", NodeState.ACTIVE, health=Health.UNHEALTHY, signals=("xid:79",), since=NOW - 2
    )
    nodes = [node("ok"), failing] + [node(name, NodeState.SPARE) for name in spare_spots]
    pods = [worker("j-0-0", "ok", rank=0), worker("j-1-0", "bad", rank=1)]
    for name, used in spare_spots.items():
        pods += [spot(f"{name}-s{i}", name) for i in range(used)]
    p = pool(len(spare_spots), [workload()], preemption={"noticeSeconds": notice})
    return view(nodes, pods, [job(replicas=2, status=RUNNING)], [p])


def test_swap_picks_the_spare_that_evicts_fewest_spot_gpus_with_the_pools_notice() -> None:
    plan = decide(_failing_cluster({"s1": 8, "s2": 3, "s3": 5}), NOW)
    assert states(plan)["bad"] is NodeState.DRAINING
    assert plan.of(RecordFault)[0].signal == "xid:79"
    evicted = {a.name: a for a in plan.of(EvictPod)}
    assert evicted["j-1-0"].reason is Reason.NODE_DRAINING
    spot_evictions = [a for a in evicted.values() if a.reason is Reason.SPOT_PREEMPTED]
    assert sorted(a.name for a in spot_evictions) == ["s2-s0", "s2-s1", "s2-s2"]
    assert {a.grace_seconds for a in spot_evictions} == {45}
    (replacement,) = created(plan)
    assert (replacement.nominated_node, replacement.rank, replacement.replaces_node) == (
        "s2",
        1,
        "bad",
    )
    assert replacement.fault_at == NOW - 2
    assert worker_binds(plan) == []  # the GPUs are not free yet
    assert states(plan)["s2"] is NodeState.ACTIVE  # claimed from the buffer
    assert job_status(plan).phase is JobPhase.HEALING


def test_swap_binds_at_once_on_a_free_spare_and_records_the_heal() -> None:
    plan = decide(_failing_cluster({"s1": 0}), NOW)
    (bind,) = worker_binds(plan)
    assert bind.node == "s1"
    status = job_status(plan)
    assert status.swaps == 1 and status.phase is JobPhase.RUNNING
    assert status.last_heal.failed_node == "bad" and status.last_heal.seconds == 2


def test_nominated_replacement_binds_once_its_gpus_are_free() -> None:
    pending = worker(
        "j-1-1", None, rank=1, nominated_node="s", replaces_node="bad", fault_at=NOW - 40
    )
    leaving = spot("s-s0", "s", gpus=8, deleting=True)
    nodes = [node("ok"), node("s"), node("bad", NodeState.HEALING)]
    base = view(
        nodes,
        [worker("j-0-0", "ok"), pending, leaving],
        [job(replicas=2, status=RUNNING)],
        [pool(0, [workload()])],
    )
    assert decide(base, NOW).of(BindPod) == []
    gone = view(nodes, [worker("j-0-0", "ok"), pending], base.jobs, base.pools)
    plan = decide(gone, NOW)
    assert [(a.name, a.node) for a in plan.of(BindPod)] == [("j-1-1", "s")]
    assert job_status(plan).last_heal.seconds == 40


def test_a_swap_bound_but_never_written_to_the_status_is_counted_once() -> None:
    # The operator bound the replacement (the Binding stamped healed-at on it) and stopped
    # before it wrote the job's status, which still says Running with no swap.
    replacement = worker(
        "j-1-1", "s", rank=1, replaces_node="bad", fault_at=NOW - 40, healed_at=NOW - 38
    )
    nodes = [node("ok"), node("s"), node("bad", NodeState.HEALING)]
    before = TrainingJobStatus(phase=JobPhase.RUNNING, replicas=2, ready_replicas=2)
    stale = view(nodes, [worker("j-0-0", "ok"), replacement], [job(status=before)], [pool(0, [])])
    plan = decide(stale, NOW)
    status = job_status(plan)
    assert status.swaps == 1
    heal = status.last_heal
    assert (heal.failed_node, heal.spare, heal.seconds) == ("bad", "s", 2)
    assert Reason.WORKER_SWAPPED in {e.reason for e in plan.of(EmitEvent)}
    # Once the status says so, the swap is not counted again.
    recorded = dataclasses.replace(stale, jobs=(job(status=status),))
    assert decide(recorded, NOW + 1).of(PatchJobStatus) == []


# --- elastic -------------------------------------------------------------------------------


def _lost_one(replicas: int, min_replicas: int, extra_nodes=()):
    nodes = [node(f"n{i}") for i in range(replicas - 1)] + [node("dead", NodeState.DRAINING)]
    pods = [worker(f"j-{i}-0", f"n{i}", rank=i) for i in range(replicas - 1)]
    pods.append(worker(f"j-{replicas - 1}-0", "dead", rank=replicas - 1))
    return view(
        nodes + list(extra_nodes),
        pods,
        [job(replicas=replicas, min_replicas=min_replicas, status=RUNNING)],
        [pool(0)],
    )


def test_no_spare_shrinks_the_job_but_not_below_min() -> None:
    status = job_status(decide(_lost_one(4, 3), NOW))
    assert status.phase is JobPhase.DEGRADED and status.replicas == 3


def test_below_min_the_job_waits() -> None:
    status = job_status(decide(_lost_one(4, 4), NOW))
    assert status.phase is JobPhase.WAITING


def test_grows_back_when_capacity_returns() -> None:
    shrunk = TrainingJobStatus(phase=JobPhase.DEGRADED, replicas=3)
    nodes = [node(f"n{i}") for i in range(4)]
    pods = [worker(f"j-{i}-0", f"n{i}", rank=i) for i in range(3)]
    plan = decide(
        view(nodes, pods, [job(replicas=4, min_replicas=3, status=shrunk)], [pool(0)]), NOW
    )
    assert [(a.rank, a.nominated_node) for a in created(plan)] == [(3, "n3")]
    assert job_status(plan).phase is JobPhase.RUNNING


def test_scale_down_removes_the_highest_ranks() -> None:
    nodes = [node(f"n{i}") for i in range(3)]
    pods = [worker(f"j-{i}-0", f"n{i}", rank=i) for i in range(3)]
    plan = decide(
        view(nodes, pods, [job(replicas=1, min_replicas=1, status=RUNNING)], [pool(0)]), NOW
    )
    assert sorted(a.name for a in plan.of(DeletePod)) == ["j-1-0", "j-2-0"]


def test_failed_worker_counts_a_restart_and_backs_off() -> None:
    pods = [worker("j-0-0", "a", rank=0), worker("j-1-0", "b", rank=1, phase=PodPhase.FAILED)]
    plan = decide(
        view([node("a"), node("b")], pods, [job(replicas=2, status=RUNNING)], [pool(0)]), NOW
    )
    status = job_status(plan)
    assert status.restarts == 1 and status.backoff_until == NOW + 10
    assert plan.of(CreatePod) == []  # waits for the backoff
    assert plan.wake_at == NOW + 10


def test_too_many_restarts_fail_the_job() -> None:
    tired = TrainingJobStatus(phase=JobPhase.RUNNING, restarts=10)
    pods = [worker("j-0-0", "a", phase=PodPhase.FAILED)]
    plan = decide(view([node("a")], pods, [job(replicas=1, status=tired)], [pool(0)]), NOW)
    assert job_status(plan).phase is JobPhase.FAILED


# --- spot ----------------------------------------------------------------------------------


def test_spot_fills_spares_first_then_by_weight() -> None:
    p = pool(1, [workload("big", shards=100, weight=3), workload("small", shards=100, weight=1)])
    busy = worker("w", "a", gpus=4)
    plan = decide(
        view(
            [node("a"), node("s", NodeState.SPARE)],
            [busy],
            [job(replicas=1, gpus=4, status=RUNNING)],
            [p],
        ),
        NOW,
    )
    pods = created(plan, PodKind.SPOT)
    by_node = {n: [a.workload for a in pods if a.nominated_node == n] for n in ("s", "a")}
    assert len(by_node["s"]) == 8 and len(by_node["a"]) == 4  # spares first, then idle GPUs
    assert by_node["s"].count("big") == 6  # 3:1 by weight
    assert sorted(a.shard for a in pods if a.workload == "big")[:3] == [0, 1, 2]


def test_idle_gpus_fill_in_chunks_and_the_next_chunk_follows_at_once() -> None:
    p = pool(0, [workload(shards=1000)])
    nodes = [node(f"n{i}") for i in range(20)]  # 160 idle GPUs, 1-GPU shards
    config = PolicyConfig(max_spot_pods_per_pass=100)
    plan = decide(view(nodes, [], [], [p]), NOW, config)
    first = created(plan, PodKind.SPOT)
    assert len(first) == 100
    assert plan.wake_at is not None and plan.wake_at - NOW < 0.1  # at once, not on resync
    placed = [spot(a.name, a.nominated_node, shard=a.shard) for a in first]
    plan = decide(view(nodes, placed, [], [p]), NOW, config)
    rest = created(plan, PodKind.SPOT)
    assert len(rest) == 60 and not {a.shard for a in rest} & {a.shard for a in first}
    unlimited = decide(view(nodes, [], [], [p]), NOW, PolicyConfig(max_spot_pods_per_pass=None))
    assert len(created(unlimited, PodKind.SPOT)) == 160


def test_a_fleet_adopted_at_once_is_one_event_on_its_pool_a_few_nodes_their_own() -> None:
    def adoption_events(count: int) -> list[EmitEvent]:
        nodes = [node(f"n{i:02d}", state=None) for i in range(count)]
        plan = decide(view(nodes, [], [], [pool(0)]), NOW)
        return [a for a in plan.of(EmitEvent) if a.reason is Reason.NODE_ADOPTED]

    [bulk] = adoption_events(20)
    assert (bulk.kind, bulk.name) == ("SpotPool", "p")
    assert bulk.message == "20 nodes: joined pool p (n00, n01, n02, n03, n04 and 15 more)"
    few = adoption_events(3)
    assert [(e.kind, e.name) for e in few] == [("Node", "n00"), ("Node", "n01"), ("Node", "n02")]


def test_a_finished_shard_is_recorded_before_its_pod_goes_and_never_rerun() -> None:
    p = pool(0, [workload(shards=3)])
    done = spot("done", "a", shard=0, phase=PodPhase.SUCCEEDED)
    plan = decide(view([node("a", gpus=1)], [done], [], [p]), NOW)
    actions = list(plan)
    patch = next(i for i, a in enumerate(actions) if isinstance(a, PatchPoolStatus))
    delete = next(i for i, a in enumerate(actions) if isinstance(a, DeletePod))
    assert patch < delete
    assert 0 in actions[patch].status.done_shards("inf")
    # A finished pod holds no GPU: the next shard takes its place at once.
    assert [a.shard for a in created(plan, PodKind.SPOT)] == [1]
    recorded = pool(0, [workload(shards=3)], status=actions[patch].status)
    running = spot("next", "a", shard=1)
    again = decide(view([node("a", gpus=1), node("b", gpus=1)], [running], [], [recorded]), NOW)
    assert [a.shard for a in created(again, PodKind.SPOT)] == [2]


def test_a_preempted_shard_returns_to_the_queue_once_its_pod_is_gone() -> None:
    status = SpotPoolStatus(shards=(ShardStatus("inf", 2, ShardSet.of([0])),))
    p = pool(0, [workload(shards=2)], status=status)
    leaving = spot("x", "a", shard=1, deleting=True)
    assert (
        created(decide(view([node("a"), node("b")], [leaving], [], [p]), NOW), PodKind.SPOT) == []
    )
    plan = decide(view([node("a"), node("b")], [], [], [p]), NOW)
    assert [a.shard for a in created(plan, PodKind.SPOT)] == [1]


def test_spot_pods_leave_a_draining_node_with_notice() -> None:
    p = pool(0, [workload(shards=5)], preemption={"noticeSeconds": 20})
    plan = decide(view([node("d", NodeState.DRAINING)], [spot("x", "d", shard=0)], [], [p]), NOW)
    (evict,) = plan.of(EvictPod)
    assert (evict.name, evict.grace_seconds) == ("x", 20)


# --- node lifecycle ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("since", "becomes"),
    [
        pytest.param(NOW - 10, None, id="too-fresh"),
        pytest.param(NOW - 500, NodeState.SUSPECT, id="persisted"),
    ],
)
def test_soft_signals_must_persist_before_suspect(since: float, becomes) -> None:
    n = node("a", health=Health.SUSPECT, signals=("thermal-throttle",), since=since)
    assert states(decide(view([n], pools=[pool(0)]), NOW)).get("a") is becomes


def test_application_xid_never_marks_a_node() -> None:
    n = node("a", health=Health.HEALTHY, signals=("xid:13",), since=NOW - 999)
    assert states(decide(view([n], pools=[pool(0)]), NOW)) == {}


def test_silent_agent_is_unknown_not_drained() -> None:
    n = node("a", health=Health.UNHEALTHY, signals=("xid:79",), heartbeat=NOW - 3600)
    plan = decide(view([n], [worker("w", "a")], [job(replicas=1, status=RUNNING)], [pool(0)]), NOW)
    assert states(plan) == {} and plan.of(EvictPod) == []
    assert plan.of(PatchPoolStatus)[0].status.nodes["unknown"] == 1


# --- node death (the kubelet's Lease or Ready goes stale) -------------------------------


def _dead_view(lease_age: float, grace: int | None = None, **node_kw) -> ClusterView:
    nodes = [node("a", **node_kw), node("s", NodeState.SPARE)]
    pods = [worker("j-0-0", "a")]
    spec = {"nodeGraceSeconds": grace} if grace is not None else {}
    v = view(nodes, pods, [job(replicas=1, status=RUNNING)], [pool(1, **spec)])
    return dataclasses.replace(v, leases={"a": NOW - lease_age, "s": NOW})


def test_a_node_whose_kubelet_lease_is_stale_past_the_grace_is_drained_and_fenced() -> None:
    plan = decide(_dead_view(lease_age=CFG.node_grace_seconds + 1), NOW)
    assert states(plan)["a"] is NodeState.DRAINING
    assert plan.of(RecordFault)[0].signal == "node-unreachable"
    assert SetOutOfService("a", True) in plan.of(SetOutOfService)
    # No kubelet would end a graceful eviction: the worker is deleted with grace 0.
    assert plan.of(EvictPod) == []
    assert [(a.name, a.force) for a in plan.of(DeletePod)] == [("j-0-0", True)]
    (replacement,) = created(plan)
    assert replacement.nominated_node == "s" and replacement.replaces_node == "a"
    # The heal counts from the kubelet's last sign of life.
    assert replacement.fault_at == NOW - CFG.node_grace_seconds - 1


def test_a_pod_left_terminating_on_a_dead_node_is_force_deleted_so_the_node_can_heal() -> None:
    draining = node("a", NodeState.DRAINING)
    stuck = worker("j-0-0", "a", deleting=True)
    leases = {"a": NOW - 3600, "other": NOW}  # another kubelet heart-beats: the view is fresh
    v = dataclasses.replace(view([draining], [stuck], pools=[pool(0)]), leases=leases)
    assert [(a.name, a.force) for a in decide(v, NOW).of(DeletePod)] == [("j-0-0", True)]


def test_when_every_lease_looks_old_the_view_is_behind_and_no_node_is_dead() -> None:
    v = _dead_view(lease_age=CFG.node_grace_seconds + 1)
    behind = dataclasses.replace(v, leases=dict.fromkeys(v.leases, NOW - 60))
    assert states(decide(behind, NOW)) == {} and decide(behind, NOW).of(DeletePod) == []


def test_within_the_grace_nothing_happens_but_a_pass_is_due_when_it_ends() -> None:
    plan = decide(_dead_view(lease_age=5), NOW)
    assert states(plan) == {} and plan.of(DeletePod) == []
    assert plan.wake_at == NOW - 5 + CFG.node_grace_seconds


def test_a_pool_sets_its_own_grace() -> None:
    assert states(decide(_dead_view(lease_age=5, grace=3), NOW))["a"] is NodeState.DRAINING


def test_a_node_not_ready_past_the_grace_is_dead_even_with_a_fresh_lease() -> None:
    v = _dead_view(lease_age=0, ready=False, ready_since=NOW - 60)
    assert states(decide(v, NOW))["a"] is NodeState.DRAINING


def test_a_dead_agent_on_a_live_kubelet_is_unknown_not_dead() -> None:
    plan = decide(_dead_view(lease_age=1, heartbeat=NOW - 3600), NOW)
    assert states(plan) == {} and plan.of(DeletePod) == []


def test_a_dead_node_returns_to_the_buffer_only_after_remediation_and_then_loses_its_fence() -> (
    None
):
    healing = node(
        "a",
        NodeState.HEALING,
        out_of_service=True,
        remediation=RemediationStatus(
            Remediation.DIAGNOSE, requested_at=NOW - 10, attempts=1, result=Result.SUCCEEDED
        ),
        since=NOW - 3600,
    )
    v = dataclasses.replace(view([healing], pools=[pool(0)]), leases={"a": NOW})
    plan = decide(v, NOW)
    assert states(plan)["a"] in (NodeState.SPARE, NodeState.ACTIVE)  # healed, then placed
    assert plan.of(SetOutOfService) == [SetOutOfService("a", False)]
    still_dead = dataclasses.replace(v, leases={"a": NOW - 3600, "other": NOW})
    plan = decide(still_dead, NOW)
    assert states(plan) == {} and plan.of(SetOutOfService) == []


def test_drained_node_goes_healing_with_the_remediation_its_fault_calls_for() -> None:
    n = node("a", NodeState.DRAINING, health=Health.UNHEALTHY, signals=("xid:48",))
    plan = decide(view([n], pools=[pool(0)]), NOW)
    assert states(plan) == {"a": NodeState.HEALING}
    assert plan.of(RequestRemediation)[0].kind is Remediation.GPU_RESET


def test_draining_waits_while_pods_still_hold_the_node() -> None:
    n = node("a", NodeState.DRAINING)
    plan = decide(view([n], [worker("w", "a", deleting=True)], pools=[pool(0)]), NOW)
    assert states(plan) == {}


@pytest.mark.parametrize(
    ("remediation", "expected_state", "expected_request"),
    [
        pytest.param(
            RemediationStatus(Remediation.REBOOT, NOW - 60, 1, Result.SUCCEEDED),
            None,
            Remediation.DIAGNOSE,
            id="repaired-then-diagnose",
        ),
        pytest.param(
            RemediationStatus(Remediation.DIAGNOSE, NOW - 60, 1, Result.SUCCEEDED),
            NodeState.SPARE,
            None,
            id="diagnosed-back-to-buffer",
        ),
        pytest.param(
            RemediationStatus(Remediation.GPU_RESET, NOW - 60, 1, Result.FAILED),
            None,
            Remediation.REBOOT,
            id="failed-escalates",
        ),
        pytest.param(
            RemediationStatus(Remediation.REBOOT, NOW - 60, 3, Result.FAILED),
            NodeState.RETIRED,
            None,
            id="cap-retires",
        ),
        pytest.param(
            RemediationStatus(Remediation.REBOOT, NOW - 7200, 1, None),
            None,
            Remediation.REBOOT,
            id="timeout-counts-as-failed",
        ),
    ],
)
def test_healing(remediation, expected_state, expected_request) -> None:
    n = node("a", NodeState.HEALING, since=NOW - 600, remediation=remediation)
    plan = decide(view([n], pools=[pool(1)]), NOW)
    assert states(plan).get("a") is expected_state
    requests = plan.of(RequestRemediation)
    assert (requests[0].kind if requests else None) is expected_request


def test_lemon_is_retired_instead_of_healed() -> None:
    n = node("a", NodeState.DRAINING, faults=(NOW - 5000, NOW - 3000, NOW - 10))
    plan = decide(view([n], pools=[pool(0)]), NOW)
    assert states(plan) == {"a": NodeState.RETIRED}
    assert any(getattr(a, "reason", None) is Reason.LEMON for a in plan)


def test_circuit_breaker_holds_draining_in_a_mass_failure() -> None:
    nodes = [
        node(f"n{i}", health=Health.UNHEALTHY, signals=("xid:79",), since=NOW) for i in range(4)
    ]
    nodes += [node(f"h{i}") for i in range(6)]
    plan = decide(view(nodes, pools=[pool(0, circuitBreaker={"maxFailedPercent": 20})]), NOW)
    drained = [n for n, s in states(plan).items() if s is NodeState.DRAINING]
    assert drained == ["n0", "n1"]  # 20% of 10 nodes
    status = plan.of(PatchPoolStatus)[0].status
    breaker = next(c for c in status.conditions if c.type == "CircuitBreakerOpen")
    assert breaker.status is True


def test_circuit_breaker_counts_recent_failures_of_other_nodes_only() -> None:
    """20% of 10 nodes: two may fail within the hour. Another node failed 10 minutes ago
    (one a day ago does not count), which leaves one: n0. n0 failed a minute ago too; a
    node failing again counts once, else no node would drain."""
    window = 3600
    failing = [
        node(f"n{i}", health=Health.UNHEALTHY, signals=("xid:79",), since=NOW) for i in range(3)
    ]
    failing[0] = dataclasses.replace(failing[0], faults=(NOW - 60,))
    nodes = [
        *failing,
        node("old", faults=(NOW - 86_400,)),
        node("recent", faults=(NOW - 600,)),
        *(node(f"h{i}") for i in range(5)),
    ]
    breaker = {"maxFailedPercent": 20, "windowSeconds": window}
    plan = decide(view(nodes, pools=[pool(0, circuitBreaker=breaker)]), NOW)
    drained = sorted(n for n, s in states(plan).items() if s is NodeState.DRAINING)
    assert drained == ["n0"]


def test_circuit_breaker_always_lets_one_node_of_a_small_pool_drain() -> None:
    nodes = [
        node("n0", health=Health.UNHEALTHY, signals=("xid:79",), since=NOW),
        node("n1"),
        node("n2"),
    ]
    plan = decide(view(nodes, pools=[pool(0)]), NOW)
    assert states(plan) == {"n0": NodeState.DRAINING}
