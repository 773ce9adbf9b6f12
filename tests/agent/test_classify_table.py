"""One classification test per row of the fault table: a reading that shows the signal,
classified by the agent, gives the verdict the row's severity calls for."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from valet.agent.classify import Classifier, Thresholds
from valet.agent.readings import GpuReading, NodeReading
from valet.model.enums import Health
from valet.model.faults import FAULT_TABLE, FaultRule, Severity

PERSIST = 60.0

# Named signals → (reading before, reading that shows it); XIDs are built from the code.
_NAMED: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "gpu-lost": ({}, {"lost": True}),
    "ecc-dbe": ({}, {"ecc_dbe_volatile": 2}),
    "retired-pages-pending": ({}, {"retired_pages_pending": True}),
    "row-remap-pending": ({}, {"row_remap_pending": True}),
    "row-remap-failure": ({}, {"row_remap_failure": True}),
    "nvlink-down": ({}, {"nvlink_down": (3,)}),
    "ecc-sbe-rising": ({"ecc_sbe_volatile": 0}, {"ecc_sbe_volatile": 50}),
    "thermal-throttle": ({}, {"throttle": frozenset({"thermal"})}),
    "pcie-degraded": ({}, {"pcie_degraded": True}),
    "nvlink-errors": ({"nvlink_errors": 0}, {"nvlink_errors": 5000}),
    "thermal-shutdown": ({}, {"temperature_c": 99.0}),
    "node-problem": ({}, {"health_failing": True}),
}
# Signals no GPU reading shows: the node's GPU count, what diagnostics conclude, and the
# operator's own reading of a silent kubelet (tests/unit/test_policy_decisions.py).
_NOT_FROM_A_READING = {"gpu-missing", "sdc", "node-unreachable"}


def _readings(rule: FaultRule) -> tuple[GpuReading, GpuReading]:
    if rule.signal.startswith("xid:"):
        return GpuReading(0, "GPU-0"), GpuReading(0, "GPU-0", xids=(int(rule.signal[4:]),))
    before, after = _NAMED[rule.signal]
    return GpuReading(0, "GPU-0", **before), GpuReading(0, "GPU-0", **after)


ROWS = [r for r in FAULT_TABLE if r.signal not in _NOT_FROM_A_READING]


def test_every_row_is_covered_here_or_named_as_not_from_a_reading() -> None:
    covered = {r.signal for r in ROWS} | _NOT_FROM_A_READING
    assert covered == {r.signal for r in FAULT_TABLE}


@pytest.mark.parametrize("rule", ROWS, ids=lambda r: r.signal)
def test_row_classifies_as_its_severity_says(rule: FaultRule) -> None:
    classifier = Classifier(Thresholds(soft_persist_seconds=PERSIST))
    before, after = _readings(rule)
    assert classifier.classify(NodeReading((before,)), 0.0).health is Health.HEALTHY
    first = classifier.classify(NodeReading((after,)), 1.0)
    if rule.severity is Severity.HARD:
        assert first.health is Health.UNHEALTHY
        assert first.reason == rule.reason
        assert rule.signal in first.signals
        return
    if rule.severity is Severity.INFO:  # application XIDs never mark the node
        assert first.health is Health.HEALTHY
        later = classifier.classify(NodeReading((after,)), 1.0 + 10 * PERSIST)
        assert later.health is Health.HEALTHY
        return
    # Soft: healthy until the signal has persisted, then suspect with the row's reason.
    assert first.health is Health.HEALTHY
    keeps_rising = dataclasses.replace(
        after,
        ecc_sbe_volatile=(after.ecc_sbe_volatile or 0) * 2 or None,
        nvlink_errors=(after.nvlink_errors or 0) * 2 or None,
    )
    later = classifier.classify(NodeReading((keeps_rising,)), 1.0 + PERSIST)
    assert later.health is Health.SUSPECT
    assert later.reason == "Suspect" + rule.reason


def test_fewer_gpus_than_expected_is_gpu_missing() -> None:
    verdict = Classifier().classify(NodeReading((GpuReading(0),), expected=8), 0.0)
    assert verdict.health is Health.UNHEALTHY and verdict.reason == "GPUCountMismatch"
