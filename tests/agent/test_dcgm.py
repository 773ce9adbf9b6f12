"""The DCGM backend on dcgm-exporter output in the real exposition format and names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from valet.agent.classify import Classifier
from valet.agent.dcgm import DcgmBackend, DcgmUnavailableError
from valet.model.enums import Health

HEALTHY = (Path(__file__).parent / "fixtures" / "dcgm_h100_healthy.txt").read_text()
LABELS = (
    'gpu="1",UUID="GPU-5d3a1f6e-0c1b-4a51-9d1e-2f0a9b1c0001",device="nvidia1",'
    'modelName="NVIDIA H100 80GB HBM3",Hostname="gpu-node-17",DCGM_FI_DRIVER_VERSION="550.90.07"'
)


def with_gpu1(text: str, metric: str, value: float) -> str:
    """Set (or add) GPU 1's sample of a metric."""
    line = f"{metric}{{{LABELS}}} {value:g}"
    pattern = re.compile(rf"^{metric}\{{gpu=\"1\".*$", re.MULTILINE)
    return pattern.sub(line, text) if pattern.search(text) else text + line + "\n"


def xid_count(text: str, xid: int, count: int) -> str:
    line = f'DCGM_EXP_XID_ERRORS_COUNT{{{LABELS},window_size_in_ms="300000",xid="{xid}"}} {count}'
    pattern = re.compile(rf'^DCGM_EXP_XID_ERRORS_COUNT\{{gpu="1".*xid="{xid}"\}}.*$', re.MULTILINE)
    return pattern.sub(line, text) if pattern.search(text) else text + line + "\n"


class Exporter:
    """Serves whatever text the test sets, like a dcgm-exporter endpoint."""

    def __init__(self, text: str = HEALTHY) -> None:
        self.text: str | None = text

    def __call__(self, url: str) -> str:
        if self.text is None:
            raise DcgmUnavailableError(f"cannot scrape {url}: connection refused")
        return self.text


def test_healthy_scrape() -> None:
    reading = DcgmBackend(fetch=Exporter()).probe()
    assert [g.uuid[-4:] for g in reading.gpus] == ["0000", "0001"]
    assert reading.gpus[1].temperature_c == 43 and reading.gpus[1].ecc_sbe_volatile == 2
    assert Classifier().classify(reading, 0).health is Health.HEALTHY


def test_last_value_xid_gauge_is_neither_double_counted_nor_missed() -> None:
    exporter = Exporter()
    backend = DcgmBackend(fetch=exporter)
    assert backend.probe().gpus[1].xids == ()
    exporter.text = with_gpu1(HEALTHY, "DCGM_FI_DEV_XID_ERRORS", 79)
    assert backend.probe().gpus[1].xids == (79,)
    assert backend.probe().gpus[1].xids == ()  # the same last value is not a new event
    exporter.text = with_gpu1(HEALTHY, "DCGM_FI_DEV_XID_ERRORS", 48)
    assert backend.probe().gpus[1].xids == (48,)


def test_xid_counts_are_preferred_and_do_not_replay_after_a_restart() -> None:
    exporter = Exporter(xid_count(HEALTHY, 79, 2))
    backend = DcgmBackend(fetch=exporter)
    assert backend.probe().gpus[1].xids == ()  # a baseline, not two new events
    exporter.text = xid_count(xid_count(HEALTHY, 79, 3), 13, 1)
    assert backend.probe().gpus[1].xids == (13, 79)
    assert backend.probe().gpus[1].xids == ()


@pytest.mark.parametrize(
    ("metric", "value", "signal"),
    [
        ("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", 1, "ecc-dbe"),
        ("DCGM_FI_DEV_ROW_REMAP_FAILURE", 1, "row-remap-failure"),
        ("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS", 2, "row-remap-pending"),
        ("DCGM_FI_DEV_RETIRED_PENDING", 1, "retired-pages-pending"),
        ("DCGM_EXP_GPU_HEALTH_STATUS", 20, "node-problem"),
    ],
)
def test_hard_signals(metric: str, value: float, signal: str) -> None:
    reading = DcgmBackend(fetch=Exporter(with_gpu1(HEALTHY, metric, value))).probe()
    verdict = Classifier().classify(reading, 0)
    assert verdict.health is Health.UNHEALTHY and signal in verdict.signals
    assert [g.index for g in verdict.gpus if not g.healthy] == [1]


def test_soft_signals_from_replay_counters_and_throttling() -> None:
    exporter = Exporter()
    backend, classifier = DcgmBackend(fetch=exporter), Classifier()
    classifier.classify(backend.probe(), 0)
    text = with_gpu1(HEALTHY, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 500)
    exporter.text = with_gpu1(text, "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 0x40)
    first = classifier.classify(backend.probe(), 10)
    assert first.health is Health.HEALTHY  # not persisted yet
    exporter.text = with_gpu1(
        with_gpu1(HEALTHY, "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", 1000),
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS",
        0x40,
    )
    later = classifier.classify(backend.probe(), 200)
    assert later.health is Health.SUSPECT
    assert {"pcie-degraded", "thermal-throttle"} <= set(later.signals)


def test_exporter_down() -> None:
    exporter = Exporter(None)
    with pytest.raises(DcgmUnavailableError, match="connection refused"):
        DcgmBackend(fetch=exporter)
    exporter.text = HEALTHY
    backend = DcgmBackend(fetch=exporter)
    exporter.text = None
    verdict = Classifier().classify(backend.probe(), 0)
    assert verdict.health is Health.UNKNOWN and "connection refused" in verdict.message
