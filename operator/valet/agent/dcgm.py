"""DCGM backend: scrape a dcgm-exporter endpoint, parse it with prometheus-client's parser.

XIDs need care. ``DCGM_FI_DEV_XID_ERRORS`` is a last-value gauge (the code of the most
recent XID), so two equal XIDs between scrapes look like one. Where the exporter also
exposes ``DCGM_EXP_XID_ERRORS_COUNT`` (a counter per ``xid`` label) valet counts new
events from its deltas; otherwise it reports an XID when the gauge's value changes to
a non-zero code. Counters seen for the first time set the baseline: an agent restart
does not replay old XIDs.
"""

from __future__ import annotations

import dataclasses
import urllib.request
from collections import defaultdict
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from valet.agent.readings import GpuReading, NodeReading

DEFAULT_URL = "http://localhost:9400/metrics"

# dcgm-exporter's clock-throttle bits (the same as NVML's clocks-event reasons).
_THERMAL_BITS = 0x20 | 0x40
_POWER_BRAKE_BIT = 0x80
_HW_SLOWDOWN_BIT = 0x08
_HEALTH_FAIL = 20  # DCGM_HEALTH_RESULT_FAIL
PCIE_REPLAYS_PER_SCRAPE = 100


class DcgmUnavailableError(RuntimeError):
    """The dcgm-exporter endpoint did not answer."""


@dataclasses.dataclass
class _Gpu:
    uuid: str = ""
    values: dict[str, float] = dataclasses.field(default_factory=dict)
    xid_counts: dict[int, float] = dataclasses.field(default_factory=dict)


def fetch_url(url: str, timeout: float = 5.0) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body: bytes = response.read()
    except OSError as err:
        raise DcgmUnavailableError(f"cannot scrape {url}: {err}") from err
    return body.decode()


def parse(text: str) -> dict[int, _Gpu]:
    """dcgm-exporter text → per-GPU values (keyed by the ``gpu`` label)."""
    gpus: dict[int, _Gpu] = defaultdict(_Gpu)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if "gpu" not in labels:
                continue
            gpu = gpus[int(labels["gpu"])]
            gpu.uuid = labels.get("UUID", gpu.uuid)
            name = family.name  # the parser adds "_total" to counter sample names
            if name == "DCGM_EXP_XID_ERRORS_COUNT" and "xid" in labels:
                gpu.xid_counts[int(labels["xid"])] = sample.value
            elif name.startswith("DCGM_FI_DEV_NVLINK_") and name.endswith("_TOTAL"):
                gpu.values["nvlink_errors"] = gpu.values.get("nvlink_errors", 0) + sample.value
            else:
                gpu.values[name] = sample.value
    return dict(gpus)


class DcgmBackend:
    name = "dcgm"

    def __init__(
        self,
        url: str = DEFAULT_URL,
        expected: int | None = None,
        fetch: Callable[[str], str] = fetch_url,
    ) -> None:
        self.url, self.expected, self.fetch = url, expected, fetch
        self.last_xid: dict[int, float] = {}
        self.last_counts: dict[int, dict[int, float]] = {}
        self.last_pcie: dict[int, float] = {}
        self.fetch(url)  # fail at start-up, with a clear message, if nothing answers

    def close(self) -> None:
        pass

    def probe(self) -> NodeReading:
        try:
            gpus = parse(self.fetch(self.url))
        except (DcgmUnavailableError, ValueError) as err:
            return NodeReading((), self.expected, (str(err),))
        return NodeReading(
            tuple(self._reading(i, g) for i, g in sorted(gpus.items())), self.expected
        )

    def _new_xids(self, index: int, gpu: _Gpu) -> tuple[int, ...]:
        if gpu.xid_counts:
            before = self.last_counts.get(index)
            self.last_counts[index] = dict(gpu.xid_counts)
            if before is None:
                return ()
            return tuple(x for x, n in sorted(gpu.xid_counts.items()) if n > before.get(x, 0))
        value = gpu.values.get("DCGM_FI_DEV_XID_ERRORS")
        if value is None:
            return ()
        before_value = self.last_xid.get(index)
        self.last_xid[index] = value
        if before_value is None or value == before_value or value == 0:
            return ()
        return (int(value),)

    def _reading(self, index: int, gpu: _Gpu) -> GpuReading:
        v = gpu.values
        replays = v.get("DCGM_FI_DEV_PCIE_REPLAY_COUNTER")
        before = self.last_pcie.get(index)
        if replays is not None:
            self.last_pcie[index] = replays
        reasons = int(v.get("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", 0))
        throttle = set()
        if reasons & _THERMAL_BITS:
            throttle.add("thermal")
        if reasons & _POWER_BRAKE_BIT:
            throttle.add("power-brake")
        if reasons & _HW_SLOWDOWN_BIT:
            throttle.add("hw-slowdown")
        failure = bool(v.get("DCGM_FI_DEV_ROW_REMAP_FAILURE"))
        remap_pending = bool(v.get("DCGM_FI_DEV_ROW_REMAP_PENDING")) or (
            bool(v.get("DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS")) and not failure
        )
        return GpuReading(
            index=index,
            uuid=gpu.uuid,
            xids=self._new_xids(index, gpu),
            ecc_sbe_volatile=_int(v.get("DCGM_FI_DEV_ECC_SBE_VOL_TOTAL")),
            ecc_dbe_volatile=_int(v.get("DCGM_FI_DEV_ECC_DBE_VOL_TOTAL")),
            ecc_sbe_aggregate=_int(v.get("DCGM_FI_DEV_ECC_SBE_AGG_TOTAL")),
            ecc_dbe_aggregate=_int(v.get("DCGM_FI_DEV_ECC_DBE_AGG_TOTAL")),
            retired_pages_pending=bool(v.get("DCGM_FI_DEV_RETIRED_PENDING")),
            row_remap_pending=remap_pending,
            row_remap_failure=failure,
            temperature_c=v.get("DCGM_FI_DEV_GPU_TEMP"),
            throttle=frozenset(throttle),
            pcie_degraded=replays is not None
            and before is not None
            and replays - before >= PCIE_REPLAYS_PER_SCRAPE,
            nvlink_errors=_int(v.get("nvlink_errors")),
            health_failing=v.get("DCGM_EXP_GPU_HEALTH_STATUS", 0) >= _HEALTH_FAIL,
        )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
