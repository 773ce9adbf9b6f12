"""A fake ``pynvml`` module: the real constants and exception shape, scripted GPU state.

The NVML backend receives it where it would import pynvml; nothing of valet is mocked.
Device handles are real ctypes pointers, as pynvml's are (unhashable, and a fresh object
at every read of an event's ``device``, so only their address identifies a GPU). The
XID event set can be fed from any thread while another waits on it with a timeout.
"""

from __future__ import annotations

import ctypes
import dataclasses
import threading
from collections import deque
from typing import Any

import pynvml as real

CONSTANTS = {
    name: getattr(real, name)
    for name in dir(real)
    if name.startswith(("NVML_", "nvmlClocksEventReason", "nvmlEventType"))
}


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return f"NVML error {self.value}"


@dataclasses.dataclass
class FakeGpu:
    uuid: str
    sbe: int = 0
    dbe: int = 0
    sbe_total: int = 0
    dbe_total: int = 0
    pages_pending: bool = False
    remapped: tuple[int, int, int, int] = (0, 0, 0, 0)  # corr, unc, pending, failure
    temperature: int = 40
    reasons: int = 0
    width: int = 16
    max_width: int = 16
    nvlinks: list[bool] = dataclasses.field(default_factory=lambda: [True] * 4)
    nvlink_errors: int = 0
    lost: bool = False
    broken: set[str] = dataclasses.field(default_factory=set)  # calls that fail with UNKNOWN
    unsupported: set[str] = dataclasses.field(default_factory=set)


class FakeNvml:
    def __init__(self, gpus: list[FakeGpu], init_error: int | None = None) -> None:
        self.__dict__.update(CONSTANTS)
        self.NVMLError = NVMLError
        self.gpus = gpus
        self.init_error = init_error
        self.events: deque[tuple[int, int]] = deque()  # (device index, xid)
        self.registered: set[int] = set()
        self._devices = [real.struct_c_nvmlDevice_t() for _ in gpus]
        self._by_address = {ctypes.addressof(d): i for i, d in enumerate(self._devices)}
        self._changed = threading.Condition()
        self.waiting = 0  # threads inside nvmlEventSetWait_v2 now
        self.waits = 0  # nvmlEventSetWait_v2 calls so far
        self.freed = False
        self.misuse: list[str] = []  # calls real NVML would not survive

    # --- scripting (from any thread) ---------------------------------------------------------

    def xid(self, index: int, code: int, times: int = 1) -> None:
        with self._changed:
            self.events.extend([(index, code)] * times)
            self._changed.notify_all()

    # --- the pynvml surface ---------------------------------------------------------------

    def _index(self, handle: Any) -> int:
        return self._by_address[ctypes.cast(handle, ctypes.c_void_p).value or 0]

    def _gpu(self, handle: Any, call: str) -> FakeGpu:
        gpu = self.gpus[self._index(handle)]
        if gpu.lost:
            raise NVMLError(real.NVML_ERROR_GPU_IS_LOST)
        if call in gpu.broken:
            raise NVMLError(real.NVML_ERROR_UNKNOWN)
        if call in gpu.unsupported:
            raise NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise NVMLError(self.init_error)

    def nvmlShutdown(self) -> None:
        pass

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> Any:
        return ctypes.pointer(self._devices[index])

    def nvmlDeviceGetUUID(self, h: Any) -> str:
        return self._gpu(h, "uuid").uuid

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlEventSetFree(self, event_set: Any) -> None:
        with self._changed:
            if self.waiting:
                self.misuse.append("nvmlEventSetFree while a thread waits on the set")
            self.freed = True
            self._changed.notify_all()

    def nvmlDeviceRegisterEvents(self, h: Any, kinds: int, event_set: Any) -> None:
        self._gpu(h, "register")
        self.registered.add(self._index(h))

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        """The next event, waiting up to ``timeout_ms`` for one; else NVML_ERROR_TIMEOUT."""
        with self._changed:
            if self.freed:
                self.misuse.append("nvmlEventSetWait_v2 on a freed set")
                raise NVMLError(real.NVML_ERROR_UNINITIALIZED)
            self.waiting += 1
            self.waits += 1
            try:
                self._changed.wait_for(lambda: self.events or self.freed, timeout_ms / 1000)
                while self.events:
                    index, xid = self.events.popleft()
                    if index in self.registered:
                        data = real.c_nvmlEventData_t()
                        data.device = ctypes.pointer(self._devices[index])
                        data.eventType = real.nvmlEventTypeXidCriticalError
                        data.eventData = xid
                        return data
                raise NVMLError(real.NVML_ERROR_TIMEOUT)
            finally:
                self.waiting -= 1

    def nvmlDeviceGetTotalEccErrors(self, h: Any, kind: int, counter: int) -> int:
        gpu = self._gpu(h, "ecc")
        volatile = counter == real.NVML_VOLATILE_ECC
        if kind == real.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.sbe if volatile else gpu.sbe_total
        return gpu.dbe if volatile else gpu.dbe_total

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: Any) -> int:
        pending = self._gpu(h, "pages").pages_pending
        return real.NVML_FEATURE_ENABLED if pending else real.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, h: Any) -> tuple[int, int, int, int]:
        return self._gpu(h, "remap").remapped

    def nvmlDeviceGetTemperature(self, h: Any, sensor: int) -> int:
        return self._gpu(h, "temperature").temperature

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: Any) -> int:
        return self._gpu(h, "reasons").reasons

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: Any) -> int:
        return self._gpu(h, "pcie").width

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: Any) -> int:
        return self._gpu(h, "pcie").max_width

    def nvmlDeviceGetNvLinkState(self, h: Any, link: int) -> int:
        gpu = self._gpu(h, "nvlink")
        if link >= len(gpu.nvlinks):
            raise NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return real.NVML_FEATURE_ENABLED if gpu.nvlinks[link] else real.NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, h: Any, link: int, counter: int) -> int:
        return (
            self._gpu(h, "nvlink").nvlink_errors
            if counter == real.NVML_NVLINK_ERROR_DL_REPLAY
            else 0
        )
