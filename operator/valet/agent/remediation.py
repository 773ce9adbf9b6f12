"""Remediation on the operator's request (DESIGN §4): GPU reset, reboot, diagnostics.

The operator sets ``valet.dev/remediation`` on the Node (``model/remediation.py``); the
agent carries each request out once, in a thread of its own so probing goes on, and
answers in annotations (started, result, finished, message).

- ``gpu-reset``: only when no process uses a GPU (NVML); then the reset command
  (default ``nvidia-smi --gpu-reset``).
- ``reboot``: the configured reboot command; without one, the agent hands off to an
  external reboot controller by setting ``valet.dev/reboot-required`` and answers once
  the node's boot ID has changed (so a request survives the agent's own restart).
- ``diagnose``: ``dcgmi diag -r <level>`` where DCGM is installed, else a fresh NVML
  probe classified without the latched history: no hard signal passes.

A cap (``max_attempts`` per ``window_seconds``, history kept in an annotation) stops a
node from being remediated in a loop; beyond it a request is answered ``failed``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from valet.agent.classify import Classifier
from valet.agent.readings import Backend
from valet.model import remediation
from valet.model.enums import GROUP, Health, Remediation
from valet.model.timefmt import from_rfc3339, to_rfc3339

log = structlog.get_logger("valet.agent.remediation")
HISTORY = f"{GROUP}/remediation-history"
REBOOT_REQUIRED = f"{GROUP}/reboot-required"
BOOT_ID = f"{GROUP}/remediation-boot-id"
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")

Annotations = dict[str, str | None]


@dataclasses.dataclass(frozen=True)
class Outcome:
    ok: bool | None  # None: handed off, the answer comes later (reboot by a controller)
    message: str
    annotations: Annotations = dataclasses.field(default_factory=dict)


class Executor(Protocol):
    def run(self, kind: Remediation, annotations: Mapping[str, str]) -> Outcome: ...


@dataclasses.dataclass(frozen=True)
class Cap:
    max_attempts: int = 5
    window_seconds: float = 24 * 3600.0

    def history(self, annotations: Mapping[str, str], now: float) -> list[float]:
        try:
            times = [from_rfc3339(t) for t in json.loads(annotations.get(HISTORY) or "[]")]
        except (ValueError, TypeError):
            times = []
        return [t for t in times if now - t <= self.window_seconds]


def _run(command: Sequence[str], timeout: float) -> tuple[bool, str]:
    try:
        done = subprocess.run(  # an operator-configured command, no shell
            list(command), capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"{command[0]}: {err}"
    tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
    return done.returncode == 0, f"{' '.join(command)}: exit {done.returncode} {' '.join(tail)}"


class GpuExecutor:
    """Real GPUs: the reset command, a reboot command or hand-off, DCGM or NVML diagnostics."""

    def __init__(
        self,
        probe: Backend,
        busy: Callable[[], list[str]],
        *,
        reset_command: Sequence[str] = ("nvidia-smi", "--gpu-reset"),
        reboot_command: Sequence[str] | None = None,
        diag_level: int = 1,
        timeout_seconds: float = 1800.0,
        boot_id: Callable[[], str] = lambda: BOOT_ID_FILE.read_text().strip(),
    ) -> None:
        self.probe, self.busy = probe, busy
        self.reset_command, self.reboot_command = reset_command, reboot_command
        self.diag_level, self.timeout = diag_level, timeout_seconds
        self.boot_id = boot_id

    def run(self, kind: Remediation, annotations: Mapping[str, str]) -> Outcome:
        if kind is Remediation.GPU_RESET:
            users = self.busy()
            if users:
                return Outcome(False, f"not resetting: GPUs in use by {', '.join(users)}")
            return Outcome(*_run(self.reset_command, self.timeout))
        if kind is Remediation.REBOOT:
            if self.reboot_command:
                ok, message = _run(self.reboot_command, self.timeout)
                return Outcome(None if ok else False, message)  # answered after the boot
            return Outcome(
                None,
                "handed off to the reboot controller",
                {REBOOT_REQUIRED: "true", BOOT_ID: self.boot_id()},
            )
        if shutil.which("dcgmi"):
            return Outcome(*_run(["dcgmi", "diag", "-r", str(self.diag_level)], self.timeout))
        verdict = Classifier().classify(self.probe.probe(), 0.0)
        ok = verdict.health is not Health.UNHEALTHY
        return Outcome(ok, f"NVML check: {verdict.health.value} {verdict.message}".strip())

    def rebooted(self, annotations: Mapping[str, str]) -> bool:
        before = annotations.get(BOOT_ID)
        return bool(before) and before != self.boot_id()


class Remediator:
    """Answers each request once; ``step`` returns the annotations to write now."""

    def __init__(
        self,
        executor: Executor,
        cap: Cap = Cap(),
        on_success: Callable[[], None] = lambda: None,
    ) -> None:
        self.executor, self.cap, self.on_success = executor, cap, on_success
        self._running: str | None = None
        self._done: dict[str, Outcome] = {}
        self._lock = threading.Lock()

    def step(self, annotations: Mapping[str, str], now: float) -> Annotations:
        pending = remediation.pending(annotations)
        if pending is None:
            return {}
        with self._lock:
            outcome = self._done.pop(pending.ident, None)
            if outcome is not None:
                return self._answer(outcome, now)
            if self._running == pending.ident:
                return {}
        if pending.started:
            rebooted = getattr(self.executor, "rebooted", None)
            if pending.kind is Remediation.REBOOT and rebooted and rebooted(annotations):
                return self._answer(Outcome(True, "node rebooted"), now, {REBOOT_REQUIRED: None})
            if pending.kind is Remediation.REBOOT:
                return {}  # waiting for the reboot
        history = self.cap.history(annotations, now)
        if len(history) >= self.cap.max_attempts:
            return remediation.finished(
                False,
                f"cap: {len(history)} remediations within {self.cap.window_seconds:.0f}s",
                now,
            )
        with self._lock:
            self._running = pending.ident
        threading.Thread(
            target=self._execute, args=(pending, dict(annotations)), daemon=True
        ).start()
        log.info("remediation started", kind=pending.kind.value, attempt=pending.attempt)
        return {
            **remediation.started(now),
            HISTORY: json.dumps([to_rfc3339(t) for t in [*history, now]]),
        }

    def _execute(self, pending: remediation.Pending, annotations: Mapping[str, str]) -> None:
        try:
            outcome = self.executor.run(pending.kind, annotations)
        except Exception as err:  # an executor bug must still answer the operator
            outcome = Outcome(False, f"remediation raised {err!r}")
        with self._lock:
            self._done[pending.ident] = outcome
            self._running = None

    def _answer(
        self, outcome: Outcome, now: float, extra: Annotations | None = None
    ) -> Annotations:
        answer: Annotations = dict(outcome.annotations)
        if outcome.ok is not None:
            answer.update(remediation.finished(outcome.ok, outcome.message, now))
            log.info("remediation finished", ok=outcome.ok, message=outcome.message)
            if outcome.ok:
                self.on_success()
        answer.update(extra or {})
        return answer
