"""Kopf registrations and the wiring of one operator process.

Watches of Nodes, Pods, node Leases, TrainingJobs and SpotPools feed the cache and poke
the single reconciler; nothing here decides anything. ``registry`` is what ``valet
operator`` runs and what the integration tests run in-process.

Kopf watches valet's own resources. Nodes, Pods and Leases, thousands of objects and
hundreds of events a second on a large fleet, are plain list-then-watch streams into the
cache: Kopf's per-object machinery (a queue and worker per object) cost ~2.6 times the
CPU per event (0.87 ms against 0.33 ms, parsing included), and its own initial listing
would parse the whole fleet a second time as the operator starts.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import kopf
import structlog

from valet.handlers.reconciler import LoopConfig, Reconciler
from valet.k8s import codec, errors
from valet.k8s.apply import Applier
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import Api, core_path, load_api_client, node_path, valet_path
from valet.k8s.lease import LeaderElector
from valet.metrics import OperatorMetrics
from valet.policy import PolicyConfig

registry = kopf.OperatorRegistry()
log = structlog.get_logger("valet.operator")
NODE_LEASES = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"


@dataclasses.dataclass(frozen=True)
class OperatorOptions:
    namespace: str | None = None  # None: cluster-wide
    kubeconfig: str | None = None
    policy: PolicyConfig = PolicyConfig()
    loop: LoopConfig = LoopConfig()
    node_config: codec.NodeReadConfig = codec.NodeReadConfig()
    pod_defaults: codec.PodDefaults = codec.PodDefaults()
    leader_election: bool = False
    lease_namespace: str = "default"
    identity: str = "valet"
    # Client-side rate limit of the operator's own API calls (a token bucket, as client-go's
    # QPS/Burst; 0: none). Placing 100 jobs and packing 200 spares at 1,000 nodes writes
    # ~7,400 times (pods created and bound, node marks, Events): client-go's default 5/10
    # would take 25 minutes, kube-scheduler's 50/100 (one write per pod; valet makes two)
    # 2.5. 200/400 lets that run at the emulator's pace (~130 writes/s here) and still
    # caps a runaway loop; the API server's own guard is Priority and Fairness, whose 429
    # Retry-After the client waits out.
    api_qps: float = 200.0
    api_burst: int = 400


class Operator:
    """One operator process: API client, cache, applier, reconciler and metrics."""

    def __init__(self, options: OperatorOptions, api: Api | None = None) -> None:
        self.options = options
        self.api = api or Api(
            load_api_client(options.kubeconfig, component="operator"),
            qps=options.api_qps,
            burst=options.api_burst,
        )
        self.cache = Cache(options.node_config)
        self.metrics = OperatorMetrics()
        self.applier = Applier(self.api, self.cache, pod_defaults=options.pod_defaults)
        self.reconciler = Reconciler(
            self.cache, self.applier, self.metrics, policy=options.policy, loop=options.loop
        )
        self.leader = (
            LeaderElector(
                self.api, options.lease_namespace, options.identity, self.reconciler.active
            )
            if options.leader_election
            else None
        )
        self.tasks: list[asyncio.Task[None]] = []
        self._listed: dict[Kind, str] = {}  # resourceVersion of each kind's last listing
        self._leases_listed = ""

    async def start(self) -> None:
        await self.initial_sync()
        if self.leader is not None:
            self.reconciler.active.clear()
            self.tasks.append(asyncio.create_task(self.leader.run(), name="valet-leader"))
        self.tasks.append(asyncio.create_task(self.reconciler.run(), name="valet-reconciler"))
        self.tasks.append(asyncio.create_task(self._relist(), name="valet-relist"))
        ns = self.options.namespace
        streams: tuple[tuple[str, str, str, Callable[[dict[str, Any]], None]], ...] = (
            ("nodes", node_path(), self._listed.get(Kind.NODE, ""), self._feed(Kind.NODE)),
            ("pods", core_path("pods", ns), self._listed.get(Kind.POD, ""), self._feed(Kind.POD)),
            ("node-leases", NODE_LEASES, self._leases_listed, self._on_lease_event),
        )
        for name, path, since, feed in streams:
            task = self._watch(path, since, feed)
            self.tasks.append(asyncio.create_task(task, name=f"valet-watch-{name}"))

    async def stop(self) -> None:
        """Cancel the reconciler wherever it is (idempotent)."""
        tasks, self.tasks = self.tasks, []
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.applier.close()
        if self.leader is not None:
            await self.leader.release()
        await self.api.aclose()

    async def initial_sync(self) -> None:
        """List everything once, so the first pass never decides over a partial view."""
        await self.list_all()
        self.reconciler.synced.set()
        self.reconciler.poke()

    async def list_all(self, kinds: tuple[Kind, ...] = tuple(Kind)) -> bool:
        """List ``kinds`` into the cache (all of them: with the node Leases too); True when
        the view changed."""
        ns = self.options.namespace
        sources = {
            Kind.NODE: node_path(),
            Kind.POD: core_path("pods", ns),
            Kind.JOB: valet_path("trainingjobs", ns),
            Kind.POOL: valet_path("spotpools", None),
        }
        changed = False
        for kind in kinds:
            changed = self._replace(kind, await self.api.call("GET", sources[kind])) or changed
        if Kind.NODE in kinds:
            # The kubelets' heartbeats too: without them a first pass would judge every node
            # by its Ready heartbeat, which a kubelet refreshes only every few minutes, and
            # drain live nodes as dead.
            listing = await self.api.call("GET", NODE_LEASES)
            self._leases_listed = str((listing.get("metadata") or {}).get("resourceVersion") or "")
            self.cache.replace_leases(listing.get("items") or [])
        return changed

    async def _watch(self, path: str, since: str, feed: Callable[[dict[str, Any]], None]) -> None:
        """Feed a collection's watch events to ``feed``, from the version listed at start
        (Nodes, Pods and node Leases: not through Kopf, see the module's docstring). When
        the watch has to list again (410 Gone, or after an error), ``feed`` gets the
        listing as one LISTING event and replaces what it holds, as an informer does; no
        periodic relist of thousands of objects (at 4,096 nodes and 10,000 pods, the
        5-minute one coincided with 2-3 s passes: decoding holds the event loop)."""
        while True:
            try:
                async for event in self.api.watch(path, resource_version=since, listings=True):
                    feed(event)
            except errors.ApiError as err:
                log.warning("watch failed; retrying", path=path, error=str(err))
                since = ""  # list again: the listing comes as one LISTING event
                await asyncio.sleep(self.options.loop.error_backoff_seconds)

    def _feed(self, kind: Kind) -> Callable[[dict[str, Any]], None]:
        def feed(event: dict[str, Any]) -> None:
            if event["type"] != "LISTING":
                self.on_event(kind, event)
            elif self._replace(kind, event["object"]):
                self.reconciler.poke()

        return feed

    def _replace(self, kind: Kind, listing: dict[str, Any]) -> bool:
        """A full listing of ``kind`` into the cache; True when the view changed."""
        version = (listing.get("metadata") or {}).get("resourceVersion")
        self._listed[kind] = str(version or "")
        return self.cache.replace(kind, listing.get("items") or [], version)

    async def _relist(self) -> None:
        """List TrainingJobs and SpotPools soon after start, then now and then: Kopf's
        watches of them began after our listing, and a watch never reports a deletion
        that happened before it began. (Nodes, Pods and Leases: see ``_watch``.)"""
        loop = self.options.loop
        await asyncio.sleep(min(loop.first_relist_seconds, loop.relist_seconds))
        while True:
            try:
                if await self.list_all((Kind.JOB, Kind.POOL)):
                    self.reconciler.poke()
            except errors.ApiError as err:
                log.warning("relist failed", error=str(err))
            await asyncio.sleep(loop.relist_seconds)

    def _on_lease_event(self, event: dict[str, Any]) -> None:
        if event["type"] == "LISTING":
            self.cache.replace_leases(event["object"].get("items") or [])
            self.reconciler.poke()
        else:
            self._on_lease(event)

    def _on_lease(self, event: dict[str, Any]) -> None:
        """A kubelet heartbeat (a node Lease in kube-node-lease). A renewal after a silence
        longer than a grace wakes the reconciler: the node is coming back."""
        gap = self.cache.observe_lease(event["object"], deleted=event["type"] == "DELETED")
        if gap > self._shortest_grace():
            self.reconciler.poke()

    def _shortest_grace(self) -> float:
        default = self.options.policy.node_grace_seconds
        return min(
            (p.spec.node_grace_seconds or default for p in self.cache.pools.values()),
            default=default,
        )

    def on_event(self, kind: Kind, event: kopf.RawEvent | dict[str, Any]) -> None:
        raw = event.get("object") or {}
        if self.cache.observe(kind, raw, deleted=event.get("type") == "DELETED"):
            self.reconciler.poke()


def _operator(memo: Any) -> Operator:
    op: Operator = memo.operator
    return op


@kopf.on.startup(registry=registry)
async def _startup(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.posting.enabled = False  # valet posts its own Events, one per decision
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.networking.request_timeout = 30
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    await _operator(memo).start()


@kopf.on.cleanup(registry=registry)
async def _cleanup(memo: Any, **_: Any) -> None:
    await _operator(memo).stop()


def _feeder(kind: Kind) -> Any:
    async def feed(event: kopf.RawEvent, memo: Any, **_: Any) -> None:
        _operator(memo).on_event(kind, event)

    return feed


# Every watch event of valet's own kinds feeds the cache; the reconciler does the rest.
for _kind, (_group, _version, _plural) in {
    Kind.JOB: ("valet.dev", "v1alpha1", "trainingjobs"),
    Kind.POOL: ("valet.dev", "v1alpha1", "spotpools"),
}.items():
    kopf.on.event(_group, _version, _plural, id=f"feed-{_plural}", registry=registry)(
        _feeder(_kind)
    )


@kopf.on.login(registry=registry)
def _login(memo: Any, **_: Any) -> kopf.ConnectionInfo:
    """Kopf connects with the same credentials as valet's own client (one kubeconfig source)."""
    cfg = _operator(memo).api.api_client.configuration
    keys: dict[str, str] = cfg.api_key or {}
    header = str(keys.get("BearerToken") or keys.get("authorization") or "")
    scheme, _space, token = header.partition(" ")
    return kopf.ConnectionInfo(
        server=cfg.host,
        ca_path=cfg.ssl_ca_cert or None,
        insecure=not cfg.verify_ssl,
        scheme=scheme or None,
        token=token or None,
        certificate_path=cfg.cert_file or None,
        private_key_path=cfg.key_file or None,
        default_namespace=_operator(memo).options.namespace,
    )
