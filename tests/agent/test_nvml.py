"""The NVML backend against a fake pynvml module: every signal, per-GPU isolation, storms."""

from __future__ import annotations

import tracemalloc

import pynvml
import pytest

from tests.agent.fake_pynvml import FakeGpu, FakeNvml
from valet.agent.classify import Classifier, Thresholds
from valet.agent.nvml import NvmlBackend, NvmlUnavailableError
from valet.model.enums import Health


def gpus(n: int = 4) -> list[FakeGpu]:
    return [FakeGpu(uuid=f"GPU-{i:04d}") for i in range(n)]


def probe(fake: FakeNvml, expected: int | None = None):
    return NvmlBackend(fake, expected=expected).probe()


def test_healthy_node_reads_clean() -> None:
    reading = probe(FakeNvml(gpus()))
    assert [g.uuid for g in reading.gpus] == ["GPU-0000", "GPU-0001", "GPU-0002", "GPU-0003"]
    verdict = Classifier().classify(reading, 0.0)
    assert verdict.health is Health.HEALTHY and verdict.signals == ()


@pytest.mark.parametrize(
    ("script", "signal"),
    [
        pytest.param(lambda g: setattr(g, "lost", True), "gpu-lost", id="fell-off-bus"),
        pytest.param(lambda g: setattr(g, "dbe", 1), "ecc-dbe", id="double-bit-ecc"),
        pytest.param(
            lambda g: setattr(g, "pages_pending", True), "retired-pages-pending", id="pages"
        ),
        pytest.param(
            lambda g: setattr(g, "remapped", (0, 1, 0, 1)), "row-remap-failure", id="remap-failure"
        ),
        pytest.param(
            lambda g: setattr(g, "remapped", (0, 1, 1, 0)), "row-remap-pending", id="remap-pending"
        ),
        pytest.param(
            lambda g: setattr(g, "nvlinks", [True, False, True, True]),
            "nvlink-down",
            id="nvlink-down",
        ),
        pytest.param(lambda g: setattr(g, "temperature", 99), "thermal-shutdown", id="too-hot"),
    ],
)
def test_hard_signals_mark_the_gpu_unhealthy_at_once(script, signal: str) -> None:
    fake = FakeNvml(gpus())
    backend = NvmlBackend(fake)
    script(fake.gpus[2])  # the fault appears while the agent runs
    verdict = Classifier().classify(backend.probe(), 0.0)
    assert verdict.health is Health.UNHEALTHY
    assert signal in verdict.signals
    bad = [g for g in verdict.gpus if not g.healthy]
    assert [g.index for g in bad] == [2]
    assert "GPU 2 (GPU-0002)" in verdict.message


def test_xid_events_are_read_from_the_event_set_and_latched() -> None:
    fake = FakeNvml(gpus())
    backend, classifier = NvmlBackend(fake), Classifier()
    fake.xid(1, 79)
    first = classifier.classify(backend.probe(), 0.0)
    assert first.health is Health.UNHEALTHY and first.reason == "XID79GPUFellOffBus"
    # No new event: the fault stays latched until remediation clears it.
    assert classifier.classify(backend.probe(), 10.0).health is Health.UNHEALTHY
    classifier.clear()
    assert classifier.classify(backend.probe(), 20.0).health is Health.HEALTHY


def test_application_xids_never_mark_the_node() -> None:
    fake = FakeNvml(gpus())
    for code in (13, 31, 43, 45):
        fake.xid(0, code)
    backend = NvmlBackend(fake)
    verdict = Classifier().classify(backend.probe(), 0.0)
    assert verdict.health is Health.HEALTHY
    assert dict(backend.xid_counts) == {13: 1, 31: 1, 43: 1, 45: 1}


def test_no_event_is_missed_between_probes() -> None:
    fake = FakeNvml(gpus())
    backend = NvmlBackend(fake)
    fake.xid(0, 13)
    backend.probe()
    fake.xid(3, 48)
    fake.xid(3, 13)
    reading = backend.probe()
    assert reading.gpus[3].xids == (48, 13)
    assert sum(backend.xid_counts.values()) == 3


@pytest.mark.parametrize(
    ("script", "signal"),
    [
        pytest.param(
            lambda g: setattr(g, "reasons", pynvml.nvmlClocksEventReasonHwThermalSlowdown),
            "thermal-throttle",
            id="thermal",
        ),
        pytest.param(
            lambda g: setattr(g, "reasons", pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown),
            "thermal-throttle",
            id="power-brake",
        ),
        pytest.param(lambda g: setattr(g, "width", 8), "pcie-degraded", id="pcie-width"),
    ],
)
def test_soft_signals_make_the_node_suspect_only_when_they_persist(script, signal: str) -> None:
    fake = FakeNvml(gpus())
    script(fake.gpus[0])
    backend, classifier = NvmlBackend(fake), Classifier(Thresholds(soft_persist_seconds=60))
    assert classifier.classify(backend.probe(), 0.0).health is Health.HEALTHY
    assert classifier.classify(backend.probe(), 30.0).health is Health.HEALTHY
    later = classifier.classify(backend.probe(), 61.0)
    assert later.health is Health.SUSPECT and signal in later.signals
    assert later.reason.startswith("Suspect")


def test_rising_correctable_ecc_and_nvlink_errors_are_soft_signals() -> None:
    fake = FakeNvml(gpus())
    backend, classifier = NvmlBackend(fake), Classifier(Thresholds(soft_persist_seconds=0))
    classifier.classify(backend.probe(), 0.0)
    fake.gpus[1].sbe += 50
    fake.gpus[2].nvlink_errors += 500
    verdict = classifier.classify(backend.probe(), 1.0)
    assert verdict.health is Health.SUSPECT
    assert {"ecc-sbe-rising", "nvlink-errors"} <= set(verdict.signals)
    # A flat counter is not rising.
    assert classifier.classify(backend.probe(), 2.0).health is Health.HEALTHY


def test_ecc_counts_are_read_volatile_and_aggregate() -> None:
    fake = FakeNvml(gpus(1))
    fake.gpus[0].sbe, fake.gpus[0].sbe_total, fake.gpus[0].dbe_total = 3, 30, 2
    gpu = probe(fake).gpus[0]
    assert (
        gpu.ecc_sbe_volatile,
        gpu.ecc_sbe_aggregate,
        gpu.ecc_dbe_volatile,
        gpu.ecc_dbe_aggregate,
    ) == (3, 30, 0, 2)


def test_a_call_failing_for_one_gpu_does_not_stop_the_others() -> None:
    fake = FakeNvml(gpus())
    fake.gpus[1].broken = {"ecc", "temperature"}
    fake.gpus[3].unsupported = {"remap", "nvlink"}
    reading = probe(fake)
    assert [g.index for g in reading.gpus] == [0, 1, 2, 3]
    assert reading.gpus[1].ecc_sbe_volatile is None and reading.gpus[1].errors
    assert reading.gpus[0].temperature_c == 40.0 and reading.gpus[2].errors == ()
    assert reading.gpus[3].errors == ()  # NOT_SUPPORTED is not an error


def test_gpu_lost_mid_probe() -> None:
    fake = FakeNvml(gpus())
    backend = NvmlBackend(fake)
    assert not any(g.lost for g in backend.probe().gpus)
    fake.gpus[2].lost = True
    reading = backend.probe()
    assert [g.lost for g in reading.gpus] == [False, False, True, False]
    assert Classifier().classify(reading, 0.0).reason == "GPULost"


def test_fewer_gpus_than_expected_is_a_hard_fault() -> None:
    verdict = Classifier().classify(probe(FakeNvml(gpus(7)), expected=8), 0.0)
    assert verdict.health is Health.UNHEALTHY and "gpu-missing" in verdict.signals


def test_init_failure_is_a_clear_error() -> None:
    with pytest.raises(NvmlUnavailableError, match="nvmlInit failed"):
        NvmlBackend(FakeNvml([], init_error=pynvml.NVML_ERROR_DRIVER_NOT_LOADED))


def test_xid_storm_keeps_memory_bounded() -> None:
    fake = FakeNvml(gpus(8))
    backend = NvmlBackend(fake)
    for i in range(8):
        fake.xid(i, 13, times=5_000)
        fake.xid(i, 79, times=1_000)
    tracemalloc.start()
    readings = [backend.probe() for _ in range(6)]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 2_000_000  # bytes: the storm is counted, not stored
    assert all(set(g.xids) <= {13, 79} and len(g.xids) <= 2 for r in readings for g in r.gpus)
    assert sum(backend.xid_counts.values()) == 48_000  # every event counted, none lost


def test_xids_land_on_their_gpu_though_handles_are_unhashable_pointers() -> None:
    # pynvml's handles are ctypes pointers, and an event's ``device`` is a new pointer
    # object at every read: dict lookups by handle raised TypeError on real NVML.
    fake = FakeNvml(gpus())
    backend = NvmlBackend(fake)
    with pytest.raises(TypeError):
        hash(backend.devices[2].handle)
    fake.xid(2, 79)
    reading = backend.probe()
    assert [g.xids for g in reading.gpus] == [(), (), (79,), ()]
