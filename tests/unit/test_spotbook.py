"""The memo's SpotBook, fed pod by pod, settles spot work exactly as a fresh pass (hypothesis).

Views come from a PodIndex, as in the operator and the simulator, so the book is fed only
the pods that changed. Each example plays a random sequence of what happens to spot work:
pods finishing, failing, leaving, being added (a shard twice, a workload the spec lacks,
unbound), nodes leaving, coming back and draining, the pool's status recording shards
done and its spec changing, and compares every plan with a fresh pass's. Both passes
take their candidates from a book, so each plan must also act on every pod that a scan of
all of them, as settling did before the book, finds not quiet.
"""

from __future__ import annotations

import dataclasses

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.builders import NOW, node, pool, spot, workload
from valet.model.enums import NodeState, PodPhase
from valet.model.plan import BindPod, DeletePod, EvictPod
from valet.model.podindex import PodIndex
from valet.model.shards import ShardSet
from valet.model.specs import ShardStatus, SpotPoolStatus
from valet.model.view import ClusterView, Node
from valet.policy import PassMemo, PolicyConfig, decide

CONFIG = PolicyConfig()
NODES = 4
SHARDS = 6
index = st.integers(0, NODES - 1)
shard = st.integers(0, SHARDS - 1)
ops = st.one_of(
    st.tuples(st.just("phase"), st.integers(0, 9), st.sampled_from(list(PodPhase))),
    st.tuples(st.just("deleting"), st.integers(0, 9), st.none()),
    st.tuples(st.just("gone"), st.integers(0, 9), st.none()),
    st.tuples(st.just("add"), st.integers(0, 9), st.tuples(index, shard, st.booleans())),
    st.tuples(st.just("unbound"), st.integers(0, 9), st.tuples(index, shard)),
    st.tuples(st.just("stray"), st.integers(0, 9), index),  # a workload not in the spec
    st.tuples(st.just("leave"), index, st.none()),
    st.tuples(st.just("join"), index, st.none()),
    st.tuples(st.just("drain"), index, st.none()),
    st.tuples(st.just("done"), st.sets(shard), st.none()),
    st.tuples(st.just("spec"), st.booleans(), st.none()),
)


def _node(i: int) -> Node:
    return node(f"n{i}")


def _not_quiet(view: ClusterView) -> set[str]:
    """Every spot pod settling must act on, by a scan of all of them in the view's order."""
    pool = view.pools[0]
    workloads = {w.name: w for w in pool.spec.workloads}
    finished: set[tuple[str, int]] = set()
    found = set()
    for pod in view.spot_by_pool.get(pool.name, ()):
        if pod.deleting:
            continue
        wl = workloads.get(pod.workload or "")
        shard = (wl.name, pod.shard) if wl is not None and pod.shard is not None else None
        done = shard is not None and shard[1] in pool.status.done_shards(shard[0])
        host = view.nodes.get(pod.node or "")
        quiet = (
            pod.phase not in (PodPhase.SUCCEEDED, PodPhase.FAILED)
            and host is not None
            and host.state is not NodeState.DRAINING
            and wl is not None
            and wl.namespace == pod.namespace
            and not done
            and shard not in finished
        )
        if not quiet:
            found.add(pod.name)
            if pod.phase is PodPhase.SUCCEEDED and shard is not None:
                finished.add(shard)
    return found


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ops, min_size=1, max_size=25))
def test_a_spot_book_fed_pod_by_pod_settles_as_a_fresh_pass(events) -> None:
    nodes = {f"n{i}": _node(i) for i in range(NODES)}
    pods = PodIndex([spot(f"p{i}", f"n{i % NODES}", shard=i) for i in range(4)])
    two = [workload(shards=SHARDS), workload("other", shards=SHARDS)]
    spec = {"workloads": two[:1]}
    done = ShardSet()
    memo = PassMemo()

    def check() -> None:
        status = SpotPoolStatus(shards=(ShardStatus("inf", SHARDS, done),))
        idx = pods.snapshot()
        view = ClusterView(
            nodes=dict(nodes),
            pods=idx.pods,
            index=idx,
            pools=(dataclasses.replace(pool(0, **spec), status=status),),
        )
        plan = decide(view, NOW, CONFIG, memo)
        assert plan == decide(view, NOW, CONFIG)
        settled = {a.name for a in plan.actions if isinstance(a, DeletePod | EvictPod | BindPod)}
        assert _not_quiet(view) <= settled

    check()
    for op, arg, extra in events:
        key = f"batch/p{arg}"
        current = pods.pods.get(key) if isinstance(arg, int) else None
        if op == "phase" and current is not None:
            pods.put(dataclasses.replace(current, phase=extra))
        elif op == "deleting" and current is not None:
            pods.put(dataclasses.replace(current, deleting=True))
        elif op == "gone":
            pods.remove(key)
        elif op == "add":
            at, number, other = extra
            name = "other" if other else "inf"
            pods.put(spot(f"p{arg}", f"n{at}", shard=number, workload=name))
        elif op == "unbound":
            at, number = extra
            pods.put(spot(f"p{arg}", None, shard=number, nominated_node=f"n{at}"))
        elif op == "stray":
            pods.put(spot(f"p{arg}", f"n{extra}", workload="gone"))
        elif op == "leave":
            nodes.pop(f"n{arg}", None)
        elif op == "join":
            nodes[f"n{arg}"] = _node(arg)
        elif op == "drain" and f"n{arg}" in nodes:
            nodes[f"n{arg}"] = node(f"n{arg}", NodeState.DRAINING)
        elif op == "done":
            done = ShardSet.of(arg)
        elif op == "spec":
            spec = {"workloads": two if arg else two[:1]}
        check()


def test_a_second_pod_of_a_shard_finished_in_this_pass_is_stopped_with_it() -> None:
    """Shard 0 ran twice (a status write lost, say): its first pod succeeded, and the pod
    after it in the view's order must not run the shard again, nor count as running it."""
    pods = PodIndex([spot("first", "n0", shard=0), spot("again", "n1", shard=0)])
    memo, nodes = PassMemo(), {"n0": _node(0), "n1": _node(1)}
    pools = (pool(0, workloads=[workload(shards=SHARDS)]),)

    def plan() -> list[str]:
        idx = pods.snapshot()
        view = ClusterView(nodes=nodes, pods=idx.pods, index=idx, pools=pools)
        planned = decide(view, NOW, CONFIG, memo)
        assert planned == decide(view, NOW, CONFIG)
        return sorted(a.name for a in planned.actions if isinstance(a, DeletePod))

    assert plan() == []
    pods.put(dataclasses.replace(pods.pods["batch/first"], phase=PodPhase.SUCCEEDED))
    assert plan() == ["again", "first"]
