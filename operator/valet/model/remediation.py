"""The remediation hand-shake between operator and node agent, carried in Node annotations.

The operator asks: ``valet.dev/remediation`` (gpu-reset / reboot / diagnose), with the
attempt number and when it asked. The agent answers once per request: when it started,
then the result (succeeded / failed), when it finished and a message. A new request
clears the old answer. Pure code: both sides import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from valet.model.enums import GROUP, Remediation, RemediationResult
from valet.model.timefmt import from_rfc3339, to_rfc3339
from valet.model.view import RemediationStatus

REQUEST = f"{GROUP}/remediation"
ATTEMPT = f"{GROUP}/remediation-attempt"
REQUESTED_AT = f"{GROUP}/remediation-requested-at"
STARTED_AT = f"{GROUP}/remediation-started-at"
RESULT = f"{GROUP}/remediation-result"
FINISHED_AT = f"{GROUP}/remediation-finished-at"
MESSAGE = f"{GROUP}/remediation-message"
ANSWER_KEYS = (STARTED_AT, RESULT, FINISHED_AT, MESSAGE)
ALL_KEYS = (REQUEST, ATTEMPT, REQUESTED_AT, *ANSWER_KEYS)

_KINDS = frozenset(r.value for r in Remediation)
_RESULTS = frozenset(r.value for r in RemediationResult)


def _int(text: str | None, default: int) -> int:
    try:
        return int(text or "")
    except ValueError:
        return default


def parse(annotations: Mapping[str, str]) -> RemediationStatus:
    kind = annotations.get(REQUEST)
    if kind not in _KINDS:
        return RemediationStatus()
    result = annotations.get(RESULT)
    return RemediationStatus(
        requested=Remediation(kind),
        requested_at=from_rfc3339(annotations.get(REQUESTED_AT), 0.0) or None,
        attempts=_int(annotations.get(ATTEMPT), 1),
        result=RemediationResult(result) if result in _RESULTS else None,
        finished_at=from_rfc3339(annotations.get(FINISHED_AT), 0.0) or None,
    )


def request(kind: Remediation, attempt: int, now: float) -> dict[str, str | None]:
    """Annotations that ask for a remediation; None deletes the previous answer."""
    return {
        REQUEST: kind.value,
        ATTEMPT: str(attempt),
        REQUESTED_AT: to_rfc3339(now),
        **dict.fromkeys(ANSWER_KEYS),
    }


@dataclasses.dataclass(frozen=True)
class Pending:
    """A request the agent has not answered yet; ``ident`` tells requests apart."""

    kind: Remediation
    attempt: int
    ident: str
    started: bool


def pending(annotations: Mapping[str, str]) -> Pending | None:
    status = parse(annotations)
    if status.requested is None or status.result is not None:
        return None
    ident = f"{status.requested.value}/{status.attempts}/{annotations.get(REQUESTED_AT, '')}"
    return Pending(status.requested, status.attempts, ident, STARTED_AT in annotations)


def started(now: float) -> dict[str, str | None]:
    return {STARTED_AT: to_rfc3339(now)}


def finished(ok: bool, message: str, now: float) -> dict[str, str | None]:
    result = RemediationResult.SUCCEEDED if ok else RemediationResult.FAILED
    return {RESULT: result.value, FINISHED_AT: to_rfc3339(now), MESSAGE: message[:500]}
