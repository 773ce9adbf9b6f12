"""Mappings that say what changed since the one handed out before them.

A view's mappings are never changed once handed out; the next view gets a new one. Whoever
builds them one from the other (the simulator's nodes, ``PodIndex``'s usage) knows which
keys it wrote, and a ``Successor`` carries that along: ``policy.delta.changed_keys`` then
reads the keys instead of comparing two mappings of the whole fleet (at 12,500 nodes that
comparison was most of a simulated pass).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

_V = TypeVar("_V")


class Successor(dict[str, _V]):
    """A plain dict, plus what its producer wrote since the mapping it handed out before:
    ``touched`` holds every key added, removed or given a new value (perhaps more), and
    ``reordered`` is False only when the keys are the same, in the same order."""

    __slots__ = ("origin", "reordered", "serial", "touched")

    origin: object
    serial: int
    touched: tuple[str, ...]
    reordered: bool


class Producer:
    """Hands out one ``Successor`` after another."""

    def __init__(self) -> None:
        self._origin = object()
        self._serial = 0

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
        self._serial += 1
        out.origin, out.serial = self._origin, self._serial
        out.touched, out.reordered = tuple(touched), reordered
        return out


def follows(new: Mapping[str, object], old: Mapping[str, object]) -> Successor[object] | None:
    """``new`` when it was handed out right after ``old``, by the same producer; else None."""
    if (
        type(new) is Successor
        and type(old) is Successor
        and new.origin is old.origin
        and new.serial == old.serial + 1
    ):
        return new
    return None
