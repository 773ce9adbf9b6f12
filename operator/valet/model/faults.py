"""The fault table: every GPU or node signal valet knows → severity and action.

Signals are short strings: ``xid:<code>`` for NVIDIA XID events and named signals
for what NVML, DCGM and other detectors report. The reference for XIDs is NVIDIA's
XID catalogue (resolution buckets RESTART_APP, RESET_GPU, RESTART_BM, CONTACT_SUPPORT);
valet maps them onto DESIGN §4's actions. An unknown XID is watched, never ignored
and never drained on: a person should add it to this table.
"""

from __future__ import annotations

import dataclasses
import enum

from valet.model.enums import FaultAction, Remediation


class Severity(enum.StrEnum):
    INFO = "info"  # application-level; the node is fine
    SOFT = "soft"  # degrading; the node becomes suspect when it persists
    HARD = "hard"  # the node must be drained


@dataclasses.dataclass(frozen=True)
class FaultRule:
    signal: str
    reason: str  # CamelCase reason published in the GPUHealthy condition
    severity: Severity
    action: FaultAction
    description: str

    @property
    def remediation(self) -> Remediation | None:
        return _REMEDIATION.get(self.action)


_REMEDIATION = {
    FaultAction.DRAIN_RESET: Remediation.GPU_RESET,
    FaultAction.DRAIN_REBOOT: Remediation.REBOOT,
}


def _xid(code: int, reason: str, severity: Severity, action: FaultAction, text: str) -> FaultRule:
    return FaultRule(f"xid:{code}", f"XID{code}{reason}", severity, action, text)


_I, _S, _H = Severity.INFO, Severity.SOFT, Severity.HARD
_NO, _WATCH = FaultAction.NONE, FaultAction.WATCH
_RESET, _REBOOT, _RETIRE = FaultAction.DRAIN_RESET, FaultAction.DRAIN_REBOOT, FaultAction.RETIRE

FAULT_TABLE: tuple[FaultRule, ...] = (
    # Application errors: the job restarts, the node is not to blame.
    _xid(13, "GraphicsEngineException", _I, _NO, "graphics engine exception (application)"),
    _xid(31, "MemoryPageFault", _I, _NO, "GPU memory page fault (application)"),
    _xid(43, "GPUStoppedProcessing", _I, _NO, "GPU stopped processing (application)"),
    _xid(45, "PreemptiveCleanup", _I, _NO, "preemptive cleanup after earlier errors"),
    # Memory: reset to activate row remapping or clear the contained error.
    _xid(48, "DoubleBitECC", _H, _RESET, "double-bit ECC error"),
    _xid(63, "RowRemapPending", _H, _RESET, "ECC page retirement / row remap recorded"),
    _xid(64, "RowRemapFailure", _H, _RESET, "ECC page retirement / row remap failed"),
    _xid(92, "HighSingleBitECCRate", _S, _WATCH, "high single-bit ECC error rate"),
    _xid(94, "ContainedECC", _H, _RESET, "contained ECC error"),
    _xid(95, "UncontainedECC", _H, _RESET, "uncontained ECC error"),
    _xid(140, "UnrecoveredECC", _H, _RESET, "unrecovered ECC error"),
    # Interconnect and firmware.
    _xid(61, "MicrocontrollerBreakpoint", _H, _RESET, "internal micro-controller breakpoint"),
    _xid(62, "MicrocontrollerHalt", _H, _RESET, "internal micro-controller halt"),
    _xid(74, "NVLinkError", _H, _RESET, "NVLink error"),
    _xid(79, "GPUFellOffBus", _H, _REBOOT, "GPU has fallen off the bus"),
    _xid(119, "GSPTimeout", _H, _REBOOT, "GSP RPC timeout"),
    _xid(120, "GSPError", _H, _REBOOT, "GSP error"),
    # Named signals from NVML, DCGM and the agent's own checks.
    FaultRule("gpu-lost", "GPULost", _H, _REBOOT, "NVML reports the GPU is lost"),
    FaultRule("gpu-missing", "GPUCountMismatch", _H, _REBOOT, "fewer GPUs than expected"),
    FaultRule("ecc-dbe", "DoubleBitECC", _H, _RESET, "volatile double-bit ECC errors"),
    FaultRule("retired-pages-pending", "RetiredPagesPending", _H, _RESET, "page retirement"),
    FaultRule("row-remap-pending", "RowRemapPending", _H, _RESET, "row remap needs a reset"),
    FaultRule("row-remap-failure", "RowRemapFailure", _H, _RETIRE, "row remapping failed: RMA"),
    FaultRule("nvlink-down", "NVLinkDown", _H, _RESET, "an NVLink link is down"),
    FaultRule("ecc-sbe-rising", "CorrectableECCRising", _S, _WATCH, "correctable ECC rising"),
    FaultRule("thermal-throttle", "ThermalThrottle", _S, _WATCH, "thermal or power throttling"),
    FaultRule("pcie-degraded", "PCIeDegraded", _S, _WATCH, "PCIe link below max gen/width"),
    FaultRule("nvlink-errors", "NVLinkErrorsRising", _S, _WATCH, "NVLink CRC/replay errors"),
    FaultRule("thermal-shutdown", "ThermalShutdown", _H, _REBOOT, "temperature at shutdown"),
    FaultRule(
        "sdc", "SilentDataCorruption", _H, _RETIRE, "diagnostics found silent data corruption"
    ),
    # Node conditions of other detectors (Node Problem Detector, NVSentinel).
    FaultRule("node-problem", "NodeProblem", _H, _REBOOT, "another detector reports a problem"),
    # The operator's own reading: the kubelet's Lease or Ready went stale past the grace.
    FaultRule(
        "node-unreachable",
        "NodeUnreachable",
        _H,
        _REBOOT,
        "the kubelet stopped heart-beating: host down, kernel panic or network lost",
    ),
)

_BY_SIGNAL = {rule.signal: rule for rule in FAULT_TABLE}


def rule_for(signal: str) -> FaultRule:
    """The rule for a signal; an unknown XID or signal is watched (soft)."""
    rule = _BY_SIGNAL.get(signal)
    if rule is not None:
        return rule
    reason = signal.replace("xid:", "XID").replace("-", " ").title().replace(" ", "")
    return FaultRule(signal, f"{reason}Unknown", _S, _WATCH, f"unknown signal {signal}")


def xid_signal(code: int) -> str:
    return f"xid:{code}"


def worst(signals: tuple[str, ...] | list[str]) -> FaultRule | None:
    """The signal calling for the strongest action (ties: first given), or None."""
    rules = [rule_for(s) for s in signals]
    return max(rules, key=lambda r: r.action.rank, default=None)
