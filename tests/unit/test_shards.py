"""ShardSet: ranges in, ranges out; membership and gaps agree with a plain set."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valet.model.errors import SpecError
from valet.model.shards import ShardSet


@given(st.sets(st.integers(0, 300)), st.sets(st.integers(0, 300)), st.integers(0, 320))
def test_behaves_like_a_set(first: set[int], more: set[int], total: int) -> None:
    shards = ShardSet.of(first).union(more)
    everything = first | more
    assert set(shards) == everything
    assert len(shards) == len(everything)
    assert all(i in shards for i in everything)
    assert list(shards.missing(total)) == [i for i in range(total) if i not in everything]
    assert ShardSet.parse(shards.format()) == shards


def test_format() -> None:
    assert ShardSet.of([0, 1, 2, 5, 7, 8]).format() == "0-2,5,7-8"


@pytest.mark.parametrize("text", ["a-b", "5-2", "-1"])
def test_bad_ranges_are_rejected(text: str) -> None:
    with pytest.raises(SpecError):
        ShardSet.parse(text)
