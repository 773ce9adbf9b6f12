"""Operator-wide policy settings (per-pool settings live in the SpotPool spec)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    # A health report older than this makes the node "unknown": not drained, not placed on.
    staleness_seconds: float = 120.0
    # A node whose kubelet has not heart-beaten (Lease renewal, or Ready) for this long is
    # dead: its workers are replaced and its pods force-deleted behind Kubernetes' out-of-
    # service taint. 20 s is two missed Lease renewals (every 10 s) against Kubernetes' own
    # ~50 s to NotReady and ~5 min to eviction; a SpotPool may set its own (nodeGraceSeconds).
    node_grace_seconds: float = 20.0
    # A soft signal must persist this long before the node turns suspect.
    suspect_after_seconds: float = 120.0
    # A node must report healthy this long before it leaves suspect or healing.
    recover_after_seconds: float = 60.0
    # Grace given to a worker evicted from a failing node (its GPUs are likely gone).
    worker_grace_seconds: int = 30
    # A remediation with no result after this long counts as failed.
    remediation_timeout_seconds: float = 3600.0
    # Ceiling on the exponential restart backoff of a job.
    max_backoff_seconds: float = 600.0
    # Spot pods created in one pass, at most (None: no limit). Filling a fleet's idle GPUs
    # is thousands of pods; in chunks, every pass stays short and a failure seen meanwhile
    # waits for one chunk, not for the whole fill. The next chunk follows at once.
    max_spot_pods_per_pass: int | None = 100
