"""``valet demo``: one command that shows valet healing a training job, live.

It starts a control plane (a real kube-apiserver from ``KUBEBUILDER_ASSETS`` when set, else
the in-memory emulator, or the cluster of ``--kubeconfig``), simulated GPU nodes, the real
operator (the registry ``valet operator`` runs, in this process), a SpotPool packed with
spot work and an elastic TrainingJob (from examples/, scaled to the node count). Then it
plays a script of faults: an XID 79 on a worker, a host that dies, a lemon (the same node
failing twice), and a burst on many nodes at once that trips the circuit breaker. The
terminal shows every node's GPUs coloured by role, the job, the spot shards done and a
timeline of the faults with their heal times (rich); ``--headless`` prints the same story
as plain lines. A summary table ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import kopf
import structlog
import yaml
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from valet import envtest
from valet.emulator.server import kubeconfig as emulator_kubeconfig
from valet.emulator.server import serve
from valet.handlers import operator as op_module
from valet.handlers.operator import Operator, OperatorOptions
from valet.handlers.reconciler import LoopConfig
from valet.k8s import errors, setup
from valet.k8s.client import MERGE, Api, RetryPolicy, core_path, load_api_client, valet_path
from valet.k8s.codec import PodDefaults
from valet.policy import PolicyConfig
from valet.simnodes.nodes import SimConfig, SimNodes, inject_fault

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DEMO_LABEL = "valet.dev/demo"
SELECTOR = {"valet.dev/simulated": "true", DEMO_LABEL: "true"}
RETRY = RetryPolicy(attempts=10, initial_seconds=0.01, max_seconds=0.2, deadline_seconds=20)
FAULTS_ANNOTATION = "valet.dev/sim-faults"
STATE_LABEL = "valet.dev/state"
GPU = "nvidia.com/gpu"
BURST = 4  # nodes failing at once; the breaker is set to let 3 drain (see _breaker_percent)

# Copies of examples/spotpool.yaml and examples/trainingjob.yaml, for an installed package
# without the repository (the files are read when they are there).
_SPOTPOOL = """
apiVersion: valet.dev/v1alpha1
kind: SpotPool
metadata: {name: h100}
spec:
  nodeSelector: {nvidia.com/gpu.product: NVIDIA-H100-80GB-HBM3}
  buffer: {percent: 10}
  preemption: {noticeSeconds: 60}
  lemon: {failures: 3, windowSeconds: 604800}
  circuitBreaker: {maxFailedPercent: 20, windowSeconds: 600}
  allowedNamespaces: [batch]
  workloads:
    - name: embed-corpus
      namespace: batch
      gpusPerPod: 1
      weight: 3
      shards: 5000
      template:
        spec:
          containers:
            - name: infer
              image: ghcr.io/example/embedder:2.3
              args: [--shard=$(VALET_SHARD), --shards=5000]
"""
_TRAININGJOB = """
apiVersion: valet.dev/v1alpha1
kind: TrainingJob
metadata: {name: llama-70b, namespace: research}
spec:
  replicas: 16
  minReplicas: 14
  maxReplicas: 16
  gpusPerReplica: 8
  pool: h100
  priority: 100
  healing: {useBuffer: true, maxRestarts: 20, backoffSeconds: 10}
  template:
    spec:
      containers:
        - name: trainer
          image: ghcr.io/example/llama-train:1.0
          command: [torchrun, --rdzv-backend=c10d, train.py, --resume-from-latest]
"""


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    nodes: int = 8
    notice: int = 2  # spot preemption notice, seconds
    hot: int = 0  # hot (unpacked) spares
    spares: int = 2
    kubeconfig: str | None = None
    headless: bool = False
    step_timeout: float = 60.0  # each step of the script
    log_file: str | None = None


def _example(name: str, fallback: str) -> dict[str, Any]:
    path = REPO / "examples" / name
    text = path.read_text() if path.is_file() else fallback
    return dict(yaml.safe_load(text))


def _breaker_percent(nodes: int) -> int:
    """A percentage that lets exactly 3 nodes of the pool drain within the window: the XID,
    the dead host and the lemon each drain alone, a burst of 4 trips the breaker."""
    return math.ceil(300 / nodes)


def manifests(cfg: DemoConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SpotPool and TrainingJob of examples/, adapted: the simulated nodes, the notice
    and hot spares asked for, a job sized to the node count, short timers."""
    pool = _example("spotpool.yaml", _SPOTPOOL)
    spec = pool["spec"]
    spec["nodeSelector"] = dict(SELECTOR)
    spec["buffer"] = {"count": cfg.spares, **({"hot": cfg.hot} if cfg.hot else {})}
    spec["preemption"] = {"noticeSeconds": cfg.notice}
    spec["lemon"] = {"failures": 2, "windowSeconds": 3600}
    spec["circuitBreaker"] = {"maxFailedPercent": _breaker_percent(cfg.nodes), "windowSeconds": 600}
    spec["nodeGraceSeconds"] = 3
    for workload in spec["workloads"]:
        template = workload.setdefault("template", {})
        template.setdefault("metadata", {}).setdefault("annotations", {})[
            "valet.dev/sim-runtime-seconds"
        ] = "4"  # a simulated shard takes 4 s
    job = _example("trainingjob.yaml", _TRAININGJOB)
    replicas = max(1, cfg.nodes - cfg.spares - 1)  # one node of spot work besides the spares
    job["spec"].update(
        replicas=replicas,
        minReplicas=max(1, replicas - 2),
        maxReplicas=replicas,
        pool=pool["metadata"]["name"],
    )
    job["spec"]["healing"] = {**job["spec"].get("healing", {}), "backoffSeconds": 0}
    job["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 1
    return pool, job


def operator_options() -> OperatorOptions:
    return OperatorOptions(
        policy=PolicyConfig(
            staleness_seconds=10.0,
            suspect_after_seconds=1.0,
            recover_after_seconds=0.5,
            worker_grace_seconds=1,
            remediation_timeout_seconds=30.0,
        ),
        loop=LoopConfig(
            debounce_seconds=0.02, resync_seconds=1.0, relist_seconds=5.0, first_relist_seconds=1.0
        ),
        pod_defaults=PodDefaults(
            worker_priority_class="valet-training", spot_priority_class="valet-spot"
        ),
    )


SIM = SimConfig(
    labels=SELECTOR,
    probe_seconds=1.0,
    lease_seconds=1.0,
    startup_seconds=0.3,
    remediation_seconds=1.5,
)


# --- what is recorded --------------------------------------------------------------------


@dataclasses.dataclass
class Fault:
    kind: str
    nodes: list[str]
    at: float  # seconds since the start
    detail: str = ""
    healed: float | None = None  # seconds from the fault to the replacement worker Running
    reported: float | None = None  # the same as the operator reports it (lastHeal)
    back: float | None = None  # seconds from the fault to the node back in the buffer
    outcome: str = "…"


@dataclasses.dataclass
class NodeView:
    name: str
    state: str
    ready: bool
    cells: list[str]  # one role per GPU: training, spot, idle, failed, healing


@dataclasses.dataclass
class Story:
    """What the screen shows: the latest snapshot, the events and the faults."""

    plane: str = ""
    started: float = dataclasses.field(default_factory=time.monotonic)
    nodes: list[NodeView] = dataclasses.field(default_factory=list)
    running_workers: list[str] = dataclasses.field(default_factory=list)  # their nodes
    seen: float = 0.0  # time.monotonic() of the latest snapshot
    job: dict[str, Any] = dataclasses.field(default_factory=dict)
    pool: dict[str, Any] = dataclasses.field(default_factory=dict)
    events: list[str] = dataclasses.field(default_factory=list)
    faults: list[Fault] = dataclasses.field(default_factory=list)
    step: str = "starting"
    headless: bool = False
    console: Console | None = None

    def now(self) -> float:
        return time.monotonic() - self.started

    def say(self, text: str) -> None:
        line = f"[{self.now():6.1f}s] {text}"
        self.events.append(line)
        if self.headless:
            print(line, flush=True)

    @property
    def shards_done(self) -> int:
        return sum(int(s.get("doneCount") or 0) for s in self.pool.get("shards") or ())

    @property
    def breaker_open(self) -> bool:
        conds = {c["type"]: c for c in self.pool.get("conditions") or ()}
        return bool(conds.get("CircuitBreakerOpen", {}).get("status") == "True")


# --- watching the cluster -----------------------------------------------------------------


def _gpus(pod: dict[str, Any]) -> int:
    total = 0
    for c in pod["spec"].get("containers") or ():
        res = c.get("resources") or {}
        value = (res.get("limits") or {}).get(GPU) or (res.get("requests") or {}).get(GPU) or 0
        total += int(value)
    return total


async def snapshot(
    api: Api, story: Story, names: list[str], sim: SimNodes, job_ns: str, spot_ns: str,
    job_name: str, pool_name: str,
) -> None:  # fmt: skip
    seen = time.monotonic()
    nodes = {n["metadata"]["name"]: n for n in await _items(api, "/api/v1/nodes", SELECTOR)}
    workers = await _items(api, core_path("pods", job_ns), {"valet.dev/job": job_name})
    spot = await _items(api, core_path("pods", spot_ns))
    with contextlib.suppress(errors.NotFoundError):
        story.job = (await api.call("GET", valet_path("trainingjobs", job_ns, job_name))).get(
            "status"
        ) or {}
    with contextlib.suppress(errors.NotFoundError):
        story.pool = (await api.call("GET", valet_path("spotpools", None, pool_name))).get(
            "status"
        ) or {}
    used: dict[str, list[int]] = {n: [0, 0] for n in names}
    for role, pods in ((0, workers), (1, spot)):
        for pod in pods:
            where = pod["spec"].get("nodeName")
            phase = (pod.get("status") or {}).get("phase")
            if where in used and phase not in ("Succeeded", "Failed"):
                used[where][role] += _gpus(pod)
    views = []
    for name in names:
        node = nodes.get(name)
        if node is None:
            continue
        md = node["metadata"]
        state = (md.get("labels") or {}).get(STATE_LABEL) or "new"
        conds = {c["type"]: c for c in (node.get("status") or {}).get("conditions") or ()}
        ready = name not in sim.dead and conds.get("Ready", {}).get("status") == "True"
        gpus = sim.config.gpus
        failed = {
            int(f.get("gpu", 0))
            for f in json.loads((md.get("annotations") or {}).get(FAULTS_ANNOTATION) or "[]")
        }
        training, spot_gpus = used[name]
        cells = []
        fill = ["training"] * training + ["spot"] * spot_gpus
        for i in range(gpus):
            if state == "retired" or not ready or i in failed:
                cells.append("failed")
            elif state in ("draining", "healing"):
                cells.append("healing")
            else:
                cells.append(fill.pop(0) if fill else "idle")
        views.append(NodeView(name, state, ready, cells))
    before = {v.name: v for v in story.nodes}
    for v in views:
        old = before.get(v.name)
        if old is not None and old.state != v.state:
            story.say(f"node {v.name}: {old.state} → {v.state}")
        if old is not None and old.ready != v.ready:
            story.say(f"node {v.name}: {'Ready' if v.ready else 'NotReady (host down)'}")
    story.nodes = views
    story.running_workers = [
        p["spec"].get("nodeName") or ""
        for p in workers
        if (p.get("status") or {}).get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]
    story.seen = seen


async def _items(api: Api, path: str, labels: dict[str, str] | None = None) -> list[dict[str, Any]]:
    query = {"labelSelector": ",".join(f"{k}={v}" for k, v in labels.items())} if labels else None
    return list((await api.call("GET", path, query=query)).get("items") or [])


# --- the screen ----------------------------------------------------------------------------

GLYPHS = {"training": "█", "spot": "▒", "idle": "·", "failed": "✗", "healing": "~"}
COLOURS = {
    "training": "bold green",
    "spot": "bold cyan",
    "idle": "grey50",
    "failed": "bold red",
    "healing": "bold yellow",
}
STATE_COLOURS = {
    "active": "green",
    "spare": "cyan",
    "suspect": "magenta",
    "draining": "yellow",
    "healing": "yellow",
    "retired": "red",
}


def render(story: Story) -> Group:
    nodes = Table(title="nodes", expand=False, show_edge=False, pad_edge=False)
    nodes.add_column("node")
    nodes.add_column("state")
    nodes.add_column("GPUs")
    for v in story.nodes:
        cells = Text()
        for role in v.cells:
            cells.append(GLYPHS[role] + " ", style=COLOURS[role])
        state = v.state if v.ready else f"{v.state} (down)"
        nodes.add_row(v.name, Text(state, style=STATE_COLOURS.get(v.state, "")), cells)
    legend = Text()
    for role, style in COLOURS.items():
        legend.append(GLYPHS[role] + " ", style=style)
        legend.append(f"{role}  ")
    job = story.job
    pool = story.pool
    breaker = Text("OPEN", style="bold red") if story.breaker_open else Text("closed", "green")
    head = Text.assemble(
        ("job ", "bold"),
        (str(job.get("phase") or "—"), "bold green" if job.get("phase") == "Running" else "yellow"),
        f"  workers {job.get('readyReplicas', 0)}/{job.get('replicas', 0)}",
        f"  swaps {job.get('swaps', 0)}",
        f"   spares {pool.get('spares', 0)}/{pool.get('sparesTarget', 0)}",
        f"  spot shards done {story.shards_done}",
        f"  preemptions {pool.get('preemptions', 0)}",
        "   breaker ",
        breaker,
    )
    timeline = fault_table(story)
    events = Text("\n".join(story.events[-10:]), style="grey70")
    return Group(
        Text.assemble(("valet demo", "bold"), f" on {story.plane}   step: ", (story.step, "bold")),
        head,
        nodes,
        legend,
        timeline,
        Panel(events, title="events", title_align="left"),
    )


def fault_table(story: Story, title: str = "faults") -> Table:
    table = Table(title=title, show_edge=False)
    for col in ("at", "fault", "node(s)", "job healed in", "node back in", "outcome"):
        table.add_column(col)
    for f in story.faults:
        table.add_row(
            f"{f.at:.1f}s",
            f.kind + (f" ({f.detail})" if f.detail else ""),
            ", ".join(f.nodes),
            f"{f.healed:.2f}s" if f.healed is not None else "—",
            f"{f.back:.1f}s" if f.back is not None else "—",
            f.outcome,
        )
    return table


def summary(story: Story) -> Table:
    heals = [f.healed for f in story.faults if f.healed is not None]
    table = Table(title="summary", show_header=False, show_edge=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("control plane", story.plane)
    table.add_row("faults", str(len(story.faults)))
    table.add_row("heals", str(len(heals)))
    if heals:
        table.add_row(
            "heal time (fault → replacement Running)",
            f"min {min(heals):.2f}s  max {max(heals):.2f}s",
        )
    table.add_row("swaps", str(story.job.get("swaps", 0)))
    table.add_row("job", str(story.job.get("phase") or "—"))
    table.add_row("lemons retired", str(sum(1 for v in story.nodes if v.state == "retired")))
    table.add_row("circuit breaker", "tripped" if story.breaker_open else "closed")
    table.add_row("spot shards done", str(story.shards_done))
    table.add_row("spot preemptions", str(story.pool.get("preemptions", 0)))
    return table


def summary_lines(story: Story) -> list[str]:
    heals = [f.healed for f in story.faults if f.healed is not None]
    lines = [f"summary: control plane {story.plane}"]
    for f in story.faults:
        lines.append(
            f"summary: fault {f.kind} on {','.join(f.nodes)} at {f.at:.1f}s: {f.outcome}"
            + (f", job healed in {f.healed:.2f}s" if f.healed is not None else "")
            + (f", node back in {f.back:.1f}s" if f.back is not None else "")
        )
    lines += [
        f"summary: faults={len(story.faults)} heals={len(heals)}"
        + (f" heal_min={min(heals):.2f}s heal_max={max(heals):.2f}s" if heals else ""),
        f"summary: swaps={story.job.get('swaps', 0)} job={story.job.get('phase')}"
        f" lemons_retired={sum(1 for v in story.nodes if v.state == 'retired')}"
        f" breaker={'tripped' if story.breaker_open else 'closed'}"
        f" shards_done={story.shards_done} preemptions={story.pool.get('preemptions', 0)}",
    ]
    return lines


# --- the demo ------------------------------------------------------------------------------


class Demo:
    def __init__(self, cfg: DemoConfig, story: Story) -> None:
        self.cfg, self.story = cfg, story
        self.pool, self.job = manifests(cfg)
        self.job_ns = self.job["metadata"]["namespace"]
        self.spot_ns = self.pool["spec"]["workloads"][0]["namespace"]
        self.names = [f"demo-gpu-{i:03d}" for i in range(cfg.nodes)]
        self.api: Api | None = None
        self.sim: SimNodes | None = None
        self.faulted: set[str] = set()
        self.made: list[str] = []  # on a cluster of --kubeconfig: what to delete at the end

    # reading

    async def until(
        self, probe: Callable[[], Awaitable[T | bool | None]], what: str, timeout: float = 0
    ) -> T:
        deadline = time.monotonic() + (timeout or self.cfg.step_timeout)
        while True:
            with contextlib.suppress(errors.ApiError):
                result = await probe()
                if result:
                    return result  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise DemoError(
                    f"timed out waiting for {what} (job status: {json.dumps(self.story.job)})"
                )
            await asyncio.sleep(0.1)

    def view(self, name: str) -> NodeView | None:
        return next((v for v in self.story.nodes if v.name == name), None)

    def workers_on(self) -> list[str]:
        return [v.name for v in self.story.nodes if "training" in v.cells]

    async def refresh(self) -> None:
        assert self.api is not None and self.sim is not None
        await snapshot(
            self.api, self.story, self.names, self.sim, self.job_ns, self.spot_ns,
            self.job["metadata"]["name"], self.pool["metadata"]["name"],
        )  # fmt: skip

    async def watch(self) -> None:
        last_swaps, last_phase, last_breaker = 0, None, False
        while True:
            with contextlib.suppress(errors.ApiError):
                await self.refresh()
                job = self.story.job
                if job.get("phase") != last_phase:
                    self.story.say(f"job {job.get('phase')}")
                    last_phase = job.get("phase")
                swaps = int(job.get("swaps") or 0)
                if swaps > last_swaps:
                    heal = job.get("lastHeal") or {}
                    self.story.say(
                        f"swap #{swaps}: worker moved off {heal.get('failedNode')} onto"
                        f" {heal.get('spare')}"
                        f" (bound {heal.get('seconds', 0):.2f}s after the fault)"
                    )
                    last_swaps = swaps
                if self.story.breaker_open != last_breaker:
                    last_breaker = self.story.breaker_open
                    self.story.say(f"circuit breaker {'OPEN' if last_breaker else 'closed'}")
            await asyncio.sleep(0.2)

    # the script

    async def heal_of(self, fault: Fault, node: str, swaps_before: int, t0: float) -> None:
        """Until the job runs its full size again off ``node`` after a swap: the heal time."""

        async def healed() -> float | None:
            job = self.story.job
            heal = job.get("lastHeal") or {}
            if int(job.get("swaps") or 0) <= swaps_before or heal.get("failedNode") != node:
                return None
            running = self.story.running_workers
            if len(running) < int(job.get("replicas") or 0) or node in running:
                return None
            return self.story.seen - t0  # when the snapshot that saw it was taken

        fault.healed = await self.until(healed, f"the job healed after {fault.kind} on {node}")
        heal = self.story.job.get("lastHeal") or {}
        own = heal.get("secondsToRunning")
        if own is not None and float(own) >= float(heal.get("seconds") or 0):
            fault.reported = float(own)  # the operator's figure, from the fault it detected
        self.story.say(
            f"HEALED {fault.kind} on {node}:"
            f" replacement Running {fault.healed:.2f}s after the fault"
            + (
                f" (operator: {fault.reported:.2f}s after it saw the fault)"
                if fault.reported
                else ""
            )
        )

    async def back_in_buffer(self, fault: Fault, node: str, t0: float) -> None:
        async def back() -> bool:
            v = self.view(node)
            return v is not None and v.ready and v.state in ("spare", "active")

        await self.until(back, f"{node} back in the pool")
        fault.back = time.monotonic() - t0
        self.story.say(f"node {node} back in the pool {fault.back:.1f}s after the fault")

    def fault(self, kind: str, nodes: list[str], detail: str = "") -> Fault:
        f = Fault(kind, nodes, self.story.now(), detail)
        self.story.faults.append(f)
        self.faulted.update(nodes)
        return f

    def pick_worker(self) -> str:
        for name in self.workers_on():
            if name not in self.faulted:
                return name
        raise DemoError("no unfaulted worker node left")

    async def xid79(self) -> None:
        assert self.api is not None
        self.story.step = "1/4 XID 79 (GPU fell off the bus) on a worker"
        node = self.pick_worker()
        swaps = int(self.story.job.get("swaps") or 0)
        f = self.fault("XID 79", [node], "GPU 3")
        t0 = time.monotonic()
        await inject_fault(self.api, node, 3, 79, None)
        self.story.say(f"FAULT XID 79 on {node} GPU 3")
        await self.heal_of(f, node, swaps, t0)
        await self.back_in_buffer(f, node, t0)
        f.outcome = "healed, node repaired"

    async def dying_node(self) -> None:
        assert self.sim is not None
        self.story.step = "2/4 a worker's host dies"
        node = self.pick_worker()
        swaps = int(self.story.job.get("swaps") or 0)
        f = self.fault("host down", [node], "kubelet and agent gone")
        t0 = time.monotonic()
        self.sim.kill(node)
        self.story.say(f"FAULT host {node} is down (no Lease, no Ready, no agent)")
        await self.heal_of(f, node, swaps, t0)

        async def healing() -> bool:
            v = self.view(node)
            return v is not None and v.state == "healing"

        await self.until(healing, f"{node} healing (a reboot requested)")
        await asyncio.sleep(1.0)
        await self.sim.revive(node)
        self.story.say(f"host {node} is back (rebooted)")
        await self.back_in_buffer(f, node, t0)
        f.outcome = "healed, node rebooted"

    async def lemon(self) -> None:
        assert self.api is not None
        self.story.step = "3/4 a lemon: the same node fails twice"
        node = self.pick_worker()
        swaps = int(self.story.job.get("swaps") or 0)
        f = self.fault("lemon", [node], "XID 94 twice")
        t0 = time.monotonic()
        await inject_fault(self.api, node, 2, 94, None)
        self.story.say(f"FAULT XID 94 on {node} GPU 2 (first)")
        await self.heal_of(f, node, swaps, t0)
        await self.back_in_buffer(f, node, t0)
        f.back = None
        swaps = int(self.story.job.get("swaps") or 0)
        await inject_fault(self.api, node, 2, 94, None)
        self.story.say(f"FAULT XID 94 on {node} GPU 2 again: a lemon")

        async def retired() -> bool:
            v = self.view(node)
            return v is not None and v.state == "retired"

        await self.until(retired, f"{node} retired")
        f.outcome = "retired (lemon)"
        self.story.say(f"RETIRED {node}: failed twice within the lemon window")

    async def burst(self) -> None:
        assert self.api is not None
        self.story.step = f"4/4 a burst: {BURST} nodes fail at once"
        candidates = [
            v.name
            for v in self.story.nodes
            if v.ready and v.state in ("active", "spare") and v.name not in self.faulted
        ]
        candidates += [
            v.name
            for v in self.story.nodes
            if v.ready and v.state in ("active", "spare") and v.name not in candidates
        ]
        if len(candidates) < BURST:
            raise DemoError(f"need {BURST} nodes in service for the burst, have {len(candidates)}")
        nodes = candidates[:BURST]
        swaps = int(self.story.job.get("swaps") or 0)
        workers = set(self.workers_on())
        f = self.fault("burst XID 79", nodes, f"{BURST} nodes at once")
        t0 = time.monotonic()
        await asyncio.gather(*(inject_fault(self.api, n, 0, 79, None) for n in nodes))
        self.story.say(f"FAULT XID 79 on {', '.join(nodes)} at once")
        await self.until(lambda: _truthy(self.story.breaker_open), "the circuit breaker")
        self.story.say(
            f"BREAKER tripped {time.monotonic() - t0:.2f}s after the burst: the rest held, not"
            " drained"
        )

        await asyncio.sleep(3.0)  # what the breaker let through has started draining by now
        went = [n for n in nodes if (v := self.view(n)) and v.state in ("draining", "healing")]
        moved = [n for n in went if n in workers]
        if moved:
            await self.heal_of(f, moved[0], swaps, t0)
        f.outcome = f"breaker tripped; {len(went)} drained, {len(nodes) - len(went)} held"
        self.story.say(
            f"burst: {len(went)} drained, {len(nodes) - len(went)} held by the breaker"
            " (too many failed in its window)"
        )

    async def run(self, api: Api, sim: SimNodes) -> None:
        self.api, self.sim = api, sim
        watcher = asyncio.create_task(self.watch())
        try:
            self.story.step = "placing the job and packing the spares with spot work"
            await self.until(
                lambda: _truthy(self.story.job.get("phase") == "Running"), "the job Running"
            )

            async def packed() -> bool:
                return (
                    any(v.state == "spare" and "spot" in v.cells for v in self.story.nodes)
                    and self.story.shards_done > 0
                )

            await self.until(packed, "spot work on the spares")
            self.story.say(
                f"ready: job Running on {len(self.workers_on())} nodes, spares packed with spot"
                " work"
            )
            for step in (self.xid79, self.dying_node, self.lemon, self.burst):
                await step()
                await asyncio.sleep(1.0)
            self.story.step = "done"
            await self.refresh()
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)


async def _truthy(value: bool) -> bool:
    return value


class DemoError(Exception):
    pass


# --- setting up ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def control_plane(cfg: DemoConfig, story: Story) -> AsyncIterator[tuple[str, bool]]:
    """Yields (kubeconfig path, whether valet's CRDs must be installed)."""
    if cfg.kubeconfig:
        story.plane = f"the cluster of {cfg.kubeconfig}"
        yield cfg.kubeconfig, True
        return
    assets = envtest.assets_dir()
    if assets is not None:
        story.plane = f"kube-apiserver (envtest, {envtest.ASSETS_ENV}={assets})"
        story.say(f"starting a real control plane from {assets}")
        starting = asyncio.ensure_future(asyncio.to_thread(envtest.start, assets))
        try:
            plane = await asyncio.shield(starting)
        except asyncio.CancelledError:  # Ctrl-C while it starts: stop it once it is up
            with contextlib.suppress(Exception):
                await asyncio.to_thread((await starting).stop)
            raise
        try:
            yield str(plane.admin_kubeconfig), True
        finally:
            await asyncio.to_thread(plane.stop)
        return
    story.plane = "the bundled API emulator (set KUBEBUILDER_ASSETS for a real kube-apiserver)"
    async with serve() as (_, url):
        with tempfile.TemporaryDirectory(prefix="valet-demo-") as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(emulator_kubeconfig(url)))
            yield str(path), False


def _crd_files() -> list[Path]:
    for where in (REPO / "crds", REPO / "charts" / "valet" / "files" / "crds"):
        files = sorted(where.glob("*.yaml"))
        if files:
            return files
    raise DemoError("valet's CRDs not found (crds/ of the repository); install the chart's CRDs")


async def prepare(api: Api, demo: Demo, real: bool) -> None:
    if real:
        demo.made += await setup.install_crds(api, _crd_files())
    demo.made += await setup.create_priority_classes(api)
    for ns in (demo.job_ns, demo.spot_ns):
        with contextlib.suppress(errors.AlreadyExistsError):
            await api.call("POST", core_path("namespaces", None), {"metadata": {"name": ns}})
            demo.made.append(core_path("namespaces", None, ns))
        if real:  # without its default ServiceAccount a real server refuses every pod

            async def account(ns: str = ns) -> dict[str, Any]:
                return await api.call("GET", core_path("serviceaccounts", ns, "default"))

            await demo.until(account, f"ServiceAccount {ns}/default")


async def apply(api: Api, manifest: dict[str, Any]) -> None:
    md = manifest["metadata"]
    if manifest["kind"] == "TrainingJob":
        path = valet_path("trainingjobs", md["namespace"])
    else:
        path = valet_path("spotpools", None)
    try:
        await api.call("POST", path, manifest)
    except errors.AlreadyExistsError:
        await api.call("PATCH", f"{path}/{md['name']}", manifest, content_type=MERGE)


async def clean_up(api: Api, demo: Demo) -> None:
    """On a cluster of ``--kubeconfig``: delete what the demo made (job, pool, its pods,
    namespaces it created, its nodes and their Leases)."""

    async def delete(path: str, **query: str) -> None:
        with contextlib.suppress(errors.NotFoundError):
            await api.call("DELETE", path, query=query or None)

    await delete(valet_path("trainingjobs", demo.job_ns, demo.job["metadata"]["name"]))
    await delete(valet_path("spotpools", None, demo.pool["metadata"]["name"]))
    for ns in (demo.job_ns, demo.spot_ns):
        for pod in await _items(api, core_path("pods", ns)):
            await delete(core_path("pods", ns, pod["metadata"]["name"]), gracePeriodSeconds="0")
    for name in demo.names:
        await delete(f"/api/v1/nodes/{name}")
        await delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
    for path in reversed(demo.made):
        await delete(path)


def _quiet_logs(log_file: str | None) -> None:
    """The operator's and kopf's logs go to ``log_file`` (or nowhere): the screen is the story."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    if log_file:
        to_file = logging.FileHandler(log_file)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        root.addHandler(to_file)
        root.setLevel(logging.INFO)
        stream = open(log_file, "a")  # noqa: SIM115  # open for the process's life
        structlog.configure(logger_factory=structlog.PrintLoggerFactory(stream))
    else:
        root.addHandler(logging.NullHandler())
        root.setLevel(logging.CRITICAL + 1)
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    logging.getLogger("kopf").propagate = True


async def run(cfg: DemoConfig, story: Story) -> None:
    _quiet_logs(cfg.log_file)
    demo = Demo(cfg, story)
    async with contextlib.AsyncExitStack() as stack:
        path, real = await stack.enter_async_context(control_plane(cfg, story))
        story.say(f"control plane: {story.plane}")
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)  # the kubeconfig, never in-cluster
        api = Api(load_api_client(path, component="demo"), retry=RETRY)
        stack.callback(api.close)
        await prepare(api, demo, real)
        if cfg.kubeconfig:
            stack.push_async_callback(clean_up, api, demo)
        sim = SimNodes(api, demo.names, SIM)
        sim_task = asyncio.create_task(sim.run())

        async def stop_sim() -> None:
            sim_task.cancel()
            await asyncio.wait({sim_task}, timeout=10)

        stack.push_async_callback(stop_sim)
        await asyncio.wait_for(sim.ready.wait(), 60)
        story.say(f"{cfg.nodes} simulated GPU nodes of {SIM.gpus} GPUs registered")
        operator = Operator(
            operator_options(), api=Api(load_api_client(path, component="operator"), retry=RETRY)
        )
        stop_flag = asyncio.Event()
        tasks = await kopf.spawn_tasks(
            registry=op_module.registry,
            clusterwide=True,
            standalone=True,
            memo=kopf.Memo(operator=operator),
            stop_flag=stop_flag,
            ready_flag=asyncio.Event(),
        )

        # Kopf took SIGINT and SIGTERM for itself (it would stop only the operator): Ctrl-C
        # stops the whole demo instead, through the cleanups of this stack.
        _take_signals(asyncio.current_task())

        async def stop_operator() -> None:
            stop_flag.set()
            await asyncio.wait(tasks, timeout=10, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await operator.stop()

        stack.push_async_callback(stop_operator)
        await asyncio.wait_for(operator.reconciler.synced.wait(), 30)
        story.say("the operator is running (valet's registry, in this process)")
        await apply(api, demo.pool)
        await apply(api, demo.job)
        story.say(
            f"applied SpotPool {demo.pool['metadata']['name']} (notice {cfg.notice}s, hot spares"
            f" {cfg.hot}) and TrainingJob {demo.job_ns}/{demo.job['metadata']['name']}"
            f" ({demo.job['spec']['replicas']} workers of 8 GPUs)"
        )
        await demo.run(api, sim)


def _take_signals(task: asyncio.Task[Any] | None) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(sig)
            if task is not None:
                loop.add_signal_handler(sig, task.cancel)


def main(cfg: DemoConfig) -> int:
    """Run the demo; 0 when the script played out, 1 on a step that did not happen, 130 on
    Ctrl-C (after a clean shutdown)."""
    console = Console()
    story = Story(headless=cfg.headless, console=console)
    code = 0

    async def body() -> None:
        if cfg.headless:
            await run(cfg, story)
            return
        with Live(
            render(story),
            console=console,
            refresh_per_second=4,
            get_renderable=lambda: render(story),
        ):
            await run(cfg, story)

    try:
        asyncio.run(body())
    except (KeyboardInterrupt, asyncio.CancelledError):
        code = 130
        story.say("interrupted: everything stopped")
    except DemoError as err:
        code = 1
        story.say(f"FAILED: {err}")
    if cfg.headless:
        for line in summary_lines(story):
            print(line, flush=True)
    else:
        if code:
            console.print(story.events[-1])
        console.print(fault_table(story))
        console.print(summary(story))
    return code


__all__ = ["DemoConfig", "main", "manifests"]
