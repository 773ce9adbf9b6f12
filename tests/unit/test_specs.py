"""Parsing TrainingJob and SpotPool specs: defaults, and errors that name the field."""

from __future__ import annotations

import pytest

from valet.model.errors import SpecError
from valet.model.shards import ShardSet
from valet.model.specs import SpotPoolSpec, SpotPoolStatus, TrainingJobSpec, TrainingJobStatus


def test_trainingjob_defaults_match_the_crd() -> None:
    spec = TrainingJobSpec.parse({"template": {}})
    assert (spec.replicas, spec.min_replicas, spec.max_replicas) == (1, 1, 1)
    assert spec.gpus_per_replica == 8
    assert spec.healing.use_buffer and spec.healing.max_restarts == 10


@pytest.mark.parametrize(("replicas", "min_replicas"), [(0, 0), (1, 1), (5, 1)])
def test_min_replicas_left_out_is_one_or_zero_while_replicas_is_zero(
    replicas: int, min_replicas: int
) -> None:
    """As the CRD's CEL rules read it (it has no default for minReplicas), so a job scaled
    to zero is valid on both sides."""
    spec = TrainingJobSpec.parse({"replicas": replicas, "template": {}})
    assert (spec.min_replicas, spec.max_replicas) == (min_replicas, replicas)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param(
            {"replicas": 2, "minReplicas": 3, "template": {}}, "spec.replicas", id="min>replicas"
        ),
        pytest.param(
            {"replicas": 5, "maxReplicas": 4, "template": {}}, "spec.replicas", id="replicas>max"
        ),
        pytest.param({"replicas": "two", "template": {}}, "spec.replicas", id="replicas-not-int"),
        pytest.param({"gpusPerReplica": 0, "template": {}}, "spec.gpusPerReplica", id="zero-gpus"),
        pytest.param({"replicas": 1}, "spec.template", id="no-template"),
        pytest.param(
            {"replicas": 0, "minReplicas": 1, "template": {}}, "spec.replicas", id="zero<min"
        ),
        pytest.param({"priority": 1001, "template": {}}, "spec.priority", id="priority>1000"),
        pytest.param({"priority": -1001, "template": {}}, "spec.priority", id="priority<-1000"),
        pytest.param(
            {"healing": {"useBuffer": "yes"}, "template": {}},
            "spec.healing.useBuffer",
            id="bad-bool",
        ),
    ],
)
def test_trainingjob_errors_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        TrainingJobSpec.parse(raw)
    assert err.value.field == field
    assert field in str(err.value)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        pytest.param({}, "spec.nodeSelector", id="no-selector"),
        pytest.param(
            {"nodeSelector": {"a": "b"}, "buffer": {"count": 1, "percent": 5}},
            "spec.buffer",
            id="count-and-percent",
        ),
        pytest.param(
            {"nodeSelector": {"a": "b"}, "buffer": {"percent": 101}},
            "spec.buffer.percent",
            id="percent>100",
        ),
        pytest.param(
            {
                "nodeSelector": {"a": "b"},
                "workloads": [{"name": "w", "namespace": "x", "template": {}}],
            },
            "spec.workloads[0].namespace",
            id="namespace-not-allowed",
        ),
        pytest.param(
            {
                "nodeSelector": {"a": "b"},
                "allowedNamespaces": ["x"],
                "workloads": [
                    {"name": "w", "namespace": "x", "template": {}},
                    {"name": "w", "namespace": "x", "template": {}},
                ],
            },
            "spec.workloads",
            id="duplicate-workloads",
        ),
    ],
)
def test_spotpool_errors_name_the_field(raw: dict, field: str) -> None:
    with pytest.raises(SpecError) as err:
        SpotPoolSpec.parse(raw)
    assert err.value.field == field


def test_duplicate_workloads_are_named() -> None:
    workload = {"name": "embed", "namespace": "x", "template": {}}
    raw = {"nodeSelector": {"a": "b"}, "allowedNamespaces": ["x"], "workloads": [workload] * 2}
    with pytest.raises(SpecError, match="workload name 'embed' is used more than once"):
        SpotPoolSpec.parse(raw)


@pytest.mark.parametrize(
    ("buffer", "size", "target"),
    [
        ({"count": 3}, 10, 3),
        ({"count": 30}, 10, 10),
        ({"percent": 5}, 100, 5),
        ({"percent": 5}, 30, 2),
        ({}, 10, 0),
    ],
)
def test_buffer_target(buffer: dict, size: int, target: int) -> None:
    spec = SpotPoolSpec.parse({"nodeSelector": {"a": "b"}, "buffer": buffer})
    assert spec.buffer.target(size) == target


def test_statuses_round_trip_through_their_wire_form() -> None:
    job = TrainingJobStatus.parse(
        {
            "phase": "Healing",
            "replicas": 3,
            "swaps": 2,
            "lastHeal": {
                "failedNode": "a",
                "spare": "b",
                "faultTime": "2026-01-01T00:00:00Z",
                "boundTime": "2026-01-01T00:00:02.500Z",
            },
        }
    )
    assert job.last_heal is not None and job.last_heal.seconds == 2.5
    assert TrainingJobStatus.parse(job.to_dict()) == job
    pool = SpotPoolStatus.parse({"shards": [{"workload": "w", "total": 10, "done": "0-3,7"}]})
    assert pool.done_shards("w") == ShardSet.of([0, 1, 2, 3, 7])
    assert pool.to_dict()["shards"][0]["pending"] == 5


def test_a_new_heal_clears_the_last_ones_running_time_in_the_merge_patch() -> None:
    from valet.model.specs import LastHeal

    fresh = LastHeal("bad", "spare", fault_at=100.0, bound_at=100.5).to_dict()
    assert fresh["runningTime"] is None and fresh["secondsToRunning"] is None
    done = LastHeal("bad", "spare", 100.0, 100.5, running_at=101.0).to_dict()
    assert done["secondsToRunning"] == 1.0
