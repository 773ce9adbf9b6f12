"""Closed vocabularies of valet: node states, phases, kinds, reasons.

The CRD schemas in ``crds/`` list the same values (a test checks it).
"""

from __future__ import annotations

import enum

GROUP = "valet.dev"
STATE_LABEL = f"{GROUP}/state"
POOL_LABEL = f"{GROUP}/pool"
JOB_LABEL = f"{GROUP}/job"  # on a worker pod: its TrainingJob (and the job's selector)
SPARE_TAINT = f"{GROUP}/spare"
# Planned maintenance (``kubectl valet drain``): its value is the reason. The node's workers
# move onto spares (planned swaps, no fault recorded) and it is held out of the pool until the
# annotation goes (``kubectl valet return``).
MAINTENANCE_ANNOTATION = f"{GROUP}/maintenance"
# Kubernetes' own fence for a node that is gone: pods on it may be deleted and their volumes
# detached (https://kubernetes.io/docs/concepts/cluster-administration/node-shutdown/).
OUT_OF_SERVICE_TAINT = "node.kubernetes.io/out-of-service"
GPU_RESOURCE = "nvidia.com/gpu"


class NodeState(enum.StrEnum):
    """Lifecycle of a pool node, carried in the ``valet.dev/state`` label (DESIGN §4)."""

    ACTIVE = "active"
    SPARE = "spare"
    SUSPECT = "suspect"
    DRAINING = "draining"
    HEALING = "healing"
    RETIRED = "retired"
    MAINTENANCE = "maintenance"  # held out of the pool for planned maintenance


class Health(enum.StrEnum):
    """Node-level health verdict from the agent and other detectors."""

    HEALTHY = "healthy"
    SUSPECT = "suspect"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


class FaultAction(enum.StrEnum):
    """What a fault calls for, mildest first."""

    NONE = "none"
    WATCH = "watch"
    DRAIN_RESET = "drain-reset"
    DRAIN_REBOOT = "drain-reboot"
    RETIRE = "retire"

    @property
    def rank(self) -> int:
        return _ACTION_RANK[self]

    @property
    def drains(self) -> bool:
        return self.rank >= _ACTION_RANK[FaultAction.DRAIN_RESET]


_ACTION_RANK = {a: i for i, a in enumerate(FaultAction)}


class Remediation(enum.StrEnum):
    """Remediation the operator asks the node agent for (annotation ``valet.dev/remediation``)."""

    GPU_RESET = "gpu-reset"
    REBOOT = "reboot"
    DIAGNOSE = "diagnose"


class RemediationResult(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class PodKind(enum.StrEnum):
    WORKER = "worker"
    SPOT = "spot"
    OTHER = "other"


class PodPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    UNKNOWN = "Unknown"

    @property
    def terminal(self) -> bool:
        return self in (PodPhase.SUCCEEDED, PodPhase.FAILED)


class JobPhase(enum.StrEnum):
    PENDING = "Pending"
    RUNNING = "Running"
    DEGRADED = "Degraded"
    HEALING = "Healing"
    WAITING = "Waiting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"

    @property
    def terminal(self) -> bool:
        return self in (JobPhase.SUCCEEDED, JobPhase.FAILED)


class EventType(enum.StrEnum):
    NORMAL = "Normal"
    WARNING = "Warning"


class Reason(enum.StrEnum):
    """Reasons of Events and conditions; one per kind of decision."""

    GANG_PLACED = "GangPlaced"
    GANG_UNSCHEDULABLE = "GangUnschedulable"
    WORKER_BOUND = "WorkerBound"
    WORKER_SWAPPED = "WorkerSwapped"
    WORKER_FAILED = "WorkerFailed"
    WORKER_REMOVED = "WorkerRemoved"
    JOB_SHRUNK = "JobShrunk"
    JOB_GROWN = "JobGrown"
    JOB_WAITING = "JobWaiting"
    JOB_SUCCEEDED = "JobSucceeded"
    JOB_FAILED = "JobFailed"
    BACKOFF_LIMIT = "BackoffLimitExceeded"
    NODE_ADOPTED = "NodeAdopted"
    NODE_SPARE = "NodeSpare"
    NODE_RELEASED = "NodeReleased"
    NODE_CLAIMED = "NodeClaimed"
    NODE_SUSPECT = "NodeSuspect"
    NODE_RECOVERED = "NodeRecovered"
    NODE_DRAINING = "NodeDraining"
    NODE_HEALING = "NodeHealing"
    NODE_HEALED = "NodeHealed"
    NODE_RETIRED = "NodeRetired"
    NODE_MAINTENANCE = "NodeMaintenance"
    NODE_RETURNED = "NodeReturned"
    PLANNED_SWAP = "PlannedSwap"
    REMEDIATION_REQUESTED = "RemediationRequested"
    REMEDIATION_FAILED = "RemediationFailed"
    LEMON = "LemonNode"
    HEALTH_UNKNOWN = "HealthUnknown"
    CIRCUIT_BREAKER_OPEN = "CircuitBreakerOpen"
    SPOT_PACKED = "SpotPacked"
    SPOT_PREEMPTED = "SpotPreempted"
    HOT_SPARE = "HotSpare"
    SHARD_DONE = "ShardDone"
    SHARD_REQUEUED = "ShardRequeued"
    BUFFER_EXHAUSTED = "BufferExhausted"
    BUFFER_READY = "BufferReady"
    SCALED_DOWN = "ScaledDown"


class ConditionType(enum.StrEnum):
    READY = "Ready"
    DEGRADED = "Degraded"
    BUFFER_EXHAUSTED = "BufferExhausted"
    CIRCUIT_BREAKER_OPEN = "CircuitBreakerOpen"
