"""``kubectl valet`` (the ``kubectl-valet`` plugin): what valet is doing, and planned work.

- ``status``: pools (spares/target, hot, nodes by state, spot GPUs, breaker), jobs (phase,
  ready/desired, swaps, last heal) and the nodes that are not healthy, with their reasons;
- ``why JOB``: why a TrainingJob is Pending/Waiting/Degraded, in a sentence, from its
  conditions, its Events and its pool's state;
- ``drain NODE --reason R`` / ``return NODE``: planned maintenance through the Node annotation
  ``valet.dev/maintenance`` (valet moves the node's workers onto spares, records no fault and
  holds the node in state ``maintenance`` until it is returned);
- ``fault NODE --xid N``: a drill on a simulated node (``valet sim``).

Tables by default, ``-o json|yaml``; ``--kubeconfig``, ``--context``, ``-n/--namespace``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import yaml
from rich.console import Console
from rich.table import Table

from valet.k8s import codec, errors
from valet.k8s.client import MERGE, Api, core_path, load_api_client, node_path, valet_path
from valet.model import nodehealth
from valet.model.enums import MAINTENANCE_ANNOTATION, STATE_LABEL, Health, NodeState
from valet.model.specs import SpotPoolSpec
from valet.model.view import Node
from valet.simnodes.nodes import SIMULATED_LABEL, inject_fault

Raw = Mapping[str, Any]
# States that are not "healthy and in the pool": listed by ``status`` with their reason.
_HELD = {s.value for s in NodeState} - {NodeState.ACTIVE.value, NodeState.SPARE.value}


class UsageError(Exception):
    """A command that cannot be carried out as asked (exit status 1, message on stderr)."""


# --- reading ------------------------------------------------------------------------------


async def _items(api: Api, path: str, **query: str) -> list[dict[str, Any]]:
    return list((await api.call("GET", path, query=query or None)).get("items") or [])


def _selects(selector: Mapping[str, str], node: Raw) -> bool:
    labels = codec.meta(node).get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


def _condition(obj: Raw, kind: str) -> Mapping[str, Any] | None:
    return nodehealth.find_condition((obj.get("status") or {}).get("conditions") or (), kind)


def _node_reason(node: Node) -> str:
    """Why a node is out of the pool or unhealthy, in a few words."""
    if node.state is NodeState.MAINTENANCE or node.maintenance is not None:
        return f"maintenance: {node.maintenance or 'returned, rejoining'}"
    if node.health.signals:
        return ", ".join(node.health.signals)
    if not node.ready:
        return "kubelet not Ready"
    if node.health.verdict is Health.UNKNOWN:
        return "agent silent (health unknown)"
    if node.state is NodeState.HEALING and node.remediation.requested is not None:
        return f"remediating ({node.remediation.requested})"
    return node.state.value if node.state else "not yet adopted"


async def gather_status(
    api: Api, namespace: str | None = None, pool: str | None = None
) -> dict[str, Any]:
    """Pools, jobs and unhealthy nodes as plain data (what ``-o json`` prints)."""
    pools_raw = await _items(api, valet_path("spotpools", None))
    if pool is not None:
        pools_raw = [p for p in pools_raw if codec.meta(p).get("name") == pool]
    jobs_raw = await _items(api, valet_path("trainingjobs", namespace))
    if pool is not None:
        jobs_raw = [j for j in jobs_raw if (j.get("spec") or {}).get("pool") == pool]
    nodes_raw = await _items(api, node_path())
    pools: list[dict[str, Any]] = []
    selectors: list[tuple[str, Mapping[str, str]]] = []
    for raw in pools_raw:
        name = str(codec.meta(raw).get("name"))
        spec, status = raw.get("spec") or {}, raw.get("status") or {}
        selector = dict(spec.get("nodeSelector") or {})
        selectors.append((name, selector))
        breaker = _condition(raw, "CircuitBreakerOpen")
        nodes = {k: v for k, v in (status.get("nodes") or {}).items() if v}
        pools.append(
            {
                "name": name,
                "spares": int(status.get("spares") or 0),
                "sparesTarget": int(status.get("sparesTarget") or 0),
                "hot": (spec.get("buffer") or {}).get("hot"),
                "nodes": nodes,
                "spotGPUs": int(status.get("spotGPUs") or 0),
                "breakerOpen": bool(breaker and breaker.get("status") == "True"),
                "bufferExhausted": (_condition(raw, "BufferExhausted") or {}).get("status")
                == "True",
            }
        )
    jobs: list[dict[str, Any]] = []
    for raw in jobs_raw:
        md, spec, status = codec.meta(raw), raw.get("spec") or {}, raw.get("status") or {}
        heal = status.get("lastHeal") or None
        jobs.append(
            {
                "namespace": md.get("namespace"),
                "name": md.get("name"),
                "pool": spec.get("pool"),
                "phase": status.get("phase") or "Pending",
                "ready": int(status.get("readyReplicas") or 0),
                "desired": int(spec.get("replicas") or 0),
                "swaps": int(status.get("swaps") or 0),
                "lastHeal": heal,
                "message": status.get("message") or "",
            }
        )
    unhealthy: list[dict[str, Any]] = []
    config = codec.NodeReadConfig()
    for raw in nodes_raw:
        member = next((name for name, sel in selectors if _selects(sel, raw)), None)
        if pool is not None and member is None:
            continue
        node = codec.node_from(raw, config, 0.0)
        labels = codec.meta(raw).get("labels") or {}
        held = labels.get(STATE_LABEL) in _HELD
        bad = node.health.verdict in (Health.UNHEALTHY, Health.SUSPECT) or not node.ready
        if not (held or bad or node.maintenance is not None):
            continue
        if member is None and not held:
            continue  # not valet's: a node outside every pool is not reported
        unhealthy.append(
            {
                "name": node.name,
                "pool": member,
                "state": node.state.value if node.state else None,
                "health": node.health.verdict.value,
                "reason": _node_reason(node),
            }
        )
    unhealthy.sort(key=lambda n: n["name"])
    return {"pools": pools, "jobs": jobs, "unhealthyNodes": unhealthy}


def _last_heal_text(heal: Mapping[str, Any] | None) -> str:
    if not heal:
        return "-"
    seconds = heal.get("seconds")
    took = f" in {float(seconds):.1f}s" if seconds is not None else ""
    return f"{heal.get('failedNode')} → {heal.get('spare')}{took}"


def status_tables(data: Mapping[str, Any]) -> list[Table]:
    pools = Table(title="SpotPools")
    for col in ("POOL", "SPARES", "HOT", "NODES", "SPOT GPUS", "BREAKER"):
        pools.add_column(col)
    for p in data["pools"]:
        nodes = " ".join(f"{k}={v}" for k, v in sorted(p["nodes"].items())) or "-"
        spares = f"{p['spares']}/{p['sparesTarget']}" + (
            " exhausted" if p["bufferExhausted"] else ""
        )
        hot = "-" if p["hot"] is None else str(p["hot"])
        breaker = "OPEN" if p["breakerOpen"] else "closed"
        pools.add_row(p["name"], spares, hot, nodes, str(p["spotGPUs"]), breaker)
    jobs = Table(title="TrainingJobs")
    for col in ("NAMESPACE", "JOB", "POOL", "PHASE", "READY", "SWAPS", "LAST HEAL"):
        jobs.add_column(col)
    for j in data["jobs"]:
        jobs.add_row(
            j["namespace"],
            j["name"],
            j["pool"] or "-",
            j["phase"],
            f"{j['ready']}/{j['desired']}",
            str(j["swaps"]),
            _last_heal_text(j["lastHeal"]),
        )
    held = Table(title="Nodes not in service or not healthy")
    for col in ("NODE", "POOL", "STATE", "HEALTH", "REASON"):
        held.add_column(col)
    for n in data["unhealthyNodes"]:
        held.add_row(n["name"], n["pool"] or "-", n["state"] or "-", n["health"], n["reason"])
    return [pools, jobs, held]


# --- why --------------------------------------------------------------------------------


async def explain(api: Api, namespace: str, name: str) -> dict[str, Any]:
    """Why the job is in its phase: a sentence, with what it was built from."""
    try:
        job = await api.call("GET", valet_path("trainingjobs", namespace, name))
    except errors.NotFoundError:
        raise UsageError(f"trainingjob {namespace}/{name} not found") from None
    spec, status = job.get("spec") or {}, job.get("status") or {}
    phase = status.get("phase") or "Pending"
    events = [
        e
        for e in await _items(api, core_path("events", namespace))
        if (e.get("involvedObject") or {}).get("kind") == "TrainingJob"
        and (e.get("involvedObject") or {}).get("name") == name
    ]
    events.sort(key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    replicas = int(spec.get("replicas") or 0)
    minimum = int(spec.get("minReplicas") or (1 if replicas else 0))
    gpus = int(spec.get("gpusPerReplica") or 0)
    parts: list[str] = []
    invalid = _condition(job, "SpecValid")
    if invalid is not None and invalid.get("status") == "False":
        parts.append(
            f"its spec is not runnable ({invalid.get('reason')}: {invalid.get('message')})"
        )
    if status.get("message"):
        parts.append(str(status["message"]))
    pool_name = spec.get("pool")
    pool_info: dict[str, Any] | None = None
    if pool_name:
        try:
            pool = await api.call("GET", valet_path("spotpools", None, pool_name))
        except errors.NotFoundError:
            parts.append(f"its pool {pool_name} does not exist")
        else:
            pool_info = await _pool_capacity(api, pool, gpus)
            parts.append(_pool_sentence(pool_name, pool_info, minimum, gpus))
    if phase in ("Running", "Succeeded") and not parts:
        parts.append(f"{status.get('readyReplicas', 0)}/{replicas} workers ready")
    if events and phase not in ("Running", "Succeeded"):
        last = events[-1]
        if last.get("message") != status.get("message"):  # said once is enough
            parts.append(f"last event {last.get('reason')}: {last.get('message')}")
        else:
            parts.append(f"last event {last.get('reason')}")
    sentence = f"{namespace}/{name} is {phase}: " + "; ".join(parts) + "."
    return {
        "job": f"{namespace}/{name}",
        "phase": phase,
        "why": sentence,
        "conditions": list(status.get("conditions") or ()),
        "events": [
            {"type": e.get("type"), "reason": e.get("reason"), "message": e.get("message")}
            for e in events[-5:]
        ],
        "pool": pool_info,
    }


async def _pool_capacity(api: Api, pool: Raw, gpus: int) -> dict[str, Any]:
    spec = SpotPoolSpec.parse(pool.get("spec") or {})
    status = pool.get("status") or {}
    config = codec.NodeReadConfig()
    serving, fit = 0, 0
    for raw in await _items(api, node_path()):
        if not _selects(spec.node_selector, raw):
            continue
        node = codec.node_from(raw, config, 0.0)
        in_service = node.state in (NodeState.ACTIVE, NodeState.SPARE) and node.ready
        if in_service and node.health.verdict is Health.HEALTHY:
            serving += 1
            fit += node.gpus // gpus if gpus else 0
    breaker = _condition(pool, "CircuitBreakerOpen")
    return {
        "name": codec.meta(pool).get("name"),
        "nodes": {k: v for k, v in (status.get("nodes") or {}).items() if v},
        "inService": serving,
        "workersThatFit": fit,
        "spares": int(status.get("spares") or 0),
        "sparesTarget": int(status.get("sparesTarget") or 0),
        "breakerOpen": bool(breaker and breaker.get("status") == "True"),
    }


def _pool_sentence(name: str, info: Mapping[str, Any], minimum: int, gpus: int) -> str:
    by_state = ", ".join(f"{v} {k}" for k, v in sorted(info["nodes"].items())) or "no nodes"
    text = (
        f"pool {name} has {info['inService']} healthy node(s) in service ({by_state}),"
        f" room for at most {info['workersThatFit']} worker(s) of {gpus} GPUs"
        f" where the job needs at least {minimum}"
    )
    if info["spares"] < info["sparesTarget"]:
        text += f", spares {info['spares']}/{info['sparesTarget']}"
    if info["breakerOpen"]:
        text += ", and its circuit breaker is open (draining held after a mass failure)"
    return text


# --- acting ------------------------------------------------------------------------------


async def _node(api: Api, name: str) -> dict[str, Any]:
    try:
        return await api.call("GET", node_path(name))
    except errors.NotFoundError:
        raise UsageError(f"node {name} not found") from None


async def drain(api: Api, name: str, reason: str) -> dict[str, Any]:
    """Planned maintenance: annotate the node; valet moves its workers and holds it."""
    await _node(api, name)
    body = {"metadata": {"annotations": {MAINTENANCE_ANNOTATION: reason}}}
    await api.call("PATCH", node_path(name), body, content_type=MERGE)
    return {
        "node": name,
        "maintenance": reason,
        "message": f"node/{name} marked for maintenance ({reason}): valet moves its workers"
        " onto spares and holds it out of the pool until `kubectl valet return`",
    }


async def return_node(api: Api, name: str) -> dict[str, Any]:
    raw = await _node(api, name)
    annotations = codec.meta(raw).get("annotations") or {}
    if MAINTENANCE_ANNOTATION not in annotations:
        raise UsageError(f"node {name} is not in maintenance")
    body = {"metadata": {"annotations": {MAINTENANCE_ANNOTATION: None}}}
    await api.call("PATCH", node_path(name), body, content_type=MERGE)
    return {"node": name, "message": f"node/{name} returned: valet puts it back in the buffer"}


async def fault(
    api: Api, name: str, xid: int | None, signal: str | None, gpu: int
) -> dict[str, Any]:
    raw = await _node(api, name)
    if (codec.meta(raw).get("labels") or {}).get(SIMULATED_LABEL) != "true":
        raise UsageError(f"node {name} is not a simulated node ({SIMULATED_LABEL}=true)")
    faults = await inject_fault(api, name, gpu, xid, signal)
    what = f"XID {xid}" if xid is not None else signal
    return {
        "node": name,
        "faults": faults,
        "message": f"node/{name}: injected {what} on GPU {gpu}",
    }


# --- the command -------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", default=argparse.SUPPRESS, help="kubeconfig file")
    common.add_argument("--context", default=argparse.SUPPRESS, help="kubeconfig context")
    common.add_argument(
        "-o", "--output", choices=("table", "json", "yaml"), default=argparse.SUPPRESS
    )
    common.add_argument(
        "-n", "--namespace", default=argparse.SUPPRESS, help="namespace of TrainingJobs"
    )
    parser = argparse.ArgumentParser(
        prog="kubectl valet", description=__doc__.split("\n\n")[0], parents=[common]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser("status", parents=[common], help="pools, jobs, unhealthy nodes")
    status.add_argument("--pool", default=None, help="only this SpotPool (its jobs and nodes)")
    why = sub.add_parser("why", parents=[common], help="why a TrainingJob is in its phase")
    why.add_argument("job", metavar="TRAININGJOB")
    drain_p = sub.add_parser("drain", parents=[common], help="planned maintenance of a node")
    drain_p.add_argument("node", metavar="NODE")
    drain_p.add_argument("--reason", required=True, help="why (kept on the node)")
    ret = sub.add_parser("return", parents=[common], help="end a node's maintenance")
    ret.add_argument("node", metavar="NODE")
    fault_p = sub.add_parser("fault", parents=[common], help="inject a fault (simulated nodes)")
    fault_p.add_argument("node", metavar="NODE")
    group = fault_p.add_mutually_exclusive_group(required=True)
    group.add_argument("--xid", type=int, help="NVIDIA XID, e.g. 79")
    group.add_argument("--signal", help="a named signal of the fault table")
    fault_p.add_argument("--gpu", type=int, default=0, help="GPU index")
    return parser


async def run(args: argparse.Namespace, api: Api) -> tuple[dict[str, Any], list[Any]]:
    """Carry out a parsed command: its data and what to print for ``-o table``."""
    namespace = getattr(args, "namespace", None)
    if args.command == "status":
        data = await gather_status(api, namespace, args.pool)
        return data, list(status_tables(data))
    if args.command == "why":
        data = await explain(api, namespace or "default", args.job)
        return data, [data["why"]]
    if args.command == "drain":
        data = await drain(api, args.node, args.reason)
    elif args.command == "return":
        data = await return_node(api, args.node)
    else:
        data = await fault(api, args.node, args.xid, args.signal, args.gpu)
    return data, [data["message"]]


async def main_async(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """``main`` for a caller already on an event loop (the tests), printing to ``stdout``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    stream = stdout or sys.stdout
    api = Api(
        load_api_client(
            getattr(args, "kubeconfig", None),
            component="kubectl",
            context=getattr(args, "context", None),
        )
    )
    try:
        data, rendered = await run(args, api)
    except (UsageError, errors.ApiError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        api.close()
    fmt = getattr(args, "output", "table")
    if fmt == "json":
        print(json.dumps(data, indent=2, default=str), file=stream)
    elif fmt == "yaml":
        plain = json.loads(json.dumps(data, default=str))
        print(yaml.safe_dump(plain, sort_keys=False), end="", file=stream)
    else:
        width = None if stream.isatty() else 160
        console = Console(file=stream, width=width, soft_wrap=False)
        for item in rendered:
            console.print(item, markup=False, highlight=False)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return asyncio.run(main_async(argv))


if __name__ == "__main__":
    sys.exit(main())
