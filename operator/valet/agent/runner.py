"""One agent step: probe → classify → publish on the Node → metrics; and the loop around it.

The loop probes every ``interval`` seconds and, where the backend reports faults as they
happen (``EventSource``: NVML's XID events, a simulated fault injected), at once when one
arrives. Event-triggered steps are coalesced: at most one per ``event_spacing`` seconds,
and they write to the Node only when the verdict changed (the periodic step always
writes: it carries the heartbeat), so an XID storm costs a few reads a second and the
writes of the verdict changes it causes.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from valet.agent.classify import Classifier
from valet.agent.readings import Backend, EventSource
from valet.agent.remediation import Remediator
from valet.metrics import AgentMetrics
from valet.model import nodehealth
from valet.model.enums import Health
from valet.model.nodehealth import Verdict

log = structlog.get_logger("valet.agent")
EVENT_SPACING = 0.25  # seconds: the least time between two event-triggered steps


class Publisher(Protocol):
    """Where the verdict goes: the agent's own Node (see valet.k8s.node_publisher)."""

    def current(self) -> tuple[Mapping[str, Any] | None, Mapping[str, str]]:
        """The GPUHealthy condition now on the Node, and the Node's annotations."""
        ...

    def publish(self, condition: Mapping[str, Any], annotation: str | None) -> None:
        """Write the condition (always: it carries the heartbeat), and the annotation if given."""
        ...

    def annotate(self, annotations: Mapping[str, str | None]) -> None:
        """Merge annotations into the Node's (None deletes one): remediation answers."""
        ...


class Agent:
    def __init__(
        self,
        backend: Backend,
        publisher: Publisher,
        metrics: AgentMetrics,
        classifier: Classifier | None = None,
        remediator: Remediator | None = None,
        event_spacing: float = EVENT_SPACING,
    ) -> None:
        self.backend, self.publisher, self.metrics = backend, publisher, metrics
        self.classifier = classifier or Classifier()
        self.remediator = remediator
        self.event_spacing = event_spacing
        self.last_health: Health | None = None
        self.since = 0.0
        self.published_annotation: str | None = None
        self.ready = threading.Event()  # set after the first successful publish
        self._wake = threading.Event()

    def wake(self) -> None:
        """A fault arrived (from any thread): ``run`` steps now rather than at the interval."""
        self._wake.set()

    def step(self, now: float, *, heartbeat: bool = True) -> Verdict:
        """Probe, classify, publish. Without ``heartbeat`` (an event-triggered step) the
        Node is written only if the condition or the per-GPU detail changed."""
        started = time.perf_counter()
        reading = self.backend.probe()
        verdict = self.classifier.classify(reading, now)
        if verdict.health is not self.last_health:
            if self.last_health is not None:
                log.info(
                    "verdict changed",
                    node=self.metrics.node,
                    health=verdict.health.value,
                    reason=verdict.reason,
                    message=verdict.message,
                )
            self.last_health, self.since = verdict.health, now
        previous, annotations = self.publisher.current()
        if self.published_annotation is None:
            self.published_annotation = annotations.get(nodehealth.ANNOTATION)
        text = nodehealth.annotation(verdict, self.since)
        changed = text != self.published_annotation
        condition = nodehealth.condition(verdict, now, previous)
        if heartbeat or changed or _differs(condition, previous):
            self.publisher.publish(condition, text if changed else None)
            self.published_annotation = text
        if self.remediator is not None:
            answer = self.remediator.step(annotations, now)
            if answer:
                self.publisher.annotate(answer)
        self.metrics.observe(reading, verdict, time.perf_counter() - started, now)
        self.ready.set()
        return verdict

    def run(self, interval: float, stop: threading.Event) -> None:
        """Step every ``interval`` seconds, and on ``wake`` (no sooner than ``event_spacing``
        after the previous event-triggered step), until ``stop`` is set; a failed step is
        logged. Call ``wake`` after setting ``stop`` to end a wait at once. Closes the
        backend (and its event thread) on the way out."""
        if isinstance(self.backend, EventSource):
            self.backend.start_events(self.wake)
        due = time.monotonic()  # of the next periodic step
        last_event = -math.inf  # when the last event-triggered step started
        try:
            while not stop.is_set():
                now = time.monotonic()
                if now >= due:
                    self._wake.clear()  # this probe covers whatever woke the loop
                    self._step(heartbeat=True)
                    due = now + interval
                elif self._wake.is_set():
                    ready = last_event + self.event_spacing
                    if now < ready:  # coalesce: more events wait for this one's spacing
                        stop.wait(min(ready, due) - now)
                        continue
                    self._wake.clear()  # before the probe: a later event wakes it again
                    last_event = now
                    self._step(heartbeat=False)
                else:
                    self._wake.wait(due - now)
        finally:
            self.backend.close()

    def _step(self, *, heartbeat: bool) -> None:
        try:
            self.step(time.time(), heartbeat=heartbeat)
        except Exception:  # one failed step must not end the agent
            log.exception("probe step failed", node=self.metrics.node)


def _differs(condition: Mapping[str, Any], previous: Mapping[str, Any] | None) -> bool:
    return previous is None or any(
        previous.get(key) != condition[key] for key in ("status", "reason", "message")
    )
