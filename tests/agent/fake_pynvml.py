"""A fake ``pynvml`` module: the real constants and exception shape, scripted GPU state.

The NVML backend receives it where it would import pynvml; nothing of valet is mocked.
"""

from __future__ import annotations

import dataclasses
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

    # --- scripting -----------------------------------------------------------------------

    def xid(self, index: int, code: int, times: int = 1) -> None:
        self.events.extend([(index, code)] * times)

    # --- the pynvml surface ---------------------------------------------------------------

    def _gpu(self, handle: int, call: str) -> FakeGpu:
        gpu = self.gpus[handle]
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

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:
        return index

    def nvmlDeviceGetUUID(self, h: int) -> str:
        return self._gpu(h, "uuid").uuid

    def nvmlEventSetCreate(self) -> str:
        return "event-set"

    def nvmlEventSetFree(self, event_set: Any) -> None:
        pass

    def nvmlDeviceRegisterEvents(self, h: int, kinds: int, event_set: Any) -> None:
        self._gpu(h, "register")
        self.registered.add(h)

    def nvmlEventSetWait_v2(self, event_set: Any, timeout_ms: int) -> Any:
        while self.events:
            index, xid = self.events.popleft()
            if index in self.registered:
                return type(
                    "Event",
                    (),
                    {
                        "device": index,
                        "eventData": xid,
                        "eventType": real.nvmlEventTypeXidCriticalError,
                    },
                )()
        raise NVMLError(real.NVML_ERROR_TIMEOUT)

    def nvmlDeviceGetTotalEccErrors(self, h: int, kind: int, counter: int) -> int:
        gpu = self._gpu(h, "ecc")
        volatile = counter == real.NVML_VOLATILE_ECC
        if kind == real.NVML_MEMORY_ERROR_TYPE_CORRECTED:
            return gpu.sbe if volatile else gpu.sbe_total
        return gpu.dbe if volatile else gpu.dbe_total

    def nvmlDeviceGetRetiredPagesPendingStatus(self, h: int) -> int:
        pending = self._gpu(h, "pages").pages_pending
        return real.NVML_FEATURE_ENABLED if pending else real.NVML_FEATURE_DISABLED

    def nvmlDeviceGetRemappedRows(self, h: int) -> tuple[int, int, int, int]:
        return self._gpu(h, "remap").remapped

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        return self._gpu(h, "temperature").temperature

    def nvmlDeviceGetCurrentClocksEventReasons(self, h: int) -> int:
        return self._gpu(h, "reasons").reasons

    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int:
        return self._gpu(h, "pcie").width

    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int:
        return self._gpu(h, "pcie").max_width

    def nvmlDeviceGetNvLinkState(self, h: int, link: int) -> int:
        gpu = self._gpu(h, "nvlink")
        if link >= len(gpu.nvlinks):
            raise NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
        return real.NVML_FEATURE_ENABLED if gpu.nvlinks[link] else real.NVML_FEATURE_DISABLED

    def nvmlDeviceGetNvLinkErrorCounter(self, h: int, link: int, counter: int) -> int:
        return (
            self._gpu(h, "nvlink").nvlink_errors
            if counter == real.NVML_NVLINK_ERROR_DL_REPLAY
            else 0
        )
