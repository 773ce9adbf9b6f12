"""Heal latency, reconcile pass time, burst recovery and RSS of the real operator at scale.

Run: make bench-operator   (or: .venv/bin/python benchmarks/operator_heal_latency.py)

A child process serves the API emulator and simulates --nodes GPU nodes (kubelet and
agent); this process runs the operator exactly as the integration tests do. The cluster:
--jobs TrainingJobs of --job-size workers (8 GPUs each), one SpotPool holding the rest as
spares packed with 1-GPU spot shards. Then:

1. single faults, one at a time: XID 79 injected into a worker node's simulated GPU; the
   heal as the user sees it is from the injection until the replacement worker is Running
   (detection, the operator, binding and start-up included); beside it the operator's own
   part, status.lastHeal (fault condition observed → replacement bound);
2. a burst: --burst worker nodes fail at once; the time until every affected worker is
   bound on a spare.

The spot notice is --notice seconds (default 60, as the example pool) and --hot spares stay
unpacked (default 20), so a single failure waits no notice; a burst beyond the hot spares
waits the notice on packed ones, by design. A hot spare taken is replaced when a packed one
has served its notice, or when the failed node is back (its worker's 30 s grace, then
reboot and diagnostics): about 35-60 s. Faults every --gap + ~1 s therefore need about
(35-60 s) / (gap + 1 s) hot spares; with fewer, the later faults of the run wait a notice.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.emulator.server import kubeconfig, serve
from tests.integration.harness import EMULATOR, Cluster, Scope, spot_pool, training_job

from valet.handlers.operator import OperatorOptions
from valet.handlers.reconciler import LoopConfig
from valet.k8s.client import Api, RetryPolicy, load_api_client, valet_path
from valet.k8s.codec import REPLACES
from valet.policy import PolicyConfig
from valet.simnodes.nodes import SimConfig, SimNodes, inject_fault

RETRY = RetryPolicy(attempts=10, initial_seconds=0.02, max_seconds=0.5, deadline_seconds=60)


def _cluster_process(nodes: int, path: str, ready: Any) -> None:
    async def main() -> None:
        async with serve() as (_, url):
            Path(path).write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(path), retry=RETRY, threads=16)
            await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "train"}})
            await api.call("POST", "/api/v1/namespaces", {"metadata": {"name": "batch"}})
            names = [f"gpu-{i:04d}" for i in range(nodes)]
            config = SimConfig(probe_seconds=30, startup_seconds=0.5, remediation_seconds=2.0)
            sim = SimNodes(api, names, config)
            task = asyncio.create_task(sim.run())
            await sim.ready.wait()
            ready.set()
            await task

    asyncio.run(main())


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    tmp = tempfile.mkdtemp()
    path = str(Path(tmp) / "kubeconfig")
    ready = multiprocessing.get_context("spawn").Event()
    child = multiprocessing.get_context("spawn").Process(
        target=_cluster_process, args=(args.nodes, path, ready), daemon=True
    )
    started = time.perf_counter()
    child.start()
    while not ready.wait(0.1):
        await asyncio.sleep(0)
    print(f"{args.nodes} simulated nodes registered in {time.perf_counter() - started:.1f}s")
    api = Api(load_api_client(path), retry=RETRY)
    c = Cluster(  # the operator and API helpers of the tests' harness; the nodes live apart
        api=api,
        sim=None,  # type: ignore[arg-type]
        emulator=None,
        kubeconfig=path,
        backend=EMULATOR,
        scope=Scope("bench"),
        nodes=[],
    )
    options = OperatorOptions(
        policy=PolicyConfig(staleness_seconds=120, recover_after_seconds=1),
        loop=LoopConfig(debounce_seconds=0.05, resync_seconds=15),
    )
    operator = await c.start_operator(options)
    durations: list[float] = []
    original = operator.reconciler.run_pass

    async def timed() -> Any:
        t0 = time.perf_counter()
        plan = await original()
        durations.append(time.perf_counter() - t0)
        return plan

    operator.reconciler.run_pass = timed  # type: ignore[method-assign]

    worker_nodes = args.jobs * args.job_size
    spares = args.nodes - worker_nodes
    pool = spot_pool(
        spares=spares, gpus_per_pod=1, shards=1_000_000, notice=args.notice, hot=args.hot
    )
    pool["spec"]["nodeSelector"] = {"valet.dev/simulated": "true"}
    pool["spec"]["circuitBreaker"]["maxFailedPercent"] = 30
    # The jobs first: arriving at a pool already packed, each would wait the notice.
    workloads = pool["spec"].pop("workloads")
    await c.apply(pool)
    t0 = time.perf_counter()
    for i in range(args.jobs):
        await c.apply(training_job(f"job-{i:03d}", replicas=args.job_size, min_replicas=1))

    async def all_running() -> bool:
        items = await c.items(valet_path("trainingjobs", "train"))
        return (
            sum(1 for j in items if (j.get("status") or {}).get("phase") == "Running") == args.jobs
        )

    await c.until(all_running, timeout=600, what="every job Running")
    print(
        f"{args.jobs} jobs x {args.job_size} workers placed and Running"
        f" in {time.perf_counter() - t0:.1f}s"
    )
    await c.apply({**pool, "spec": {**pool["spec"], "workloads": workloads}})

    async def packed() -> dict[str, Any] | None:
        status = (await c.pool("pool")).get("status") or {}
        return status if status.get("spotGPUs", 0) >= (spares - args.hot) * 8 else None

    status = await c.until(packed, timeout=600, what="spares packed")

    async def quiet() -> bool:  # the packing pass has applied everything it decided
        return len(operator.reconciler.last_plan) == 0

    await c.until(quiet, timeout=600, what="a pass with nothing to do")
    print(
        f"spares {status['spares']}/{status['sparesTarget']}, spot GPUs packed {status['spotGPUs']}"
    )
    durations.clear()

    async def swaps() -> int:
        items = await c.items(valet_path("trainingjobs", "train"))
        return sum((j.get("status") or {}).get("swaps", 0) for j in items)

    async def worker_node(job: int) -> str:
        pods = await c.pods("train", f"valet.dev/job=job-{job:03d}")
        return sorted(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))[0]

    # 1. single faults
    latencies: list[float] = []  # the operator's part: fault observed → replacement bound
    end_to_end: list[float] = []  # injection → replacement Running
    for i in range(args.faults):
        job = i % args.jobs
        node = await worker_node(job)
        before = await swaps()
        injected_at = time.monotonic()
        await inject_fault(api, node, 0, 79, None)

        async def running(job: int = job, node: str = node) -> float | None:
            pods = await c.pods("train", f"valet.dev/job=job-{job:03d}")
            for pod in pods:
                replaces = (pod["metadata"].get("annotations") or {}).get(REPLACES)
                if replaces == node and (pod.get("status") or {}).get("phase") == "Running":
                    return time.monotonic()
            return None

        end_to_end.append(await c.until(running, timeout=120, what=f"swap {i}") - injected_at)

        async def healed(before: int = before) -> bool:
            return await swaps() > before

        await c.until(healed, timeout=120, what=f"swap {i} counted")
        item = await c.job(f"job-{job:03d}", "train")
        latencies.append(item["status"]["lastHeal"]["seconds"])
        await asyncio.sleep(args.gap)
    print(
        f"single faults: {len(end_to_end)} (notice {args.notice}s, {args.hot} hot spares);"
        f" heal as the user sees it (injection → replacement Running)"
        f" p50 {pct(end_to_end, 0.5):.3f}s p99 {pct(end_to_end, 0.99):.3f}s"
        f" max {max(end_to_end):.3f}s; slowest {sorted(end_to_end)[-3:]}"
    )
    print(
        f"  the operator's part (fault observed → bound) p50 {pct(latencies, 0.5):.3f}s"
        f" p99 {pct(latencies, 0.99):.3f}s max {max(latencies):.3f}s"
    )
    print(
        f"reconcile pass: {len(durations)} passes, p50 {pct(durations, 0.5) * 1000:.1f}ms"
        f" p99 {pct(durations, 0.99) * 1000:.1f}ms mean {statistics.mean(durations) * 1000:.1f}ms"
    )

    # 2. burst
    await asyncio.sleep(5)  # let the healed nodes return to the buffer
    victims = []
    for job in range(args.burst):
        pods = await c.pods("train", f"valet.dev/job=job-{job % args.jobs:03d}")
        nodes = sorted(p["spec"]["nodeName"] for p in pods if p["spec"].get("nodeName"))
        victims.append(nodes[job // args.jobs])
    victims = sorted(set(victims))
    before = await swaps()
    t0 = time.perf_counter()
    await asyncio.gather(*(inject_fault(api, n, 0, 79, None) for n in victims))
    injected = time.perf_counter() - t0

    async def burst_healed() -> bool:
        return await swaps() >= before + len(victims) and await all_running()

    await c.until(burst_healed, timeout=300, what="burst healed")
    elapsed = time.perf_counter() - t0
    print(
        f"burst: {len(victims)} nodes failed at once (injection took {injected:.2f}s);"
        f" every affected worker bound on a spare after {elapsed:.2f}s"
    )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"operator process max RSS: {rss:.0f} MiB (the emulator and simulated nodes run apart)")
    await c.stop_operator(graceful=False)
    api.close()
    child.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--job-size", type=int, default=8)
    parser.add_argument("--faults", type=int, default=30)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds between single faults")
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--notice", type=int, default=60, help="spot notice, seconds")
    parser.add_argument("--hot", type=int, default=20, help="hot (unpacked) spares")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
