"""Simulated GPUs for clusters without them: healthy GPUs unless a fault is injected.

Faults come from the Node annotation ``valet.dev/sim-faults`` (what ``valet sim fault``
writes) or a local JSON file, as a list of ``{"gpu": 3, "xid": 79}`` or
``{"gpu": 3, "signal": "ecc-dbe"}``. A fault stays until it is removed, as a real
one stays until remediation; the reading has the same shape as NVML's and DCGM's.

Like NVML's XID events, an injected fault reaches the agent at once (``start_events``):
a thread reads the fault file every ``FILE_POLL_SECONDS``, and ``watch``, where given,
streams the Node's annotations (``NodePublisher.watch``); a change of the injected
faults calls ``notify``, and the agent probes now rather than at its next interval.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from valet.agent.readings import GpuReading, NodeReading
from valet.agent.remediation import Outcome
from valet.model.enums import GROUP, Remediation

FAULTS_ANNOTATION = f"{GROUP}/sim-faults"
LEMON_ANNOTATION = f"{GROUP}/sim-lemon"  # "true": every remediation of this node fails
FILE_POLL_SECONDS = 0.05

# Streams a Node's annotations to the callback at every change until the Event is set.
AnnotationWatch = Callable[[Callable[[Mapping[str, str]], None], threading.Event], None]

# Named signals → the reading field that shows them.
_SIGNAL_FIELDS: dict[str, dict[str, Any]] = {
    "gpu-lost": {"lost": True},
    "ecc-dbe": {"ecc_dbe_volatile": 1},
    "retired-pages-pending": {"retired_pages_pending": True},
    "row-remap-pending": {"row_remap_pending": True},
    "row-remap-failure": {"row_remap_failure": True},
    "nvlink-down": {"nvlink_down": (0,)},
    "thermal-throttle": {"throttle": frozenset({"thermal"})},
    "thermal-shutdown": {"temperature_c": 99.0},
    "pcie-degraded": {"pcie_degraded": True},
    "node-problem": {"health_failing": True},
}


class FaultSpecError(ValueError):
    """An injected fault is malformed."""


@dataclasses.dataclass(frozen=True)
class Fault:
    gpu: int
    xid: int | None = None
    signal: str | None = None


def parse_faults(text: str | None, gpus: int) -> list[Fault]:
    if not text:
        return []
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise FaultSpecError(f"{FAULTS_ANNOTATION} is not JSON: {err}") from err
    if not isinstance(raw, list):
        raise FaultSpecError(f"{FAULTS_ANNOTATION} must be a JSON list")
    faults = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or not isinstance(item.get("gpu"), int):
            raise FaultSpecError(f"fault {i}: needs an integer 'gpu'")
        if not 0 <= item["gpu"] < gpus:
            raise FaultSpecError(f"fault {i}: gpu {item['gpu']} is not in 0..{gpus - 1}")
        xid, signal = item.get("xid"), item.get("signal")
        if (xid is None) == (signal is None):
            raise FaultSpecError(f"fault {i}: give exactly one of 'xid' or 'signal'")
        if signal is not None and signal not in _SIGNAL_FIELDS:
            raise FaultSpecError(
                f"fault {i}: unknown signal {signal!r}; one of {sorted(_SIGNAL_FIELDS)}"
            )
        faults.append(Fault(item["gpu"], xid=xid, signal=signal))
    return faults


class SimulatedBackend:
    name = "simulated"

    def __init__(
        self,
        node: str,
        gpus: int = 8,
        faults: Callable[[], str | None] = lambda: None,
        fault_file: Path | None = None,
        watch: AnnotationWatch | None = None,
    ) -> None:
        self.node, self.gpus, self.faults, self.fault_file = node, gpus, faults, fault_file
        self.watch = watch
        self._closing = threading.Event()
        self._file_thread: threading.Thread | None = None
        self._started = False
        self._counted: Counter[tuple[int, int]] = Counter()  # XIDs counted as events so far

    def start_events(self, notify: Callable[[], None]) -> None:
        """Call ``notify`` when the injected faults change (file or annotation)."""
        if self._started:
            return
        self._started = True
        if self.fault_file is not None:
            self._file_thread = threading.Thread(
                target=self._watch_file, args=(notify,), name="sim-fault-file", daemon=True
            )
            self._file_thread.start()
        if self.watch is not None:
            # Not joined on close: it leaves at the stream's next event or reconnect.
            threading.Thread(
                target=self._watch_node, args=(notify,), name="sim-fault-annotation", daemon=True
            ).start()

    def close(self) -> None:
        self._closing.set()
        if self._file_thread is not None:
            self._file_thread.join()

    def _read_file(self) -> str | None:
        try:
            return self.fault_file.read_text() if self.fault_file is not None else None
        except OSError:
            return None

    def _watch_file(self, notify: Callable[[], None]) -> None:
        last = self._read_file()
        while not self._closing.wait(FILE_POLL_SECONDS):
            text = self._read_file()
            if text != last:
                last = text
                notify()

    def _watch_node(self, notify: Callable[[], None]) -> None:
        assert self.watch is not None
        last: list[str | None] = []

        def seen(annotations: Mapping[str, str]) -> None:
            text = annotations.get(FAULTS_ANNOTATION)
            if last and text != last[0]:
                notify()
            last[:] = [text]

        self.watch(seen, self._closing)

    def _sources(self) -> list[str | None]:
        texts = [self.faults()]
        if self.fault_file is not None and self.fault_file.exists():
            texts.append(self.fault_file.read_text())
        return texts

    def probe(self) -> NodeReading:
        faults: list[Fault] = []
        errors: list[str] = []
        for text in self._sources():
            try:
                faults.extend(parse_faults(text, self.gpus))
            except FaultSpecError as err:
                errors.append(str(err))
        # An injected XID is one event: counted once, however many probes still see it listed.
        listed = Counter((f.gpu, f.xid) for f in faults if f.xid is not None)
        new = {key: n - self._counted.get(key, 0) for key, n in listed.items()}
        self._counted = listed
        readings = []
        for index in range(self.gpus):
            fields: dict[str, Any] = {}
            mine = [f for f in faults if f.gpu == index]
            xids = tuple(f.xid for f in mine if f.xid is not None)
            events = tuple((xid, max(0, new[(index, xid)])) for xid in dict.fromkeys(xids))
            for fault in mine:
                if fault.signal is not None:
                    fields.update(_SIGNAL_FIELDS[fault.signal])
            readings.append(
                GpuReading(
                    index=index,
                    uuid=f"GPU-sim-{self.node}-{index}",
                    xids=xids,
                    xid_events=events,
                    temperature_c=fields.pop("temperature_c", 45.0),
                    **fields,
                )
            )
        return NodeReading(tuple(readings), expected=self.gpus, probe_errors=tuple(errors))


class SimulatedExecutor:
    """Remediation of simulated GPUs: takes ``seconds``, then clears the injected faults,
    or fails on a node annotated ``valet.dev/sim-lemon: "true"``."""

    def __init__(self, seconds: float = 5.0, fault_file: Path | None = None) -> None:
        self.seconds, self.fault_file = seconds, fault_file

    def run(self, kind: Remediation, annotations: Mapping[str, str]) -> Outcome:
        time.sleep(self.seconds)
        if annotations.get(LEMON_ANNOTATION) == "true":
            return Outcome(False, f"simulated {kind.value} failed (lemon)")
        if kind is Remediation.DIAGNOSE:
            faulty = annotations.get(FAULTS_ANNOTATION, "[]") not in ("", "[]")
            return Outcome(not faulty, "simulated diagnostics")
        if self.fault_file is not None and self.fault_file.exists():
            self.fault_file.write_text("[]")
        return Outcome(True, f"simulated {kind.value}", {FAULTS_ANNOTATION: None})
