"""Wall time of `valet simulate --gpus 16384 --days 54` (defaults otherwise), on one core.

Run: make bench   (or: .venv/bin/python benchmarks/simulate_wall_time.py [--repeat N])
Prints each policy's figures and the wall time; the target is under 60 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from valet.sim.fleet import FleetConfig, simulate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=16384)
    parser.add_argument("--days", type=float, default=54.0)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    cfg = FleetConfig(gpus=args.gpus, days=args.days)
    walls = []
    for _ in range(args.repeat):
        started = time.perf_counter()
        results = simulate(cfg)
        walls.append(time.perf_counter() - started)
    for r in results:
        print(
            f"{r.policy:12} ETTR {r.ettr:.4f}  utilisation {r.utilisation:.4f}  "
            f"spot {r.spot_gpu_hours:,.0f} GPU-h  lost {r.spot_lost_gpu_hours:,.0f} GPU-h  "
            f"swaps {r.swaps}  TTR p50/p99 {r.ttr_p50_minutes:.1f}/{r.ttr_p99_minutes:.1f} min  "
            f"passes {r.passes}  {r.wall_seconds:.1f} s"
        )
    print(
        f"wall time: median {statistics.median(walls):.1f} s over {len(walls)} run(s); "
        f"target < 60 s"
    )


if __name__ == "__main__":
    main()
