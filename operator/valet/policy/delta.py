"""What changed since the last view, and what a pass changes over what it started from.

``changed_keys``: which entries of a mapping are no longer the very objects they were
(the cache and the simulator keep an unchanged object identical from one view to the
next); the comparison runs in C, or is not needed when the mapping says what changed
(``model.changes``). ``Scratch`` (and ``ScratchSet``): a pass's own entries over a mapping
(a set) it must not change, so that the pass costs what it writes, not a copy of the fleet.
``right_sized``: a set kept across passes that once held the fleet and now holds a few.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Set
from itertools import compress
from operator import is_not
from typing import Any, TypeVar

from valet.model.changes import follows

_V = TypeVar("_V")
_ABSENT: Any = object()


def changed_keys(new: Mapping[str, object], old: Mapping[str, object]) -> list[str]:
    """Keys whose value in ``new`` is not the object ``old`` holds: changed, added, removed
    (perhaps a few more, when ``new`` says what changed: see ``model.changes``). Values are
    never None."""
    successor = follows(new, old)
    if successor is not None:
        return list(successor.touched)
    keys = list(new)
    if keys == list(old):  # the same keys in the same order: no lookups
        return list(compress(keys, map(is_not, new.values(), old.values())))
    changed = list(compress(keys, map(is_not, new.values(), map(old.get, keys))))
    if len(old) > sum(map(old.__contains__, keys)):  # some keys are gone
        changed.extend(k for k in old if k not in new)
    return changed


def right_sized(items: set[str]) -> set[str]:
    """``items``, or a copy of it when its hash table is far larger than its members need.

    A set never shrinks its table as members leave: one that held every node of the fleet
    once (the first pass adopts them all) and holds a few now costs the whole table to
    iterate (0.1 ms at 12,500 nodes, pass after pass) until enough adds rebuild it.
    """
    if sys.getsizeof(items) > 1024 + 256 * len(items):
        return set(items)
    return items


class Scratch(dict[str, _V]):
    """Entries written here, over ``below`` (never changed through this): a read of a key
    not written falls through to ``below``, else to ``default`` (if given)."""

    def __init__(self, below: Mapping[str, _V], default: _V = _ABSENT) -> None:
        super().__init__()
        self.below, self.default = below, default

    def __missing__(self, key: str) -> _V:
        value = self.below.get(key, self.default)
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def get(self, key: str, default: Any = None) -> Any:
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        return self.below.get(key, default)

    def written(self) -> Set[str]:
        """The keys this scratch holds entries of its own for."""
        return dict.keys(self)

    def flat(self) -> dict[str, _V]:
        """Every entry as of now, in one dict (a copy): for a loop that reads most keys,
        where a read through ``get`` would cost a Python call each."""
        return {**self.below, **self}


class ScratchSet:
    """A set as ``below`` (never changed through this) plus what a pass adds and removes:
    membership, ``add``, ``discard`` and intersection with a real set (``room & this``),
    each costing what the pass changed, not a copy of the fleet."""

    def __init__(self, below: set[str]) -> None:
        self.below = below
        self.added: set[str] = set()
        self.removed: set[str] = set()

    def __contains__(self, item: object) -> bool:
        if item in self.added:
            return True
        return item in self.below and item not in self.removed

    def add(self, item: str) -> None:
        self.removed.discard(item)
        if item not in self.below:
            self.added.add(item)

    def discard(self, item: str) -> None:
        self.added.discard(item)
        if item in self.below:
            self.removed.add(item)

    def __rand__(self, other: Set[str]) -> set[str]:
        both = self.below & other  # a new set, changed in place below
        both -= self.removed
        both |= other & self.added
        return both

    __and__ = __rand__
