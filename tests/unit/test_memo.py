"""A PassMemo kept across passes decides exactly as a fresh pass (hypothesis).

The node side of a pass is where the memo reuses the most and where time alone changes
verdicts: Leases renewed or stopped, agent reports going stale, kubelets passing their
grace, nodes joining, leaving and changing pool, a clock stepping back. Each example
plays a random sequence of those and compares every plan with a fresh pass's.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import RUNNING, job, node, pool, spot, worker, workload
from valet.model.enums import Health, JobPhase, NodeState
from valet.model.specs import SpotPoolSpec, TrainingJobStatus
from valet.model.view import ClusterView, Node, NodeHealth, Pool
from valet.policy import PassMemo, PolicyConfig, decide

CONFIG = PolicyConfig(
    staleness_seconds=60, node_grace_seconds=20, suspect_after_seconds=30, recover_after_seconds=10
)
NODES = 6
STATES = (None, *NodeState)
VERDICTS = (Health.HEALTHY, Health.SUSPECT, Health.UNHEALTHY)
SIGNALS = ("xid:79", "xid:48", "thermal-throttle", "row-remap-failure")
POOL_LABELS = ({"pool": "a"}, {"pool": "b"}, {})

index = st.integers(0, NODES - 1)
ops = st.one_of(
    st.tuples(st.just("renew"), index, st.none()),
    st.tuples(st.just("drop-lease"), index, st.none()),
    st.tuples(
        st.just("report"), index, st.tuples(st.sampled_from(VERDICTS), st.sampled_from(SIGNALS))
    ),
    st.tuples(st.just("state"), index, st.tuples(st.sampled_from(STATES), st.booleans())),
    st.tuples(st.just("ready"), index, st.booleans()),
    st.tuples(st.just("label"), index, st.sampled_from(POOL_LABELS)),
    st.tuples(st.just("leave"), index, st.none()),
    st.tuples(st.just("join"), index, st.none()),
    st.tuples(st.just("copy"), index, st.none()),
    st.tuples(st.just("rejoin"), index, index),
    st.tuples(st.just("wait"), st.sampled_from([0.5, 3, 11, 21, 59, 61, 121]), st.none()),
    st.tuples(st.just("clock-back"), st.sampled_from([1, 30]), st.none()),
    st.tuples(st.just("grace"), st.sampled_from([5, 20, 45]), st.none()),
    st.tuples(st.just("job"), st.sampled_from(list(JobPhase)), st.none()),
)


def _pool_b(grace: int) -> Pool:
    raw = {
        "nodeSelector": {"pool": "b"},
        "buffer": {"count": 1},
        "nodeGraceSeconds": grace,
        "allowedNamespaces": ["batch"],
        "workloads": [],
    }
    return Pool("q", SpotPoolSpec.parse(raw))


def _node(i: int, now: float, labels: dict[str, str]) -> Node:
    return node(f"n{i}", heartbeat=now, labels=labels, ready_heartbeat=now, ready_since=0.0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=30), st.sets(index, max_size=3))
def test_a_memo_kept_across_passes_decides_as_a_fresh_pass(events, leased) -> None:
    now = 1_000.0
    nodes = {f"n{i}": _node(i, now, POOL_LABELS[i % 2]) for i in range(NODES)}
    leases = {f"n{i}": now for i in leased}
    pods = (
        worker("j-0", "n0"),
        worker("j-1", "n2", rank=1),
        spot("s-0", "n1", gpus=4),
        spot("s-1", "n3", gpus=2),
    )
    jobs = [job(status=RUNNING, replicas=2)]
    pools = [pool(workloads=[workload()]), _pool_b(20)]
    memo = PassMemo()

    def check() -> None:
        view = ClusterView(
            nodes=dict(nodes), pods=pods, jobs=tuple(jobs), pools=tuple(pools), leases=dict(leases)
        )
        assert decide(view, now, CONFIG, memo) == decide(view, now, CONFIG)

    check()
    for op, arg, extra in events:
        name = f"n{arg}"
        current = nodes.get(name)
        if op == "wait":
            now += arg
        elif op == "clock-back":
            now -= arg
        elif op == "grace":
            pools[1] = _pool_b(arg)
        elif op == "job":
            jobs[0] = dataclasses.replace(
                jobs[0], status=TrainingJobStatus(phase=arg, replicas=2, ready_replicas=2)
            )
        elif op == "renew":
            leases[name] = now
        elif op == "drop-lease":
            leases.pop(name, None)
        elif op == "join" and current is None:
            nodes[name] = _node(arg, now, POOL_LABELS[arg % 2])
        elif current is None:
            pass
        elif op == "leave":
            del nodes[name]
        elif op == "rejoin":  # two left and came back, new, between passes: now last in order
            for i in dict.fromkeys((arg, extra)):
                gone = nodes.pop(f"n{i}", None)
                labels = dict(gone.labels) if gone is not None else POOL_LABELS[i % 2]
                nodes[f"n{i}"] = dataclasses.replace(_node(i, now, labels), state=None)
        elif op == "copy":  # an equal Node, yet a new object
            nodes[name] = dataclasses.replace(current)
        elif op == "report":
            verdict, signal = extra
            health = NodeHealth(verdict, () if verdict is Health.HEALTHY else (signal,), now, now)
            nodes[name] = dataclasses.replace(current, health=health)
        elif op == "state":
            state, marked = extra
            nodes[name] = dataclasses.replace(
                current,
                state=state,
                unschedulable=marked,
                spare_taint=state is NodeState.SPARE,
                out_of_service=marked and state is NodeState.DRAINING,
                state_since=now,
            )
        elif op == "ready":
            nodes[name] = dataclasses.replace(
                current, ready=extra, ready_since=now, ready_heartbeat=now
            )
        elif op == "label":
            nodes[name] = dataclasses.replace(current, labels=extra)
        check()
