"""Generated documentation: docs/faults.md, the fault table as valet runs it.

The table is rendered from ``valet.model.faults.FAULT_TABLE``, so the docs cannot drift
from the code: tests/test_docs.py fails when docs/faults.md is stale. Regenerate with

    .venv/bin/python -m tests.docs
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from valet.model.enums import FaultAction
from valet.model.faults import FAULT_TABLE, FaultRule, Severity

ROOT = Path(__file__).resolve().parents[1]
FAULTS_MD = ROOT / "docs" / "faults.md"

SEVERITIES = {
    Severity.INFO: "the job's fault (application); the node is fine",
    Severity.SOFT: "degrading; the node turns suspect only if it persists",
    Severity.HARD: "the GPU is unhealthy at once, latched until remediation clears it",
}
ACTIONS = {
    FaultAction.NONE: "no node action: the application is at fault",
    FaultAction.WATCH: "the node turns suspect when the signal persists (no new "
    "workers placed there, alerting), back to active when it clears",
    FaultAction.DRAIN_RESET: "drain the node, then ask the agent for a GPU reset",
    FaultAction.DRAIN_REBOOT: "drain the node, then ask for a reboot",
    FaultAction.RETIRE: "drain the node and retire it: it needs a person (RMA)",
}


def anchors(markdown: str) -> dict[str, str]:
    """The anchors GitHub gives a Markdown file's headings, each with its section's text
    (up to the next heading of any level)."""
    sections: dict[str, str] = {}
    anchor = None
    fenced = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"^#{1,6} +(.+?) *$", line)
        if m:
            anchor = re.sub(r"[^\w\- ]", "", m.group(1).lower()).replace(" ", "-")
            sections[anchor] = ""
        elif anchor is not None:
            sections[anchor] += line + "\n"
    return sections


def _signal(rule: FaultRule) -> str:
    if rule.signal.startswith("xid:"):
        return f"XID {rule.signal.removeprefix('xid:')}"
    return f"`{rule.signal}`"


def render_faults() -> str:
    lines = [
        "# The fault table",
        "",
        "<!-- Generated from valet.model.faults.FAULT_TABLE by `.venv/bin/python -m tests.docs`;",
        "     do not edit by hand (tests/test_docs.py fails when this file is stale). -->",
        "",
        "Every signal valet knows, what it means and what valet does about it. The node agent",
        "classifies what it probes with this table and publishes the verdict on its Node (the",
        "`GPUHealthy` condition, whose reason is the table's, and the `valet.dev/gpu-health`",
        "annotation); the operator drains, remediates or retires by the worst signal of a node.",
        "XIDs follow NVIDIA's XID catalogue. An XID or signal not in the table is watched",
        "(soft, its reason ending in `Unknown`), never ignored and never drained on: add it",
        "to the table in `operator/valet/model/faults.py`.",
        "",
        "Severity:",
        "",
        *(f"- **{severity.value}**: {text}." for severity, text in SEVERITIES.items()),
        "",
        "Action:",
        "",
        *(f"- **{action.value}**: {text}." for action, text in ACTIONS.items()),
        "",
        "After a drain-and-remediate, the operator asks for diagnostics; a node that passes",
        "and reports healthy returns to the buffer as a spare. A node that keeps failing",
        "(the SpotPool's `lemon` policy) or whose remediations fail (`remediation.maxAttempts`)",
        "is retired. See [design.md](design.md#4-node-lifecycle).",
        "",
        "| signal | condition reason | severity | action | remediation | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for rule in FAULT_TABLE:
        remediation = rule.remediation.value if rule.remediation else "—"
        lines.append(
            f"| {_signal(rule)} | `{rule.reason}` | {rule.severity.value} | {rule.action.value}"
            f" | {remediation} | {rule.description} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    FAULTS_MD.write_text(render_faults())
    print(f"wrote {FAULTS_MD.relative_to(ROOT)} ({len(FAULT_TABLE)} signals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
