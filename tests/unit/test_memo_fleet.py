"""A PassMemo kept over a simulated fleet decides every pass exactly as a fresh pass.

The hypothesis test in ``test_memo`` moves nodes under fixed pods; here the simulator
moves everything at once (failures, drains, swaps, jobs waiting for capacity, spot pods
coming and going, nodes back from repair) and each of its passes is decided twice: with
the memo the simulator keeps, and from scratch. Failures are frequent so that jobs wait
short of workers and the memo's quiet jobs (``jobs._still_quiet``) are exercised.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.builders import NOW, RUNNING, job, node, pool, view, worker
from valet.model.enums import Health, NodeState
from valet.model.plan import BindPod, CreatePod, PatchJobStatus, Plan
from valet.model.view import ClusterView, Job, Node
from valet.policy import PassMemo, PolicyConfig, decide
from valet.sim.failures import draw_failures
from valet.sim.fleet import FleetConfig, FleetRun, standard_policies

CONFIG = PolicyConfig()
CFG = FleetConfig(gpus=512, days=20, job_nodes=8, failure_scale=40, buffer_percent=5)


class CheckedRun(FleetRun):
    """Each pass also decided without the memo; the simulator goes on with the memo's."""

    quiet_skips = 0

    def _pass(self, now: float) -> Plan:
        view = self.cluster.view()
        plan = decide(view, now, self.policy, self.memo)
        assert plan == decide(view, now, self.policy), f"pass {self.passes} at {now:.0f}s"
        self.quiet_skips += sum(
            1 for q in self.memo.quiet.values() if q.workers is view.workers_by_job.get(q.job.key)
        )
        self.cluster.apply(plan, now)
        self.passes += 1
        self._meter(now)
        return plan


@pytest.mark.parametrize("setup", standard_policies(CFG.buffer_percent), ids=lambda s: s.name)
def test_a_memo_kept_over_a_simulated_fleet_decides_as_fresh_passes(setup) -> None:
    failures = draw_failures(CFG.nodes, CFG.seconds, seed=CFG.seed, scale=CFG.failure_scale)
    run = CheckedRun(CFG, setup, failures)
    result = run.run()
    assert result.passes > 200
    assert run.quiet_skips > 0  # jobs waited short of workers, and were not decided again


def _decided(memo: PassMemo, names: tuple[str, ...], *jobs: Job) -> Plan:
    """The plan for free nodes ``names`` and ``jobs``, with ``memo`` as a fresh pass gives it."""
    nodes = {name: node(name) for name in names}
    view = ClusterView(nodes=nodes, pods=(), jobs=jobs, pools=(pool(buffer=0),))
    planned = decide(view, NOW, CONFIG, memo)
    assert planned == decide(view, NOW, CONFIG)
    return planned


def _reported(plan: Plan, waiting: Job) -> Job:
    """The job as its status write in ``plan`` leaves it."""
    status = next(a.status for a in plan.of(PatchJobStatus) if a.name == waiting.name)
    return dataclasses.replace(waiting, status=status)


def test_a_waiting_job_sees_room_a_lost_write_left() -> None:
    """Job a (first by priority) takes the only free node in a pass whose writes never land;
    job b, waiting, found no room in that pass. When a is deleted, nothing in the cluster
    changed, yet b must now take the node: a node the pass wrote about counts as room b
    may yet be offered, so b is decided again."""
    first, memo = job("a", replicas=1, priority=10), PassMemo()
    waiting = _reported(_decided(memo, ("n0",), first, job("b", replicas=1)), job("b", replicas=1))
    _decided(memo, ("n0",), first, waiting)  # a's pod did not land: a takes n0 again
    assert "ns/b" not in memo.quiet  # n0 may still be free: b is decided again
    created = _decided(memo, ("n0",), waiting).of(CreatePod)
    assert [(a.owner, a.nominated_node) for a in created] == [("ns/b", "n0")]


def test_a_waiting_gang_counts_the_room_a_lost_write_left() -> None:
    """Gang b needs two nodes. Job a (first by priority) takes the only free one, n0, in
    passes whose writes never land, and b waits. When a is deleted and n1 joins, only n1
    changed, yet b must now take both: it counted n0 as room it might yet be offered."""
    first, memo = job("a", replicas=1, priority=10), PassMemo()
    gang = _reported(_decided(memo, ("n0",), first, job("b", replicas=2)), job("b", replicas=2))
    _decided(memo, ("n0",), first, gang)
    assert memo.quiet["ns/b"].room_wanted == 1  # two wanted, less n0's room
    created = _decided(memo, ("n0", "n1"), gang).of(CreatePod)
    assert sorted(a.nominated_node or "" for a in created) == ["n0", "n1"]


def test_a_swap_goes_to_the_spare_labelled_in_the_jobs_zone_now() -> None:
    """Job a's swap makes the memo index the nodes by zone. Then spare s2 is relabelled
    into job b's zone, and b's worker fails: b's replacement goes to s2, as a fresh pass
    decides, not to s1 (first by name) as the zones once read would have it."""
    zone = "topology.kubernetes.io/zone"
    memo = PassMemo()

    def at(name: str, where: str, failing: bool = False, spare: bool = False) -> Node:
        health = Health.UNHEALTHY if failing else Health.HEALTHY
        state = NodeState.SPARE if spare else NodeState.ACTIVE
        labels = {"pool": "a", zone: where}
        return node(name, state, health=health, signals=("xid:79",) * failing, labels=labels)

    def swap(nodes: list[Node]) -> list[tuple[str, str]]:
        pods = [worker(f"{j}-{r}-0", f"{j}{r}", f"ns/{j}", rank=r) for j in "ab" for r in (0, 1)]
        jobs = [job(j, replicas=2, status=RUNNING) for j in "ab"]
        cluster = view(nodes, pods, jobs, [pool(buffer=2)])
        planned = decide(cluster, NOW, CONFIG, memo)
        assert planned == decide(cluster, NOW, CONFIG)
        return [(a.name.split("-")[0], a.node) for a in planned.of(BindPod)]

    a_zone, b_zone = [at("a0", "z2"), at("a1", "z2")], [at("b0", "z1"), at("b1", "z1")]
    spares = [at("s1", "z2", spare=True), at("s2", "z3", spare=True)]
    assert swap([a_zone[0], at("a1", "z2", failing=True), *b_zone, *spares]) == [("a", "s1")]
    relabelled = [spares[0], at("s2", "z1", spare=True)]
    assert swap([*a_zone, b_zone[0], at("b1", "z1", failing=True), *relabelled]) == [("b", "s2")]
