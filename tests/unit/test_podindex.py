"""PodIndex, fed one change at a time, groups pods exactly as a full scan of the pod list."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.builders import node
from valet.model.enums import PodKind, PodPhase
from valet.model.podindex import PodIndex
from valet.model.view import ClusterView, Pod

NODES = ("n0", "n1", "n2")

pods = st.builds(
    Pod,
    namespace=st.just("ns"),
    name=st.sampled_from([f"p{i}" for i in range(8)]),
    kind=st.sampled_from(PodKind),
    gpus=st.integers(1, 8),
    owner=st.sampled_from(["ns/a", "ns/b", "pool"]),
    node=st.none() | st.sampled_from(NODES),
    phase=st.sampled_from(PodPhase),
    deleting=st.booleans(),
    nominated_node=st.none() | st.sampled_from(NODES),
)
changes = st.lists(
    st.one_of(
        st.tuples(st.just("put"), pods),
        st.tuples(st.just("remove"), st.sampled_from([f"ns/p{i}" for i in range(8)])),
        st.tuples(st.just("bind"), st.sampled_from([f"ns/p{i}" for i in range(8)])),
        st.tuples(st.just("snapshot"), st.none()),
    ),
    max_size=40,
)
GROUPS = ("pods_by_node", "workers_by_job", "spot_by_pool", "usage")


def scanned(pods: tuple[Pod, ...]) -> ClusterView:
    return ClusterView(nodes={n: node(n) for n in NODES}, pods=pods)


def _taken(index: PodIndex) -> tuple[tuple[Pod, ...], ClusterView]:
    """The index's pods in order, and a view of its snapshot (whose pods are the same)."""
    pods, idx = tuple(index.pods.values()), index.snapshot()
    return pods, ClusterView(nodes={n: node(n) for n in NODES}, pods=idx.pods, index=idx)


@settings(max_examples=300, deadline=None)
@given(changes)
def test_every_snapshot_equals_a_full_scan_and_later_changes_do_not_show(ops) -> None:
    index = PodIndex()
    taken: list[tuple[tuple[Pod, ...], ClusterView]] = []
    for op, arg in ops:
        if op == "put":
            index.put(arg)
        elif op == "remove":
            index.remove(arg)
        elif op == "bind":
            index.replace(arg, node="n0")
        else:
            taken.append(_taken(index))
    taken.append(_taken(index))
    for pods_then, incremental in taken:
        assert {p.key: p for p in incremental.pods} == {p.key: p for p in pods_then}
        full = scanned(pods_then)
        for group in GROUPS:
            assert getattr(incremental, group) == getattr(full, group), group
