"""The fleet simulator and `valet simulate`, on a small fleet: same decide(), real numbers."""

from __future__ import annotations

import gc
import json
import math

import pytest

from valet import cli
from valet.model.enums import PodKind, PodPhase
from valet.model.plan import BindPod, CreatePod, Plan, SetCordon
from valet.model.specs import SpotPoolSpec, TrainingJobSpec
from valet.sim.cluster import SimCluster
from valet.sim.failures import LLAMA3_MIX, draw_failures, expected_failures
from valet.sim.fleet import FleetConfig, simulate

SMALL = FleetConfig(gpus=512, days=6, job_nodes=16, failure_scale=20, seed=3)


@pytest.fixture(scope="module")
def results():
    return {r.policy: r for r in simulate(SMALL)}


def test_failure_model_follows_the_published_rate_and_mix() -> None:
    nodes, seconds = 2048, 54 * 86400
    failures = draw_failures(nodes, seconds, seed=7)
    assert abs(len(failures) - expected_failures(nodes, seconds)) < 4 * math.sqrt(419)
    share = sum(f.kind.name == "faulty GPU" for f in failures) / len(failures)
    assert abs(share - 148 / sum(c.count for c in LLAMA3_MIX)) < 0.06
    assert draw_failures(nodes, seconds, seed=7) == failures  # reproducible


def test_buffer_beats_no_buffer_and_valet_fills_the_buffer(results) -> None:
    none, idle, valet = results["no-buffer"], results["idle-buffer"], results["valet"]
    assert idle.ettr > none.ettr  # swaps beat waiting for repair
    assert idle.utilisation < idle.ettr  # idle spares cost utilisation...
    assert valet.utilisation > idle.utilisation  # ...which spot packing wins back
    assert valet.spot_gpu_hours > 0 and idle.spot_gpu_hours == 0
    assert valet.swaps > 0 and none.ttr_p50_minutes > idle.ttr_p50_minutes


def test_runs_are_reproducible(results) -> None:
    again = {r.policy: r for r in simulate(SMALL)}
    for name, result in results.items():
        assert (again[name].ettr, again[name].swaps) == (result.ettr, result.swaps)


def test_cli_prints_the_comparison_and_writes_a_plot(tmp_path, capsys) -> None:
    png = tmp_path / "fleet.png"
    code = cli.main(
        [
            "simulate",
            "--gpus",
            "256",
            "--days",
            "2",
            "--job-nodes",
            "8",
            "--quiet",
            "--plot",
            str(png),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    for policy in ("no-buffer", "idle-buffer", "valet"):
        assert policy in out
    assert "ETTR" in out and png.stat().st_size > 10_000


def test_cli_buffer_sizing_reports_the_smallest_buffer(capsys) -> None:
    code = cli.main(
        [
            "simulate",
            "--gpus",
            "256",
            "--days",
            "3",
            "--job-nodes",
            "8",
            "--failure-scale",
            "20",
            "--size-buffer",
            "0.9",
            "--json",
            "--quiet",
        ]
    )
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    best = report["smallest_buffer_percent"]
    rows = {r["policy"]: r["ettr"] for r in report["results"]}
    assert best is not None and rows[f"valet@{best:g}%"] >= 0.9
    smaller = [p for p in rows if float(p.split("@")[1].rstrip("%")) < best]
    assert all(rows[p] < 0.9 for p in smaller)


def test_hot_spares_cost_spot_hours_and_nothing_else() -> None:
    cfg = FleetConfig(gpus=512, days=6, job_nodes=16, failure_scale=20, seed=3, hot=2)
    by_policy = {r.policy: r for r in simulate(cfg)}
    valet, hot = by_policy["valet"], by_policy["valet+hot"]
    assert hot.spot_gpu_hours < valet.spot_gpu_hours  # two spares never packed
    assert hot.utilisation < valet.utilisation
    assert hot.ettr >= valet.ettr - 0.005  # the jobs lose nothing by it
    assert hot.swaps > 0


def test_views_share_every_object_that_did_not_change() -> None:
    """What policy may rely on to reuse work: unchanged objects are the same objects, and a
    view handed out never changes afterwards."""
    cluster = SimCluster(startup_seconds=5)
    for i in range(3):
        cluster.add_node(f"n{i}", 8, {"pool": "a"})
    cluster.add_job(
        "ns", "j", TrainingJobSpec.parse({"replicas": 1, "gpusPerReplica": 8, "template": {}})
    )
    cluster.add_pool("a", SpotPoolSpec.parse({"nodeSelector": {"pool": "a"}}))
    cluster.apply(
        Plan((CreatePod("ns", "w", PodKind.WORKER, "ns/j", 8), BindPod("ns", "w", "n0"))), 0.0
    )
    first = cluster.view()
    assert cluster.view() is first  # nothing changed: the same view
    cluster.touch("n1")  # touched, yet unchanged
    assert cluster.view() is first

    cluster.apply(Plan((SetCordon("n1", True),)), 1.0)
    second = cluster.view()
    assert second.nodes["n1"].unschedulable and not first.nodes["n1"].unschedulable
    assert second.nodes["n0"] is first.nodes["n0"] and second.nodes["n2"] is first.nodes["n2"]
    assert second.pods is first.pods and second.index is first.index
    assert second.jobs is first.jobs and second.pools is first.pools

    cluster.advance(5.0)  # the worker starts
    third = cluster.view()
    assert third.nodes is second.nodes
    [started], [pending] = third.pods, first.pods
    assert started.phase is PodPhase.RUNNING and pending.phase is PodPhase.PENDING
    assert third.workers_by_job["ns/j"] == (started,)


def test_a_run_leaves_the_cycle_collector_as_it_found_it() -> None:
    """simulate() collects less often while it runs (it allocates millions of short-lived
    objects); a program that calls it keeps its own settings."""
    before = gc.get_threshold()
    gc.set_threshold(1000, 15, 15)
    try:
        simulate(FleetConfig(gpus=64, days=0.5, job_nodes=2))
        assert gc.get_threshold() == (1000, 15, 15)
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize("same_plan", [True, False], ids=["create+bind", "bind later"])
def test_the_simulated_kubelet_rejects_a_pod_its_node_has_no_gpus_for(same_plan) -> None:
    """A bind is admitted as a kubelet admits it: the pod runs after its start-up if the
    node's bound pods leave it room, else it fails (OutOfnvidia.com/gpu), whether it is
    bound in the plan that creates it or later."""
    cluster = SimCluster(startup_seconds=5)
    cluster.add_node("n0", 8)
    cluster.apply(
        Plan((CreatePod("ns", "a", PodKind.WORKER, "ns/j", 6), BindPod("ns", "a", "n0"))), 0.0
    )
    for name in ("b", "c"):  # b (2 GPUs) fits beside a; c (2 more) does not
        create, bind = CreatePod("ns", name, PodKind.WORKER, "ns/j", 2), BindPod("ns", name, "n0")
        cluster.apply(Plan((create, bind) if same_plan else (create,)), 1.0)
        if not same_plan:
            cluster.apply(Plan((bind,)), 1.0)
    cluster.advance(6.0)
    phases = {p.name: (p.node, p.phase) for p in cluster.view().pods}
    assert phases == {
        "a": ("n0", PodPhase.RUNNING),
        "b": ("n0", PodPhase.RUNNING),
        "c": ("n0", PodPhase.FAILED),
    }
