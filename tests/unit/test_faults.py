"""One test per row of the fault table, against expectations written out here."""

from __future__ import annotations

import pytest

from valet.model.enums import FaultAction, Remediation
from valet.model.faults import FAULT_TABLE, Severity, rule_for, worst

N, W, R, B, X = (
    FaultAction.NONE,
    FaultAction.WATCH,
    FaultAction.DRAIN_RESET,
    FaultAction.DRAIN_REBOOT,
    FaultAction.RETIRE,
)

EXPECTED = {
    "xid:13": N,
    "xid:31": N,
    "xid:43": N,
    "xid:45": N,
    "xid:48": R,
    "xid:63": R,
    "xid:64": R,
    "xid:92": W,
    "xid:94": R,
    "xid:95": R,
    "xid:140": R,
    "xid:61": R,
    "xid:62": R,
    "xid:74": R,
    "xid:79": B,
    "xid:119": B,
    "xid:120": B,
    "gpu-lost": B,
    "gpu-missing": B,
    "ecc-dbe": R,
    "retired-pages-pending": R,
    "row-remap-pending": R,
    "row-remap-failure": X,
    "nvlink-down": R,
    "ecc-sbe-rising": W,
    "thermal-throttle": W,
    "pcie-degraded": W,
    "nvlink-errors": W,
    "thermal-shutdown": B,
    "sdc": X,
    "node-problem": B,
    "node-unreachable": B,
}


def test_every_row_has_an_expectation() -> None:
    assert {rule.signal for rule in FAULT_TABLE} == set(EXPECTED)


@pytest.mark.parametrize("rule", FAULT_TABLE, ids=lambda r: r.signal)
def test_row(rule) -> None:
    assert rule.action is EXPECTED[rule.signal]
    assert rule_for(rule.signal) is rule
    # Severity agrees with the action: hard faults drain or retire, soft ones are watched.
    if rule.action.drains:
        assert rule.severity is Severity.HARD
    elif rule.action is FaultAction.WATCH:
        assert rule.severity is Severity.SOFT
    else:
        assert rule.severity is Severity.INFO
    # Draining faults name the remediation the agent will be asked for.
    expected_fix = {R: Remediation.GPU_RESET, B: Remediation.REBOOT}.get(rule.action)
    assert rule.remediation is expected_fix
    assert rule.reason[0].isupper() and " " not in rule.reason


def test_xid79_reason_is_what_the_condition_publishes() -> None:
    assert rule_for("xid:79").reason == "XID79GPUFellOffBus"


@pytest.mark.parametrize("signal", ["xid:999", "brand-new-thing"])
def test_unknown_signals_are_watched_not_ignored_nor_drained(signal: str) -> None:
    rule = rule_for(signal)
    assert rule.action is FaultAction.WATCH
    assert rule.severity is Severity.SOFT


def test_worst_signal_wins() -> None:
    assert worst(["xid:13", "xid:48", "xid:79"]).signal == "xid:79"
    assert worst(["thermal-throttle", "row-remap-failure", "xid:79"]).signal == "row-remap-failure"
    assert worst([]) is None
