"""The CRDs: examples validate, bad manifests are rejected by the rule we expect,
every field is described, and the schema's enums match the model's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crds.schema import ROOT, load_crd, schema_of, validate
from valet.model.enums import JobPhase
from valet.model.specs import SpotPoolSpec, TrainingJobSpec

EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def example(kind: str) -> dict[str, Any]:
    for path in EXAMPLES:
        doc = yaml.safe_load(path.read_text())
        if doc["kind"] == kind:
            return doc
    raise LookupError(kind)


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_and_parse(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    assert validate(doc) == []
    parse = {"TrainingJob": TrainingJobSpec.parse, "SpotPool": SpotPoolSpec.parse}[doc["kind"]]
    parse(doc["spec"])


def _with(kind: str, change: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(example(kind))
    spec = doc["spec"]
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        target = spec
        for part in parents:
            target = target.setdefault(part, {}) if not part.isdigit() else target[int(part)]
        if value is _DELETE:
            target.pop(leaf)
        elif leaf.isdigit():
            target[int(leaf)] = value
        else:
            target[leaf] = value
    return doc


_DELETE = object()
TJ, SP = "TrainingJob", "SpotPool"

# (kind, change to the example, the path and message fragment that must reject it)
MALFORMED = [
    (
        "min-above-replicas",
        TJ,
        {"minReplicas": 17},
        ".spec.minReplicas",
        "minReplicas must not exceed replicas",
    ),
    (
        "replicas-above-max",
        TJ,
        {"replicas": 17, "minReplicas": 1},
        ".spec.replicas",
        "must not exceed maxReplicas",
    ),
    (
        "min-above-max",
        TJ,
        {"minReplicas": 17, "replicas": 17, "maxReplicas": 16},
        ".spec.maxReplicas",
        "exceed maxReplicas",
    ),
    ("zero-gpus", TJ, {"gpusPerReplica": 0}, ".spec.gpusPerReplica", "less than the minimum"),
    (
        "too-many-gpus",
        TJ,
        {"gpusPerReplica": 32},
        ".spec.gpusPerReplica",
        "greater than the maximum",
    ),
    ("negative-replicas", TJ, {"replicas": -1}, ".spec.replicas", "less than the minimum"),
    ("no-template", TJ, {"template": _DELETE}, ".spec", "'template' is a required property"),
    ("replicas-not-int", TJ, {"replicas": "3"}, ".spec.replicas", "is not of type 'integer'"),
    ("bad-pool-name", TJ, {"pool": "Bad_Pool"}, ".spec.pool", "does not match"),
    (
        "backoff-too-long",
        TJ,
        {"healing.backoffSeconds": 7200},
        ".spec.healing.backoffSeconds",
        "greater than the maximum",
    ),
    ("buffer-count-and-percent", SP, {"buffer.count": 4}, ".spec.buffer", "not both"),
    (
        "buffer-percent-over-100",
        SP,
        {"buffer.percent": 150},
        ".spec.buffer.percent",
        "greater than the maximum",
    ),
    ("empty-selector", SP, {"nodeSelector": {}}, ".spec.nodeSelector", "should be non-empty"),
    (
        "namespace-not-allowed",
        SP,
        {"workloads.0.namespace": "default"},
        ".spec.workloads",
        "allowedNamespaces",
    ),
    (
        "duplicate-workloads",
        SP,
        {"workloads": [{"name": "a", "namespace": "batch", "template": {}}] * 2},
        ".spec.workloads",
        "unique",
    ),
    (
        "notice-too-long",
        SP,
        {"preemption.noticeSeconds": 7200},
        ".spec.preemption.noticeSeconds",
        "greater than the maximum",
    ),
    (
        "zero-weight",
        SP,
        {"workloads.0.weight": 0},
        ".spec.workloads.0.weight",
        "less than the minimum",
    ),
    (
        "maxpods-above-shards",
        SP,
        {"workloads.0.maxPods": 6000},
        ".spec.workloads[0]",
        "maxPods cannot exceed shards",
    ),
    (
        "lemon-zero-failures",
        SP,
        {"lemon.failures": 0},
        ".spec.lemon.failures",
        "less than the minimum",
    ),
    (
        "breaker-zero-percent",
        SP,
        {"circuitBreaker.maxFailedPercent": 0},
        ".spec.circuitBreaker.maxFailedPercent",
        "less than the minimum",
    ),
    (
        "no-selector",
        SP,
        {"nodeSelector": _DELETE},
        ".spec",
        "'nodeSelector' is a required property",
    ),
]


@pytest.mark.parametrize(
    ("kind", "change", "path", "fragment"),
    [m[1:] for m in MALFORMED],
    ids=[m[0] for m in MALFORMED],
)
def test_malformed_manifests_are_rejected_by_the_expected_rule(
    kind, change, path, fragment
) -> None:
    violations = validate(_with(kind, change))
    assert violations, "accepted a bad manifest"
    assert any(v.path == path and fragment in v.message for v in violations), violations


def _walk(schema: dict[str, Any], path: str):
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


@pytest.mark.parametrize("kind", [TJ, SP])
def test_every_field_has_a_description(kind: str) -> None:
    missing = [
        p
        for p, s in _walk(schema_of(kind), "")
        if p not in (".metadata",) and not s.get("description")
    ]
    assert missing == []


def test_phase_enum_matches_the_model() -> None:
    phase = schema_of(TJ)["properties"]["status"]["properties"]["phase"]
    assert phase["enum"] == [p.value for p in JobPhase]


def test_crd_shape() -> None:
    tj, sp = load_crd(TJ)["spec"], load_crd(SP)["spec"]
    assert (tj["scope"], tj["names"]["shortNames"]) == ("Namespaced", ["tj"])
    assert (sp["scope"], sp["names"]["shortNames"]) == ("Cluster", ["sp"])
    version = tj["versions"][0]
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.replicas"
    assert "status" in version["subresources"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Phase", "Ready", "Desired", "Swaps", "Age"} <= columns
    pool_columns = {c["name"] for c in sp["versions"][0]["additionalPrinterColumns"]}
    assert {"Spares", "Target", "Spot GPUs", "Preemptions"} <= pool_columns
