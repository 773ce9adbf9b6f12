"""Choosing a probe backend: nvml, dcgm, simulated, or auto (NVML, else DCGM, else an error)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from valet.agent.dcgm import DEFAULT_URL, DcgmBackend, DcgmUnavailableError
from valet.agent.nvml import NvmlBackend, NvmlUnavailableError
from valet.agent.readings import Backend
from valet.agent.simulated import AnnotationWatch, SimulatedBackend

BACKENDS = ("auto", "nvml", "dcgm", "simulated")


class NoBackendError(RuntimeError):
    """No backend could start; the message says what to set."""


def open_backend(
    kind: str,
    *,
    node: str,
    expected: int | None,
    dcgm_url: str = DEFAULT_URL,
    faults: Callable[[], str | None] = lambda: None,
    fault_file: Path | None = None,
    watch: AnnotationWatch | None = None,
) -> Backend:
    if kind == "simulated":
        return SimulatedBackend(node, expected or 8, faults, fault_file, watch)
    problems = []
    if kind in ("auto", "nvml"):
        try:
            return NvmlBackend(expected=expected)
        except (NvmlUnavailableError, ImportError, OSError) as err:
            problems.append(f"NVML: {err}")
    if kind in ("auto", "dcgm"):
        try:
            return DcgmBackend(dcgm_url, expected)
        except DcgmUnavailableError as err:
            problems.append(f"DCGM: {err}")
    raise NoBackendError(
        "; ".join(problems)
        + ". Install the NVIDIA driver (NVML) or run dcgm-exporter (--dcgm-url),"
        " or use --backend simulated on a cluster without GPUs."
    )
