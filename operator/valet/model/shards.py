"""ShardSet: an immutable set of shard indices kept as sorted, disjoint ranges.

Pool status writes it as "0-99,105"; membership is a binary search and iterating
what is missing walks the gaps, so a workload of a million shards stays cheap.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator

from valet.model.errors import SpecError


class ShardSet:
    __slots__ = ("_count", "_ends", "_starts")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for lo, hi in sorted(ranges):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        self._starts = tuple(r[0] for r in merged)
        self._ends = tuple(r[1] for r in merged)
        self._count = sum(hi - lo + 1 for lo, hi in merged)

    @classmethod
    def of(cls, indices: Iterable[int]) -> ShardSet:
        return cls((i, i) for i in indices)

    def __contains__(self, index: object) -> bool:
        if not isinstance(index, int):
            return False
        ends = self._ends
        if not ends or index > ends[-1]:
            return False  # the common case: a shard started after the last one done
        pos = bisect.bisect_right(self._starts, index) - 1
        return pos >= 0 and index <= self._ends[pos]

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[int]:
        for lo, hi in zip(self._starts, self._ends, strict=True):
            yield from range(lo, hi + 1)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ShardSet):
            return NotImplemented
        return self._starts == other._starts and self._ends == other._ends

    def __hash__(self) -> int:
        return hash((self._starts, self._ends))

    def __repr__(self) -> str:
        return f"ShardSet({self.format()!r})"

    def union(self, indices: Iterable[int]) -> ShardSet:
        extra = [(i, i) for i in indices]
        if not extra:
            return self
        return ShardSet([*zip(self._starts, self._ends, strict=True), *extra])

    def missing(self, total: int) -> Iterator[int]:
        """Indices in ``range(total)`` not in the set, ascending."""
        nxt = 0
        for lo, hi in zip(self._starts, self._ends, strict=True):
            yield from range(nxt, min(lo, total))
            nxt = max(nxt, hi + 1)
            if nxt >= total:
                return
        yield from range(nxt, total)

    def format(self) -> str:
        return ",".join(
            f"{lo}" if lo == hi else f"{lo}-{hi}"
            for lo, hi in zip(self._starts, self._ends, strict=True)
        )

    @classmethod
    def parse(cls, text: str, field: str = "shards.done") -> ShardSet:
        ranges: list[tuple[int, int]] = []
        for part in filter(None, (p.strip() for p in text.split(","))):
            lo, _, hi = part.partition("-")
            try:
                first, last = int(lo), int(hi or lo)
            except ValueError:
                raise SpecError(field, f"bad shard range {part!r}") from None
            if first < 0 or last < first:
                raise SpecError(field, f"bad shard range {part!r}")
            ranges.append((first, last))
        return cls(ranges)
