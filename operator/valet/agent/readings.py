"""What a probe backend reports: one reading per GPU, the same shape for every backend."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@dataclasses.dataclass(frozen=True)
class GpuReading:
    index: int
    uuid: str = ""
    lost: bool = False  # fell off the bus / NVML_ERROR_GPU_IS_LOST
    xids: tuple[int, ...] = ()  # XID codes seen since the previous probe
    # (code, events) since the previous probe, where the backend counts them; else each of
    # ``xids`` counts once.
    xid_events: tuple[tuple[int, int], ...] = ()
    ecc_sbe_volatile: int | None = None
    ecc_dbe_volatile: int | None = None
    ecc_sbe_aggregate: int | None = None
    ecc_dbe_aggregate: int | None = None
    retired_pages_pending: bool = False
    row_remap_pending: bool = False
    row_remap_failure: bool = False
    temperature_c: float | None = None
    throttle: frozenset[str] = frozenset()  # "thermal", "power-brake", "hw-slowdown"
    pcie_degraded: bool = False  # link generation or width below its maximum
    nvlink_down: tuple[int, ...] = ()  # links that should be up and are not
    nvlink_errors: int | None = None  # CRC + replay counters, summed over links
    health_failing: bool = False  # the backend's own verdict (DCGM health status)
    errors: tuple[str, ...] = ()  # calls that failed for this GPU


@dataclasses.dataclass(frozen=True)
class NodeReading:
    gpus: tuple[GpuReading, ...]
    expected: int | None = None  # GPUs the node should have
    probe_errors: tuple[str, ...] = ()  # failures not tied to one GPU


class Backend(Protocol):
    """A probe backend. ``probe`` never raises for one bad GPU; it reports it."""

    name: str

    def probe(self) -> NodeReading: ...

    def close(self) -> None: ...


@runtime_checkable
class EventSource(Protocol):
    """A backend that can tell the agent a fault arrived, so it probes now, not at the next
    interval (NVML's XID events, a simulated fault injected). ``close`` stops it."""

    def start_events(self, notify: Callable[[], None]) -> None: ...
