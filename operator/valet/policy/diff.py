"""changed_keys: which entries of a mapping are no longer the very objects they were.

The cache and the simulator keep an unchanged object identical from one view to the
next, so comparing by identity finds what changed; with the keys in the same order (the
common case) the comparison runs in C.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress
from operator import is_not


def changed_keys(new: Mapping[str, object], old: Mapping[str, object]) -> list[str]:
    """Keys whose value in ``new`` is not the object ``old`` holds: changed, added, removed."""
    keys = list(new)
    if keys == list(old):
        return list(compress(keys, map(is_not, new.values(), old.values())))
    gone = [k for k in old if k not in new]
    return [k for k, v in new.items() if old.get(k, _ABSENT) is not v] + gone


_ABSENT = object()
