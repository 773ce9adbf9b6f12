"""Where a simulator run spends its time: wall time per stage of a pass, summed over a run.

Run: .venv/bin/python benchmarks/simulate_stages.py [--gpus N] [--days D] [--policy NAME]
Wraps the stages of ``decide`` (lifecycle, spot, buffer, jobs, pool status) and of the
simulated cluster (view, pod index snapshot, applying plans, advancing time) in timers and
prints each stage's total, its count and its mean, largest first. The timers cost a little
on their own, so the total is somewhat above ``make bench``'s. Stages nest: ``decide``
holds the policy stages, and ``SimCluster.view`` holds ``PodIndex.snapshot``.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import time
from collections.abc import Callable
from typing import Any

from valet.model import podindex
from valet.policy import buffer, jobs, lifecycle, memo, spot
from valet.sim import cluster, fleet

decide_module = importlib.import_module("valet.policy.decide")  # the package exports the function

totals: collections.defaultdict[str, float] = collections.defaultdict(float)
counts: collections.Counter[str] = collections.Counter()


def _timed(owner: Any, name: str, label: str) -> None:
    inner: Callable[..., Any] = getattr(owner, name)

    @functools.wraps(inner)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - started
            counts[label] += 1

    setattr(owner, name, timed)


STAGES = [
    (fleet, "decide", "decide"),
    (lifecycle, "new_pass", "lifecycle.new_pass"),
    (memo.PassMemo, "update", "PassMemo.update"),
    (lifecycle, "advance_nodes", "lifecycle.advance_nodes"),
    (spot, "settle_spot", "spot.settle_spot"),
    (buffer, "rebalance", "buffer.rebalance"),
    (jobs, "reconcile_jobs", "jobs.reconcile_jobs"),
    (spot, "pack_spot", "spot.pack_spot"),
    (decide_module, "_report_pool", "pool status"),
    (cluster.SimCluster, "view", "SimCluster.view"),
    (podindex.PodIndex, "snapshot", "PodIndex.snapshot"),
    (cluster.SimCluster, "apply", "SimCluster.apply"),
    (cluster.SimCluster, "advance", "SimCluster.advance"),
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=54.0)
    parser.add_argument("--policy", help="one policy (no-buffer, idle-buffer, valet); default all")
    args = parser.parse_args()
    for owner, name, label in STAGES:
        _timed(owner, name, label)
    cfg = fleet.FleetConfig(gpus=args.gpus, days=args.days)
    setups = tuple(
        s
        for s in fleet.standard_policies(cfg.buffer_percent, cfg.hot)
        if args.policy is None or s.name == args.policy
    )
    started = time.perf_counter()
    results = fleet.simulate(cfg, setups)
    wall = time.perf_counter() - started
    runs = ", ".join(f"{r.policy} {r.wall_seconds:.1f} s ({r.passes} passes)" for r in results)
    print(f"{args.gpus:,} GPUs, {args.days:g} days: {wall:.1f} s; {runs}")
    for label, total in sorted(totals.items(), key=lambda item: -item[1]):
        mean_ms = 1000 * total / counts[label]
        print(f"  {label:26} {total:8.2f} s  n={counts[label]:<7} mean {mean_ms:.3f} ms")


if __name__ == "__main__":
    main()
