"""Mappings that say what changed since the one handed out before them.

A view's mappings are never changed once handed out; the next view gets a new one. Whoever
builds them one from the other knows which keys it wrote, and the mapping carries that
along: ``policy.delta.changed_keys`` then reads the keys instead of comparing two mappings
of the whole fleet (at 12,500 nodes that comparison was most of a simulated pass).

``Successor`` is a plain dict (a full copy per view: the simulator's nodes). ``Chunked``
also spares the copy: its keys are spread over chunks by hash, and the next version copies
only the chunks with a changed key (``PodIndex``'s pods by node, usage and pod keys; at
12,500 nodes copying those, every pass, touched every entry's object and cost more than
the rest of the snapshot).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

_V = TypeVar("_V")

REMOVED: Any = object()  # a change that removes the key


class Successor(dict[str, _V]):
    """A plain dict, plus what its producer wrote since the mapping it handed out before:
    ``touched`` holds every key added, removed or given a new value (perhaps more), and
    ``reordered`` is False only when the keys are the same, in the same order."""

    __slots__ = ("origin", "reordered", "serial", "touched")

    origin: object
    serial: int
    touched: tuple[str, ...]
    reordered: bool


_CHUNKS = 1024  # a power of two
_MASK = _CHUNKS - 1


class Chunked(Mapping[str, _V]):
    """An immutable mapping over ``_CHUNKS`` dicts by key hash (iterated chunk by chunk, in
    no particular order). ``Producer.evolve`` makes the next version, sharing every chunk
    without a changed key."""

    __slots__ = ("_chunks", "_len", "origin", "reordered", "serial", "touched")

    origin: object
    serial: int
    touched: tuple[str, ...]
    reordered: bool

    def __init__(self, chunks: list[dict[str, _V]] | None = None, size: int = 0) -> None:
        self._chunks = chunks if chunks is not None else [{} for _ in range(_CHUNKS)]
        self._len = size

    def __getitem__(self, key: str) -> _V:
        return self._chunks[hash(key) & _MASK][key]

    def get(self, key: str, default: Any = None) -> Any:
        return self._chunks[hash(key) & _MASK].get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._chunks[hash(key) & _MASK]

    def __iter__(self) -> Iterator[str]:
        return itertools.chain.from_iterable(self._chunks)

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        return f"Chunked({dict(self.items())!r})"


class Producer:
    """Hands out one mapping after another, each saying what changed since the last."""

    def __init__(self) -> None:
        self._origin = object()
        self._serial = 0

    def _stamp(self, out: Successor[_V] | Chunked[_V], touched: Iterable[str], moved: bool) -> None:
        self._serial += 1
        out.origin, out.serial = self._origin, self._serial
        out.touched, out.reordered = tuple(touched), moved

    def hand_out(
        self,
        contents: Mapping[str, _V],
        touched: Iterable[str],
        reordered: bool,
        overlay: Mapping[str, _V] | None = None,
    ) -> Successor[_V]:
        """A copy of ``contents`` (with ``overlay`` laid over it), which differs from the last
        mapping handed out at most at ``touched`` (and in order only if ``reordered``)."""
        out: Successor[_V] = Successor(contents)
        if overlay:
            out.update(overlay)
        self._stamp(out, touched, reordered)
        return out

    def evolve(self, last: Chunked[_V] | None, changes: Mapping[str, _V]) -> Chunked[_V]:
        """``last`` (the last one handed out; None: an empty one) with ``changes`` made,
        a value ``REMOVED`` removing its key."""
        chunks = list(last._chunks) if last is not None else [{} for _ in range(_CHUNKS)]
        size = last._len if last is not None else 0
        copied: set[int] = set()
        for key, value in changes.items():
            i = hash(key) & _MASK
            if i not in copied:
                chunks[i] = dict(chunks[i])
                copied.add(i)
            chunk = chunks[i]
            if value is REMOVED:
                size -= chunk.pop(key, REMOVED) is not REMOVED
            else:
                size += key not in chunk
                chunk[key] = value
        out: Chunked[_V] = Chunked(chunks, size)
        self._stamp(out, changes, True)
        return out


def follows(
    new: Mapping[str, object], old: Mapping[str, object]
) -> Successor[object] | Chunked[object] | None:
    """``new`` when it was handed out right after ``old``, by the same producer; else None."""
    if (
        isinstance(new, Successor | Chunked)
        and isinstance(old, Successor | Chunked)
        and new.origin is old.origin
        and new.serial == old.serial + 1
    ):
        return new
    return None
