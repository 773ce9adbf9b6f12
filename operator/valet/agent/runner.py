"""One agent step: probe → classify → publish on the Node → metrics; and the loop around it."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any, Protocol

import structlog

from valet.agent.classify import Classifier
from valet.agent.readings import Backend
from valet.agent.remediation import Remediator
from valet.metrics import AgentMetrics
from valet.model import nodehealth
from valet.model.enums import Health
from valet.model.nodehealth import Verdict

log = structlog.get_logger("valet.agent")


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
    ) -> None:
        self.backend, self.publisher, self.metrics = backend, publisher, metrics
        self.classifier = classifier or Classifier()
        self.remediator = remediator
        self.last_health: Health | None = None
        self.since = 0.0
        self.published_annotation: str | None = None
        self.ready = threading.Event()  # set after the first successful publish

    def step(self, now: float) -> Verdict:
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
        self.publisher.publish(
            nodehealth.condition(verdict, now, previous), text if changed else None
        )
        self.published_annotation = text
        if self.remediator is not None:
            answer = self.remediator.step(annotations, now)
            if answer:
                self.publisher.annotate(answer)
        self.metrics.observe(reading, verdict, time.perf_counter() - started, now)
        self.ready.set()
        return verdict

    def run(self, interval: float, stop: threading.Event) -> None:
        """Probe every ``interval`` seconds until ``stop`` is set; a failed step is logged."""
        while not stop.is_set():
            try:
                self.step(time.time())
            except Exception:  # one failed step must not end the agent
                log.exception("probe step failed", node=self.metrics.node)
            stop.wait(interval)
        self.backend.close()
