"""Wall time of `valet simulate --gpus 16384 --days 54` (defaults otherwise), on one core.

Run: make bench   (or: .venv/bin/python benchmarks/simulate_wall_time.py [--repeat N])
Prints each policy's figures and wall time (median over the runs), the total's wall and CPU
time, and the machine's load average before and after: the process is pinned to one core,
but on a shared machine other processes on that core still stretch the wall time.
Targets (issue 13): the three policies within 10 s at 16,384 GPUs, 60 s at 100,000.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from valet.sim.fleet import FleetConfig, PolicyResult, simulate

TARGETS = {16384: 10.0, 100_000: 60.0}


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=16384)
    parser.add_argument("--days", type=float, default=54.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    cfg = FleetConfig(gpus=args.gpus, days=args.days)
    print(f"load average before: {_load()}")
    walls: dict[str, list[float]] = {}
    totals: list[float] = []
    cpus: list[float] = []
    results: list[PolicyResult] = []
    for _ in range(args.repeat):
        started, cpu = time.perf_counter(), time.process_time()
        results = simulate(cfg)
        totals.append(time.perf_counter() - started)
        cpus.append(time.process_time() - cpu)
        for r in results:
            walls.setdefault(r.policy, []).append(r.wall_seconds)
    for r in results:
        print(
            f"{r.policy:12} ETTR {r.ettr:.4f}  utilisation {r.utilisation:.4f}  "
            f"spot {r.spot_gpu_hours:,.0f} GPU-h  lost {r.spot_lost_gpu_hours:,.0f} GPU-h  "
            f"swaps {r.swaps}  TTR p50/p99 {r.ttr_p50_minutes:.1f}/{r.ttr_p99_minutes:.1f} min  "
            f"passes {r.passes}  wall {statistics.median(walls[r.policy]):.1f} s"
        )
    target = TARGETS.get(args.gpus)
    print(
        f"wall time: median {statistics.median(totals):.1f} s over {len(totals)} run(s) "
        f"({', '.join(f'{t:.1f}' for t in totals)}), CPU median {statistics.median(cpus):.1f} s"
        + (f"; target <= {target:g} s" if target is not None else "")
    )
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
