"""Hot spares: ``buffer.hot`` spares stay unpacked so a failure takes one at once, and a
packed spare starts its notice at that moment to become the next hot one."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.builders import NOW, RUNNING, job, node, pool, spot, view, worker, workload
from valet.model.enums import Health, NodeState, PodKind, Reason
from valet.model.plan import BindPod, CreatePod, EvictPod, SetNodeState
from valet.policy import decide
from valet.policy.buffer import auto_hot


def _cluster(spare_spots: dict[str, int], hot: int | str, failing: bool = True):
    health = {"health": Health.UNHEALTHY, "signals": ("xid:79",), "since": NOW - 1}
    nodes = [node("ok"), node("bad", **(health if failing else {}))]
    nodes += [node(name, NodeState.SPARE) for name in spare_spots]
    pods = [worker("j-0-0", "ok", rank=0), worker("j-1-0", "bad", rank=1)]
    for name, used in spare_spots.items():
        pods += [spot(f"{name}-s{i}", name) for i in range(used)]
    p = pool(len(spare_spots), [workload()], hot=hot, preemption={"noticeSeconds": 60})
    return view(nodes, pods, [job(replicas=2, status=RUNNING)], [p])


def _hot_evictions(plan) -> set[str]:
    return {a.name for a in plan.of(EvictPod) if a.reason is Reason.HOT_SPARE}


def test_the_hot_spare_stays_empty_and_the_others_are_packed() -> None:
    plan = decide(_cluster({"s1": 0, "s2": 0}, hot=1, failing=False), NOW)
    assert {a.node for a in plan.of(BindPod)} == {"s2"}  # s1 (first by name) stays hot
    assert _hot_evictions(plan) == set()


def test_a_packed_spare_is_cleared_with_notice_to_become_hot() -> None:
    plan = decide(_cluster({"s1": 8, "s2": 3}, hot=1, failing=False), NOW)
    # The least packed spare is cleared, each pod with the pool's full notice.
    assert _hot_evictions(plan) == {"s2-s0", "s2-s1", "s2-s2"}
    assert {a.grace_seconds for a in plan.of(EvictPod)} == {60}
    assert not [a for a in plan.of(CreatePod) if a.nominated_node == "s2"]


def test_a_failure_takes_the_hot_spare_at_once_and_the_next_one_starts_its_notice() -> None:
    plan = decide(_cluster({"cold": 4, "hot": 0}, hot=1), NOW)
    (replacement,) = [a for a in plan.of(CreatePod) if a.kind is PodKind.WORKER]
    assert replacement.nominated_node == "hot"
    bind = BindPod("ns", replacement.name, "hot", healed_at=NOW)
    assert bind in plan.of(BindPod)  # no notice to wait
    assert {a.node: a.state for a in plan.of(SetNodeState)}["hot"] is NodeState.ACTIVE
    # In the same pass the packed spare starts clearing, to be the next hot one.
    assert _hot_evictions(plan) == {f"cold-s{i}" for i in range(4)}


def test_a_burst_beyond_the_hot_spares_waits_the_notice_of_a_packed_one() -> None:
    plan = decide(_cluster({"cold": 4}, hot=0), NOW)
    (replacement,) = [a for a in plan.of(CreatePod) if a.kind is PodKind.WORKER]
    assert replacement.nominated_node == "cold"
    assert [a for a in plan.of(BindPod) if a.name == replacement.name] == []
    assert {a.grace_seconds for a in plan.of(EvictPod) if a.name.startswith("cold")} == {60}


@pytest.mark.parametrize(
    ("rate_per_day", "notice", "expected"),
    [
        (0.0, 60, 1),  # no failure seen yet: still one, the first failure is what users see
        (24.0, 60, 1),  # one an hour, 60 s notice: a second within the minute is ~0.03%
        (24 * 60.0, 60, 4),  # one a minute: mean 1 per notice; P(N > 4) < 1%
        (24 * 30.0, 60, 3),  # mean 0.5: P(N > 2) = 1.4%, P(N > 3) = 0.18%
    ],
)
def test_auto_hot_is_the_poisson_quantile_of_failures_within_one_notice(
    rate_per_day: float, notice: int, expected: int
) -> None:
    assert auto_hot(rate_per_day / 86400, notice) == expected


def _tail(k: int, mean: float) -> float:
    """P(N > k) for N ~ Poisson(mean), summed upwards so that it stays exact."""
    return math.fsum(
        math.exp(i * math.log(mean) - mean - math.lgamma(i + 1))
        for i in range(k + 1, k + 1 + int(mean * 10 + 100))
    )


@given(st.floats(1e-6, 0.01), st.integers(1, 3600))
def test_auto_hot_leaves_less_than_the_risk_of_more_failures_within_a_notice(
    rate: float, notice: int
) -> None:
    k, mean = auto_hot(rate, notice), rate * notice
    assert _tail(k, mean) < 0.01 + 1e-9
    if k > 1:  # and it is the smallest such k
        assert _tail(k - 1, mean) >= 0.01 - 1e-9


def test_an_empty_spare_is_kept_hot_rather_than_one_still_clearing() -> None:
    clearing = [spot(f"a-s{i}", "a", deleting=True) for i in range(4)]
    nodes = [node("w"), node("a", NodeState.SPARE), node("b", NodeState.SPARE)]
    p = pool(2, [workload()], hot=1, preemption={"noticeSeconds": 60})
    pods = [worker("j-0-0", "w"), *clearing]
    plan = decide(view(nodes, pods, [job(replicas=1, status=RUNNING)], [p]), NOW)
    spot_binds = {a.node for a in plan.of(BindPod) if a.name.startswith("p-")}
    assert spot_binds and "b" not in spot_binds  # b, empty, stays hot; a is packed again


def test_above_target_the_most_packed_spare_is_released_and_the_empty_one_stays() -> None:
    nodes = [node("w"), node("a-packed", NodeState.SPARE), node("b-empty", NodeState.SPARE)]
    pods = [worker("j-0-0", "w"), *(spot(f"a-packed-s{i}", "a-packed") for i in range(6))]
    p = pool(1, [workload()], hot=1, preemption={"noticeSeconds": 60})
    plan = decide(view(nodes, pods, [job(replicas=1, status=RUNNING)], [p]), NOW)
    released = {a.node for a in plan.of(SetNodeState) if a.state is NodeState.ACTIVE}
    assert released == {"a-packed"}
    assert _hot_evictions(plan) == set()  # the spare kept is already empty: nothing to clear
