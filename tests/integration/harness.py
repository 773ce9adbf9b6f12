"""A cluster for integration tests: an API server, simulated GPU nodes, and the real operator
(the registry ``valet operator`` runs), all in this event loop.

Every scenario runs on two backends (``Backend``): the emulator, fresh for each test, and a
real kube-apiserver shared by the session (envtest from ``KUBEBUILDER_ASSETS``, or the
cluster named by ``VALET_E2E_KUBECONFIG``). On the shared one a test owns its names (a
``Scope``: namespaces, node-name prefix, pool, a node label its pool selects) and removes
what it made, so tests pass in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import socket
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import kopf
import yaml

from tests.emulator.server import Chaos, Emulator, kubeconfig, serve
from valet.envtest import ControlPlane
from valet.handlers import operator as op_module
from valet.handlers.operator import Operator, OperatorOptions
from valet.handlers.reconciler import LoopConfig
from valet.k8s import errors, setup
from valet.k8s.client import (
    MERGE,
    Api,
    RetryPolicy,
    core_path,
    load_api_client,
    node_path,
    valet_path,
)
from valet.policy import PolicyConfig
from valet.simnodes.nodes import SimConfig, SimNodes, inject_fault

T = TypeVar("T")
CRDS = Path(__file__).parents[2] / "crds"
FAST_RETRY = RetryPolicy(attempts=10, initial_seconds=0.01, max_seconds=0.2, deadline_seconds=20)


FAST_SIM = SimConfig(
    probe_seconds=1.0, lease_seconds=1.0, startup_seconds=0.2, remediation_seconds=0.5
)


@dataclasses.dataclass
class Cluster:
    api: Api
    sim: SimNodes
    emulator: Emulator | None
    kubeconfig: str
    backend: Backend
    scope: Scope
    nodes: list[str]
    operator: Operator | None = None
    namespaces_made: list[str] = dataclasses.field(default_factory=list)
    _kopf: list[asyncio.Task[Any]] = dataclasses.field(default_factory=list)
    _stop: asyncio.Event | None = None

    # --- the operator ------------------------------------------------------------------

    async def start_operator(self, options: OperatorOptions) -> Operator:
        api = Api(
            load_api_client(self.kubeconfig, component="operator"),
            retry=FAST_RETRY,
            qps=options.api_qps,
            burst=options.api_burst,
        )
        operator = Operator(options, api=api)
        self._stop = asyncio.Event()
        ready = asyncio.Event()
        tasks = await kopf.spawn_tasks(
            registry=op_module.registry,
            clusterwide=options.namespace is None,
            namespaces=[options.namespace] if options.namespace else (),
            standalone=True,
            memo=kopf.Memo(operator=operator),
            stop_flag=self._stop,
            ready_flag=ready,
        )
        # The root tasks are awaited here, not by kopf.run_tasks: on exit that cancels every
        # task of the loop it did not see before, and the simulated nodes and tests live on.
        self._kopf = list(tasks)
        await asyncio.wait_for(operator.reconciler.synced.wait(), 30)
        self.operator = operator
        return operator

    async def stop_operator(self, graceful: bool = True) -> None:
        """Stop the operator; ``graceful=False`` kills it mid-flight, as a crashed pod."""
        if self.operator is None:
            return
        if not graceful:
            await self.operator.stop()  # the reconciler dies mid-flight, as in a crashed pod
        if self._stop is not None:
            self._stop.set()
            # The stop-flag checker exits first; then the other root tasks are cancelled,
            # as kopf.run_tasks does.
            await asyncio.wait(self._kopf, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        for task in self._kopf:
            task.cancel()
        await asyncio.gather(*self._kopf, return_exceptions=True)
        await self.operator.stop()
        self.operator = None

    # --- reading and waiting -----------------------------------------------------------

    async def get(self, path: str) -> dict[str, Any]:
        return await self.api.call("GET", path)

    async def items(self, path: str, **query: str) -> list[dict[str, Any]]:
        return (await self.api.call("GET", path, query=query or None)).get("items") or []

    @property
    def train(self) -> str:
        """The namespace of this test's TrainingJobs."""
        return self.scope.train

    @property
    def batch(self) -> str:
        """The namespace of this test's spot workloads."""
        return self.scope.batch

    @property
    def pool_name(self) -> str:
        return self.scope.pool

    async def job(self, name: str = "llm", ns: str | None = None) -> dict[str, Any]:
        return await self.get(valet_path("trainingjobs", ns or self.train, name))

    async def pool(self, name: str | None = None) -> dict[str, Any]:
        return await self.get(valet_path("spotpools", None, name or self.pool_name))

    async def node(self, name: str) -> dict[str, Any]:
        return await self.get(node_path(name))

    async def pods(self, ns: str | None = None, selector: str = "") -> list[dict[str, Any]]:
        query = {"labelSelector": selector} if selector else {}
        return await self.items(core_path("pods", ns), **query)

    async def until(
        self, probe: Callable[[], Awaitable[T | bool | None]], timeout: float = 30, what: str = ""
    ) -> T:
        return await until(probe, timeout, what)

    # --- acting ------------------------------------------------------------------------

    async def apply(self, manifest: dict[str, Any]) -> dict[str, Any]:
        kind = manifest["kind"]
        md = manifest["metadata"]
        if kind == "TrainingJob":
            path = valet_path("trainingjobs", md.get("namespace", "default"))
        elif kind == "SpotPool":
            path = valet_path("spotpools", None)
        elif kind == "Namespace":
            path = core_path("namespaces", None)
        else:
            raise ValueError(kind)
        try:
            return await self.api.call("POST", path, manifest)
        except errors.AlreadyExistsError:
            return await self.api.call(
                "PATCH", f"{path}/{md['name']}", manifest, content_type=MERGE
            )

    async def namespace(self, name: str) -> None:
        """Create a namespace; on a real server, await its ``default`` ServiceAccount, without
        which every pod is refused."""
        with contextlib.suppress(errors.AlreadyExistsError):
            await self.api.call("POST", core_path("namespaces", None), {"metadata": {"name": name}})
            self.namespaces_made.append(name)
        if self.backend.real:
            await self.until(
                lambda: self.get(core_path("serviceaccounts", name, "default")),
                what=f"ServiceAccount {name}/default",
            )

    def spot_pool(self, **options: Any) -> dict[str, Any]:
        """This test's SpotPool: it selects this test's nodes, runs spot work in ``batch``."""
        return spot_pool(
            self.pool_name, namespace=self.batch, selector=self.scope.selector, **options
        )

    def training_job(self, name: str = "llm", **options: Any) -> dict[str, Any]:
        """A TrainingJob in this test's ``train`` namespace on this test's pool."""
        options.setdefault("pool", self.pool_name)
        return training_job(name, namespace=self.train, **options)

    async def fault(
        self, node: str, gpu: int = 0, xid: int | None = 79, signal: str | None = None
    ) -> None:
        await inject_fault(self.api, node, gpu, xid if signal is None else None, signal)

    async def annotate_node(self, node: str, annotations: dict[str, str | None]) -> None:
        await self.api.call(
            "PATCH", node_path(node), {"metadata": {"annotations": annotations}}, content_type=MERGE
        )


async def until(
    probe: Callable[[], Awaitable[T | bool | None]], timeout: float = 30, what: str = ""
) -> T:
    """Await a condition over the API: poll ``probe`` until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while True:
        with contextlib.suppress(errors.ApiError):
            last = await probe()
            if last:
                return last  # type: ignore[return-value]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(
                f"timed out after {timeout}s waiting for {what or probe}: {last!r}"
            )
        await asyncio.sleep(0.05)


def free_port() -> int:
    """A localhost port nothing listens on now (for a process the test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_names(count: int, prefix: str = "gpu") -> list[str]:
    return [f"{prefix}-{i:03d}" for i in range(count)]


@dataclasses.dataclass(frozen=True)
class Backend:
    """Where a test's cluster runs: ``emulator`` (``kubeconfig`` is None: a fresh emulator
    per test) or ``real`` (a shared real API server with valet's CRDs installed)."""

    name: str
    kubeconfig: str | None = None
    plane: ControlPlane | None = None

    @property
    def real(self) -> bool:
        return self.kubeconfig is not None


EMULATOR = Backend("emulator")


@dataclasses.dataclass(frozen=True)
class Scope:
    """The names one test owns, unique on a shared API server."""

    id: str

    @classmethod
    def new(cls) -> Scope:
        return cls(secrets.token_hex(3))

    @property
    def train(self) -> str:
        return f"train-{self.id}"

    @property
    def batch(self) -> str:
        return f"batch-{self.id}"

    @property
    def pool(self) -> str:
        return f"pool-{self.id}"

    @property
    def selector(self) -> dict[str, str]:
        return {**SIM_SELECTOR, SCOPE_LABEL: self.id}

    def node_names(self, count: int) -> list[str]:
        return node_names(count, f"gpu-{self.id}")


@contextlib.asynccontextmanager
async def cluster(
    backend: Backend,
    count: int,
    *,
    sim: SimConfig = FAST_SIM,
    chaos: Chaos | None = None,
) -> AsyncIterator[Cluster]:
    """``count`` simulated GPU nodes on ``backend``, in a scope of their own."""
    scope = Scope.new()
    async with contextlib.AsyncExitStack() as stack:
        emulator: Emulator | None = None
        if backend.kubeconfig is not None:
            assert chaos is None, "API errors are injected by the emulator only"
            path = backend.kubeconfig
        else:
            emulator, url = await stack.enter_async_context(serve(chaos))
            tmp = stack.enter_context(tempfile.TemporaryDirectory())
            path = str(Path(tmp) / "kubeconfig")
            Path(path).write_text(yaml.safe_dump(kubeconfig(url)))
        os.environ.pop("KUBERNETES_SERVICE_HOST", None)
        api = Api(load_api_client(path), retry=FAST_RETRY)
        sim = dataclasses.replace(sim, labels={**sim.labels, SCOPE_LABEL: scope.id})
        nodes = scope.node_names(count)
        if emulator is not None:
            await create_priority_classes(api)
        simnodes = SimNodes(api, nodes, sim)
        sim_task = asyncio.create_task(simnodes.run())
        c = Cluster(
            api=api,
            sim=simnodes,
            emulator=emulator,
            kubeconfig=path,
            backend=backend,
            scope=scope,
            nodes=nodes,
        )
        try:
            await asyncio.wait_for(simnodes.ready.wait(), 60)
            yield c
        finally:
            # Bounded, so a stuck teardown fails this test instead of hanging the suite.
            await asyncio.wait_for(c.stop_operator(graceful=False), 30)
            sim_task.cancel()
            await asyncio.wait({sim_task}, timeout=10)
            if backend.real:
                await asyncio.wait_for(remove_scope(api, scope, c.namespaces_made), 60)
            api.close()


async def remove_scope(api: Api, scope: Scope, namespaces: Sequence[str]) -> None:
    """Delete what a test made on a shared API server: its SpotPool, its namespaces (pods
    first, with grace 0, since no kubelet will confirm their end), its nodes, their Leases
    and Events. Deletion is asked for, not awaited: nothing else uses these names."""

    async def delete(path: str, **query: str) -> None:
        with contextlib.suppress(errors.NotFoundError):
            await api.call("DELETE", path, query=query or None)

    await delete(valet_path("spotpools", None, scope.pool))
    for ns in namespaces:
        for pod in (await api.call("GET", core_path("pods", ns))).get("items") or []:
            await delete(core_path("pods", ns, pod["metadata"]["name"]), gracePeriodSeconds="0")
        await delete(core_path("namespaces", None, ns))
    selector = ",".join(f"{k}={v}" for k, v in scope.selector.items())
    nodes = await api.call("GET", node_path(), query={"labelSelector": selector})
    for node in nodes.get("items") or []:
        name = node["metadata"]["name"]
        await delete(node_path(name))
        await delete(f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{name}")
    events = await api.call("GET", core_path("events", "default"))
    for event in events.get("items") or []:
        if event["involvedObject"].get("name", "").startswith(f"gpu-{scope.id}-"):
            await delete(core_path("events", "default", event["metadata"]["name"]))


async def prepare_real_api(api: Api) -> list[str]:
    """Once per session on a real API server: valet's CRDs and the chart's PriorityClasses.
    Returns the paths of what did not exist before, for ``unprepare``."""
    made = await setup.install_crds(api, sorted(CRDS.glob("*.yaml")))
    return made + await setup.create_priority_classes(api)


unprepare = setup.delete_all
create_priority_classes = setup.create_priority_classes


def fast_options(**policy: Any) -> OperatorOptions:
    """Operator options for tests: short hysteresis so scenarios take seconds, not minutes."""
    defaults: dict[str, Any] = {
        "staleness_seconds": 10.0,
        "suspect_after_seconds": 1.0,
        "recover_after_seconds": 0.5,
        "worker_grace_seconds": 1,
        "remediation_timeout_seconds": 30.0,
    }
    defaults.update(policy)
    return OperatorOptions(
        policy=PolicyConfig(**defaults),
        loop=LoopConfig(
            debounce_seconds=0.02,
            resync_seconds=1.0,
            relist_seconds=5.0,
            first_relist_seconds=1.0,
        ),
    )


# --- manifests ---------------------------------------------------------------------------

SIM_SELECTOR = {"valet.dev/simulated": "true"}
SCOPE_LABEL = "valet.dev/test-scope"


def spot_pool(
    name: str = "pool",
    *,
    namespace: str = "batch",
    selector: dict[str, str] | None = None,
    spares: int = 1,
    notice: int = 1,
    gpus_per_pod: int = 2,
    shards: int | None = 40,
    runtime: float | None = None,
    lemon_failures: int = 3,
    breaker_percent: int = 50,
    max_remediations: int = 3,
    node_grace: int | None = None,
    hot: int | str | None = None,
) -> dict[str, Any]:
    template: dict[str, Any] = {"spec": {"containers": [{"name": "infer", "image": "infer:1"}]}}
    if runtime is not None:
        template["metadata"] = {"annotations": {"valet.dev/sim-runtime-seconds": str(runtime)}}
    workload: dict[str, Any] = {
        "name": "infer",
        "namespace": namespace,
        "gpusPerPod": gpus_per_pod,
        "template": template,
    }
    if shards is not None:
        workload["shards"] = shards
    return {
        "apiVersion": "valet.dev/v1alpha1",
        "kind": "SpotPool",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": selector or SIM_SELECTOR,
            "buffer": {"count": spares, **({"hot": hot} if hot is not None else {})},
            "preemption": {"noticeSeconds": notice},
            "lemon": {"failures": lemon_failures, "windowSeconds": 3600},
            "circuitBreaker": {"maxFailedPercent": breaker_percent, "windowSeconds": 600},
            "remediation": {"maxAttempts": max_remediations},
            **({"nodeGraceSeconds": node_grace} if node_grace is not None else {}),
            "allowedNamespaces": [namespace],
            "workloads": [workload],
        },
    }


def training_job(
    name: str = "llm",
    *,
    namespace: str = "train",
    replicas: int = 2,
    min_replicas: int = 1,
    max_replicas: int | None = None,
    gpus: int = 8,
    pool: str | None = "pool",
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas if max_replicas is not None else replicas,
        "gpusPerReplica": gpus,
        "healing": {"backoffSeconds": 0},
        "template": {
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "trainer", "image": "train:1"}],
            }
        },
    }
    if pool is not None:
        spec["pool"] = pool
    return {
        "apiVersion": "valet.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["metadata"].get("labels") or {}


def state_of(node: dict[str, Any]) -> str | None:
    return labels(node).get("valet.dev/state")
