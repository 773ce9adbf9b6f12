"""The simulator's time in the working tree against another revision, run side by side.

Run: .venv/bin/python benchmarks/simulate_side_by_side.py REV [--gpus N] [--days D] [--repeat N]

The 2-core dev machines' speed drifts by a quarter within an hour, so two timings taken
minutes apart cannot show a change of 10%. This runs the three policies of the working
tree and of REV (checked out in a temporary git worktree) at the same moment, one per
core, swapping the cores on each repeat, and prints the CPU time of each and their ratio.
Each side runs in a process of its own with its tree's ``valet`` first on the path. REV
must have ``valet.sim.fleet.simulate``; the results are not compared (``--json`` is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# One side: the three policies once, on the core it was pinned to; prints its CPU time.
_SIDE = """
import sys, time
from valet.sim.fleet import FleetConfig, simulate
cfg = FleetConfig(gpus=int(sys.argv[1]), days=float(sys.argv[2]))
started = time.process_time()
simulate(cfg)
print(time.process_time() - started)
"""


def _start(tree: Path, core: int, gpus: int, days: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    return subprocess.Popen(
        [sys.executable, "-c", _SIDE, str(gpus), str(days)],
        cwd=tree,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {core}),
    )


def _seconds(side: subprocess.Popen[str]) -> float:
    out, _ = side.communicate()
    if side.returncode != 0:
        raise SystemExit(f"a side failed (exit {side.returncode})")
    return float(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("rev", help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--gpus", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=54.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))[:2]
    if len(cores) < 2:
        raise SystemExit("needs two cores: one for each side")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="valet-side-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), args.rev],
            check=True,
        )
        try:
            ours, theirs = [], []
            for i in range(args.repeat):
                here, there = (cores[0], cores[1]) if i % 2 == 0 else (cores[1], cores[0])
                sides = (
                    _start(ROOT, here, args.gpus, args.days),
                    _start(other, there, args.gpus, args.days),
                )
                mine, old = (_seconds(side) for side in sides)
                ours.append(mine)
                theirs.append(old)
                print(
                    f"run {i + 1}: working tree {mine:.1f} s (core {here}), "
                    f"{args.rev} {old:.1f} s (core {there}): ratio {mine / old:.2f}"
                )
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other)], check=False
            )
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    print(
        f"median: working tree {statistics.median(ours):.1f} s, {args.rev} "
        f"{statistics.median(theirs):.1f} s, ratio {statistics.median(ratios):.2f}"
        f" ({args.gpus:,} GPUs, {args.days:g} days, CPU time)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
