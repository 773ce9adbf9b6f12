"""Ranking: the order placement tries a pool's nodes in, kept from one pass to the next.

``Capacity.place`` tries nodes by (GPUs free now, not a spare, fewest spot GPUs to evict,
the job's topology domain, least free left, name). Scoring every node that could take a
pod costs a swap some thousand nodes at a fleet's size, for one worker. The memo keeps,
per pool and pod size, the nodes that could take such a pod as a pass begins, sorted by
that order without the topology (the only part that depends on the job), and re-sorts only
the nodes that changed since it was last read (a ranking no swap reads is not kept up
to date pass by pass: it notes the names, and scores them once, when read). A pass lays
the nodes it wrote over it (``jobs._ranked``), and takes the job's domain first within
each class.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable

# (0 when the GPUs are free now, 1 for a spare, spot GPUs to evict, GPUs free, name)
Score = tuple[int, int, int, int, str]


def score(free: int, releasing: int, spot: int, spare: bool, gpus: int, name: str) -> Score | None:
    """Where a node ranks for a pod of ``gpus``, or None when it cannot take one even by
    evicting every spot pod there."""
    avail = free + releasing
    if avail < gpus and avail + spot < gpus:
        return None
    return (0 if free >= gpus else 1, 1 if spare else 0, max(0, gpus - avail), free, name)


class Ranking:
    """One pool's nodes that could take a pod of one size, in order (see the module)."""

    def __init__(self) -> None:
        self.entries: list[Score] = []
        self.scores: dict[str, Score] = {}  # the entries by node name
        self.stale: set[str] = set()  # nodes changed since the entries were last updated

    def update(self, changed: Iterable[tuple[str, Score | None]]) -> None:
        """Each node's new score (None: it cannot take the pod, or is no candidate)."""
        entries, scores = self.entries, self.scores
        for name, new in changed:
            old = scores.pop(name, None)
            if old == new:
                if new is not None:
                    scores[name] = new
                continue
            if old is not None:
                del entries[bisect.bisect_left(entries, old)]
            if new is not None:
                bisect.insort(entries, new)
                scores[name] = new
