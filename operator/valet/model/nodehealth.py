"""The contract between the node agent and the operator: how GPU health sits on a Node.

The agent publishes a ``GPUHealthy`` node condition (True / False / Unknown, a reason
from the fault table, a message naming the GPUs, a fresh heartbeat on every probe)
and a JSON annotation ``valet.dev/gpu-health`` with the per-GPU detail. The operator
reads both back with ``parse_node_health``. Pure code: both sides import it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

from valet.model.enums import GROUP, Health
from valet.model.faults import rule_for, worst
from valet.model.timefmt import from_rfc3339, to_rfc3339
from valet.model.view import GpuStatus, NodeHealth

CONDITION_TYPE = "GPUHealthy"
ANNOTATION = f"{GROUP}/gpu-health"
HEALTHY_REASON = "AllGPUsHealthy"
SUSPECT_REASON_PREFIX = "Suspect"


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What the agent concluded about its node on one probe."""

    health: Health
    signals: tuple[str, ...]  # node-level: every active signal of every GPU, and node signals
    gpus: tuple[GpuStatus, ...]
    message: str

    @property
    def reason(self) -> str:
        if self.health is Health.HEALTHY:
            return HEALTHY_REASON
        if self.health is Health.UNKNOWN:
            return "ProbeFailed"
        rule = worst(self.signals)
        reason = rule.reason if rule else "Unknown"
        return reason if self.health is Health.UNHEALTHY else SUSPECT_REASON_PREFIX + reason


def condition(verdict: Verdict, now: float, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The GPUHealthy condition; its transition time moves only when its status does."""
    status = {Health.UNHEALTHY: "False", Health.UNKNOWN: "Unknown"}.get(verdict.health, "True")
    since = now
    if previous is not None and previous.get("status") == status:
        since = from_rfc3339(previous.get("lastTransitionTime"), now)
    return {
        "type": CONDITION_TYPE,
        "status": status,
        "reason": verdict.reason,
        "message": verdict.message,
        "lastHeartbeatTime": to_rfc3339(now),
        "lastTransitionTime": to_rfc3339(since),
    }


def annotation(verdict: Verdict, since: float) -> str:
    """Per-GPU detail; deterministic, so an unchanged verdict writes an unchanged string."""
    return json.dumps(
        {
            "verdict": verdict.health.value,
            "since": to_rfc3339(since),
            "signals": list(verdict.signals),
            "gpus": [
                {"index": g.index, "uuid": g.uuid, "healthy": g.healthy, "signals": list(g.signals)}
                for g in verdict.gpus
            ],
        },
        sort_keys=True,
        separators=(",", ":"),
    )


def find_condition(conditions: Sequence[Mapping[str, Any]], kind: str) -> Mapping[str, Any] | None:
    return next((c for c in conditions if c.get("type") == kind), None)


def parse_node_health(
    conditions: Sequence[Mapping[str, Any]], annotations: Mapping[str, str]
) -> NodeHealth:
    """Read the agent's publication back; without a condition the node never reported."""
    cond = find_condition(conditions, CONDITION_TYPE)
    if cond is None:
        return NodeHealth(verdict=Health.UNKNOWN)
    heartbeat = from_rfc3339(cond.get("lastHeartbeatTime"), 0.0) or None
    since = from_rfc3339(cond.get("lastTransitionTime"), 0.0) or None
    status = cond.get("status")
    verdict = {"True": Health.HEALTHY, "False": Health.UNHEALTHY}.get(str(status), Health.UNKNOWN)
    signals: tuple[str, ...] = ()
    gpus: tuple[GpuStatus, ...] = ()
    try:
        detail = json.loads(annotations.get(ANNOTATION, "") or "{}")
    except json.JSONDecodeError:
        detail = {}
    if isinstance(detail, dict):
        signals = tuple(str(s) for s in detail.get("signals", ()))
        gpus = tuple(
            GpuStatus(
                int(g.get("index", i)),
                str(g.get("uuid", "")),
                bool(g.get("healthy", True)),
                tuple(str(s) for s in g.get("signals", ())),
            )
            for i, g in enumerate(detail.get("gpus", ()))
            if isinstance(g, dict)
        )
        if verdict is Health.HEALTHY and detail.get("verdict") == Health.SUSPECT.value:
            verdict = Health.SUSPECT
            since = from_rfc3339(detail.get("since"), since or 0.0) or since
    if verdict is Health.UNHEALTHY and not any(rule_for(s).action.drains for s in signals):
        signals = (*signals, "node-problem")  # False without detail still means drain
    return NodeHealth(verdict=verdict, signals=signals, since=since, heartbeat=heartbeat, gpus=gpus)
