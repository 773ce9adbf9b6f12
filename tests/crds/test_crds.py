"""The CRDs: examples validate, bad manifests are rejected by the rule we expect,
every field is described, and the schema's enums match the model's."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.crds.schema import ROOT, apply_defaults, load_crd, schema_of, validate
from tests.crds.test_real_api import ACCEPTED, REJECTED, changed
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


def _workload(name: str) -> dict[str, Any]:
    template = {"spec": {"containers": [{"name": "infer", "image": "infer:1"}]}}
    return {"name": name, "namespace": "batch", "template": template}


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
    ("bad-pool-name", TJ, {"pool": "Bad_Pool"}, ".spec.pool", "is not a SpotPool name"),
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
        'workload "embed-corpus" runs in namespace "default", which allowedNamespaces does not',
    ),
    (
        "duplicate-workloads",
        SP,
        {"workloads": [_workload("a"), _workload("b"), _workload("a")]},
        ".spec.workloads",
        'workload name "a" is used more than once',
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
        ".spec.workloads[0].maxPods",
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
    ("priority-too-high", TJ, {"priority": 1001}, ".spec.priority", "greater than the maximum"),
    ("empty-topology-key", TJ, {"topologyKey": ""}, ".spec.topologyKey", "should be non-empty"),
    ("bad-topology-key", TJ, {"topologyKey": "a b"}, ".spec.topologyKey", "not a node label key"),
    ("template-empty", TJ, {"template": {}}, ".spec.template", "'spec' is a required property"),
    (
        "template-no-containers",
        TJ,
        {"template": {"spec": {}}},
        ".spec.template.spec",
        "'containers' is a required property",
    ),
    (
        "containers-as-map",
        TJ,
        {"template": {"spec": {"containers": {"a": {"image": "x"}}}}},
        ".spec.template.spec.containers",
        "is not of type 'array'",
    ),
    (
        "bad-selector-value",
        SP,
        {"nodeSelector": {"gpu": "H100 80GB"}},
        ".spec.nodeSelector[gpu]",
        "is not a label value",
    ),
    (
        "bad-allowed-namespace",
        SP,
        {"allowedNamespaces": ["batch", "Batch_Jobs"]},
        ".spec.allowedNamespaces[1]",
        '"Batch_Jobs" can never be a namespace name',
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
    violations = validate(_with(kind, change), strict=False)
    assert violations, "accepted a bad manifest"
    assert any(v.path == path and fragment in v.message for v in violations), violations


@pytest.mark.parametrize("case", REJECTED, ids=[c[0] for c in REJECTED])
def test_offline_validation_refuses_what_the_real_server_refuses(case: tuple[Any, ...]) -> None:
    """The real-API table (test_real_api.py), offline: every case refused here too."""
    _, kind, change, _server_says, *validation = case
    assert validate(changed(kind, change), strict=validation != ["Warn"])


@pytest.mark.parametrize("case", ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_offline_validation_accepts_what_the_real_server_accepts(case: tuple[Any, ...]) -> None:
    _, kind, change = case
    assert validate(changed(kind, change)) == []


def _defaulted(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return apply_defaults(schema_of(kind)["properties"]["spec"], copy.deepcopy(spec))


@pytest.mark.parametrize("replicas", [0, 1, 5])
def test_the_parser_reads_a_job_the_same_with_or_without_the_crds_defaults(
    replicas: int,
) -> None:
    """A manifest that skipped API-server defaulting parses like one that did not; with
    replicas 0 and minReplicas left out, the CRD accepts it and both read minReplicas 0."""
    spec = {"replicas": replicas, "template": {"spec": {"containers": [{"name": "a"}]}}}
    assert TrainingJobSpec.parse(_defaulted(TJ, spec)) == TrainingJobSpec.parse(spec)
    assert TrainingJobSpec.parse(spec).min_replicas == min(1, replicas)
    assert (
        validate(_with(TJ, {"replicas": replicas, "minReplicas": _DELETE, "maxReplicas": _DELETE}))
        == []
    )


def test_the_parser_reads_a_pool_the_same_with_or_without_the_crds_defaults() -> None:
    spec = {
        "nodeSelector": {"a": "b"},
        "allowedNamespaces": ["batch"],
        "workloads": [_workload("w")],
    }
    assert SpotPoolSpec.parse(_defaulted(SP, spec)) == SpotPoolSpec.parse(spec)


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


class _UniqueKeyLoader(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (PyYAML keeps the last one silently)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value]
    twice = sorted({str(k) for k in keys if keys.count(k) > 1})
    assert not twice, f"keys given twice at line {node.start_mark.line + 1}: {twice}"
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@pytest.mark.parametrize("kind", [TJ, SP])
def test_no_key_is_given_twice_in_a_crd(kind: str) -> None:
    from tests.crds.schema import CRDS

    assert yaml.load(CRDS[kind].read_text(), _UniqueKeyLoader)


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
