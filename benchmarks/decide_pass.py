"""Time of one policy pass (``decide``) over a steady fleet, by stage: from scratch, with
the incrementally kept pod index (``PodIndex``, as the operator's cache keeps it), and
with a ``PassMemo`` kept from the pass before (as the operator and the simulator keep it),
when nothing changed and when one node failed.

Run: .venv/bin/python benchmarks/decide_pass.py [--nodes 4096] [--repeat 15]

The fleet comes from the simulator: 8-GPU nodes, jobs of 8 workers, a pool holding 10% as
spares packed with 1-GPU spot pods, run until no pass has anything left to do. Prints the
median of --repeat passes per stage, on one core.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from valet.model.enums import Health
from valet.model.view import ClusterView, NodeHealth
from valet.policy import PassMemo, PolicyConfig, buffer, jobs, lifecycle, spot
from valet.policy.capacity import Capacity
from valet.sim.fleet import FleetConfig, FleetRun, standard_policies

decide_module = importlib.import_module("valet.policy.decide")


def steady_fleet(nodes: int) -> tuple[FleetRun, float]:
    cfg = FleetConfig(gpus=nodes * 8, days=1, job_nodes=8, buffer_percent=10, spot_gpus_per_pod=1)
    run = FleetRun(cfg, standard_policies(10)[2], [])
    now = 0.0
    for _ in range(20):
        plan = run._pass(now)
        now += 120
        run.cluster.advance(now)
        if not len(plan):
            break
    return run, now


def stages(view: ClusterView, now: float, policy: PolicyConfig, memo: PassMemo) -> dict[str, float]:
    took: dict[str, float] = {}

    def timed(name: str, f: Callable[..., Any], *args: Any) -> Any:
        started = time.perf_counter()
        result = f(*args)
        took[name] = time.perf_counter() - started
        return result

    ps = timed("nodes", lifecycle.new_pass, view, now, policy, memo)
    timed("lifecycle", lifecycle.advance_nodes, ps)
    cap = timed("capacity", Capacity, ps.view, memo.gpus)
    ledgers = timed("settle spot", spot.settle_spot, ps, cap)
    timed("buffer", buffer.rebalance, ps, cap)
    timed("jobs", jobs.reconcile_jobs, ps, cap)
    timed("pack spot", spot.pack_spot, ps, cap, ledgers)

    def report() -> None:
        for pool in view.pools:
            decide_module._report_pool(ps, pool, ledgers[pool.name])
            lifecycle.sync_marks(ps, pool)

    timed("report", report)
    took["total"] = sum(took.values())
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    run, now = steady_fleet(args.nodes)
    full = run.cluster.view()
    indexed = full  # the simulator's view is indexed by its PodIndex
    scan = tuple(full.pods)
    kept = PassMemo()
    stages(indexed, now, run.policy, kept)
    names = list(indexed.nodes)
    failing = NodeHealth(Health.UNHEALTHY, ("xid:79",), now, now)

    def one_failed(i: int) -> ClusterView:
        node = indexed.nodes[names[i % len(names)]]
        nodes = {**indexed.nodes, node.name: dataclasses.replace(node, health=failing)}
        return dataclasses.replace(indexed, nodes=nodes)

    variants: dict[str, Callable[[int], tuple[ClusterView, PassMemo]]] = {
        "full scan": lambda i: (dataclasses.replace(full, pods=scan, index=None), PassMemo()),
        "pod index": lambda i: (indexed, PassMemo()),
        "memo, steady": lambda i: (indexed, kept),
        "memo, 1 fault": lambda i: (one_failed(i), kept),
    }
    print(
        f"{args.nodes} nodes, {len(full.pods)} pods, {len(full.jobs)} jobs;"
        f" load {os.getloadavg()[0]:.1f}"
    )
    for label, make in variants.items():
        runs = [_run(make(i), now, run.policy) for i in range(args.repeat)]
        medians = {k: statistics.median(r[k] for r in runs) * 1000 for k in runs[0]}
        print(f"{label:13} " + "  ".join(f"{k} {v:.1f}" for k, v in medians.items()) + " (ms)")


def _run(made: tuple[ClusterView, PassMemo], now: float, policy: PolicyConfig) -> dict[str, float]:
    view, memo = made
    return stages(view, now, policy, memo)


if __name__ == "__main__":
    main()
