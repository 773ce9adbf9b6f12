"""Terminal tables and PNG plots of fleet simulation results."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from rich.console import Console
from rich.table import Table

from valet.sim.fleet import FleetConfig, PolicyResult


def _minutes(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"


def comparison_table(cfg: FleetConfig, results: list[PolicyResult], title: str = "") -> Table:
    table = Table(
        title=title
        or f"{cfg.gpus:,} GPUs, {cfg.days:g} days, seed {cfg.seed}: {cfg.nodes:,} nodes",
    )
    for column in (
        "policy",
        "spares",
        "ETTR",
        "utilisation",
        "spot GPU-h",
        "spot lost GPU-h",
        "swaps",
        "interruptions",
        "TTR p50 min",
        "TTR p99 min",
        "retired",
        "wall s",
    ):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for r in results:
        table.add_row(
            r.policy,
            str(r.spares),
            f"{r.ettr:.4f}",
            f"{r.utilisation:.4f}",
            f"{r.spot_gpu_hours:,.0f}",
            f"{r.spot_lost_gpu_hours:,.0f}",
            str(r.swaps),
            str(r.interruptions),
            _minutes(r.ttr_p50_minutes),
            _minutes(r.ttr_p99_minutes),
            str(r.retired),
            f"{r.wall_seconds:.1f}",
        )
    return table


def print_results(console: Console, cfg: FleetConfig, results: list[PolicyResult]) -> None:
    console.print(comparison_table(cfg, results))


def plot(results: list[PolicyResult], path: Path, title: str) -> None:
    """Bar charts of ETTR, utilisation and spot GPU-hours per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.policy for r in results]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    panels = (
        ("ETTR", [r.ettr for r in results], (min(r.ettr for r in results) - 0.02, 1.0)),
        (
            "utilisation",
            [r.utilisation for r in results],
            (min(r.utilisation for r in results) - 0.02, 1.0),
        ),
        ("spot GPU-hours", [r.spot_gpu_hours for r in results], None),
    )
    for ax, (label, values, limits) in zip(axes, panels, strict=True):
        ax.bar(names, values, color=["#999999", "#6b8fb5", "#2a9d5c"][: len(names)] or None)
        ax.set_title(label)
        if limits is not None:
            ax.set_ylim(*limits)
        ax.tick_params(axis="x", rotation=20)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def as_rows(results: list[PolicyResult]) -> list[dict[str, object]]:
    return [dataclasses.asdict(r) for r in results]
