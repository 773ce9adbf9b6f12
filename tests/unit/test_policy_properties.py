"""Invariants of decide() over random clusters and event sequences (hypothesis), and the
equivalence of an incrementally kept view and memo with a full pass.

Each example builds a small pool, then plays a random sequence of node faults,
repairs, application failures, scale changes and time steps through SimCluster,
calling decide() after each, and checks every invariant on every plan.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from valet.model.enums import Health, JobPhase, NodeState, PodKind, PodPhase, Reason, Remediation
from valet.model.plan import (
    BindPod,
    CreatePod,
    DeletePod,
    EvictPod,
    PatchPoolStatus,
    Plan,
    SetNodeState,
)
from valet.model.podindex import PodIndex
from valet.model.specs import SpotPoolSpec, TrainingJobSpec
from valet.model.view import ClusterView
from valet.policy import PassMemo, PolicyConfig, decide
from valet.sim.cluster import NodeRec, SimCluster

CONFIG = PolicyConfig(
    staleness_seconds=math.inf, suspect_after_seconds=30, recover_after_seconds=10
)
FAULTS = ("xid:79", "xid:48", "xid:13", "thermal-throttle", "row-remap-failure", "xid:74")
EXAMPLES = 300

ops = st.one_of(
    st.tuples(st.just("fault"), st.integers(0, 7), st.sampled_from(FAULTS)),
    st.tuples(st.just("clear"), st.integers(0, 7), st.just("")),
    st.tuples(st.just("app-fail"), st.integers(0, 7), st.just("")),
    st.tuples(st.just("scale"), st.integers(0, 5), st.just("")),
    st.tuples(st.just("wait"), st.sampled_from([1, 5, 15, 31, 61, 301]), st.just("")),
)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[SimCluster, int]:
    gpus = draw(st.sampled_from([4, 8]))
    n_nodes = draw(st.integers(2, 8))
    lemons = draw(st.sets(st.integers(0, n_nodes - 1), max_size=2))

    def remediate(node: NodeRec, kind: Remediation) -> tuple[float, bool]:
        index = int(node.name[1:])
        return 60.0, kind is Remediation.DIAGNOSE or index not in lemons

    cluster = SimCluster(
        startup_seconds=draw(st.sampled_from([0, 5])),
        remediation=remediate,
        spot_runtime=lambda pod: 40.0,
    )
    for i in range(n_nodes):
        cluster.add_node(f"n{i}", gpus, {"pool": "a", "zone": f"z{i % 2}"})
    cluster.add_pool(
        "p",
        SpotPoolSpec.parse(
            {
                "nodeSelector": {"pool": "a"},
                "buffer": {"count": draw(st.integers(0, 2))},
                "preemption": {"noticeSeconds": draw(st.sampled_from([0, 10, 60]))},
                "lemon": {"failures": 2, "windowSeconds": 3600},
                "circuitBreaker": {"maxFailedPercent": draw(st.sampled_from([20, 50, 100]))},
                "allowedNamespaces": ["batch"],
                "workloads": [
                    {
                        "name": "inf",
                        "namespace": "batch",
                        "gpusPerPod": draw(st.sampled_from([1, 2, 4])),
                        "shards": draw(st.integers(3, 40)),
                        "template": {},
                    }
                ],
            }
        ),
    )
    for j in range(draw(st.integers(1, 2))):
        replicas = draw(st.integers(1, 4))
        cluster.add_job(
            "ns",
            f"job{j}",
            TrainingJobSpec.parse(
                {
                    "replicas": replicas,
                    "minReplicas": draw(st.integers(1, replicas)),
                    "maxReplicas": 5,
                    "gpusPerReplica": draw(st.sampled_from([g for g in (1, 2, 4, 8) if g <= gpus])),
                    "pool": "p",
                    "template": {},
                    "healing": {"backoffSeconds": 0, "maxRestarts": 1000},
                }
            ),
        )
    return cluster, n_nodes


class Invariants:
    """Checks run on every pass; ``completions`` counts finished shards across the run."""

    def __init__(self, cluster: SimCluster) -> None:
        self.cluster = cluster
        self.completions: Counter[int] = Counter()
        cluster.on_action.append(self._on_action)
        self.view: ClusterView | None = None
        # The operator's way of keeping pods: an index fed one change at a time.
        self.index = PodIndex()
        self._records: dict[str, object] = {}
        # The operator's and the simulator's way of deciding: a memo kept across passes.
        self.memo = PassMemo()

    def incremental_view(self, view: ClusterView) -> ClusterView:
        """``view`` with its pods from ``self.index``, fed only what changed since last time
        (a pod created anew under an old name leaves and rejoins, as in the cache)."""
        live = self.cluster.pods
        for key in [k for k in self._records if k not in live]:
            self.index.remove(key)
            del self._records[key]
        for key, rec in live.items():
            if self._records.get(key) is not rec:
                self.index.remove(key)
                self._records[key] = rec
            if self.index.pods.get(key) is not rec.pod:
                self.index.put(rec.pod)
        index = self.index.snapshot()
        return dataclasses.replace(view, pods=index.pods, index=index)

    def _on_action(self, action: object, now: float) -> None:
        if isinstance(action, BindPod):
            rec = self.cluster.pods[f"{action.namespace}/{action.name}"]
            assert rec.pod.phase is not PodPhase.FAILED, f"kubelet rejected {action}: over-commit"

    def before_apply(self, view: ClusterView, plan: Plan) -> None:
        pods = {p.key: p for p in view.pods}
        created = {f"{a.namespace}/{a.name}": a for a in plan.of(CreatePod)}
        states = {name: node.state for name, node in view.nodes.items()}
        for action in plan:
            if isinstance(action, SetNodeState):
                states[action.node] = action.state
            if isinstance(action, BindPod):
                key = f"{action.namespace}/{action.name}"
                kind = created[key].kind if key in created else pods[key].kind
                node = view.nodes[action.node]
                # Never place on a node out of service or unhealthy.
                state = states[action.node]
                assert state in (NodeState.ACTIVE, NodeState.SPARE), (action, state)
                assert node.health.verdict is Health.HEALTHY, (action, node.health)
                assert kind in (PodKind.WORKER, PodKind.SPOT)
            elif isinstance(action, EvictPod | DeletePod):
                pod = pods[f"{action.namespace}/{action.name}"]
                if action.reason is Reason.SPOT_PREEMPTED:
                    assert pod.kind is PodKind.SPOT, f"preempted a non-spot pod {pod}"
                if pod.kind is PodKind.WORKER and pod.node is not None and not pod.phase.terminal:
                    # A healthy running worker leaves only for a scale-down or a bad node.
                    node = view.nodes.get(pod.node)
                    assert (
                        action.reason
                        in (Reason.SCALED_DOWN, Reason.NODE_DRAINING, Reason.JOB_SUCCEEDED)
                        or node is None
                    ), action
        done = {s.workload: s.done for s in view.pools[0].status.shards}.get("inf")
        for action in plan.of(CreatePod):
            if action.shard is not None and done is not None:
                assert action.shard not in done, f"re-ran finished shard {action.shard}"
        # Running, as reported: the shards pods hold (leaving ones too) or are created for,
        # that are not done.
        for patch in plan.of(PatchPoolStatus):
            for status in patch.status.shards:
                held = {
                    p.shard for p in view.pods if p.kind is PodKind.SPOT and not p.phase.terminal
                }
                held |= {a.shard for a in plan.of(CreatePod)}
                assert status.running == len(held - {None} - set(status.done)), status

    def after_apply(self) -> None:
        cluster = self.cluster
        # No GPU over-committed.
        used: Counter[str] = Counter()
        for rec in cluster.pods.values():
            if rec.pod.holds_gpus:
                used[rec.pod.node or ""] += rec.pod.gpus
        for name, rec in cluster.nodes.items():
            assert used[name] <= rec.gpus, f"{name} over-committed: {used[name]}/{rec.gpus}"
        # A shard is never run by two pods at once, never both done and pending, never lost.
        pool = cluster.pools["p"]
        total = pool.spec.workloads[0].shards or 0
        running = Counter(
            r.pod.shard
            for r in cluster.pods.values()
            if r.pod.kind is PodKind.SPOT and not r.pod.phase.terminal and r.pod.live
        )
        assert all(c == 1 for c in running.values()), f"shard run twice at once: {running}"
        for status in pool.status.shards:
            assert status.pending >= 0
            assert len(status.done) + status.running + status.pending == total
            assert not (set(status.done) & set(running)), "a done shard is running"
        # Spares never exceed target while a job waits.
        if any(job.status.phase is JobPhase.WAITING for job in cluster.jobs.values()):
            status = pool.status
            assert status.spares <= status.spares_target


def _pass(cluster: SimCluster, checks: Invariants, now: float) -> None:
    cluster.advance(now)
    view = cluster.view()
    plan = decide(view, now, CONFIG)
    # Incremental indexes and a memo kept across passes decide exactly as a full pass.
    assert decide(checks.incremental_view(view), now, CONFIG, checks.memo) == plan
    checks.before_apply(view, plan)
    finished = {a.name for a in plan.of(DeletePod) if a.reason is Reason.SHARD_DONE}
    for rec in list(cluster.pods.values()):
        if rec.pod.name in finished and rec.pod.phase is PodPhase.SUCCEEDED:
            checks.completions[rec.pod.shard or 0] += 1
    cluster.apply(plan, now)
    checks.after_apply()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(clusters(), st.lists(ops, min_size=1, max_size=25))
def test_invariants_hold_over_random_event_sequences(setup, events) -> None:
    cluster, n_nodes = setup
    checks = Invariants(cluster)
    now = 0.0
    _pass(cluster, checks, now)
    for op, arg, signal in events:
        now += 1
        if op == "fault" and arg < n_nodes:
            verdict = Health.SUSPECT if signal == "thermal-throttle" else Health.UNHEALTHY
            if signal == "xid:13":
                verdict = Health.HEALTHY
            cluster.set_health(f"n{arg}", verdict, (signal,), now)
        elif op == "clear" and arg < n_nodes:
            cluster.set_health(f"n{arg}", Health.HEALTHY, (), now)
        elif op == "app-fail":
            workers = sorted(
                k for k, r in cluster.pods.items() if r.pod.kind is PodKind.WORKER and r.pod.live
            )
            if workers:
                cluster.fail_pod(workers[arg % len(workers)])
        elif op == "scale":
            key = sorted(cluster.jobs)[arg % len(cluster.jobs)]
            job = cluster.jobs[key]
            spec = job.spec
            replicas = max(spec.min_replicas, min(spec.max_replicas, arg))
            cluster.jobs[key] = type(job)(
                job.namespace, job.name, type(spec)(**{**spec.__dict__, "replicas": replicas})
            )
        elif op == "wait":
            now += arg
        _pass(cluster, checks, now)
        # Let deadlines inside the step play out too.
        while cluster.next_deadline() <= now:
            _pass(cluster, checks, now)
    # Run to quiescence: every deadline played, the cluster converges.
    for _ in range(200):
        nxt = cluster.next_deadline()
        if nxt == math.inf:
            break
        now = max(now, nxt)
        _pass(cluster, checks, now)
    # Each shard completed at most once across the whole run.
    assert all(c <= 1 for c in checks.completions.values()), checks.completions
