"""Every Prometheus metric valet exports, in one place (prefix ``valet_``).

Agent metrics (``valet_gpu_*``) describe one node's GPUs; operator metrics describe the
pool, jobs and heals. Each process registers only its own set, in a registry it owns,
so tests and multiple instances never collide.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from valet.agent.readings import NodeReading
from valet.model.nodehealth import Verdict

HEAL_BUCKETS = (0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120, 300, 600)


class AgentMetrics:
    """The node agent's metrics (DESIGN §6)."""

    def __init__(self, node: str, registry: CollectorRegistry | None = None) -> None:
        self.node = node
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.gpu_healthy = Gauge(
            "valet_gpu_healthy",
            "1 if the GPU is healthy, 0 if not",
            ["node", "gpu", "uuid"],
            registry=r,
        )
        self.node_health = Gauge(
            "valet_gpu_node_health",
            "Node verdict: 1 for the current one of healthy/suspect/unhealthy/unknown",
            ["node", "verdict"],
            registry=r,
        )
        self.xid = Counter(
            "valet_gpu_xid_events", "XID events seen, by code", ["node", "gpu", "xid"], registry=r
        )
        self.ecc = Gauge(
            "valet_gpu_ecc_errors",
            "ECC error counts by kind (sbe/dbe) and counter",
            ["node", "gpu", "kind", "counter"],
            registry=r,
        )
        self.row_remap_failure = Gauge(
            "valet_gpu_row_remap_failure", "1 if row remapping failed", ["node", "gpu"], registry=r
        )
        self.temperature = Gauge(
            "valet_gpu_temperature_celsius", "GPU temperature", ["node", "gpu"], registry=r
        )
        self.throttle = Gauge(
            "valet_gpu_throttled",
            "1 while clocks are throttled, by reason",
            ["node", "gpu", "reason"],
            registry=r,
        )
        self.probe_seconds = Histogram(
            "valet_gpu_probe_duration_seconds", "Time one probe takes", ["node"], registry=r
        )
        self.probe_errors = Counter(
            "valet_gpu_probe_errors", "Probe calls that failed", ["node"], registry=r
        )
        self.heartbeat = Gauge(
            "valet_gpu_last_probe_timestamp_seconds",
            "When the agent last probed (agent-silent alerts use it)",
            ["node"],
            registry=r,
        )

    def observe(self, reading: NodeReading, verdict: Verdict, seconds: float, now: float) -> None:
        node = self.node
        self.probe_seconds.labels(node).observe(seconds)
        self.heartbeat.labels(node).set(now)
        errors = len(reading.probe_errors) + sum(len(g.errors) for g in reading.gpus)
        if errors:
            self.probe_errors.labels(node).inc(errors)
        for v in ("healthy", "suspect", "unhealthy", "unknown"):
            self.node_health.labels(node, v).set(1 if verdict.health.value == v else 0)
        for status in verdict.gpus:
            self.gpu_healthy.labels(node, str(status.index), status.uuid).set(
                1 if status.healthy else 0
            )
        for gpu in reading.gpus:
            index = str(gpu.index)
            for xid, events in gpu.xid_events or tuple((x, 1) for x in gpu.xids):
                self.xid.labels(node, index, str(xid)).inc(events)
            for kind, counter, value in (
                ("sbe", "volatile", gpu.ecc_sbe_volatile),
                ("dbe", "volatile", gpu.ecc_dbe_volatile),
                ("sbe", "aggregate", gpu.ecc_sbe_aggregate),
                ("dbe", "aggregate", gpu.ecc_dbe_aggregate),
            ):
                if value is not None:
                    self.ecc.labels(node, index, kind, counter).set(value)
            self.row_remap_failure.labels(node, index).set(1 if gpu.row_remap_failure else 0)
            if gpu.temperature_c is not None:
                self.temperature.labels(node, index).set(gpu.temperature_c)
            for reason in ("thermal", "power-brake", "hw-slowdown"):
                self.throttle.labels(node, index, reason).set(1 if reason in gpu.throttle else 0)


class OperatorMetrics:
    """The operator's metrics (DESIGN §6): pools, nodes, jobs, heals, passes."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.nodes = Gauge(
            "valet_nodes", "Pool nodes by lifecycle state", ["pool", "state"], registry=r
        )
        self.spares = Gauge(
            "valet_spares", "Spare nodes in the healing buffer", ["pool"], registry=r
        )
        self.spares_target = Gauge(
            "valet_spares_target", "Target size of the healing buffer", ["pool"], registry=r
        )
        self.spot_gpus = Gauge(
            "valet_spot_gpus", "GPUs packed with spot (preemptible) pods", ["pool"], registry=r
        )
        self.preemptions = Counter(
            "valet_preemptions", "Spot pods evicted, by reason", ["pool", "reason"], registry=r
        )
        self.heal_seconds = Histogram(
            "valet_heal_latency_seconds",
            "Fault observed to replacement worker bound",
            ["pool"],
            buckets=HEAL_BUCKETS,
            registry=r,
        )
        self.heal_running_seconds = Histogram(
            "valet_heal_to_running_seconds",
            "Fault to replacement worker Running: the heal as the job sees it",
            ["pool"],
            buckets=HEAL_BUCKETS,
            registry=r,
        )
        self.swaps = Counter(
            "valet_swaps",
            "Workers moved off a failing node onto a spare",
            ["namespace", "job"],
            registry=r,
        )
        self.job_replicas = Gauge(
            "valet_job_replicas",
            "TrainingJob workers by state (desired, bound, ready)",
            ["namespace", "job", "state"],
            registry=r,
        )
        self.job_phase = Gauge(
            "valet_job_phase",
            "1 for the TrainingJob's current phase",
            ["namespace", "job", "phase"],
            registry=r,
        )
        self.pass_seconds = Histogram(
            "valet_reconcile_duration_seconds",
            "One reconcile pass: snapshot, decide, apply",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.actions = Counter(
            "valet_actions", "Plan actions applied, by type", ["action"], registry=r
        )
        self.action_errors = Counter(
            "valet_action_errors",
            "Plan actions that failed after retries, by type and reason",
            ["action", "reason"],
            registry=r,
        )
        self.invalid_specs = Gauge(
            "valet_invalid_specs",
            "TrainingJobs and SpotPools with a spec valet cannot run",
            ["kind"],
            registry=r,
        )
