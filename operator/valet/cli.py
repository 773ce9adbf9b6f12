"""The ``valet`` command: ``simulate`` (fleet simulator), ``operator``, ``agent``, ``sim``
(simulated GPU nodes for clusters without GPUs) and ``demo`` (all of it, live)."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from valet.sim import report
from valet.sim.fleet import FleetConfig, simulate, size_buffer


def _fleet_config(args: argparse.Namespace) -> FleetConfig:
    return FleetConfig(
        gpus=args.gpus,
        days=args.days,
        seed=args.seed,
        buffer_percent=args.buffer_percent,
        job_nodes=args.job_nodes,
        failure_scale=args.failure_scale,
        notice_seconds=args.notice_seconds,
        hot=_hot(args.hot),
        shard_minutes=args.shard_minutes,
    )


def _hot(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f'valet simulate: --hot takes a count or "auto", not {value!r}') from None


def _simulate(args: argparse.Namespace) -> int:
    if args.gpus < 8:
        print("valet simulate: --gpus must be at least 8 (one node)", file=sys.stderr)
        return 2
    cfg = _fleet_config(args)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, 150)  # keep the table whole in logs and pipes
    with Progress(
        TextColumn("{task.description:>14}"),
        BarColumn(),
        TextColumn("{task.percentage:>5.1f}%"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=args.quiet or not console.is_terminal,
    ) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(name: str, fraction: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=1.0)
            bar.update(tasks[name], completed=fraction)

        if args.size_buffer is not None:
            results, best = size_buffer(cfg, args.size_buffer, progress=progress)
        else:
            results, best = simulate(cfg, progress=progress), None
    if args.json:
        print(
            json.dumps(
                {
                    "config": vars(args) | {"func": None},
                    "results": report.as_rows(results),
                    "smallest_buffer_percent": best,
                },
                indent=2,
                default=str,
            )
        )
    else:
        report.print_results(console, cfg, results)
        if args.size_buffer is not None:
            verdict = (
                f"smallest buffer meeting ETTR >= {args.size_buffer}: {best:g}% of nodes"
                if best is not None
                else f"no buffer size in the sweep meets ETTR >= {args.size_buffer}"
            )
            console.print(verdict)
    if args.plot:
        report.plot(results, Path(args.plot), f"{cfg.gpus:,} GPUs over {cfg.days:g} days")
        console.print(f"plot written to {args.plot}")
    return 0


def _agent(args: argparse.Namespace) -> int:
    # Imported here: `valet simulate` needs neither the Kubernetes client nor NVML.
    import os
    import shlex
    import signal
    import threading

    import structlog
    from prometheus_client import start_http_server

    from valet.agent.backends import NoBackendError, open_backend
    from valet.agent.classify import Classifier, Thresholds
    from valet.agent.remediation import Cap, Executor, GpuExecutor, Remediator
    from valet.agent.runner import Agent
    from valet.agent.simulated import FAULTS_ANNOTATION, SimulatedBackend, SimulatedExecutor
    from valet.metrics import AgentMetrics

    node = args.node or os.environ.get("NODE_NAME")
    if not node:
        print("valet agent: set --node or NODE_NAME (from the Downward API)", file=sys.stderr)
        return 2
    _configure_logging(args.log_format)
    publisher = None
    faults = None
    if not args.once:
        from valet.k8s.node_publisher import NodePublisher, core_api

        publisher = NodePublisher(core_api(), node)
        faults = lambda: publisher.current()[1].get(FAULTS_ANNOTATION)  # noqa: E731
    try:
        backend = open_backend(
            args.backend,
            node=node,
            expected=args.gpus,
            dcgm_url=args.dcgm_url,
            faults=faults or (lambda: None),
            fault_file=Path(args.fault_file) if args.fault_file else None,
            watch=publisher.watch if publisher is not None else None,
        )
    except NoBackendError as err:
        print(f"valet agent: {err}", file=sys.stderr)
        return 2
    classifier = Classifier(Thresholds(soft_persist_seconds=args.soft_persist_seconds))
    executor: Executor
    if isinstance(backend, SimulatedBackend):
        fault_file = Path(args.fault_file) if args.fault_file else None
        executor = SimulatedExecutor(args.remediation_seconds, fault_file)
    else:
        busy: Callable[[], list[str]] = getattr(backend, "busy", list)  # DCGM: nvidia-smi refuses
        reboot = shlex.split(args.reboot_command) if args.reboot_command else None
        executor = GpuExecutor(backend, busy, reboot_command=reboot, diag_level=args.diag_level)
    remediator = Remediator(
        executor, Cap(args.max_remediations, args.remediation_window_seconds), classifier.clear
    )
    if args.once:
        import time

        from valet.model import nodehealth

        verdict = classifier.classify(backend.probe(), time.time())
        print(
            json.dumps(
                {
                    "backend": backend.name,
                    "health": verdict.health.value,
                    "reason": verdict.reason,
                    "message": verdict.message,
                    "detail": json.loads(nodehealth.annotation(verdict, time.time())),
                },
                indent=2,
            )
        )
        backend.close()
        return 0
    assert publisher is not None
    metrics = AgentMetrics(node)
    agent = Agent(backend, publisher, metrics, classifier, remediator, args.event_spacing_seconds)
    stop = threading.Event()

    def shut_down(*_: object) -> None:
        stop.set()
        agent.wake()  # out of its wait now, not at the next probe

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, shut_down)
    start_http_server(args.metrics_port, registry=metrics.registry)
    _serve_health(args.health_port, agent.ready, stop)
    structlog.get_logger("valet.agent").info("agent started", node=node, backend=backend.name)
    agent.run(args.interval, stop)
    return 0


def _serve_health(port: int, ready: Any, stop: Any) -> None:
    """/healthz answers while the process runs; /readyz once the first verdict is published."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Health(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            ok = {"/healthz": not stop.is_set(), "/readyz": ready.is_set()}.get(self.path)
            self.send_response(404 if ok is None else 200 if ok else 503)
            self.end_headers()
            self.wfile.write(b"ok" if ok else b"not ready")

    server = ThreadingHTTPServer(("0.0.0.0", port), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def _configure_logging(fmt: str) -> None:
    import structlog

    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ]
    )


def _operator(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import socket

    import kopf
    from prometheus_client import start_http_server

    from valet.handlers.operator import Operator, OperatorOptions, registry
    from valet.handlers.reconciler import LoopConfig
    from valet.k8s.codec import DetectorRule, NodeReadConfig, PodDefaults
    from valet.policy import PolicyConfig

    _configure_logging(args.log_format)
    detectors = tuple(DetectorRule(condition=c) for c in args.detector_condition) + tuple(
        DetectorRule(taint=t) for t in args.detector_taint
    )
    options = OperatorOptions(
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        policy=PolicyConfig(
            staleness_seconds=args.staleness_seconds, node_grace_seconds=args.node_grace_seconds
        ),
        loop=LoopConfig(debounce_seconds=args.debounce_seconds),
        node_config=NodeReadConfig(detectors, staleness_seconds=args.staleness_seconds),
        pod_defaults=PodDefaults(
            worker_priority_class=args.worker_priority_class or None,
            spot_priority_class=args.spot_priority_class or None,
        ),
        leader_election=args.leader_elect,
        lease_namespace=args.lease_namespace or os.environ.get("POD_NAMESPACE", "default"),
        identity=os.environ.get("POD_NAME") or socket.gethostname(),
        api_qps=args.api_qps,
        api_burst=args.api_burst,
    )
    operator = Operator(options)
    start_http_server(args.metrics_port, registry=operator.metrics.registry)
    asyncio.run(
        kopf.operator(
            registry=registry,
            clusterwide=args.namespace is None,
            namespaces=[args.namespace] if args.namespace else (),
            standalone=True,
            memo=kopf.Memo(operator=operator),
            liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz",
        )
    )
    return 0


def _sim(args: argparse.Namespace) -> int:
    import asyncio

    from valet.k8s.client import Api, load_api_client
    from valet.simnodes.nodes import SimConfig, SimNodes, inject_fault

    _configure_logging(args.log_format)
    api = Api(load_api_client(args.kubeconfig, component="sim"))
    if args.sim_command == "fault":
        if (args.xid is None) == (args.signal is None):
            print("valet sim fault: give --xid or --signal", file=sys.stderr)
            return 2
        faults = asyncio.run(inject_fault(api, args.node, args.gpu, args.xid, args.signal))
        print(json.dumps(faults))
        return 0
    labels = dict(item.split("=", 1) for item in args.label)
    names = [f"{args.prefix}-{i:03d}" for i in range(args.nodes)]
    config = SimConfig(
        gpus=args.gpus,
        labels=labels,
        startup_seconds=args.startup_seconds,
        probe_seconds=args.probe_seconds,
        remediation_seconds=args.remediation_seconds,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(SimNodes(api, names, config).run())
    return 0


def _demo(args: argparse.Namespace) -> int:
    try:
        from valet.demo import DemoConfig, main
    except KeyboardInterrupt:  # Ctrl-C before anything started
        return 130

    if args.nodes < 7:
        print("valet demo: --nodes must be at least 7", file=sys.stderr)
        return 2
    return main(
        DemoConfig(
            nodes=args.nodes,
            notice=args.notice,
            hot=args.hot,
            kubeconfig=args.kubeconfig,
            headless=args.headless,
            step_timeout=args.step_timeout,
            log_file=args.log_file,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="valet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sim = sub.add_parser(
        "simulate",
        help="run the fleet simulator: policies compared over seeded failures",
        description="Discrete-event fleet simulation driving valet's own decide() over "
        "Llama 3's failure mix; compares no buffer, an idle buffer and valet.",
    )
    sim.add_argument("--gpus", type=int, default=16384, help="fleet size in GPUs (8 per node)")
    sim.add_argument("--days", type=float, default=54.0, help="simulated days")
    sim.add_argument("--seed", type=int, default=1, help="random seed (runs are reproducible)")
    sim.add_argument("--buffer-percent", type=float, default=5.0, help="spares, %% of nodes")
    sim.add_argument("--job-nodes", type=int, default=256, help="nodes per training job")
    sim.add_argument(
        "--failure-scale", type=float, default=1.0, help="multiply Llama 3's failure rate"
    )
    sim.add_argument("--notice-seconds", type=int, default=30, help="spot preemption notice")
    sim.add_argument(
        "--hot",
        default=None,
        metavar="N|auto",
        help="also run valet with this many hot (unpacked) spares, to show what they cost",
    )
    sim.add_argument(
        "--shard-minutes", type=float, default=120.0, help="mean runtime of a batch-inference shard"
    )
    sim.add_argument(
        "--size-buffer",
        type=float,
        metavar="ETTR",
        default=None,
        help="sweep buffer sizes; report the smallest meeting this ETTR",
    )
    sim.add_argument("--plot", metavar="PNG", default=None, help="write a bar chart here")
    sim.add_argument("--json", action="store_true", help="print results as JSON")
    sim.add_argument("--quiet", action="store_true", help="no progress bar")
    sim.set_defaults(func=_simulate)

    agent = sub.add_parser(
        "agent",
        help="run the node agent: probe GPUs, publish GPUHealthy on this Node, serve metrics",
    )
    agent.add_argument(
        "--backend",
        choices=("auto", "nvml", "dcgm", "simulated"),
        default="auto",
        help="auto: NVML if it initialises, else DCGM if the exporter answers",
    )
    agent.add_argument("--node", default=None, help="this Node's name (default: $NODE_NAME)")
    agent.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="GPUs the node should have (fewer is a fault); simulated: how many",
    )
    agent.add_argument("--interval", type=float, default=10.0, help="seconds between probes")
    agent.add_argument(
        "--event-spacing-seconds",
        type=float,
        default=0.25,
        help="least time between two probes triggered by a fault event (an XID storm is"
        " coalesced); the periodic probe keeps --interval",
    )
    agent.add_argument(
        "--soft-persist-seconds",
        type=float,
        default=120.0,
        help="how long a soft signal must last before the node is suspect",
    )
    agent.add_argument(
        "--dcgm-url", default="http://localhost:9400/metrics", help="dcgm-exporter metrics URL"
    )
    agent.add_argument(
        "--fault-file",
        default=None,
        help="simulated backend: also read injected faults from this JSON file",
    )
    agent.add_argument(
        "--reboot-command",
        default=None,
        help="run for a reboot request; without it, set valet.dev/reboot-required for an"
        " external reboot controller and answer when the boot ID changes",
    )
    agent.add_argument("--diag-level", type=int, default=1, help="dcgmi diag -r LEVEL")
    agent.add_argument("--max-remediations", type=int, default=5, help="per window, then refuse")
    agent.add_argument("--remediation-window-seconds", type=float, default=86400.0)
    agent.add_argument(
        "--remediation-seconds", type=float, default=5.0, help="simulated: how long one takes"
    )
    agent.add_argument("--metrics-port", type=int, default=9401)
    agent.add_argument("--health-port", type=int, default=9402, help="/healthz and /readyz")
    agent.add_argument("--log-format", choices=("json", "console"), default="json")
    agent.add_argument(
        "--once", action="store_true", help="probe once, print the verdict as JSON, publish nothing"
    )
    agent.set_defaults(func=_agent)

    op = sub.add_parser("operator", help="run the operator (Kopf) against the current cluster")
    op.add_argument("--namespace", default=None, help="watch one namespace (default: all)")
    op.add_argument("--kubeconfig", default=None, help="default: in-cluster, else $KUBECONFIG")
    op.add_argument("--leader-elect", action="store_true", help="for replicas > 1 (a Lease)")
    op.add_argument("--lease-namespace", default=None, help="default: $POD_NAMESPACE")
    op.add_argument("--metrics-port", type=int, default=9400)
    op.add_argument("--health-port", type=int, default=8080, help="Kopf liveness /healthz")
    op.add_argument(
        "--staleness-seconds",
        type=float,
        default=120.0,
        help="a health report older than this makes a node unknown",
    )
    op.add_argument(
        "--node-grace-seconds",
        type=float,
        default=20.0,
        help="a kubelet silent this long (Lease, Ready) makes its node dead; a pool may override",
    )
    op.add_argument(
        "--debounce-seconds",
        type=float,
        default=0.05,
        help="events within this window share one reconcile pass",
    )
    op.add_argument(
        "--detector-condition",
        action="append",
        default=[],
        metavar="TYPE",
        help="a node condition of another detector that means unhealthy when True",
    )
    op.add_argument(
        "--detector-taint",
        action="append",
        default=[],
        metavar="KEY",
        help="a taint of another detector that means unhealthy",
    )
    op.add_argument(
        "--worker-priority-class",
        default="",
        metavar="NAME",
        help="PriorityClass for training workers whose template names none",
    )
    op.add_argument(
        "--spot-priority-class",
        default="",
        metavar="NAME",
        help="PriorityClass for spot pods whose template names none",
    )
    op.add_argument(
        "--api-qps",
        type=float,
        default=200.0,
        help="client-side rate limit of API calls per second (a token bucket; 0: none)",
    )
    op.add_argument(
        "--api-burst", type=int, default=400, help="calls allowed at once above --api-qps"
    )
    op.add_argument("--log-format", choices=("json", "console"), default="json")
    op.set_defaults(func=_operator)

    sim_nodes = sub.add_parser(
        "sim", help="simulated GPU nodes (run) and fault injection (fault), over the API"
    )
    sim_nodes.add_argument("--kubeconfig", default=None)
    sim_nodes.add_argument("--log-format", choices=("json", "console"), default="console")
    sim_sub = sim_nodes.add_subparsers(dest="sim_command", required=True)
    run = sim_sub.add_parser("run", help="register N nodes and play kubelet and GPU agent")
    run.add_argument("--nodes", type=int, default=4)
    run.add_argument("--gpus", type=int, default=8)
    run.add_argument("--prefix", default="sim-gpu")
    run.add_argument("--label", action="append", default=[], metavar="K=V")
    run.add_argument("--startup-seconds", type=float, default=1.0)
    run.add_argument("--probe-seconds", type=float, default=10.0)
    run.add_argument("--remediation-seconds", type=float, default=5.0)
    fault = sim_sub.add_parser("fault", help="inject a GPU fault on a simulated node")
    fault.add_argument("node")
    fault.add_argument("--gpu", type=int, default=0)
    fault.add_argument("--xid", type=int, default=None)
    fault.add_argument("--signal", default=None, help="e.g. ecc-dbe, gpu-lost, thermal-throttle")
    sim_nodes.set_defaults(func=_sim)

    demo = sub.add_parser(
        "demo",
        help="watch valet heal a training job: a control plane, simulated GPU nodes, the"
        " operator and a script of faults, live in the terminal",
        description="Starts a control plane (kube-apiserver from KUBEBUILDER_ASSETS when set,"
        " else the bundled API emulator; or --kubeconfig), simulated GPU nodes, the operator,"
        " a SpotPool packed with spot work and an elastic TrainingJob, then plays an XID 79,"
        " a dying host, a lemon and a burst that trips the circuit breaker.",
    )
    demo.add_argument("--nodes", type=int, default=8, help="simulated GPU nodes (at least 7)")
    demo.add_argument("--notice", type=int, default=2, help="spot preemption notice, seconds")
    demo.add_argument("--hot", type=int, default=0, help="hot (unpacked) spares")
    demo.add_argument(
        "--kubeconfig",
        default=None,
        help="run the script on this cluster instead (it needs no GPUs; what it made is"
        " deleted at the end)",
    )
    demo.add_argument(
        "--headless", action="store_true", help="plain lines, one per event (CI, logs)"
    )
    demo.add_argument(
        "--step-timeout", type=float, default=60.0, help="seconds each step of the script may take"
    )
    demo.add_argument(
        "--log-file", default=None, help="write the operator's logs here (default: none)"
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
