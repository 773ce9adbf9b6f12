"""The level-triggered reconciler: one pass at a time over the whole cluster.

Watch events poke it; it waits a short debounce so a burst becomes one pass, takes a
snapshot, calls ``policy.decide``, applies the Plan, and reports. It also passes when
the Plan asks to be woken (backoff, hysteresis, timeouts) and on a periodic resync, so
a silent agent turns "unknown" even when nothing else happens.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

import structlog

from valet.k8s import errors
from valet.k8s.apply import Applier, Rejection
from valet.k8s.cache import Cache, Invalid, Kind
from valet.k8s.client import MERGE, valet_path
from valet.metrics import OperatorMetrics
from valet.model.enums import EventType, JobPhase, NodeState, PodKind
from valet.model.plan import Action, EvictPod, PatchJobStatus, Plan
from valet.model.specs import Condition, set_condition
from valet.model.view import ClusterView
from valet.policy import PassMemo, PolicyConfig, decide

log = structlog.get_logger("valet.reconciler")
SPEC_VALID = "SpecValid"


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    debounce_seconds: float = 0.05  # gather a burst of events into one pass
    resync_seconds: float = 15.0  # pass at least this often
    relist_seconds: float = 300.0  # list jobs and pools again, for deletions Kopf missed
    first_relist_seconds: float = 5.0  # soon after start: Kopf's watch began after our list
    error_backoff_seconds: float = 1.0
    # An owner whose pods the API server refused is tried again after this long (or at once
    # when its spec changes): one refusal a minute, not one a pass.
    retry_rejected_seconds: float = 60.0


DEFAULT_POLICY, DEFAULT_LOOP = PolicyConfig(), LoopConfig()


class Reconciler:
    def __init__(
        self,
        cache: Cache,
        applier: Applier,
        metrics: OperatorMetrics,
        *,
        policy: PolicyConfig = DEFAULT_POLICY,
        loop: LoopConfig = DEFAULT_LOOP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cache, self.applier, self.metrics = cache, applier, metrics
        self.policy, self.loop, self.clock = policy, loop, clock
        self._poked = asyncio.Event()
        self.synced = asyncio.Event()  # set once the first full listing is in the cache
        self.active = asyncio.Event()  # cleared while another replica leads
        self.active.set()
        self.passes = 0
        self.memo = PassMemo()  # what each pass judged, for the next to start from
        self.last_plan = Plan()
        self._services: set[str] = set()
        self._reported_invalid: dict[tuple[Kind, str], str] = {}
        self._reported_rejected: dict[tuple[Kind, str], Rejection] = {}
        # The pool status or job last exported as gauges.
        self._gauged: dict[tuple[Kind, str], object] = {}
        applier.on_error = self._count_error
        applier.retry_rejected_seconds = loop.retry_rejected_seconds

    def poke(self) -> None:
        self._poked.set()

    async def run(self) -> None:
        await self.synced.wait()
        wake_at: float | None = None
        while True:
            await self.active.wait()
            timeout = self.loop.resync_seconds
            if wake_at is not None:
                timeout = max(0.0, min(timeout, wake_at - self.clock()))
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a
                # cancellation that arrives as the event is set, and stop() then hangs.
                async with asyncio.timeout(timeout):
                    await self._poked.wait()
                await asyncio.sleep(self.loop.debounce_seconds)
            except TimeoutError:
                pass
            self._poked.clear()
            if not self.active.is_set():
                continue
            try:
                plan = await self.run_pass()
                wake_at = plan.wake_at
            except Exception:  # a failed pass must not end the loop; the next one retries
                log.exception("reconcile pass failed")
                await asyncio.sleep(self.loop.error_backoff_seconds)

    async def run_pass(self) -> Plan:
        started = time.perf_counter()
        now = self.clock()
        view = self.cache.view()
        plan = decide(view, now, self.policy, self.memo)
        await self.applier.apply(plan)
        self._observe(view, plan)
        await self._services_and_specs()
        self.passes += 1
        self.last_plan = plan
        self.metrics.pass_seconds.observe(time.perf_counter() - started)
        if len(plan):
            log.info("pass", actions=len(plan), took=round(time.perf_counter() - started, 4))
        return plan

    # --- metrics -----------------------------------------------------------------------

    def _count_error(self, action: Action, err: errors.ApiError) -> None:
        self.metrics.action_errors.labels(
            type(action).__name__, err.reason or str(err.status)
        ).inc()

    def _observe(self, view: ClusterView, plan: Plan) -> None:
        m = self.metrics
        jobs = {j.key: j for j in view.jobs} if plan.of(PatchJobStatus) else {}
        pods = self.cache.pods
        for action in plan:
            m.actions.labels(type(action).__name__).inc()
            if isinstance(action, EvictPod):
                pod = pods.get(f"{action.namespace}/{action.name}")
                if pod is not None and pod.kind is PodKind.SPOT:
                    m.preemptions.labels(pod.owner, action.reason.value).inc()
            elif isinstance(action, PatchJobStatus):
                job = jobs.get(f"{action.namespace}/{action.name}")
                new, old = action.status, job.status if job else None
                if job is None or old is None:
                    continue
                if new.swaps > old.swaps:
                    m.swaps.labels(job.namespace, job.name).inc(new.swaps - old.swaps)
                heal, before = new.last_heal, old.last_heal
                if heal is None:
                    continue
                pool_name = job.spec.pool or ""
                if before is None or (heal.failed_node, heal.spare, heal.bound_at) != (
                    before.failed_node,
                    before.spare,
                    before.bound_at,
                ):
                    m.heal_seconds.labels(pool_name).observe(heal.seconds)
                    log.info(
                        "healed",
                        job=job.key,
                        node=heal.failed_node,
                        spare=heal.spare,
                        seconds=round(heal.seconds, 3),
                    )
                running = heal.seconds_to_running
                if running is not None and (before is None or before.running_at is None):
                    m.heal_running_seconds.labels(pool_name).observe(running)
        # Gauges of the pools and jobs whose status changed since the last pass: a pass
        # costs what changed, not a label lookup per job of the fleet.
        for pool in self.cache.pools.values():
            ps = pool.status
            if self._gauged.get((Kind.POOL, pool.name)) is ps:
                continue
            self._gauged[(Kind.POOL, pool.name)] = ps
            m.spares.labels(pool.name).set(ps.spares)
            m.spares_target.labels(pool.name).set(ps.spares_target)
            m.spot_gpus.labels(pool.name).set(ps.spot_gpus)
            for state in ("new", *(s.value for s in NodeState), "unknown"):
                m.nodes.labels(pool.name, state).set(ps.nodes.get(state, 0))
        for job in self.cache.jobs.values():
            s = job.status
            if self._gauged.get((Kind.JOB, job.key)) is job:
                continue
            self._gauged[(Kind.JOB, job.key)] = job
            for state, value in (
                ("desired", job.spec.target),
                ("bound", s.replicas),
                ("ready", s.ready_replicas),
            ):
                m.job_replicas.labels(job.namespace, job.name, state).set(value)
            if s.phase is not None:
                for phase in JobPhase:
                    m.job_phase.labels(job.namespace, job.name, phase.value).set(
                        1 if s.phase is phase else 0
                    )
        for kind in (Kind.JOB, Kind.POOL):
            m.invalid_specs.labels(kind.value).set(
                sum(1 for k, _ in self.cache.invalid if k is kind)
            )

    # --- headless Services and spec errors ----------------------------------------------

    async def _services_and_specs(self) -> None:
        while self.cache.deleted_jobs:
            job = self.cache.deleted_jobs.pop()
            self._services.discard(job.key)
            self._gauged.pop((Kind.JOB, job.key), None)
            await self._best_effort(self.applier.delete_service(job.namespace, job.name))
        missing = [
            k for k, job in self.cache.jobs.items() if k not in self._services and not job.deleting
        ]
        if missing:
            await asyncio.gather(*(self._best_effort(self._ensure_service(k)) for k in missing))
        for ident, invalid in list(self.cache.invalid.items()):
            if self._reported_invalid.get(ident) != invalid.resource_version:
                self._reported_invalid[ident] = invalid.resource_version
                await self._best_effort(self._report_invalid(invalid))
        for ident in list(self._reported_invalid):
            if ident not in self.cache.invalid:
                del self._reported_invalid[ident]
                await self._best_effort(self._report_valid(*ident))
        rejected = self.applier.rejected
        for ident, rejection in list(rejected.items()):
            reported = self._reported_rejected.get(ident)
            if reported is None or reported.message != rejection.message:
                self._reported_rejected[ident] = rejection
                await self._best_effort(self._report_rejected(rejection))
        for ident in list(self._reported_rejected):
            if ident not in rejected:
                del self._reported_rejected[ident]
                await self._best_effort(self._report_valid(*ident))

    async def _ensure_service(self, key: str) -> None:
        await self.applier.ensure_service(key)
        self._services.add(key)

    async def _best_effort(self, coro: object) -> None:
        try:
            await coro  # type: ignore[misc]  # a coroutine of one of the helpers above
        except errors.ApiError as err:
            log.warning("housekeeping failed", error=str(err))

    def _status_path(self, kind: Kind, key: str) -> str:
        ns, _, name = key.rpartition("/")
        plural = "trainingjobs" if kind is Kind.JOB else "spotpools"
        return valet_path(plural, ns or None, name, "status")

    async def _set_spec_condition(self, kind: Kind, key: str, cond: Condition) -> None:
        raw = self.cache.raw[kind].get(key) or {}
        old = tuple(Condition.parse(c) for c in (raw.get("status") or {}).get("conditions") or ())
        conditions = set_condition(old, cond)
        body = {"status": {"conditions": [c.to_dict() for c in conditions]}}
        result = await self.applier.api.call(
            "PATCH", self._status_path(kind, key), body, content_type=MERGE
        )
        self.cache.observe(kind, result)

    async def _report_invalid(self, inv: Invalid) -> None:
        key = f"{inv.namespace}/{inv.name}" if inv.namespace else inv.name
        message = str(inv.error)
        running = key in (self.cache.jobs if inv.kind is Kind.JOB else self.cache.pools)
        if running:
            message += " (the last valid spec keeps running)"
        log.warning("invalid spec", kind=inv.kind.value, name=key, error=str(inv.error))
        cond = Condition(SPEC_VALID, False, "InvalidSpec", message, self.clock())
        await self._set_spec_condition(inv.kind, key, cond)
        await self.applier.event(
            inv.kind.value, inv.namespace, inv.name, EventType.WARNING, "InvalidSpec", message
        )

    async def _report_rejected(self, rejection: Rejection) -> None:
        """Once per refusal: ``SpecValid`` False (PodsRejected) and a Warning Event."""
        namespace, _, name = rejection.key.rpartition("/")
        message = (
            f"the API server refused its pods: {rejection.message}; valet tries again when"
            f" the spec changes, or every {self.loop.retry_rejected_seconds:g}s"
        )
        log.warning("pods rejected", kind=rejection.kind.value, name=rejection.key)
        cond = Condition(SPEC_VALID, False, "PodsRejected", message, self.clock())
        await self._set_spec_condition(rejection.kind, rejection.key, cond)
        await self.applier.event(
            rejection.kind.value,
            namespace or None,
            name,
            EventType.WARNING,
            "PodsRejected",
            message,
        )

    async def _report_valid(self, kind: Kind, key: str) -> None:
        if key not in self.cache.raw[kind]:
            return
        cond = Condition(SPEC_VALID, True, "Valid", "", self.clock())
        await self._set_spec_condition(kind, key, cond)
