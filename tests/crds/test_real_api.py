"""The CRDs on a real API server: malformed manifests are refused with a message that names
the field and says what to change, valid edge cases are accepted, and a CEL rule refuses an
invalid edit of a stored object.

Every case is one change to a valid base manifest (examples/), sent with server-side dry run
and strict field validation (``POST ...?dryRun=All&fieldValidation=Strict``), as
``kubectl apply --dry-run=server`` sends it. The same tables run offline against
tests/crds/schema.py (test_crds.py); where the two disagree, this file is right.

Needs a real API server (``real_api``: envtest from KUBEBUILDER_ASSETS); skipped without one.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.harness import Backend
from valet.k8s import errors
from valet.k8s.client import MERGE, Api, core_path, load_api_client, valet_path
from valet.model.specs import SpotPoolSpec, TrainingJobSpec

ROOT = Path(__file__).resolve().parents[2]
TJ, SP = "TrainingJob", "SpotPool"
DELETE = object()  # as a value in a change: remove the field
TOKEN = secrets.token_hex(3)  # SpotPools are cluster-scoped: names of this run only
POOL = f"h100-{TOKEN}"


def _doc(path: str, kind: str) -> dict[str, Any]:
    return next(d for d in yaml.safe_load_all((ROOT / path).read_text()) if d["kind"] == kind)


def base(kind: str) -> dict[str, Any]:
    """The example manifest of ``kind``, with a SpotPool name of this run."""
    doc = copy.deepcopy(_doc(f"examples/{kind.lower()}.yaml", kind))
    if kind == SP:
        doc["metadata"]["name"] = POOL
    return doc


def changed(kind: str, change: Mapping[str, Any]) -> dict[str, Any]:
    """The base manifest with ``change`` applied: dotted paths from the top of the object
    (list indices as numbers) to a new value, or ``DELETE``."""
    doc = base(kind)
    for dotted, value in change.items():
        *parents, leaf = dotted.split(".")
        target: Any = doc
        for part in parents:
            target = target[int(part)] if part.isdigit() else target.setdefault(part, {})
        if value is DELETE:
            del target[int(leaf) if leaf.isdigit() else leaf]
        elif leaf.isdigit():
            target[int(leaf)] = value
        else:
            target[leaf] = value
    return doc


def _containers(*names: str) -> list[dict[str, str]]:
    return [{"name": n, "image": "train:1"} for n in names]


def _workload(name: str, namespace: str = "batch") -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "template": {"spec": {"containers": [{"name": "infer", "image": "infer:1"}]}},
    }


TEMPLATE = "spec.template"
WL = "spec.workloads.0"
LONG_LABEL_NAME = "n" * 63
TOO_LONG_LABEL_NAME = "n" * 64

# Refused: (id, change to the example, what the server's message must contain: the field and
# what to change; a tuple when in two pieces), then the request's fieldValidation when it is
# not Strict.
TJ_REJECTED: list[tuple[Any, ...]] = [
    # --- TrainingJob: wrong types
    ("replicas-string", {"spec.replicas": "16"}, "spec.replicas in body must be of type integer"),
    ("replicas-fraction", {"spec.replicas": 2.5}, "spec.replicas in body must be of type int32"),
    (
        "gpus-string",
        {"spec.gpusPerReplica": "8"},
        "spec.gpusPerReplica in body must be of type integer",
    ),
    ("priority-string", {"spec.priority": "high"}, "spec.priority in body must be of type integer"),
    ("pool-number", {"spec.pool": 100}, "spec.pool in body must be of type string"),
    (
        "usebuffer-string",
        {"spec.healing.useBuffer": "yes"},
        "spec.healing.useBuffer in body must be of type boolean",
    ),
    ("healing-list", {"spec.healing": [1]}, "spec.healing in body must be of type object"),
    (
        "template-string",
        {"spec.template": "pod.yaml"},
        "spec.template in body must be of type object",
    ),
    (
        "template-spec-string",
        {f"{TEMPLATE}.spec": "x"},
        "spec.template.spec in body must be of type object",
    ),
    (
        "containers-map",
        {f"{TEMPLATE}.spec.containers": {"trainer": {"image": "t:1"}}},
        'unknown field "spec.template.spec.containers.trainer"',
    ),
    (
        "containers-map-not-strict",
        {f"{TEMPLATE}.spec.containers": {"trainer": {"image": "t:1"}}},
        "spec.template.spec.containers in body must be of type array",
        "Warn",
    ),
    (
        "containers-string",
        {f"{TEMPLATE}.spec.containers": "trainer"},
        "spec.template.spec.containers in body must be of type array",
    ),
    # --- TrainingJob: numbers out of range
    (
        "replicas-negative",
        {"spec.replicas": -1},
        "spec.replicas in body should be greater than or equal to 0",
    ),
    (
        "replicas-too-many",
        {"spec.replicas": 65537, "spec.maxReplicas": DELETE},
        "spec.replicas in body should be less than or equal to 65536",
    ),
    (
        "minreplicas-negative",
        {"spec.minReplicas": -1},
        "spec.minReplicas in body should be greater than or equal to 0",
    ),
    (
        "maxreplicas-zero",
        {"spec.maxReplicas": 0},
        "spec.maxReplicas in body should be greater than or equal to 1",
    ),
    (
        "maxreplicas-too-many",
        {"spec.maxReplicas": 65537},
        "spec.maxReplicas in body should be less than or equal to 65536",
    ),
    (
        "gpus-zero",
        {"spec.gpusPerReplica": 0},
        "spec.gpusPerReplica in body should be greater than or equal to 1",
    ),
    (
        "gpus-too-many",
        {"spec.gpusPerReplica": 32},
        "spec.gpusPerReplica in body should be less than or equal to 16",
    ),
    (
        "priority-too-high",
        {"spec.priority": 1001},
        "spec.priority in body should be less than or equal to 1000",
    ),
    (
        "priority-too-low",
        {"spec.priority": -1001},
        "spec.priority in body should be greater than or equal to -1000",
    ),
    (
        "maxrestarts-negative",
        {"spec.healing.maxRestarts": -1},
        "spec.healing.maxRestarts in body should be greater than or equal to 0",
    ),
    (
        "backoff-too-long",
        {"spec.healing.backoffSeconds": 7200},
        "spec.healing.backoffSeconds in body should be less than or equal to 3600",
    ),
    # --- TrainingJob: typos in field names (strict field validation)
    ("typo-replicas", {"spec.replica": 3}, 'unknown field "spec.replica"'),
    ("typo-minreplicas", {"spec.minReplica": 3}, 'unknown field "spec.minReplica"'),
    ("typo-gpus", {"spec.gpuPerReplica": 4}, 'unknown field "spec.gpuPerReplica"'),
    ("typo-healing", {"spec.healing.maxRestart": 3}, 'unknown field "spec.healing.maxRestart"'),
    ("typo-top-level", {"specs": {}}, 'unknown field "specs"'),
    # --- TrainingJob: cross-field rules
    (
        "min-above-replicas",
        {"spec.minReplicas": 15, "spec.replicas": 12},
        (
            "spec.minReplicas: Invalid value: minReplicas must not exceed replicas",
            "lower minReplicas or raise replicas",
        ),
    ),
    (
        "replicas-above-max",
        {"spec.replicas": 17, "spec.minReplicas": 1},
        (
            "spec.replicas: Invalid value: replicas must not exceed maxReplicas",
            "lower replicas or raise maxReplicas",
        ),
    ),
    (
        "min-above-max",
        {"spec.minReplicas": 17, "spec.replicas": 17},
        (
            "spec.maxReplicas: Invalid value: minReplicas must not exceed maxReplicas",
            "lower minReplicas or raise maxReplicas",
        ),
    ),
    (
        "replicas-zero-min-one",
        {"spec.replicas": 0, "spec.minReplicas": 1},
        "spec.minReplicas: Invalid value: minReplicas must not exceed replicas",
    ),
    # --- TrainingJob: names (metadata.name derives a Service, hostnames and label values)
    (
        "name-with-dot",
        {"metadata.name": "llama.70b"},
        ('metadata.name: Invalid value: "llama.70b" is not a DNS-1035 label', 'no ".")'),
    ),
    (
        "name-58-chars",
        {"metadata.name": "l" * 58},
        "metadata.name: Invalid value: is too long: use at most 57 characters",
    ),
    (
        "name-starts-with-digit",
        {"metadata.name": "70b-llama"},
        (
            'metadata.name: Invalid value: "70b-llama" is not a DNS-1035 label',
            "starting with a letter",
        ),
    ),
    (
        "name-uppercase",
        {"metadata.name": "Llama"},
        'metadata.name: Invalid value: "Llama": a lowercase RFC 1123 subdomain must consist of',
    ),
    # --- TrainingJob: pool and topologyKey
    (
        "pool-underscore",
        {"spec.pool": "Bad_Pool"},
        'spec.pool: Invalid value: "Bad_Pool": "Bad_Pool" is not a SpotPool name: use lowercase',
    ),
    (
        "pool-64-chars",
        {"spec.pool": "p" * 64},
        "spec.pool: Too long: may not be more than 63 bytes",
    ),
    ("pool-empty", {"spec.pool": ""}, "spec.pool in body should be at least 1 chars long"),
    (
        "topologykey-empty",
        {"spec.topologyKey": ""},
        "spec.topologyKey in body should be at least 1 chars long",
    ),
    (
        "topologykey-space",
        {"spec.topologyKey": "my zone"},
        (
            'spec.topologyKey: Invalid value: "my zone": "my zone" is not a node label key',
            "e.g. topology.kubernetes.io/zone",
        ),
    ),
    (
        "topologykey-no-name",
        {"spec.topologyKey": "example.com/"},
        '"example.com/" is not a node label key',
    ),
    (
        "topologykey-name-64",
        {"spec.topologyKey": f"example.com/{TOO_LONG_LABEL_NAME}"},
        'is not a node label key: use an optional DNS prefix and "/", then at most 63',
    ),
    # --- TrainingJob: templates
    ("no-template", {"spec.template": DELETE}, "spec.template: Required value"),
    ("template-empty", {"spec.template": {}}, "spec.template.spec: Required value"),
    (
        "template-no-containers",
        {"spec.template": {"spec": {"restartPolicy": "Never"}}},
        "spec.template.spec.containers: Required value",
    ),
    (
        "template-typo-containers",
        {"spec.template": {"spec": {"container": _containers("a")}}},
        "spec.template.spec.containers: Required value",
    ),
    (
        "containers-empty",
        {f"{TEMPLATE}.spec.containers": []},
        "spec.template.spec.containers in body should have at least 1 items",
    ),
    (
        "containers-17",
        {f"{TEMPLATE}.spec.containers": _containers(*(f"c{i}" for i in range(17)))},
        "spec.template.spec.containers: Too many: 17: must have at most 16 items",
    ),
    (
        "container-no-image",
        {f"{TEMPLATE}.spec.containers": [{"name": "trainer"}]},
        "spec.template.spec.containers[0].image: Required value",
    ),
    (
        "container-empty-image",
        {f"{TEMPLATE}.spec.containers.0.image": ""},
        "spec.template.spec.containers[0].image in body should be at least 1 chars long",
    ),
    (
        "container-no-name",
        {f"{TEMPLATE}.spec.containers": [{"image": "t:1"}]},
        "spec.template.spec.containers[0].name: Required value",
    ),
    (
        "container-bad-name",
        {f"{TEMPLATE}.spec.containers.0.name": "Trainer_1"},
        (
            'spec.template.spec.containers[0].name: Invalid value: "Trainer_1"',
            '"Trainer_1" is not a container name: use lowercase letters, digits and "-"',
        ),
    ),
    (
        "container-duplicate",
        {f"{TEMPLATE}.spec.containers": _containers("a", "a")},
        'spec.template.spec.containers[1]: Duplicate value: {"name":"a"}',
    ),
    (
        "template-label-bad-value",
        {f"{TEMPLATE}.metadata": {"labels": {"team": "ml research"}}},
        (
            'spec.template.metadata.labels[team]: Invalid value: "ml research"',
            '"ml research" is not a label value: use at most 63 letters, digits,',
        ),
    ),
    (
        "template-label-64-chars",
        {f"{TEMPLATE}.metadata": {"labels": {"team": TOO_LONG_LABEL_NAME}}},
        "spec.template.metadata.labels.team: Too long: may not be more than 63 bytes",
    ),
    (
        "template-label-number",
        {f"{TEMPLATE}.metadata": {"labels": {"team": 7}}},
        "spec.template.metadata.labels.team in body must be of type string",
    ),
]
SP_REJECTED: list[tuple[Any, ...]] = [
    # --- SpotPool: names, types and ranges
    (
        "name-64-chars",
        {"metadata.name": "p" * 64},
        "metadata.name: Invalid value: is too long: use at most 63 characters",
    ),
    (
        "name-uppercase",
        {"metadata.name": "H100"},
        'metadata.name: Invalid value: "H100": a lowercase RFC 1123 subdomain must consist of',
    ),
    ("no-node-selector", {"spec.nodeSelector": DELETE}, "spec.nodeSelector: Required value"),
    (
        "node-selector-empty",
        {"spec.nodeSelector": {}},
        "spec.nodeSelector in body should have at least 1 properties",
    ),
    (
        "node-selector-bad-value",
        {"spec.nodeSelector": {"gpu": "H100 80GB"}},
        'spec.nodeSelector[gpu]: Invalid value: "H100 80GB": "H100 80GB" is not a label value',
    ),
    (
        "node-selector-64-chars",
        {"spec.nodeSelector": {"gpu": TOO_LONG_LABEL_NAME}},
        "spec.nodeSelector.gpu: Too long: may not be more than 63 bytes",
    ),
    (
        "node-selector-bad-key",
        {"spec.nodeSelector": {"gpu product": "h100"}},
        'spec.nodeSelector: Invalid value: "gpu product" is not a label key',
    ),
    (
        "node-selector-number",
        {"spec.nodeSelector": {"gpus": 8}},
        "spec.nodeSelector.gpus in body must be of type string",
    ),
    (
        "buffer-count-and-percent",
        {"spec.buffer.count": 4},
        "spec.buffer: Invalid value: give buffer.count or buffer.percent, not both",
    ),
    (
        "buffer-percent-150",
        {"spec.buffer.percent": 150},
        "spec.buffer.percent in body should be less than or equal to 100",
    ),
    (
        "buffer-count-negative",
        {"spec.buffer": {"count": -1}},
        "spec.buffer.count in body should be greater than or equal to 0",
    ),
    (
        "buffer-percent-string",
        {"spec.buffer.percent": "10%"},
        "spec.buffer.percent in body must be of type integer",
    ),
    (
        "buffer-hot-word",
        {"spec.buffer.hot": "all"},
        'spec.buffer.hot: Invalid value: "all": buffer.hot takes a count from 0 to 1000, or "auto"',
    ),
    (
        "buffer-hot-negative",
        {"spec.buffer.hot": -1},
        'buffer.hot takes a count from 0 to 1000, or "auto"',
    ),
    (
        "notice-too-long",
        {"spec.preemption.noticeSeconds": 7200},
        "spec.preemption.noticeSeconds in body should be less than or equal to 3600",
    ),
    (
        "lemon-zero-failures",
        {"spec.lemon.failures": 0},
        "spec.lemon.failures in body should be greater than or equal to 1",
    ),
    (
        "lemon-window-59",
        {"spec.lemon.windowSeconds": 59},
        "spec.lemon.windowSeconds in body should be greater than or equal to 60",
    ),
    (
        "breaker-zero-percent",
        {"spec.circuitBreaker.maxFailedPercent": 0},
        "spec.circuitBreaker.maxFailedPercent in body should be greater than or equal to 1",
    ),
    (
        "breaker-window-9",
        {"spec.circuitBreaker.windowSeconds": 9},
        "spec.circuitBreaker.windowSeconds in body should be greater than or equal to 10",
    ),
    (
        "remediation-11",
        {"spec.remediation.maxAttempts": 11},
        "spec.remediation.maxAttempts in body should be less than or equal to 10",
    ),
    # --- SpotPool: typos in field names (strict field validation)
    (
        "typo-node-selector",
        {"spec.nodeSelectors": {"a": "b"}},
        'unknown field "spec.nodeSelectors"',
    ),
    ("typo-buffer", {"spec.buffer.percentage": 10}, 'unknown field "spec.buffer.percentage"'),
    ("typo-workload", {f"{WL}.namespce": "batch"}, 'unknown field "spec.workloads[0].namespce"'),
    ("typo-allowed", {"spec.allowedNamespace": ["batch"]}, 'unknown field "spec.allowedNamespace"'),
    # --- SpotPool: namespaces
    (
        "allowed-namespace-invalid",
        {"spec.allowedNamespaces": ["batch", "Batch_Jobs"]},
        (
            'spec.allowedNamespaces[1]: Invalid value: "Batch_Jobs"',
            '"Batch_Jobs" can never be a namespace name: use at most 63 lowercase letters,',
        ),
    ),
    (
        "allowed-namespace-64-chars",
        {"spec.allowedNamespaces": ["batch", TOO_LONG_LABEL_NAME]},
        "spec.allowedNamespaces[1]: Too long: may not be more than 63 bytes",
    ),
    (
        "allowed-namespaces-duplicate",
        {"spec.allowedNamespaces": ["batch", "batch"]},
        'spec.allowedNamespaces[1]: Duplicate value: "batch"',
    ),
    (
        "allowed-namespaces-65",
        {"spec.allowedNamespaces": ["batch", *(f"ns-{i}" for i in range(64))]},
        "spec.allowedNamespaces: Too many: 65: must have at most 64 items",
    ),
    (
        "allowed-namespaces-string",
        {"spec.allowedNamespaces": "batch"},
        "spec.allowedNamespaces in body must be of type array",
    ),
    (
        "workload-namespace-not-allowed",
        {f"{WL}.namespace": "default"},
        (
            'spec.workloads: Invalid value: workload "embed-corpus" runs in namespace "default",',
            "which allowedNamespaces does not list: add the namespace to allowedNamespaces or",
        ),
    ),
    (
        "workloads-without-allowed",
        {"spec.allowedNamespaces": DELETE},
        'workload "embed-corpus" runs in namespace "batch", which allowedNamespaces does not list',
    ),
    (
        "workload-namespace-invalid",
        {f"{WL}.namespace": "Batch"},
        (
            'spec.workloads[0].namespace: Invalid value: "Batch"',
            '"Batch" can never be a namespace name: use at most 63 lowercase letters,',
        ),
    ),
    # --- SpotPool: workloads
    (
        "workload-names-duplicate",
        {"spec.workloads": [_workload("embed"), _workload("rank"), _workload("embed")]},
        (
            'spec.workloads: Invalid value: workload name "embed" is used more than once',
            "give each workload of the pool its own name",
        ),
    ),
    (
        "workload-name-uppercase",
        {f"{WL}.name": "Embed"},
        'spec.workloads[0].name: Invalid value: "Embed": "Embed" is not a workload name',
    ),
    (
        "workload-name-41-chars",
        {f"{WL}.name": "w" * 41},
        "spec.workloads[0].name: Too long: may not be more than 40 bytes",
    ),
    ("workload-no-name", {f"{WL}.name": DELETE}, "spec.workloads[0].name: Required value"),
    (
        "workload-no-template",
        {f"{WL}.template": DELETE},
        "spec.workloads[0].template: Required value",
    ),
    (
        "workload-template-empty",
        {f"{WL}.template": {}},
        "spec.workloads[0].template.spec: Required value",
    ),
    (
        "workload-no-containers",
        {f"{WL}.template.spec.containers": DELETE},
        "spec.workloads[0].template.spec.containers: Required value",
    ),
    (
        "workload-container-no-image",
        {f"{WL}.template.spec.containers.0.image": DELETE},
        "spec.workloads[0].template.spec.containers[0].image: Required value",
    ),
    (
        "workload-weight-zero",
        {f"{WL}.weight": 0},
        "spec.workloads[0].weight in body should be greater than or equal to 1",
    ),
    (
        "workload-weight-1001",
        {f"{WL}.weight": 1001},
        "spec.workloads[0].weight in body should be less than or equal to 1000",
    ),
    (
        "workload-gpus-17",
        {f"{WL}.gpusPerPod": 17},
        "spec.workloads[0].gpusPerPod in body should be less than or equal to 16",
    ),
    (
        "workload-shards-zero",
        {f"{WL}.shards": 0},
        "spec.workloads[0].shards in body should be greater than or equal to 1",
    ),
    (
        "workload-maxpods-above-shards",
        {f"{WL}.maxPods": 6000},
        (
            "spec.workloads[0].maxPods: Invalid value: maxPods cannot exceed shards",
            "lower maxPods or leave it out",
        ),
    ),
    (
        "workload-maxpods-negative",
        {f"{WL}.maxPods": -1},
        "spec.workloads[0].maxPods in body should be greater than or equal to 0",
    ),
    (
        "workloads-65",
        {"spec.workloads": [_workload(f"w{i}") for i in range(65)]},
        "spec.workloads: Too many: 65: must have at most 64 items",
    ),
    (
        "workloads-map",
        {"spec.workloads": {"embed": _workload("embed")}},
        'unknown field "spec.workloads.embed"',
    ),
]

# Accepted: (id, change to the example).
TJ_ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("example", {}),
    ("name-57-chars", {"metadata.name": "l" + "-70b" * 14}),
    ("name-one-letter", {"metadata.name": "l"}),
    ("replicas-zero-min-left-out", {"spec.replicas": 0, "spec.minReplicas": DELETE}),
    ("replicas-zero-min-zero", {"spec.replicas": 0, "spec.minReplicas": 0}),
    ("defaults-only", {"spec": {"template": {"spec": {"containers": _containers("t")}}}}),
    (
        "largest-numbers",
        {
            "spec.replicas": 65536,
            "spec.minReplicas": 65536,
            "spec.maxReplicas": 65536,
            "spec.gpusPerReplica": 16,
            "spec.priority": 1000,
            "spec.healing.backoffSeconds": 3600,
        },
    ),
    ("priority-lowest", {"spec.priority": -1000}),
    ("topologykey-no-prefix", {"spec.topologyKey": "rack"}),
    ("topologykey-longest-name", {"spec.topologyKey": f"example.com/{LONG_LABEL_NAME}"}),
    ("pool-63-chars", {"spec.pool": "p" * 63}),
    (
        "template-full-pod",
        {
            f"{TEMPLATE}.metadata": {
                "labels": {"team": "ml.research_1", "empty": ""},
                "annotations": {"note": "any text at all"},
            },
            f"{TEMPLATE}.spec.volumes": [{"name": "data", "emptyDir": {}}],
            f"{TEMPLATE}.spec.containers": [
                {
                    "name": "t",
                    "image": "t:1",
                    "volumeMounts": [{"name": "data", "mountPath": "/d"}],
                },
                *_containers(*(f"sidecar-{i}" for i in range(15))),
            ],
        },
    ),
]
SP_ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("example", {}),
    ("name-63-chars", {"metadata.name": f"p{TOKEN}-".ljust(63, "x")}),
    ("name-with-dots", {"metadata.name": f"h100.{TOKEN}.eu-1"}),
    ("node-selector-empty-value", {"spec.nodeSelector": {"example.com/gpu": ""}}),
    ("buffer-count-zero", {"spec.buffer": {"count": 0}}),
    ("buffer-hot-count", {"spec.buffer.hot": 2}),
    ("buffer-hot-auto", {"spec.buffer.hot": "auto"}),
    ("no-workloads-no-namespaces", {"spec.workloads": DELETE, "spec.allowedNamespaces": DELETE}),
    ("workload-name-40-chars", {f"{WL}.name": "w" * 40}),
    (
        "largest-lists",  # every list and map at its maxItems / maxProperties, every CEL rule run
        {
            "spec.allowedNamespaces": [f"ns-{i}-".ljust(63, "n") for i in range(64)],
            "spec.workloads": [
                _workload(f"w{i}-".ljust(40, "w"), f"ns-{i}-".ljust(63, "n")) for i in range(64)
            ],
            "spec.nodeSelector": {f"example.com/k{i}": "v" * 63 for i in range(32)},
        },
    ),
]


def _with_kind(kind: str, cases: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(id, change, ...) as (kind-id, kind, change, ...)."""
    prefix = {TJ: "tj", SP: "sp"}[kind]
    return [(f"{prefix}-{c[0]}", kind, *c[1:]) for c in cases]


REJECTED = _with_kind(TJ, TJ_REJECTED) + _with_kind(SP, SP_REJECTED)
ACCEPTED = _with_kind(TJ, TJ_ACCEPTED) + _with_kind(SP, SP_ACCEPTED)


def _ids(cases: list[tuple[Any, ...]]) -> list[str]:
    return [c[0] for c in cases]


def _path(doc: dict[str, Any], namespace: str) -> str:
    if doc["kind"] == SP:
        return valet_path("spotpools", None)
    return valet_path("trainingjobs", namespace)


@pytest.fixture(scope="module")
def kubeconfig(real_api: Backend) -> str:
    assert real_api.kubeconfig is not None
    return real_api.kubeconfig


@pytest.fixture
async def api(kubeconfig: str) -> AsyncIterator[Api]:
    client = Api(load_api_client(kubeconfig))
    yield client
    client.close()


@pytest.fixture(scope="module")
def namespace(kubeconfig: str) -> Iterator[str]:
    """A namespace of this module's own, deleted at its end."""
    name = f"valet-crds-{TOKEN}"

    async def call(method: str, path: str, body: Any = None) -> None:
        client = Api(load_api_client(kubeconfig))
        try:
            await client.call(method, path, body)
        finally:
            client.close()

    namespace_body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    asyncio.run(call("POST", core_path("namespaces", None), namespace_body))
    yield name
    asyncio.run(call("DELETE", core_path("namespaces", None, name)))


async def _dry_run(
    api: Api, doc: dict[str, Any], namespace: str, validation: str = "Strict"
) -> dict[str, Any]:
    if doc["kind"] == TJ:
        doc["metadata"]["namespace"] = namespace
    query = {"dryRun": "All", "fieldValidation": validation}
    return await api.call("POST", _path(doc, namespace), doc, query=query)


@pytest.mark.parametrize("case", REJECTED, ids=_ids(REJECTED))
async def test_the_server_refuses_a_malformed_manifest_naming_the_field(
    api: Api, namespace: str, case: tuple[Any, ...]
) -> None:
    _, kind, change, expected, *validation = case
    with pytest.raises(errors.PermanentError) as refused:
        await _dry_run(api, changed(kind, change), namespace, *validation)
    assert refused.value.status in (400, 422)
    for fragment in (expected,) if isinstance(expected, str) else expected:
        assert fragment in refused.value.message


@pytest.mark.parametrize("case", ACCEPTED, ids=_ids(ACCEPTED))
async def test_the_server_accepts_a_valid_edge_case_and_valet_parses_it(
    api: Api, namespace: str, case: tuple[str, str, dict[str, Any]]
) -> None:
    _, kind, change = case
    stored = await _dry_run(api, changed(kind, change), namespace)
    parse = TrainingJobSpec.parse if kind == TJ else SpotPoolSpec.parse
    parse(stored["spec"])  # what the server stores, the operator can run


async def test_replicas_zero_keeps_min_replicas_unset_and_valet_reads_it_as_zero(
    api: Api, namespace: str
) -> None:
    doc = changed(TJ, {"spec.replicas": 0, "spec.minReplicas": DELETE})
    stored = await _dry_run(api, doc, namespace)
    assert "minReplicas" not in stored["spec"]
    assert TrainingJobSpec.parse(stored["spec"]).min_replicas == 0


@pytest.mark.parametrize(
    "path",
    [
        "e2e/kind-smoke.yaml",
        *(str(p.relative_to(ROOT)) for p in sorted((ROOT / "examples").glob("*.yaml"))),
    ],
)
async def test_the_shipped_manifests_are_accepted(api: Api, namespace: str, path: str) -> None:
    for doc in yaml.safe_load_all((ROOT / path).read_text()):
        if doc["apiVersion"].startswith("valet.dev/"):
            if doc["kind"] == SP:
                doc["metadata"]["name"] += f"-{TOKEN}"  # the cluster may hold one already
            await _dry_run(api, doc, namespace)


async def test_cel_refuses_an_invalid_edit_of_a_stored_job(api: Api, namespace: str) -> None:
    doc = changed(TJ, {"metadata.namespace": namespace})
    path = valet_path("trainingjobs", namespace, doc["metadata"]["name"])
    await api.call("POST", valet_path("trainingjobs", namespace), doc)
    try:
        with pytest.raises(errors.InvalidError) as refused:
            await api.call("PATCH", path, {"spec": {"minReplicas": 17}}, content_type=MERGE)
        assert refused.value.status == 422
        assert (
            "spec.minReplicas: Invalid value: minReplicas must not exceed replicas:"
            " lower minReplicas or raise replicas" in refused.value.message
        )
        # The scale subresource (kubectl scale) meets the same rule.
        with pytest.raises(errors.InvalidError) as scaled:
            await api.call("PATCH", f"{path}/scale", {"spec": {"replicas": 13}}, content_type=MERGE)
        assert "minReplicas must not exceed replicas" in scaled.value.message
        stored = await api.call("GET", path)
        assert (stored["spec"]["replicas"], stored["spec"]["minReplicas"]) == (16, 14)
        # A valid edit still goes through.
        await api.call("PATCH", path, {"spec": {"minReplicas": 12}}, content_type=MERGE)
    finally:
        await api.call("DELETE", path)
