"""A pass's overlays behave as copies of what they lie over, and a mapping that says what
changed names at least every key a full comparison finds."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from valet.model.changes import REMOVED, Producer
from valet.policy.delta import Scratch, ScratchSet, changed_keys

NAMES = st.sampled_from([f"n{i}" for i in range(12)])


@settings(max_examples=200, deadline=None)
@given(
    st.sets(NAMES),
    st.lists(st.tuples(st.sampled_from(["add", "discard"]), NAMES)),
    st.sets(NAMES),
)
def test_a_scratch_set_is_a_copy_that_leaves_what_it_lies_over_alone(below, ops, other) -> None:
    before = set(below)
    overlay, copy = ScratchSet(below), set(below)
    for op, name in ops:
        getattr(overlay, op)(name)
        getattr(copy, op)(name)
    assert below == before
    assert {n for n in [f"n{i}" for i in range(12)] if n in overlay} == copy
    assert set(other & overlay) == other & copy


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(NAMES, st.integers()), st.dictionaries(NAMES, st.integers()))
def test_a_scratch_reads_its_own_writes_then_what_it_lies_over(below, writes) -> None:
    before = dict(below)
    scratch: Scratch[int] = Scratch(below, 0)
    for name, value in writes.items():
        scratch[name] = value
    assert below == before
    for name in [f"n{i}" for i in range(12)]:
        expected = {**below, **writes}.get(name, 0)
        assert scratch[name] == scratch.get(name, 0) == expected


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(NAMES, st.integers(0, 3)), min_size=2, max_size=6))
def test_a_successor_names_every_key_a_full_comparison_finds(states) -> None:
    producer, objects = Producer(), {}

    def boxed(state: dict[str, int]) -> dict[str, object]:
        # The same value is the same object from one state to the next, as views keep it.
        return {k: objects.setdefault((k, v), object()) for k, v in state.items()}

    last = dict(boxed(states[0]))
    handed = producer.hand_out(last, last, reordered=True)
    for state in states[1:]:
        now = boxed(state)
        touched = [k for k in {*now, *last} if now.get(k) is not last.get(k)]
        new = producer.hand_out(now, touched, reordered=True)
        assert set(changed_keys(new, handed)) >= set(changed_keys(dict(new), dict(handed)))
        assert set(changed_keys(new, handed)) == set(touched)
        last, handed = now, new


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(NAMES, st.none() | st.integers()), max_size=6))
def test_each_chunked_version_is_its_changes_over_the_last_and_leaves_the_last_alone(steps):
    producer, last, plain = Producer(), None, {}
    versions: list[tuple[object, dict]] = []
    for step in steps:
        # None stands for a key removed.
        changes = {k: REMOVED if v is None else v for k, v in step.items()}
        last = producer.evolve(last, changes)
        plain = {k: v for k, v in {**plain, **step}.items() if v is not None}
        versions.append((last, dict(plain)))
    for version, expected in versions:
        assert dict(version.items()) == expected and len(version) == len(expected)
        assert all((name in version) == (name in expected) for name in (f"n{i}" for i in range(12)))
