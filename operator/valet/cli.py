"""The ``valet`` command: subcommands for the simulator (and, later, operator and agent)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from valet.sim import report
from valet.sim.fleet import FleetConfig, simulate, size_buffer


def _fleet_config(args: argparse.Namespace) -> FleetConfig:
    return FleetConfig(
        gpus=args.gpus,
        days=args.days,
        seed=args.seed,
        buffer_percent=args.buffer_percent,
        job_nodes=args.job_nodes,
        failure_scale=args.failure_scale,
        notice_seconds=args.notice_seconds,
        shard_minutes=args.shard_minutes,
    )


def _simulate(args: argparse.Namespace) -> int:
    cfg = _fleet_config(args)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # keep the table whole in logs and pipes
    with Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.quiet or not console.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(name: str, fraction: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=1.0)
            bar.update(tasks[name], completed=fraction)

        if args.size_buffer is not None:
            results, best = size_buffer(cfg, args.size_buffer, progress=progress)
        else:
            results, best = simulate(cfg, progress=progress), None
    if args.json:
        print(
            json.dumps(
                {
                    "config": vars(args) | {"func": None},
                    "results": report.as_rows(results),
                    "smallest_buffer_percent": best,
                },
                indent=2,
                default=str,
            )
        )
    else:
        report.print_results(console, cfg, results)
        if args.size_buffer is not None:
            verdict = (
                f"smallest buffer meeting ETTR >= {args.size_buffer}: {best:g}% of nodes"
                if best is not None
                else f"no buffer size in the sweep meets ETTR >= {args.size_buffer}"
            )
            console.print(verdict)
    if args.plot:
        report.plot(results, Path(args.plot), f"{cfg.gpus:,} GPUs over {cfg.days:g} days")
        console.print(f"plot written to {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run the fleet simulator: policies compared over seeded failures",
        description="Discrete-event fleet simulation driving valet's own decide() over "
        "Llama 3's failure mix; compares no buffer, an idle buffer and valet.",
    )
    sim.add_argument("--gpus", type=int, default=16384, help="fleet size in GPUs (8 per node)")
    sim.add_argument("--days", type=float, default=54.0, help="simulated days")
    sim.add_argument("--seed", type=int, default=1, help="random seed (runs are reproducible)")
    sim.add_argument("--buffer-percent", type=float, default=5.0, help="spares, % of nodes")
    sim.add_argument("--job-nodes", type=int, default=256, help="nodes per training job")
    sim.add_argument(
        "--failure-scale", type=float, default=1.0, help="multiply Llama 3's failure rate"
    )
    sim.add_argument("--notice-seconds", type=int, default=30, help="spot preemption notice")
    sim.add_argument(
        "--shard-minutes", type=float, default=120.0, help="mean runtime of a batch-inference shard"
    )
    sim.add_argument(
        "--size-buffer",
        type=float,
        metavar="ETTR",
        default=None,
        help="sweep buffer sizes; report the smallest meeting this ETTR",
    )
    sim.add_argument("--plot", metavar="PNG", default=None, help="write a bar chart here")
    sim.add_argument("--json", action="store_true", help="print results as JSON")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=_simulate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "gpus", 8) < 8:
        print("valet: --gpus must be at least 8 (one node)", file=sys.stderr)
        return 2
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
