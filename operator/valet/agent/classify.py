"""Readings → a node verdict, with the fault table, latching and hysteresis.

- Hard signals (XID 79, DBE, row-remap failure, …) mark the GPU unhealthy at once and
  stay latched until a remediation clears them: a GPU does not heal by going quiet.
- Soft signals (rising correctable ECC, throttling, degraded PCIe, NVLink errors) make
  the node suspect only after they persist ``soft_persist_seconds``.
- Application XIDs (13, 31, 43, 45) are recorded but never mark the node.
"""

from __future__ import annotations

import dataclasses

from valet.agent.readings import GpuReading, NodeReading
from valet.model.enums import Health
from valet.model.faults import Severity, rule_for
from valet.model.nodehealth import Verdict
from valet.model.view import GpuStatus


@dataclasses.dataclass(frozen=True)
class Thresholds:
    soft_persist_seconds: float = 120.0
    sbe_rise_per_probe: int = 10  # correctable ECC errors between probes that count as rising
    nvlink_errors_per_probe: int = 100
    shutdown_temperature_c: float = 95.0


class Classifier:
    """Keeps what hysteresis and latching need between probes; time is passed in."""

    def __init__(self, thresholds: Thresholds = Thresholds()) -> None:
        self.thresholds = thresholds
        self.latched: dict[int, set[str]] = {}
        self.soft_since: dict[tuple[int, str], float] = {}
        self.previous: dict[int, GpuReading] = {}

    def clear(self) -> None:
        """After a successful remediation: forget latched faults and counters."""
        self.latched.clear()
        self.soft_since.clear()
        self.previous.clear()

    def signals(self, gpu: GpuReading) -> tuple[str, ...]:
        """Every signal a reading shows now (before latching and hysteresis)."""
        t, prev = self.thresholds, self.previous.get(gpu.index)
        out = [f"xid:{x}" for x in gpu.xids]
        if gpu.lost:
            out.append("gpu-lost")
        if gpu.ecc_dbe_volatile:
            out.append("ecc-dbe")
        if gpu.retired_pages_pending:
            out.append("retired-pages-pending")
        if gpu.row_remap_failure:
            out.append("row-remap-failure")
        elif gpu.row_remap_pending:
            out.append("row-remap-pending")
        if gpu.nvlink_down:
            out.append("nvlink-down")
        if gpu.health_failing:
            out.append("node-problem")
        if gpu.temperature_c is not None and gpu.temperature_c >= t.shutdown_temperature_c:
            out.append("thermal-shutdown")
        if gpu.throttle:
            out.append("thermal-throttle")
        if gpu.pcie_degraded:
            out.append("pcie-degraded")
        if prev is not None:
            if _rose(prev.ecc_sbe_volatile, gpu.ecc_sbe_volatile, t.sbe_rise_per_probe):
                out.append("ecc-sbe-rising")
            if _rose(prev.nvlink_errors, gpu.nvlink_errors, t.nvlink_errors_per_probe):
                out.append("nvlink-errors")
        return tuple(dict.fromkeys(out))

    def classify(self, reading: NodeReading, now: float) -> Verdict:
        statuses: list[GpuStatus] = []
        node_signals: list[str] = []
        soft_due: list[str] = []
        for gpu in reading.gpus:
            active = self.signals(gpu)
            self.previous[gpu.index] = gpu
            latched = self.latched.setdefault(gpu.index, set())
            latched.update(s for s in active if rule_for(s).action.drains)
            soft = [s for s in active if rule_for(s).severity is Severity.SOFT]
            for key in [k for k in self.soft_since if k[0] == gpu.index and k[1] not in soft]:
                del self.soft_since[key]
            persisted = []
            for s in soft:
                since = self.soft_since.setdefault((gpu.index, s), now)
                if now - since >= self.thresholds.soft_persist_seconds:
                    persisted.append(s)
            shown = (*sorted(latched), *persisted)
            statuses.append(GpuStatus(gpu.index, gpu.uuid, not latched and not persisted, shown))
            node_signals.extend(sorted(latched))
            soft_due.extend(persisted)
        if reading.expected is not None and len(reading.gpus) < reading.expected:
            node_signals.append("gpu-missing")
        return self._verdict(reading, statuses, node_signals, soft_due)

    def _verdict(
        self,
        reading: NodeReading,
        statuses: list[GpuStatus],
        hard: list[str],
        soft: list[str],
    ) -> Verdict:
        bad = [g for g in statuses if not g.healthy]
        names = ", ".join(
            f"GPU {g.index} ({g.uuid or 'no uuid'}): {' '.join(g.signals)}" for g in bad
        )
        if hard:
            health = Health.UNHEALTHY
            message = names or f"{len(reading.gpus)}/{reading.expected} GPUs visible"
        elif soft:
            health, message = Health.SUSPECT, names
        elif not reading.gpus and reading.probe_errors:
            health, message = Health.UNKNOWN, "; ".join(reading.probe_errors)
        else:
            health, message = Health.HEALTHY, f"{len(statuses)} GPUs healthy"
        signals = tuple(dict.fromkeys([*hard, *soft]))
        return Verdict(health, signals, tuple(statuses), message)


def _rose(before: int | None, after: int | None, threshold: int) -> bool:
    return before is not None and after is not None and after - before >= threshold
