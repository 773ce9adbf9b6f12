"""NVML backend (pynvml, from nvidia-ml-py): the only module that calls NVML.

The pynvml module is a constructor argument, so tests drive this code through a fake
module with the same functions, constants and exception class. Every per-device call
is guarded on its own: one broken GPU, or one unsupported query, never stops the probe
of the others.

XIDs come from an NVML event set registered for critical XID errors. Once the agent's
loop calls ``start_events``, a thread of its own waits on the set
(``nvmlEventSetWait_v2``), counts every event by GPU and code, and calls ``notify`` for a
hard XID (one the fault table drains on) or a GPU lost, so the loop probes at once. The
next probe takes the counts; memory stays bounded by the number of distinct codes, however
many events arrive. Without the thread (``--once``, a diagnostics probe) each probe drains
the set itself, bounded per probe. Either way no event is missed between probes.

pynvml's device handles are ctypes pointers: unhashable, and an event's ``device`` is a
new pointer object at every read, so GPUs are matched by the address a handle points to.
"""

from __future__ import annotations

import ctypes
import dataclasses
import importlib
import threading
from collections import Counter
from collections.abc import Callable
from types import ModuleType
from typing import Any, TypeVar

import structlog

from valet.agent.readings import GpuReading, NodeReading
from valet.model.faults import rule_for, xid_signal

log = structlog.get_logger("valet.agent.nvml")
_T = TypeVar("_T")
MAX_EVENTS_PER_PROBE = 10_000  # without the watcher thread: events one probe drains
WAIT_MS = 250  # the watcher's longest wait: how long close() may wait for it to leave
RETRY_SECONDS = 1.0  # after an event-set error other than a timeout


class NvmlUnavailableError(RuntimeError):
    """NVML could not initialise (no driver, no GPU, no permission)."""


@dataclasses.dataclass
class _Device:
    index: int
    handle: Any
    uuid: str
    lost: bool = False


def device_key(handle: Any) -> int:
    """The address a pynvml device handle points to: the same for every pointer to a GPU."""
    return ctypes.cast(handle, ctypes.c_void_p).value or 0


class NvmlBackend:
    name = "nvml"

    def __init__(self, module: ModuleType | Any | None = None, expected: int | None = None) -> None:
        # The only import of pynvml in valet.
        nvml: Any = module if module is not None else importlib.import_module("pynvml")
        self.nvml = nvml
        self.expected = expected
        self.xid_counts: Counter[int] = Counter()  # every XID seen, by code
        self.dropped_events = 0  # probes that left events for the next (no watcher thread)
        self._lock = threading.Lock()  # the watcher thread's counts and errors
        self._pending: dict[int, Counter[int]] = {}  # device key → code → events since a probe
        self._event_errors: dict[str, None] = {}  # distinct, until the next probe reports them
        self._closing = threading.Event()
        self._watcher: threading.Thread | None = None
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as err:
            raise NvmlUnavailableError(f"nvmlInit failed: {err}") from err
        self.devices: list[_Device] = []
        self.errors: list[str] = []
        count = self._node_call("device count", nvml.nvmlDeviceGetCount) or 0
        for index in range(count):
            handle = self._node_call(f"GPU {index} handle", nvml.nvmlDeviceGetHandleByIndex, index)
            if handle is None:
                continue
            device = _Device(index, handle, "")
            device.uuid = _text(self._safe(device, [], "", nvml.nvmlDeviceGetUUID, handle))
            self.devices.append(device)
        self.events = self._node_call("event set", nvml.nvmlEventSetCreate)
        for device in self.devices:
            if self.events is not None:
                self._safe(
                    device,
                    self.errors,
                    f"GPU {device.index} XID events",
                    nvml.nvmlDeviceRegisterEvents,
                    device.handle,
                    nvml.nvmlEventTypeXidCriticalError,
                    self.events,
                )

    def start_events(self, notify: Callable[[], None]) -> None:
        """Wait on the XID event set in a thread; call ``notify`` for a hard XID or a lost GPU."""
        if self.events is None or self._watcher is not None:
            return
        self._watcher = threading.Thread(
            target=self._watch, args=(notify,), name="nvml-xid-events", daemon=True
        )
        self._watcher.start()

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join()  # within WAIT_MS: the set must not be freed under a waiter
        if self.events is not None:
            self._safe(None, [], "", self.nvml.nvmlEventSetFree, self.events)
        self._safe(None, [], "", self.nvml.nvmlShutdown)

    def busy(self) -> list[str]:
        """Processes using a GPU ("GPU i: pid p"); a GPU that cannot say counts as busy."""
        users: list[str] = []
        for d in self.devices:
            try:
                procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(d.handle)
            except self.nvml.NVMLError as err:
                users.append(f"GPU {d.index}: unknown ({err})")
                continue
            users.extend(f"GPU {d.index}: pid {p.pid}" for p in procs)
        return users

    # --- guarded calls -----------------------------------------------------------------

    def _node_call(self, what: str, fn: Callable[..., _T], *args: Any) -> _T | None:
        try:
            return fn(*args)
        except self.nvml.NVMLError as err:
            self.errors.append(f"{what}: {err}")
            return None

    def _safe(
        self,
        device: _Device | None,
        errors: list[str],
        what: str,
        fn: Callable[..., _T],
        *args: Any,
    ) -> _T | None:
        """Call NVML for one device; NOT_SUPPORTED is silent, GPU_IS_LOST marks the GPU."""
        nvml = self.nvml
        try:
            return fn(*args)
        except nvml.NVMLError as err:
            code = getattr(err, "value", None)
            if code == nvml.NVML_ERROR_GPU_IS_LOST and device is not None:
                device.lost = True
            elif code != nvml.NVML_ERROR_NOT_SUPPORTED and what:
                errors.append(f"{what}: {err}")
            return None

    # --- probing -----------------------------------------------------------------------

    def _record(self, event: Any) -> bool:
        """Count one event; True when it is a hard XID (the agent should probe now)."""
        xid = int(event.eventData)
        with self._lock:
            self.xid_counts[xid] += 1
            self._pending.setdefault(device_key(event.device), Counter())[xid] += 1
        return rule_for(xid_signal(xid)).action.drains

    def _watch(self, notify: Callable[[], None]) -> None:
        nvml = self.nvml
        while not self._closing.is_set():
            try:
                event = nvml.nvmlEventSetWait_v2(self.events, WAIT_MS)
            except nvml.NVMLError as err:
                code = getattr(err, "value", None)
                if code == nvml.NVML_ERROR_TIMEOUT:
                    continue
                with self._lock:
                    self._event_errors[f"event wait: {err}"] = None
                if code == nvml.NVML_ERROR_GPU_IS_LOST:
                    notify()  # the probe marks which GPU
                self._closing.wait(RETRY_SECONDS)  # a broken set must not spin
                continue
            except Exception:  # the thread must outlive a surprise; the probe still runs
                log.exception("XID event wait failed")
                self._closing.wait(RETRY_SECONDS)
                continue
            if self._record(event):
                notify()

    def _drain_xids(self) -> None:
        """Without the watcher thread: take what the event set holds now, bounded."""
        nvml = self.nvml
        if self.events is None:
            return
        for _ in range(MAX_EVENTS_PER_PROBE):
            try:
                event = nvml.nvmlEventSetWait_v2(self.events, 0)
            except nvml.NVMLError as err:
                if getattr(err, "value", None) != nvml.NVML_ERROR_TIMEOUT:
                    self.errors.append(f"event wait: {err}")
                return
            self._record(event)
        self.dropped_events += 1  # more than a probe's worth: the rest wait for the next probe

    def _take_xids(self) -> dict[int, Counter[int]]:
        """The events since the previous probe, by device key and code (arrival order)."""
        if self._watcher is None:
            self._drain_xids()
        with self._lock:
            taken, self._pending = self._pending, {}
            self.errors.extend(self._event_errors)
            self._event_errors = {}
        return taken

    def probe(self) -> NodeReading:
        self.errors = []
        xids = self._take_xids()
        readings = tuple(
            self._read(d, xids.get(device_key(d.handle), Counter())) for d in self.devices
        )
        return NodeReading(readings, expected=self.expected, probe_errors=tuple(self.errors))

    def _read(self, d: _Device, xids: Counter[int]) -> GpuReading:
        nvml, h = self.nvml, d.handle
        errors: list[str] = []

        def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
            return self._safe(d, errors, what, fn, *args)

        corrected, uncorrected = (
            nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED,
            nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
        )
        volatile, aggregate = nvml.NVML_VOLATILE_ECC, nvml.NVML_AGGREGATE_ECC
        ecc = {
            (kind, counter): call(
                f"ecc {kind}/{counter}", nvml.nvmlDeviceGetTotalEccErrors, h, kind, counter
            )
            for kind in (corrected, uncorrected)
            for counter in (volatile, aggregate)
        }
        pending = call("retired pages", nvml.nvmlDeviceGetRetiredPagesPendingStatus, h)
        remap = call("remapped rows", nvml.nvmlDeviceGetRemappedRows, h)
        temperature = call(
            "temperature", nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU
        )
        reasons = call("clock reasons", nvml.nvmlDeviceGetCurrentClocksEventReasons, h)
        width = call("pcie width", nvml.nvmlDeviceGetCurrPcieLinkWidth, h)
        max_width = call("pcie max width", nvml.nvmlDeviceGetMaxPcieLinkWidth, h)
        down, nvlink_errors = self._nvlink(d, errors)
        return GpuReading(
            index=d.index,
            uuid=d.uuid,
            lost=d.lost,
            xids=tuple(xids),  # one of each code is all classification needs
            xid_events=tuple(xids.items()),
            ecc_sbe_volatile=ecc[(corrected, volatile)],
            ecc_dbe_volatile=ecc[(uncorrected, volatile)],
            ecc_sbe_aggregate=ecc[(corrected, aggregate)],
            ecc_dbe_aggregate=ecc[(uncorrected, aggregate)],
            retired_pages_pending=pending == nvml.NVML_FEATURE_ENABLED,
            row_remap_pending=bool(remap and remap[2]),
            row_remap_failure=bool(remap and remap[3]),
            temperature_c=float(temperature) if temperature is not None else None,
            throttle=_throttle(nvml, reasons),
            # Only the width: an idle GPU lowers its link generation to save power.
            pcie_degraded=width is not None and max_width is not None and width < max_width,
            nvlink_down=tuple(down),
            nvlink_errors=nvlink_errors,
            errors=tuple(errors),
        )

    def _nvlink(self, d: _Device, errors: list[str]) -> tuple[list[int], int | None]:
        nvml = self.nvml
        down: list[int] = []
        total, seen = 0, False
        for link in range(nvml.NVML_NVLINK_MAX_LINKS):
            state = self._safe(d, [], "", nvml.nvmlDeviceGetNvLinkState, d.handle, link)
            if state is None:
                continue  # no such link on this GPU
            if state != nvml.NVML_FEATURE_ENABLED:
                down.append(link)
                continue
            for counter in (nvml.NVML_NVLINK_ERROR_DL_CRC_FLIT, nvml.NVML_NVLINK_ERROR_DL_REPLAY):
                value = self._safe(
                    d,
                    errors,
                    f"nvlink {link} errors",
                    nvml.nvmlDeviceGetNvLinkErrorCounter,
                    d.handle,
                    link,
                    counter,
                )
                if value is not None:
                    total, seen = total + int(value), True
        return down, (total if seen else None)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _throttle(nvml: Any, reasons: int | None) -> frozenset[str]:
    if not reasons:
        return frozenset()
    found = set()
    if reasons & (
        nvml.nvmlClocksEventReasonHwThermalSlowdown | nvml.nvmlClocksEventReasonSwThermalSlowdown
    ):
        found.add("thermal")
    if reasons & nvml.nvmlClocksEventReasonHwPowerBrakeSlowdown:
        found.add("power-brake")
    if reasons & nvml.nvmlClocksEventReasonHwSlowdown:
        found.add("hw-slowdown")
    return frozenset(found)
