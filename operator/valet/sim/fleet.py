"""The fleet simulator: runs policy.decide over a synthetic GPU fleet for weeks of failures.

Several policies see the same seeded failure sequence. Each is only a different
SpotPool/TrainingJob spec for the same decide(): "no-buffer" keeps no spares and
jobs wait for repair, "idle-buffer" keeps spares idle, "valet" packs spares with
spot work and lets jobs shrink elastically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import math
import random
import time
from collections.abc import Callable, Iterator

from valet.model.enums import Health, NodeState, PodKind, PodPhase, Remediation
from valet.model.plan import Action, EvictPod, Plan, SetNodeState
from valet.model.specs import SpotPoolSpec, TrainingJobSpec
from valet.policy import PassMemo, PolicyConfig, decide
from valet.sim.cluster import NodeRec, SimCluster
from valet.sim.failures import Failure, draw_failures, percentile

POOL = "fleet"
NAMESPACE = "train"
SPOT_NAMESPACE = "batch"


@dataclasses.dataclass(frozen=True)
class FleetConfig:
    gpus: int = 16384
    gpus_per_node: int = 8
    days: float = 54.0
    seed: int = 1
    buffer_percent: float = 5.0  # spares held by the buffered policies
    job_nodes: int = 256  # nodes per TrainingJob
    elastic_slack_percent: float = 10.0  # valet jobs may shrink this far below replicas
    checkpoint_minutes: float = 30.0
    restart_minutes: float = 10.0  # re-rendezvous and checkpoint load after any change
    startup_seconds: float = 60.0  # pod start-up
    notice_seconds: int = 30
    # Hot spares of the pool (a count, or "auto"); when set, a "valet+hot" policy runs too,
    # so that the report shows what keeping them unpacked costs and gains.
    hot: int | str | None = None
    shard_minutes: float = 120.0  # mean runtime of one batch-inference shard
    spot_gpus_per_pod: int = 8
    # Shards end on this grid: batch work is chunked to the hour mark (keeps passes few).
    spot_grid_minutes: float = 120.0
    failure_scale: float = 1.0
    rma_days: float = 3.0
    diagnose_minutes: float = 10.0
    reboot_minutes: float = 40.0
    resolution_seconds: float = 60.0  # events this close together share one policy pass

    @property
    def nodes(self) -> int:
        return self.gpus // self.gpus_per_node

    @property
    def seconds(self) -> float:
        return self.days * 86400


@dataclasses.dataclass(frozen=True)
class PolicySetup:
    name: str
    buffer_percent: float
    spot: bool
    elastic: bool
    hot: int | str | None = None


def standard_policies(
    buffer_percent: float, hot: int | str | None = None
) -> tuple[PolicySetup, ...]:
    policies = (
        PolicySetup("no-buffer", 0.0, spot=False, elastic=False),
        PolicySetup("idle-buffer", buffer_percent, spot=False, elastic=False),
        PolicySetup("valet", buffer_percent, spot=True, elastic=True),
    )
    if hot is None:
        return policies
    return (*policies, PolicySetup("valet+hot", buffer_percent, True, True, hot))


@dataclasses.dataclass(frozen=True)
class PolicyResult:
    policy: str
    spares: int
    ettr: float  # useful training GPU-time / GPU-time the jobs asked for
    utilisation: float  # (useful training + delivered spot) / all GPU-time, spares included
    spot_gpu_hours: float
    spot_lost_gpu_hours: float
    swaps: int
    interruptions: int
    ttr_p50_minutes: float
    ttr_p99_minutes: float
    retired: int
    passes: int
    wall_seconds: float


@dataclasses.dataclass
class _JobMeter:
    """Goodput of one job: productive segments, checkpoints, and time to recover."""

    gpus_per_worker: int
    min_workers: int
    running: frozenset[str] = frozenset()
    segment_start: float | None = None
    rate: float = 0.0  # GPUs productive in the current segment
    committed: float = 0.0  # GPU-seconds safely checkpointed
    fault_at: float | None = None
    ttr: list[float] = dataclasses.field(default_factory=list)
    interruptions: int = 0

    def close(self, now: float, checkpoint: float, final: bool = False) -> None:
        if self.segment_start is not None and now > self.segment_start:
            productive = now - self.segment_start
            kept = productive if final else math.floor(productive / checkpoint) * checkpoint
            self.committed += self.rate * kept
        self.segment_start = None

    def observe(self, now: float, running: frozenset[str], cfg: FleetConfig) -> None:
        if running == self.running:
            return
        lost = bool(self.running - running)
        self.close(now, cfg.checkpoint_minutes * 60)
        if lost:
            self.interruptions += 1
            if self.fault_at is None:
                self.fault_at = now
        self.running = running
        if len(running) >= self.min_workers and running:
            self.segment_start = now + cfg.restart_minutes * 60
            self.rate = len(running) * self.gpus_per_worker
            if self.fault_at is not None:
                self.ttr.append(self.segment_start - self.fault_at)
                self.fault_at = None


class FleetRun:
    """One policy over the fleet."""

    def __init__(self, cfg: FleetConfig, setup: PolicySetup, failures: list[Failure]) -> None:
        self.cfg, self.setup, self.failures = cfg, setup, failures
        self.rng = random.Random(cfg.seed * 7919 + len(setup.name))
        self.policy = PolicyConfig(
            staleness_seconds=math.inf,  # simulated agents never go silent
            # Spot pods in one pass, all of them: the operator creates them in chunks to keep
            # a pass short, the next chunk at once, but the simulator's next pass would come
            # a whole resolution step later and only delay the packing by it.
            max_spot_pods_per_pass=None,
        )
        self.repairs: dict[str, Failure] = {}
        self.rma_returns: list[tuple[float, str]] = []
        self.spot_lost = 0.0
        self.passes = 0
        self.memo = PassMemo()  # what each pass judged, for the next to start from
        self.cluster = SimCluster(
            startup_seconds=cfg.startup_seconds,
            remediation=self._remediate,
            spot_runtime=self._spot_runtime,
            finish_grid=cfg.spot_grid_minutes * 60,
        )
        self.cluster.on_action.append(self._observe_action)
        self.cluster.changed_pods = set()  # what _meter looks at, instead of every pod
        self.spares = math.ceil(cfg.nodes * setup.buffer_percent / 100)
        self._build()

    def _build(self) -> None:
        cfg, setup = self.cfg, self.setup
        for i in range(cfg.nodes):
            self.cluster.add_node(
                f"node-{i:05d}",
                cfg.gpus_per_node,
                {"pool": POOL, "topology.kubernetes.io/zone": f"rack-{i // 32:03d}"},
            )
        workloads = []
        if setup.spot:
            workloads.append(
                {
                    "name": "batch-inference",
                    "namespace": SPOT_NAMESPACE,
                    "gpusPerPod": cfg.spot_gpus_per_pod,
                    "shards": 10_000_000,
                    "template": {},
                }
            )
        self.cluster.add_pool(
            POOL,
            SpotPoolSpec.parse(
                {
                    "nodeSelector": {"pool": POOL},
                    "buffer": {"count": self.spares}
                    | ({"hot": setup.hot} if setup.hot is not None else {}),
                    "preemption": {"noticeSeconds": cfg.notice_seconds},
                    "allowedNamespaces": [SPOT_NAMESPACE],
                    "workloads": workloads,
                }
            ),
        )
        demand = cfg.nodes - self.spares
        jobs = max(1, demand // cfg.job_nodes)
        sizes = [demand // jobs + (1 if i < demand % jobs else 0) for i in range(jobs)]
        self.meters: dict[str, _JobMeter] = {}
        # Running workers by job, kept from the pods that changed (pod key -> (job, name)).
        self.running: dict[str, set[str]] = {}
        self._counted: dict[str, tuple[str, str]] = {}
        self.demand_gpus = 0
        for i, size in enumerate(sizes):
            slack = math.floor(size * cfg.elastic_slack_percent / 100) if setup.elastic else 0
            spec = TrainingJobSpec.parse(
                {
                    "replicas": size,
                    "minReplicas": size - slack,
                    "maxReplicas": size,
                    "gpusPerReplica": cfg.gpus_per_node,
                    "pool": POOL,
                    "healing": {"maxRestarts": 1_000_000, "backoffSeconds": 0},
                    "template": {},
                }
            )
            self.cluster.add_job(NAMESPACE, f"job-{i}", spec)
            self.meters[f"{NAMESPACE}/job-{i}"] = _JobMeter(cfg.gpus_per_node, size - slack)
            self.running[f"{NAMESPACE}/job-{i}"] = set()
            self.demand_gpus += size * cfg.gpus_per_node

    # --- the world around the policy -----------------------------------------------------

    def _remediate(self, node: NodeRec, kind: Remediation) -> tuple[float, bool]:
        if kind is Remediation.DIAGNOSE:
            return self.cfg.diagnose_minutes * 60, True
        failure = self.repairs.get(node.name)
        if failure is None or node.remediation.attempts >= 1:
            return self.cfg.reboot_minutes * 60, True  # an escalated reboot fixes it
        return failure.kind.repair_minutes * 60, failure.fixes

    def _spot_runtime(self, pod: object) -> float:
        return self.cfg.shard_minutes * 60 * self.rng.uniform(0.5, 1.5)

    def _observe_action(self, action: Action, now: float) -> None:
        # Most actions (creates, binds, deletes, Events): nothing to see; type() is cheap.
        if type(action) is EvictPod:
            rec = self.cluster.pods.get(f"{action.namespace}/{action.name}")
            if rec is not None and rec.pod.kind is PodKind.SPOT and rec.pod.started_at:
                self.spot_lost += rec.pod.gpus * (now - rec.pod.started_at)
        elif type(action) is SetNodeState and action.state is NodeState.RETIRED:
            self.rma_returns.append((now + self.cfg.rma_days * 86400, action.node))

    def _inject(self, failure: Failure, now: float) -> None:
        name = f"node-{failure.node:05d}"
        rec = self.cluster.nodes[name]
        if rec.state in (NodeState.DRAINING, NodeState.HEALING, NodeState.RETIRED):
            return  # already out of service
        if not failure.kind.node_fault:
            pods = self.cluster.pods
            for key in sorted(self.cluster.pods_on(name)):
                pod = pods[key].pod
                if pod.node == name and pod.kind is PodKind.WORKER and pod.live:
                    self.cluster.fail_pod(key)
            return
        self.repairs[name] = failure
        self.cluster.set_health(name, Health.UNHEALTHY, (failure.kind.signal,), now)

    def _return_from_rma(self, name: str, now: float) -> None:
        rec = self.cluster.nodes[name]
        rec.state, rec.faults, rec.unschedulable = None, [], False
        rec.health = dataclasses.replace(rec.health, verdict=Health.HEALTHY, signals=(), since=now)
        self.cluster.touch(name)

    # --- the loop -------------------------------------------------------------------------

    def run(self, progress: Callable[[float], None] | None = None) -> PolicyResult:
        started = time.perf_counter()
        end, failures, now = self.cfg.seconds, list(self.failures), 0.0
        failures.reverse()
        plan = self._pass(now)
        reported = 0.0
        while True:
            nxt = min(
                self.cluster.next_deadline(),
                failures[-1].at if failures else math.inf,
                min((t for t, _ in self.rma_returns), default=math.inf),
                plan.wake_at if plan.wake_at is not None else math.inf,
            )
            if nxt >= end:
                break
            step = self.cfg.resolution_seconds
            nxt = min(end, math.ceil(nxt / step) * step) if step else nxt
            woken = plan.wake_at is not None and plan.wake_at <= nxt
            now = nxt
            changed = self.cluster.advance(now) or woken
            while failures and failures[-1].at <= now:
                self._inject(failures.pop(), now)
                changed = True
            for t, name in [r for r in self.rma_returns if r[0] <= now]:
                self.rma_returns.remove((t, name))
                self._return_from_rma(name, now)
                changed = True
            if changed:
                plan = self._pass(now)
            if progress is not None and now / end - reported >= 0.001:
                reported = now / end  # every 0.1%: a progress bar's update costs more than a step
                progress(reported)
        return self._result(end, time.perf_counter() - started)

    def _pass(self, now: float) -> Plan:
        view = self.cluster.view()
        plan = decide(view, now, self.policy, self.memo)
        self.cluster.apply(plan, now)
        self.passes += 1
        self._meter(now)
        return plan

    def _meter(self, now: float) -> None:
        """Each job's running workers, from the pods that changed since the last pass; a job
        whose set is as the meter saw it last has nothing to observe."""
        changed = self.cluster.changed_pods
        if not changed:
            return
        pods, counted, running = self.cluster.pods, self._counted, self.running
        worker, up = PodKind.WORKER, PodPhase.RUNNING
        jobs: set[str] = set()
        for key in changed:
            rec = pods.get(key)
            pod = rec.pod if rec is not None else None
            now_running = pod is not None and pod.kind is worker and pod.phase is up and pod.live
            before = counted.get(key)
            if before is not None and not now_running:
                del counted[key]
                running[before[0]].discard(before[1])
                jobs.add(before[0])
            elif before is None and now_running and pod is not None:
                counted[key] = pod.owner, pod.name
                running[pod.owner].add(pod.name)
                jobs.add(pod.owner)
        changed.clear()
        for key in jobs:
            self.meters[key].observe(now, frozenset(running[key]), self.cfg)

    def _result(self, end: float, wall: float) -> PolicyResult:
        for meter in self.meters.values():
            meter.close(end, self.cfg.checkpoint_minutes * 60, final=True)
        useful = sum(m.committed for m in self.meters.values())
        pool = self.cluster.pools[POOL].status
        spot = pool.spot_gpu_seconds
        ttr = [t for m in self.meters.values() for t in m.ttr]
        total_gpu_seconds = self.cfg.nodes * self.cfg.gpus_per_node * end
        return PolicyResult(
            policy=self.setup.name,
            spares=self.spares,
            ettr=useful / (self.demand_gpus * end),
            utilisation=(useful + spot) / total_gpu_seconds,
            spot_gpu_hours=spot / 3600,
            spot_lost_gpu_hours=self.spot_lost / 3600,
            swaps=sum(job.status.swaps for job in self.cluster.jobs.values()),
            interruptions=sum(m.interruptions for m in self.meters.values()),
            ttr_p50_minutes=percentile(ttr, 50) / 60,
            ttr_p99_minutes=percentile(ttr, 99) / 60,
            retired=sum(1 for n in self.cluster.nodes.values() if n.state is NodeState.RETIRED),
            passes=self.passes,
            wall_seconds=wall,
        )


def simulate(
    cfg: FleetConfig,
    policies: tuple[PolicySetup, ...] | None = None,
    progress: Callable[[str, float], None] | None = None,
) -> list[PolicyResult]:
    """Run every policy over the same seeded failures; results in the order given."""
    setups = policies or standard_policies(cfg.buffer_percent, cfg.hot)
    failures = draw_failures(cfg.nodes, cfg.seconds, seed=cfg.seed, scale=cfg.failure_scale)
    results = []
    with _fewer_collections():
        for setup in setups:
            run = FleetRun(cfg, setup, failures)
            report = (lambda f, name=setup.name: progress(name, f)) if progress else None
            results.append(run.run(report))
    return results


@contextlib.contextmanager
def _fewer_collections() -> Iterator[None]:
    """A run allocates millions of short-lived objects (pod versions, views) and makes few
    cycles: the cycle collector's default (a collection every 700 allocations, each old
    generation in turn) took 12% of a 100k-GPU run. Restored afterwards."""
    before = gc.get_threshold()
    gc.set_threshold(200_000, 50, 1000)
    try:
        yield
    finally:
        gc.set_threshold(*before)


def size_buffer(
    cfg: FleetConfig,
    target_ettr: float,
    percents: tuple[float, ...] = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20),
    progress: Callable[[str, float], None] | None = None,
) -> tuple[list[PolicyResult], float | None]:
    """Sweep valet's buffer size; return every result and the smallest meeting the target."""
    setups = tuple(PolicySetup(f"valet@{p:g}%", p, spot=True, elastic=True) for p in percents)
    results = simulate(cfg, setups, progress)
    best = next((p for p, r in zip(percents, results, strict=True) if r.ettr >= target_ettr), None)
    return results, best
