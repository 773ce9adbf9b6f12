"""The simulated backend, and the GPUHealthy contract between agent and operator."""

from __future__ import annotations

import json

import pytest

from valet.agent.classify import Classifier, Thresholds
from valet.agent.simulated import FaultSpecError, SimulatedBackend, parse_faults
from valet.model.enums import Health
from valet.model.nodehealth import (
    ANNOTATION,
    CONDITION_TYPE,
    annotation,
    condition,
    parse_node_health,
)
from valet.model.timefmt import to_rfc3339


class Node:
    """The annotation a test writes, read the way the agent reads its Node."""

    def __init__(self) -> None:
        self.faults: str | None = None

    def __call__(self) -> str | None:
        return self.faults


def test_injected_xid_flips_the_verdict_and_clearing_restores_it() -> None:
    node = Node()
    backend, classifier = SimulatedBackend("n1", 8, node), Classifier()
    assert classifier.classify(backend.probe(), 0).health is Health.HEALTHY
    node.faults = json.dumps([{"gpu": 3, "xid": 79}])
    verdict = classifier.classify(backend.probe(), 1)
    assert verdict.health is Health.UNHEALTHY and verdict.reason == "XID79GPUFellOffBus"
    assert "GPU 3 (GPU-sim-n1-3)" in verdict.message
    node.faults = None
    classifier.clear()  # what a successful remediation does
    assert classifier.classify(backend.probe(), 2).health is Health.HEALTHY


@pytest.mark.parametrize("signal", ["gpu-lost", "ecc-dbe", "row-remap-failure", "nvlink-down"])
def test_named_signals_read_like_real_backends(signal: str) -> None:
    node = Node()
    node.faults = json.dumps([{"gpu": 0, "signal": signal}])
    verdict = Classifier().classify(SimulatedBackend("n", 2, node).probe(), 0)
    assert signal in verdict.signals and verdict.health is Health.UNHEALTHY


def test_fault_file_is_read_too(tmp_path) -> None:
    path = tmp_path / "faults.json"
    path.write_text(json.dumps([{"gpu": 1, "signal": "thermal-throttle"}]))
    backend = SimulatedBackend("n", 2, fault_file=path)
    classifier = Classifier(Thresholds(soft_persist_seconds=0))
    assert classifier.classify(backend.probe(), 0).health is Health.SUSPECT


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ('{"gpu": 1}', "JSON list"),
        ('[{"gpu": 9, "xid": 79}]', "not in 0..7"),
        ('[{"gpu": 1}]', "exactly one"),
        ('[{"gpu": 1, "signal": "gremlins"}]', "unknown signal"),
    ],
)
def test_bad_fault_specs_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(FaultSpecError, match=message):
        parse_faults(text, 8)
    node = Node()
    node.faults = text
    reading = SimulatedBackend("n", 8, node).probe()
    assert message in reading.probe_errors[0] and len(reading.gpus) == 8  # the probe goes on


def test_the_operator_reads_back_what_the_agent_publishes() -> None:
    node = Node()
    node.faults = json.dumps([{"gpu": 3, "xid": 79}])
    verdict = Classifier().classify(SimulatedBackend("n", 8, node).probe(), 100.0)
    cond = condition(verdict, 100.0, previous=None)
    assert (cond["type"], cond["status"], cond["reason"]) == (
        CONDITION_TYPE,
        "False",
        "XID79GPUFellOffBus",
    )
    later = condition(verdict, 130.0, previous=cond)
    assert later["lastTransitionTime"] == cond["lastTransitionTime"]  # only heartbeat moves
    assert later["lastHeartbeatTime"] == to_rfc3339(130.0)
    health = parse_node_health([later], {ANNOTATION: annotation(verdict, 100.0)})
    assert health.verdict is Health.UNHEALTHY and health.signals == ("xid:79",)
    assert (health.since, health.heartbeat) == (100.0, 130.0)
    assert [g.index for g in health.gpus if not g.healthy] == [3]


def test_suspect_travels_in_the_annotation_and_no_condition_means_unknown() -> None:
    node = Node()
    node.faults = json.dumps([{"gpu": 0, "signal": "thermal-throttle"}])
    verdict = Classifier(Thresholds(soft_persist_seconds=0)).classify(
        SimulatedBackend("n", 1, node).probe(), 50.0
    )
    published = parse_node_health(
        [condition(verdict, 60.0, None)], {ANNOTATION: annotation(verdict, 50.0)}
    )
    assert published.verdict is Health.SUSPECT and published.since == 50.0
    assert parse_node_health([], {}).verdict is Health.UNKNOWN
    assert parse_node_health([], {}).heartbeat is None


def test_an_injected_xid_is_one_event_however_many_probes_see_it() -> None:
    faults = ['[{"gpu": 1, "xid": 79}]']
    backend = SimulatedBackend("n1", 8, faults=lambda: faults[0])
    counts = [dict(backend.probe().gpus[1].xid_events).get(79, 0) for _ in range(5)]
    assert counts == [1, 0, 0, 0, 0]
    faults[0] = '[{"gpu": 1, "xid": 79}, {"gpu": 1, "xid": 79}]'  # the same XID again
    assert dict(backend.probe().gpus[1].xid_events)[79] == 1
