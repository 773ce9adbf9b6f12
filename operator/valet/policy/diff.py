"""changed_keys: which entries of a mapping are no longer the very objects they were.

The cache and the simulator keep an unchanged object identical from one view to the
next, so comparing by identity finds what changed; the comparison runs in C.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import is_not


def changed_keys(new: Mapping[str, object], old: Mapping[str, object]) -> list[str]:
    """Keys whose value in ``new`` is not the object ``old`` holds: changed, added, removed.
    (Values are never None.)"""
    keys = list(new)
    if keys == list(old):  # the same keys in the same order: no lookups
        return list(compress(keys, map(is_not, new.values(), old.values())))
    changed = list(compress(keys, map(is_not, new.values(), map(old.get, keys))))
    if len(old) > sum(map(old.__contains__, keys)):  # some keys are gone
        changed.extend(k for k in old if k not in new)
    return changed
