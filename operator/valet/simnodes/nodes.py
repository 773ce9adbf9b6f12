"""Simulated GPU nodes: register Nodes with ``nvidia.com/gpu``, keep their Ready condition
and Lease fresh, play kubelet for pods bound to them, and publish GPU health exactly as
the node agent does (the simulated backend, the agent's classifier, ``nodehealth``),
carrying out remediation requests in simulated time.

Only the public API is used, so the same code runs against the emulator or a real cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import heapq
import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from valet.agent.classify import Classifier, Thresholds
from valet.agent.simulated import FAULTS_ANNOTATION, LEMON_ANNOTATION, SimulatedBackend
from valet.k8s import codec, errors
from valet.k8s.client import MERGE, STRATEGIC, Api, core_path, node_path
from valet.model import nodehealth, remediation
from valet.model.enums import GPU_RESOURCE, GROUP, Health, Remediation
from valet.model.timefmt import to_rfc3339
from valet.simnodes.kubelet import Kubelet, Step, status_patch

log = structlog.get_logger("valet.sim")
SIMULATED_LABEL = f"{GROUP}/simulated"


@dataclasses.dataclass(frozen=True)
class SimConfig:
    gpus: int = 8
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    startup_seconds: float = 0.5  # Pending → Running
    probe_seconds: float = 5.0  # GPU health heartbeat
    lease_seconds: float = 10.0  # node Lease renewal
    remediation_seconds: float = 2.0  # simulated time a remediation takes
    soft_persist_seconds: float = 120.0


DEFAULT_SIM = SimConfig()


@dataclasses.dataclass
class _Node:
    name: str
    backend: SimulatedBackend
    classifier: Classifier
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    condition: dict[str, Any] | None = None
    last_health: Health | None = None
    since: float = 0.0
    published: str | None = None
    remediating: str | None = None  # ident of the request being carried out
    answered: set[str] = dataclasses.field(default_factory=set)


class SimNodes:
    def __init__(
        self,
        api: Api,
        names: Sequence[str],
        config: SimConfig = DEFAULT_SIM,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.config, self.clock = api, config, clock
        self.nodes: dict[str, _Node] = {}
        for name in names:
            node = _Node(
                name,
                SimulatedBackend(name, config.gpus),
                Classifier(Thresholds(soft_persist_seconds=config.soft_persist_seconds)),
            )
            node.backend.faults = functools.partial(_faults_of, node)
            self.nodes[name] = node
        self.kubelet = Kubelet(dict.fromkeys(names, config.gpus), config.startup_seconds)
        self.pods: dict[str, dict[str, Any]] = {}  # latest object of each pod on our nodes
        self._timers: list[tuple[float, int, Step]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._probe_now: set[str] = set()
        self.ready = asyncio.Event()
        self.silenced: set[str] = set()  # nodes whose agent stopped publishing
        self.dead: set[str] = set()  # nodes whose host is down: no kubelet, no agent

    def silence(self, name: str) -> None:
        """Stop publishing GPU health for a node, as a hung or crashed agent would."""
        self.silenced.add(name)

    def kill(self, name: str) -> None:
        """The host goes down (crash, kernel panic, lost network): its Lease and Ready stop,
        its agent stops, and nothing on it acts on pods or remediation requests."""
        self.dead.add(name)

    async def revive(self, name: str) -> None:
        """The host is back: heartbeats resume, and a pending remediation is answered."""
        self.dead.discard(name)
        await self._renew_lease(name)
        await self._publish(name)
        self._maybe_remediate(self.nodes[name])

    # --- registration and heartbeats -----------------------------------------------------

    async def register(self) -> None:
        await asyncio.gather(*(self._register(n) for n in self.nodes))

    async def _register(self, name: str) -> None:
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    SIMULATED_LABEL: "true",
                    **self.config.labels,
                },
            },
            "spec": {},
        }
        try:
            raw = await self.api.call("POST", node_path(), body)
        except errors.AlreadyExistsError:
            raw = await self.api.call(
                "PATCH",
                node_path(name),
                {"metadata": {"labels": body["metadata"]["labels"]}},
                content_type=MERGE,
            )
        self.nodes[name].annotations = dict(codec.meta(raw).get("annotations") or {})
        gpus = str(self.config.gpus)
        resources = {GPU_RESOURCE: gpus, "cpu": "96", "memory": "1Ti", "pods": "110"}
        await self.api.call(
            "PATCH",
            node_path(name, status=True),
            {"status": {"capacity": resources, "allocatable": resources}},
            content_type=STRATEGIC,
        )
        await self._publish(name)
        await self._renew_lease(name)

    def _ready_condition(self, now: float) -> dict[str, Any]:
        stamp = to_rfc3339(now)
        return {
            "type": "Ready",
            "status": "True",
            "reason": "KubeletReady",
            "message": "valet simulated kubelet is posting ready status",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    async def _publish(self, name: str) -> None:
        """Probe, classify and publish, as ``valet.agent.runner.Agent.step`` does."""
        node, now = self.nodes[name], self.clock()
        verdict = node.classifier.classify(node.backend.probe(), now)
        if verdict.health is not node.last_health:
            node.last_health, node.since = verdict.health, now
        condition = nodehealth.condition(verdict, now, node.condition)
        node.condition = condition
        ready = self._ready_condition(now)
        ready.pop("lastTransitionTime")
        await self.api.call(
            "PATCH",
            node_path(name, status=True),
            {"status": {"conditions": [condition, ready]}},
            content_type=STRATEGIC,
        )
        text = nodehealth.annotation(verdict, node.since)
        if text != node.published:
            await self._annotate(name, {nodehealth.ANNOTATION: text})
            node.published = text

    async def _annotate(self, name: str, annotations: Mapping[str, str | None]) -> None:
        raw = await self.api.call(
            "PATCH",
            node_path(name),
            {"metadata": {"annotations": dict(annotations)}},
            content_type=MERGE,
        )
        self.nodes[name].annotations = dict(codec.meta(raw).get("annotations") or {})

    async def _renew_lease(self, name: str) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}"
        spec = {
            "holderIdentity": name,
            "leaseDurationSeconds": 40,
            "renewTime": to_rfc3339(self.clock()).replace("Z", "000Z"),
        }
        try:
            await self.api.call("PATCH", path, {"spec": spec}, content_type=MERGE)
        except errors.NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": spec,
            }
            with contextlib.suppress(errors.AlreadyExistsError):
                await self.api.call(
                    "POST", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases", body
                )

    # --- the loops -----------------------------------------------------------------------

    async def run(self) -> None:
        """Register, then keep every node alive until cancelled."""
        await self.register()
        self.ready.set()
        await asyncio.gather(
            self._heartbeats(), self._watch_nodes(), self._watch_pods(), self._run_timers()
        )

    async def _heartbeats(self) -> None:
        """The agent's probe and the kubelet's Lease, each on its own period, in loops of
        their own (a Lease renewed only at a slow probe would make live nodes look dead to
        the operator)."""
        cfg = self.config
        await asyncio.gather(
            self._every(cfg.lease_seconds, self._renew_lease, lambda n: n not in self.dead),
            self._every(
                cfg.probe_seconds,
                self._publish,
                lambda n: n not in self.silenced and n not in self.dead,
            ),
        )

    async def _every(
        self, period: float, fn: Callable[[str], Any], wanted: Callable[[str], bool]
    ) -> None:
        """``fn`` for each ``wanted`` node once a ``period``, the nodes spread evenly over it
        and none waiting for another, as real kubelets and agents each keep their own phase.
        All at once, a round of 4,096 status patches queued every Lease renewal behind it for
        longer than the node grace, and live nodes looked dead."""
        while True:
            start = self.clock()
            names = sorted(self.nodes)
            for i, name in enumerate(names):
                delay = start + period * i / len(names) - self.clock()
                if delay > 0.005:
                    await asyncio.sleep(delay)
                if wanted(name):
                    self._spawn(fn(name))
            await asyncio.sleep(max(0.0, start + period - self.clock()))

    async def _watch_nodes(self) -> None:
        async for event in self.api.watch(node_path(), {"labelSelector": SIMULATED_LABEL}):
            raw = event["object"]
            name = codec.meta(raw).get("name")
            node = self.nodes.get(str(name))
            if node is None or event["type"] == "DELETED" or node.name in self.dead:
                continue
            annotations = dict(codec.meta(raw).get("annotations") or {})
            faults_changed = annotations.get(FAULTS_ANNOTATION) != node.annotations.get(
                FAULTS_ANNOTATION
            )
            node.annotations = annotations
            if faults_changed and node.name not in self.silenced:  # a hung agent sees nothing
                self._spawn(self._publish(node.name))
            self._maybe_remediate(node)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)

    def _maybe_remediate(self, node: _Node) -> None:
        pending = remediation.pending(node.annotations)
        if pending is None or node.remediating is not None or pending.ident in node.answered:
            return
        node.remediating = pending.ident
        self._spawn(self._remediate(node, pending))

    async def _remediate(self, node: _Node, pending: remediation.Pending) -> None:
        try:
            await self._annotate(node.name, remediation.started(self.clock()))
            await asyncio.sleep(self.config.remediation_seconds)
            lemon = node.annotations.get(LEMON_ANNOTATION) == "true"
            changes: dict[str, str | None] = {}
            if pending.kind is Remediation.DIAGNOSE:
                faulty = bool(node.backend.probe().probe_errors) or bool(
                    node.annotations.get(FAULTS_ANNOTATION, "[]") not in ("", "[]")
                )
                ok, message = not lemon and not faulty, "simulated diagnostics"
            else:
                ok = not lemon
                message = f"simulated {pending.kind.value}" + ("" if ok else " failed (lemon)")
                if ok:
                    changes[FAULTS_ANNOTATION] = None
                    node.classifier.clear()
            changes.update(remediation.finished(ok, message, self.clock()))
            await self._annotate(node.name, changes)
            node.answered.add(pending.ident)
            log.info("remediated", node=node.name, kind=pending.kind.value, ok=ok)
            await self._publish(node.name)
        finally:
            node.remediating = None

    async def _watch_pods(self) -> None:
        async for event in self.api.watch(core_path("pods", None)):
            raw = event["object"]
            md = codec.meta(raw)
            key = f"{md.get('namespace')}/{md.get('name')}"
            deleted = event["type"] == "DELETED"
            if (raw.get("spec") or {}).get("nodeName") not in self.nodes:
                self.pods.pop(key, None)
                continue
            if deleted:
                self.pods.pop(key, None)
            else:
                self.pods[key] = raw
            for step in self.kubelet.see(raw, self.clock(), deleted=deleted):
                heapq.heappush(self._timers, (step.at, next(self._seq), step))
                self._wake.set()

    async def _run_timers(self) -> None:
        while True:
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                _, _, step = heapq.heappop(self._timers)
                self._spawn(self._do(step))
            timeout = self._timers[0][0] - now if self._timers else None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):  # not wait_for: see Reconciler.run
                    await self._wake.wait()

    async def _do(self, step: Step) -> None:
        raw = self.pods.get(step.key)
        if raw is None or (raw.get("spec") or {}).get("nodeName") in self.dead:
            return
        ns, name = step.key.split("/", 1)
        deleting = bool(codec.meta(raw).get("deletionTimestamp"))
        if step.kind == "remove":
            with contextlib.suppress(errors.NotFoundError):
                await self.api.call(
                    "DELETE", core_path("pods", ns, name), query={"gracePeriodSeconds": "0"}
                )
            return
        if deleting:
            return
        body = status_patch(step, self.clock())
        try:
            result = await self.api.call(
                "PATCH", core_path("pods", ns, name, "status"), body, content_type=MERGE
            )
        except errors.NotFoundError:
            return
        self.pods[step.key] = result
        for more in self.kubelet.see(result, self.clock()):
            heapq.heappush(self._timers, (more.at, next(self._seq), more))
            self._wake.set()


def _faults_of(node: _Node) -> str | None:
    return node.annotations.get(FAULTS_ANNOTATION)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("simulated node task failed", error=str(task.exception()))


async def inject_fault(
    api: Api, node: str, gpu: int, xid: int | None, signal: str | None
) -> list[dict[str, Any]]:
    """What ``valet sim fault`` does: add a fault to the node's ``valet.dev/sim-faults``.

    Read-modify-write with the node's resourceVersion, read again on a conflict (the
    node's status and annotations change all the time)."""
    fault: dict[str, Any] = {"gpu": gpu}
    if xid is not None:
        fault["xid"] = xid
    else:
        fault["signal"] = signal
    for _ in range(20):
        raw = await api.call("GET", node_path(node))
        md = codec.meta(raw)
        faults: list[dict[str, Any]] = json.loads(
            (md.get("annotations") or {}).get(FAULTS_ANNOTATION) or "[]"
        )
        faults.append(fault)
        body = {
            "metadata": {
                "annotations": {FAULTS_ANNOTATION: json.dumps(faults)},
                "resourceVersion": md.get("resourceVersion"),
            }
        }
        try:
            await api.call(
                "PATCH", node_path(node), body, content_type=MERGE, retry_conflicts=False
            )
        except errors.ConflictError:
            continue
        return faults
    raise errors.ConflictError(409, "Conflict", "node kept changing", "PATCH", node_path(node))
