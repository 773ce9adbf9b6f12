"""The chart on a real API server: the session's ``real_api`` (envtest from
``KUBEBUILDER_ASSETS``, see tests/conftest.py); without it these tests are skipped.

1. The server accepts every manifest of every variant in ``VARIANTS`` by server-side apply:
   its own validation, defaulting and admission; the admission policy's CEL compiled and
   cost-checked. Namespaced objects are applied for real, each variant in a namespace of its
   own. Cluster-scoped ones go with ``dryRun=All``: every variant names them alike, and the
   session's CRDs and PriorityClasses are in use by the other tests.
2. The agent's ValidatingAdmissionPolicy gives on real requests the answers
   test_admission_policy.py expects of it offline (its ``CASES``), for a token of the agent's
   ServiceAccount bound to a pod on its node, as the kubelet mints it.
3. The operator and the agent run with tokens of the chart's own ServiceAccounts, held by the
   chart's own RBAC (and the agent by its policy), through a swap, a heal and a remediation
   hand-shake: the server refuses none of their requests (the cluster-wide operator's: none
   but in other tests' namespaces, see ``in_scope``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import kopf._cogs.clients.errors as kopf_errors  # where Kopf turns every answer into an error
import pytest
from kubernetes import client as k8s_client

from tests.chart.render import VARIANTS, of_kind, render
from tests.chart.test_admission_policy import CASES, OPERATOR
from tests.integration.harness import (
    Backend,
    Cluster,
    cluster,
    fast_options,
    state_of,
    until,
)
from valet.agent.classify import Classifier
from valet.agent.remediation import Cap, Remediator
from valet.agent.runner import Agent
from valet.agent.simulated import FAULTS_ANNOTATION, SimulatedBackend, SimulatedExecutor
from valet.envtest import ControlPlane
from valet.k8s import errors
from valet.k8s.client import (
    MERGE,
    STRATEGIC,
    Api,
    core_path,
    load_api_client,
    node_path,
    valet_path,
)
from valet.k8s.lease import LEASE_NAME, lease_path
from valet.k8s.node_publisher import NodePublisher
from valet.metrics import AgentMetrics
from valet.model import remediation
from valet.model.enums import Remediation
from valet.simnodes.nodes import inject_fault

APPLY = "application/apply-patch+yaml"
APPLY_QUERY = {"fieldManager": "valet-test", "force": "true"}

# Kinds of other projects' CRDs, which this server does not have. They are applied where it
# does (a cluster with prometheus-operator, through VALET_E2E_KUBECONFIG).
NOT_SERVED = {
    ("monitoring.coreos.com/v1", kind): (
        f"{kind} is a CRD of prometheus-operator, which is not installed on this API server"
    )
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
}


KEY = "valet.dev/test-policy"  # the label and annotation the policy's cases change


# --- applying manifests ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Resource:
    base: str  # /api/v1 or /apis/<group>/<version>
    plural: str
    namespaced: bool


class Discovery:
    """Where the server serves each kind (one discovery call per group version)."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self._versions: dict[str, dict[str, Resource]] = {}

    async def resource(self, api_version: str, kind: str) -> Resource | None:
        if api_version not in self._versions:
            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                listing = await self.api.call("GET", base)
            except errors.NotFoundError:
                listing = {}
            self._versions[api_version] = {
                r["kind"]: Resource(base, r["name"], r["namespaced"])
                for r in listing.get("resources") or ()
                if "/" not in r["name"]  # subresources
            }
        return self._versions[api_version].get(kind)

    async def path(self, manifest: dict[str, Any], namespace: str | None = None) -> str:
        resource = await self.resource(manifest["apiVersion"], manifest["kind"])
        assert resource is not None, f"{manifest['kind']} is not served"
        md = manifest["metadata"]
        scope = ""
        if resource.namespaced:
            scope = f"/namespaces/{md.get('namespace') or namespace}"
        return f"{resource.base}{scope}/{resource.plural}/{md['name']}"


async def apply(
    api: Api, discovery: Discovery, manifest: dict[str, Any], namespace: str, dry_run: bool
) -> dict[str, Any]:
    """Server-side apply (``kubectl apply --server-side --force-conflicts``)."""
    query = {**APPLY_QUERY, "dryRun": "All"} if dry_run else APPLY_QUERY
    path = await discovery.path(manifest, namespace)
    return await api.call("PATCH", path, manifest, query=query, content_type=APPLY)


_NOW = {"gracePeriodSeconds": "0"}


async def delete(api: Api, path: str, **query: str) -> None:
    with contextlib.suppress(errors.NotFoundError):
        await api.call("DELETE", path, query=query or None)


async def delete_namespace(api: Api, namespace: str) -> None:
    """Pods first, with grace 0: no kubelet confirms their end. Not awaited: the name is ours."""
    with contextlib.suppress(errors.NotFoundError):
        for pod in (await api.call("GET", core_path("pods", namespace))).get("items") or ():
            await delete(api, core_path("pods", namespace, pod["metadata"]["name"]), **_NOW)
    await delete(api, core_path("namespaces", None, namespace))


def _admin(backend: Backend) -> Api:
    return Api(load_api_client(backend.kubeconfig))


@pytest.mark.parametrize("variant", list(VARIANTS))
async def test_the_server_accepts_every_manifest(real_api: Backend, variant: str) -> None:
    api = _admin(real_api)
    namespace = f"valet-chart-{variant}-{secrets.token_hex(3)}"
    discovery = Discovery(api)
    applied: list[str] = []
    try:
        await api.call("POST", core_path("namespaces", None), {"metadata": {"name": namespace}})
        for manifest in render(VARIANTS[variant], namespace=namespace):
            key = (manifest["apiVersion"], manifest["kind"])
            name = f"{manifest['kind']}/{manifest['metadata']['name']}"
            resource = await discovery.resource(*key)
            if resource is None:  # skipped: NOT_SERVED says why
                assert key in NOT_SERVED, f"{name}: {key[0]} is not served by the server"
                continue
            if resource.namespaced:
                assert manifest["metadata"].get("namespace", namespace) == namespace, name
            answer = await apply(api, discovery, manifest, namespace, not resource.namespaced)
            assert (answer["kind"], answer["metadata"]["name"]) == (
                manifest["kind"],
                manifest["metadata"]["name"],
            )
            applied.append(name)
    finally:
        await delete_namespace(api, namespace)
        api.close()
    assert applied


async def test_a_policy_whose_cel_does_not_compile_is_refused(real_api: Backend) -> None:
    """The control for the test above: the server does compile the policy's CEL on apply,
    ``dryRun=All`` included (so its accepting the chart's policy means something)."""
    (policy,) = of_kind(render(), "ValidatingAdmissionPolicy")
    policy["spec"]["validations"][1]["expression"] = "object.spec == "
    api = _admin(real_api)
    try:
        with pytest.raises(errors.InvalidError, match=r"compil"):
            await apply(api, Discovery(api), policy, "default", dry_run=True)
    finally:
        api.close()


# --- the chart's identities, installed -----------------------------------------------------

# What decides who may do what: installed for real, in a namespace and under a release name of
# this module's own. The workloads are not (no kubelet would run them): the tests run the
# operator and the agent in-process, with tokens of these ServiceAccounts.
IDENTITY_KINDS = (
    "ServiceAccount",
    "ClusterRole",
    "ClusterRoleBinding",
    "Role",
    "RoleBinding",
    "ValidatingAdmissionPolicy",
    "ValidatingAdmissionPolicyBinding",
)


@dataclasses.dataclass(frozen=True)
class Installed:
    backend: Backend
    plane: ControlPlane
    namespace: str
    release: str
    manifests: list[dict[str, Any]]
    # Nodes a and b for the policy's cases, with an agent pod on a; node_agent has the agent
    # test's own pod.
    node_a: str
    node_b: str
    node_agent: str
    # Tokens: "agent" (bound to its pod on a), "agent-on-agent" (bound to its pod on
    # node_agent), "agent-unbound" (bound to no pod: no node in it), "operator".
    kubeconfigs: dict[str, Path]

    @property
    def policy(self) -> str:
        (policy,) = of_kind(self.manifests, "ValidatingAdmissionPolicy")
        return str(policy["metadata"]["name"])


@pytest.fixture(scope="module")
def installed(real_api: Backend) -> Iterator[Installed]:
    if real_api.plane is None:
        pytest.skip("mints ServiceAccount tokens and kubeconfigs through valet.envtest")
    suffix = secrets.token_hex(3)
    namespace, release = f"valet-rt-{suffix}", f"valet-{suffix}"
    # ha-operator: the chart's RBAC with the leader-election Role.
    manifests = render(VARIANTS["ha-operator"], release=release, namespace=namespace)
    mine = [m for m in manifests if m["kind"] in IDENTITY_KINDS]
    nodes = {n: f"{namespace}-{n}" for n in ("a", "b", "agent")}
    try:
        kubeconfigs = asyncio.run(_install(real_api, real_api.plane, namespace, mine, nodes))
        yield Installed(
            real_api,
            real_api.plane,
            namespace,
            release,
            manifests,
            nodes["a"],
            nodes["b"],
            nodes["agent"],
            kubeconfigs,
        )
    finally:
        asyncio.run(_uninstall(real_api, namespace, mine, nodes.values()))


async def _install(
    backend: Backend,
    plane: ControlPlane,
    namespace: str,
    manifests: list[dict[str, Any]],
    nodes: dict[str, str],
) -> dict[str, Path]:
    api = _admin(backend)
    discovery = Discovery(api)
    try:
        await api.call("POST", core_path("namespaces", None), {"metadata": {"name": namespace}})
        for manifest in manifests:
            await apply(api, discovery, manifest, namespace, dry_run=False)
        for name in nodes.values():
            labels = {KEY: "initial"}
            await api.call("POST", node_path(), {"metadata": {"name": name, "labels": labels}})
        agent_sa = _sa(manifests, "agent")

        async def agent_pod(node: str) -> tuple[str, str]:
            body = {
                "metadata": {"name": f"agent-{node}"},
                "spec": {
                    "nodeName": node,
                    "serviceAccountName": agent_sa,
                    "containers": [{"name": "agent", "image": "ghcr.io/valet-dev/valet:test"}],
                },
            }
            pod = await api.call("POST", core_path("pods", namespace), body)
            return pod["metadata"]["name"], pod["metadata"]["uid"]

        def token(sa: str, pod: tuple[str, str] | None = None) -> str:
            return plane.service_account_token(namespace, sa, bound_pod=pod)

        bound_a = await agent_pod(nodes["a"])
        bound_agent = await agent_pod(nodes["agent"])
        tokens = {
            "agent": token(agent_sa, bound_a),
            "agent-on-agent": token(agent_sa, bound_agent),
            "agent-unbound": token(agent_sa),
            "operator": token(_sa(manifests, "operator")),
        }
        kubeconfigs = {
            who: plane.kubeconfig_for_token(f"{namespace}-{who}", t) for who, t in tokens.items()
        }
        await _await_in_force(kubeconfigs, namespace, nodes["b"])
        return kubeconfigs
    finally:
        api.close()


def _sa(manifests: list[dict[str, Any]], component: str) -> str:
    (name,) = (
        m["metadata"]["name"]
        for m in of_kind(manifests, "ServiceAccount")
        if m["metadata"]["labels"]["app.kubernetes.io/component"] == component
    )
    return str(name)


async def _await_in_force(kubeconfigs: dict[str, Path], namespace: str, other_node: str) -> None:
    """RBAC and admission policies take effect when the server's informers see them: wait,
    so that no test below meets a refusal that only says they were not yet in force."""
    apis = {who: Api(load_api_client(str(path))) for who, path in kubeconfigs.items()}
    try:

        async def may(who: str, path: str) -> bool:
            try:
                await apis[who].call("GET", path)
            except errors.NotFoundError:
                return True  # authorized; the object is not there
            except errors.PermanentError as err:
                if err.status == 403:
                    return False
                raise
            return True

        await until(lambda: may("operator", node_path()), what="the operator's ClusterRole")
        lease = lease_path(namespace, LEASE_NAME)
        await until(lambda: may("operator", lease), what="the operator's leader-election Role")
        await until(lambda: may("agent", node_path(other_node)), what="the agent's ClusterRole")

        async def policy_refuses() -> bool:  # a harmless annotation, until the policy says no
            body = {"metadata": {"annotations": {"valet.dev/test-probe": "1"}}}
            try:
                await apis["agent-unbound"].call(
                    "PATCH", node_path(other_node), body, content_type=MERGE
                )
            except errors.PermanentError as err:
                return err.status == 403 and "ValidatingAdmissionPolicy" in err.message
            return False

        await until(policy_refuses, what="the agent's admission policy in force")
    finally:
        for api in apis.values():
            api.close()


async def _uninstall(
    backend: Backend, namespace: str, manifests: list[dict[str, Any]], nodes: Iterable[str]
) -> None:
    api = _admin(backend)
    discovery = Discovery(api)
    try:
        for manifest in manifests:
            resource = await discovery.resource(manifest["apiVersion"], manifest["kind"])
            if resource is not None and not resource.namespaced:  # the namespace takes the rest
                await delete(api, await discovery.path(manifest))
        await delete_namespace(api, namespace)
        for name in nodes:
            await delete(api, node_path(name))
    finally:
        api.close()


# --- 2. the agent's admission policy -------------------------------------------------------


def _change(change: str, node: str, value: str) -> tuple[str, dict[str, Any], str]:
    """The request ``admit`` (test_admission_policy.py) models for ``change``: path, body,
    content type. ``value`` is new each time, so that every change changes something."""
    if change == "annotation":
        return node_path(node), {"metadata": {"annotations": {KEY: value}}}, MERGE
    if change == "condition":  # as the agent's NodePublisher writes GPUHealthy
        condition = {"type": "GPUHealthy", "status": "False", "reason": value, "message": value}
        return node_path(node, status=True), {"status": {"conditions": [condition]}}, STRATEGIC
    if change == "label":
        return node_path(node), {"metadata": {"labels": {KEY: value}}}, MERGE
    if change == "label via status":
        return node_path(node, status=True), {"metadata": {"labels": {KEY: value}}}, MERGE
    if change == "cordon":
        return node_path(node), {"spec": {"unschedulable": True}}, MERGE
    raise ValueError(change)


def _changed(change: str, node: dict[str, Any], value: str) -> bool:
    md = node["metadata"]
    if change == "annotation":
        return bool(md["annotations"].get(KEY) == value)
    if change == "condition":
        conditions = node["status"].get("conditions") or ()
        return any(c["type"] == "GPUHealthy" and c["reason"] == value for c in conditions)
    if change in ("label", "label via status"):
        return bool(md["labels"].get(KEY) == value)
    return bool(node["spec"].get("unschedulable"))


async def _as(installed: Installed, who: str, request: Callable[[Api], Awaitable[Any]]) -> Any:
    api = Api(load_api_client(str(installed.kubeconfigs[who])))
    try:
        return await request(api)
    finally:
        api.close()


@pytest.mark.parametrize(("user", "token_node", "target", "change", "denied"), CASES)
async def test_the_policy_answers_real_requests_as_offline(
    installed: Installed,
    user: str,
    token_node: str | None,
    target: str,
    change: str,
    denied: str | None,
) -> None:
    names = {"gpu-1": installed.node_a, "gpu-2": installed.node_b}
    if user == OPERATOR:
        who = "operator"
    elif token_node is None:
        who = "agent-unbound"
    else:
        assert token_node == "gpu-1", "the agent's pod runs on node a"
        who = "agent"
    node = names[target]
    value = secrets.token_hex(4)
    path, body, content_type = _change(change, node, value)

    async def patch(api: Api) -> dict[str, Any]:
        return await api.call("PATCH", path, body, content_type=content_type)

    if denied is None:
        answer = await _as(installed, who, patch)
        assert _changed(change, answer, value)
        return
    with pytest.raises(errors.PermanentError) as refused:
        await _as(installed, who, patch)
    for offline, real in names.items():
        denied = denied.replace(offline, real)
    assert refused.value.status == 403, refused.value
    assert f"ValidatingAdmissionPolicy '{installed.policy}'" in refused.value.message
    assert denied in refused.value.message

    async def get(api: Api) -> dict[str, Any]:
        return await api.call("GET", node_path(node))

    assert not _changed(change, await _as(installed, "operator", get), value)


async def test_a_spec_change_through_nodes_status_changes_nothing(installed: Installed) -> None:
    """Why the policy may compare the spec on nodes/status too: the server puts the old spec
    back before admission, so the agent's own condition patches always pass it."""
    body = {"spec": {"unschedulable": True}}

    async def patch(api: Api) -> dict[str, Any]:
        return await api.call(
            "PATCH", node_path(installed.node_a, status=True), body, content_type=MERGE
        )

    answer = await _as(installed, "agent", patch)
    assert not answer["spec"].get("unschedulable")


async def test_the_policy_type_checks_against_the_node_schema(installed: Installed) -> None:
    path = "/apis/admissionregistration.k8s.io/v1/validatingadmissionpolicies/" + installed.policy

    async def checked(api: Api) -> dict[str, Any] | None:
        policy = await api.call("GET", path)
        status = policy.get("status") or {}
        if status.get("observedGeneration") != policy["metadata"]["generation"]:
            return None
        return status

    api = _admin(installed.backend)
    try:
        status = await until(lambda: checked(api), what="the policy's type check")
    finally:
        api.close()
    assert not (status.get("typeChecking") or {}).get("expressionWarnings"), status


# --- 3. the operator and the agent with the chart's identities ----------------------------


@dataclasses.dataclass(frozen=True)
class Refusal:
    """One 403 answer: which client got it, for what request."""

    client: str  # "valet" or "kopf"
    method: str
    path: str  # with the query, for Kopf's
    message: str = ""

    @property
    def namespace(self) -> str | None:
        """The namespace the request was about (the namespace itself, for one's own path);
        None for a cluster-scoped request, a cluster-wide list or watch included."""
        found = re.search(r"/namespaces/([^/?]+)", self.path)
        return found[1] if found else None

    def __str__(self) -> str:
        told = f"{self.client}: {self.method} {self.path}"
        return f"{told}: {self.message}" if self.message else told


@pytest.fixture
def refusals(monkeypatch: pytest.MonkeyPatch) -> list[Refusal]:
    """Every 403 answer any client in this process gets, recorded where each client turns an
    answer into an error: valet's ``errors.from_response`` (all of ``valet.k8s.client.Api``,
    its watches included) and Kopf's ``check_response`` (all of Kopf's requests: watches,
    lists, its CRD scan). Both clients retry or log a 403 and go on, so the test asks here.
    The API server's metrics do not count authorization refusals, and envtest keeps no audit
    log."""
    seen: list[Refusal] = []
    from_response = errors.from_response
    check_response = kopf_errors.check_response

    def recording(
        status: int, data: bytes, method: str, path: str, retry_after: str | None = None
    ) -> errors.ApiError:
        error = from_response(status, data, method, path, retry_after)
        if status == 403:
            seen.append(Refusal("valet", method, path, error.message))
        return error

    async def checking(response: Any) -> None:
        if response.status == 403:
            seen.append(Refusal("kopf", response.method, response.url.path_qs))
        await check_response(response)

    monkeypatch.setattr(errors, "from_response", recording)
    monkeypatch.setattr(kopf_errors, "check_response", checking)
    return seen


# Namespaces that live as long as the server: no test makes or deletes them. The operator
# writes its Events about cluster-scoped objects (Nodes, SpotPools) to "default" and reads
# the node Leases in "kube-node-lease".
SERVERS_OWN = frozenset(("default", "kube-system", "kube-public", "kube-node-lease"))


def in_scope(refusals: list[Refusal], namespaces: Iterable[str]) -> list[Refusal]:
    """The refusals of requests in ``namespaces``, in the server's own, or cluster-scoped.
    Not those in other tests' namespaces: a cluster-wide operator also acts on the objects
    an earlier test left there, and such a namespace may still be terminating, when the
    server refuses any new object in it (403, NamespaceLifecycle: "unable to create new
    content in namespace ... because it is being terminated"), whatever the RBAC."""
    ours = SERVERS_OWN | set(namespaces)
    return [r for r in refusals if r.namespace is None or r.namespace in ours]


async def step(agent: Agent) -> tuple[Mapping[str, Any], Mapping[str, str]]:
    """One probe of the agent (its sync client off the loop); the condition and annotations
    of its Node after it, as the agent reads them."""
    await asyncio.to_thread(agent.step, time.time())
    condition, annotations = await asyncio.to_thread(agent.publisher.current)
    assert condition is not None
    return condition, annotations


def _told(refusals: list[Refusal]) -> str:
    distinct = sorted({str(r) for r in refusals})
    return f"{len(refusals)} requests refused:\n" + "\n".join(distinct[:20])


async def _workers(c: Cluster) -> list[dict[str, Any]]:
    pods = await c.pods(c.train, "valet.dev/job=llm")
    return [p for p in pods if not p["metadata"].get("deletionTimestamp")]


async def test_the_operator_swaps_and_heals_with_the_charts_rbac(
    installed: Installed, refusals: list[Refusal]
) -> None:
    """The swap of tests/integration/test_scenarios.py (the spare's spot pods evicted, the
    worker moved, the failed node remediated and back), then the job's removal, with the
    operator (valet's client and Kopf's) holding a token of the chart's operator
    ServiceAccount, and leader election in the release's namespace. The simulated nodes
    play the agents here as the admin; the next test runs the agent with its own token.
    Refusals count in this test's namespaces, the server's own and cluster-wide (``in_scope``)."""
    namespaces = [installed.namespace]
    try:
        async with cluster(installed.backend, 3) as c:
            namespaces += [c.train, c.batch]
            await c.namespace(c.train)
            await c.namespace(c.batch)
            # The cluster's own client (the test's and the simulated nodes') stays admin.
            c.kubeconfig = str(installed.kubeconfigs["operator"])
            options = dataclasses.replace(
                fast_options(), leader_election=True, lease_namespace=installed.namespace
            )
            await c.start_operator(options)
            await c.apply(c.spot_pool(spares=1, gpus_per_pod=2, notice=1))
            await c.apply(c.training_job(replicas=2, min_replicas=1))

            async def running_with_spare_packed() -> bool:
                status = (await c.job()).get("status") or {}
                pool = (await c.pool()).get("status") or {}
                return status.get("phase") == "Running" and pool.get("spotGPUs") == 8

            await c.until(running_with_spare_packed, what="job Running, spare packed")
            victim = (await _workers(c))[0]["spec"]["nodeName"]
            await c.fault(victim, gpu=3, xid=79)

            async def swapped_and_healed() -> bool:
                status = (await c.job()).get("status") or {}
                node = await c.node(victim)
                healed = state_of(node) in ("spare", "active") and not node["spec"].get(
                    "unschedulable"
                )
                return status.get("swaps") == 1 and status.get("phase") == "Running" and healed

            await c.until(swapped_and_healed, what="the swap, then the node healed")
            assert (await c.pool())["status"]["preemptions"] >= 1  # through pods/eviction
            lease = await c.get(lease_path(installed.namespace, LEASE_NAME))
            assert lease["spec"]["holderIdentity"] == options.identity
            await c.api.call("DELETE", valet_path("trainingjobs", c.train, "llm"))

            async def cleaned() -> bool:
                services = await c.items(core_path("services", c.train))
                return not services and not await c.pods(c.train)

            await c.until(cleaned, what="the job's pods and Service removed")
            await c.stop_operator()
    finally:  # a refusal is the first thing to tell, whatever failed after it
        mine = in_scope(refusals, namespaces)
        assert not mine, _told(mine)


async def test_the_agent_reports_and_remediates_with_its_own_token(
    installed: Installed, refusals: list[Refusal]
) -> None:
    """The agent of one node, with a token of the chart's agent ServiceAccount bound to its
    pod there, so its requests pass the chart's RBAC and its admission policy: a fault
    flips GPUHealthy, a remediation request is answered, the condition clears. ``step``
    raises on any refused request; ``refusals`` records its admin helpers' too."""
    node = installed.node_agent
    agent_client = load_api_client(str(installed.kubeconfigs["agent-on-agent"]), component="agent")
    publisher = NodePublisher(k8s_client.CoreV1Api(agent_client), node)
    classifier = Classifier()
    backend = SimulatedBackend(node, 8, lambda: publisher.current()[1].get(FAULTS_ANNOTATION))
    remediator = Remediator(SimulatedExecutor(0.05), Cap(3, 3600), classifier.clear)
    agent = Agent(backend, publisher, AgentMetrics(node), classifier, remediator)
    admin = _admin(installed.backend)
    try:
        condition, _ = await step(agent)
        assert condition["status"] == "True"
        await inject_fault(admin, node, 3, 79, None)
        condition, _ = await step(agent)
        assert condition["status"] == "False" and condition["reason"] == "XID79GPUFellOffBus"
        request = remediation.request(Remediation.REBOOT, 1, time.time())
        await admin.call(
            "PATCH", node_path(node), {"metadata": {"annotations": request}}, content_type=MERGE
        )

        async def answered() -> dict[str, str] | None:
            await step(agent)
            annotations: dict[str, str] = (await admin.call("GET", node_path(node)))["metadata"][
                "annotations"
            ]
            return annotations if remediation.RESULT in annotations else None

        answer = await until(answered, what="the agent's answer to the remediation request")
        assert answer[remediation.RESULT] == "succeeded"
        assert FAULTS_ANNOTATION not in answer  # the agent cleared its own node's fault
        condition, _ = await step(agent)
        assert condition["status"] == "True"
    finally:
        admin.close()
        agent_client.close()  # type: ignore[no-untyped-call]  # untyped client
    assert not refusals, _told(refusals)
