"""The HTTP client of the operator, the agent and the simulated nodes.

Raw JSON in and out over the ``kubernetes`` package's configured ``ApiClient`` (its
kubeconfig and in-cluster auth, its connection pool), with no model classes. The sync
client never runs on an event loop: ``Api.call`` runs it on a dedicated thread pool.
Transient errors (see ``valet.k8s.errors``) are retried with exponential backoff and jitter.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import structlog
import tenacity
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from valet import __version__
from valet.k8s import errors

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
GROUP_VERSION = "valet.dev/v1alpha1"
log = structlog.get_logger("valet.client")


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial_seconds: float = 0.05
    max_seconds: float = 2.0
    deadline_seconds: float = 30.0
    timeout_seconds: float = 15.0  # per request


def load_api_client(
    kubeconfig: str | None = None,
    pool_size: int = 32,
    component: str = "",
    context: str | None = None,
) -> k8s_client.ApiClient:
    """In-cluster credentials in a pod, else ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config)
    and its ``context`` (default: the current one).

    Requests carry ``User-Agent: valet-<component>/<version>``, so audit logs (and the
    tests' RBAC check) tell the operator, the agent and ``valet sim`` apart."""
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig or context:
            raise k8s_config.ConfigException("explicit kubeconfig or context")
        k8s_config.load_incluster_config(  # type: ignore[no-untyped-call]  # untyped client
            client_configuration=configuration
        )
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped client
            config_file=kubeconfig, context=context, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool_size
    api_client = k8s_client.ApiClient(configuration)
    api_client.user_agent = (
        f"valet-{component}/{__version__}" if component else f"valet/{__version__}"
    )
    return api_client


class Api:
    """REST calls returning parsed JSON, run on a thread pool so they never block the loop."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: RetryPolicy = RetryPolicy(),
        threads: int = 32,
    ) -> None:
        self.api_client = api_client
        self.retry = retry
        self._pool = concurrent.futures.ThreadPoolExecutor(threads, thread_name_prefix="valet-api")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        retry_conflicts: bool = True,
    ) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async for attempt in tenacity.AsyncRetrying(**self._retry_args(retry_conflicts)):
            with attempt:
                return await loop.run_in_executor(
                    self._pool, self._once, method, path, body, query, content_type
                )
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _retry_args(self, retry_conflicts: bool) -> dict[str, Any]:
        r = self.retry

        def transient(err: BaseException) -> bool:
            if isinstance(err, errors.ConflictError):
                return retry_conflicts
            return isinstance(err, errors.TransientError)

        return {
            "retry": tenacity.retry_if_exception(transient),
            "wait": tenacity.wait_exponential_jitter(
                multiplier=r.initial_seconds, max=r.max_seconds
            ),
            "stop": tenacity.stop_after_attempt(r.attempts)
            | tenacity.stop_after_delay(r.deadline_seconds),
            "reraise": True,
        }

    def _once(
        self,
        method: str,
        path: str,
        body: Any,
        query: Mapping[str, str] | None,
        content_type: str,
    ) -> dict[str, Any]:
        full = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": JSON, "Content-Type": content_type}
        _, url, headers, body, _ = self.api_client.param_serialize(
            method, full, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        try:
            response = self.api_client.call_api(
                method, url, headers, body, _request_timeout=self.retry.timeout_seconds
            )
            data: bytes = response.read()  # type: ignore[no-untyped-call]  # untyped client
        except (urllib3.exceptions.HTTPError, OSError) as err:
            raise errors.from_transport(err, method, path) from err
        except k8s_client.ApiException as err:  # the client's own transport failures
            raise errors.from_transport(err, method, path) from err
        if not 200 <= response.status < 300:
            raise errors.from_response(response.status, data, method, path)
        result: dict[str, Any] = json.loads(data) if data else {}
        return result

    async def watch(
        self, path: str, query: Mapping[str, str] | None = None, timeout_seconds: int = 300
    ) -> AsyncIterator[dict[str, Any]]:
        """List then watch a collection: yields ``{"type", "object"}`` events until cancelled.

        Starts with the listing (as ADDED events), resumes from the last resourceVersion
        when a stream ends, and lists again after ``410 Gone``. Streams with aiohttp, so
        cancelling is immediate. For the simulated nodes and tools; the operator itself
        watches through Kopf.
        """
        version = ""
        async with self._session() as session:
            while True:
                if not version:
                    listing = await self.call("GET", path, query=query)
                    for item in listing.get("items") or ():
                        yield {"type": "ADDED", "object": item}
                    version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
                params = {
                    **(query or {}),
                    "watch": "true",
                    "resourceVersion": version,
                    "timeoutSeconds": str(timeout_seconds),
                    "allowWatchBookmarks": "true",
                }
                try:
                    async with session.get(path, params=params) as response:
                        if response.status == 410:
                            version = ""
                            continue
                        if response.status != 200:
                            raise errors.from_response(
                                response.status, await response.read(), "GET", path
                            )
                        async for line in response.content:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            obj = event.get("object") or {}
                            if event.get("type") == "ERROR":
                                if obj.get("code") == 410:
                                    version = ""
                                break
                            rv = (obj.get("metadata") or {}).get("resourceVersion")
                            if rv:
                                version = str(rv)
                            if event.get("type") != "BOOKMARK":
                                yield event
                except (aiohttp.ClientError, TimeoutError, errors.TransientError) as err:
                    log.debug("watch interrupted", path=path, error=str(err))
                await asyncio.sleep(self.retry.initial_seconds)

    def _session(self) -> aiohttp.ClientSession:
        """An aiohttp session with the same server, credentials and TLS as the sync client."""
        cfg = self.api_client.configuration
        context: ssl.SSLContext | bool = False
        if cfg.host.startswith("https"):
            if cfg.verify_ssl:
                context = ssl.create_default_context(cafile=cfg.ssl_ca_cert)
            else:
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            if cfg.cert_file:
                context.load_cert_chain(cfg.cert_file, cfg.key_file)
        headers = {"Accept": JSON, "User-Agent": self.api_client.user_agent}
        keys = cfg.api_key or {}
        auth = keys.get("BearerToken") or keys.get("authorization")
        if auth:
            headers["Authorization"] = str(auth)
        return aiohttp.ClientSession(
            base_url=cfg.host,
            headers=headers,
            connector=aiohttp.TCPConnector(ssl=context),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )


# --- paths ---------------------------------------------------------------------------------


def node_path(name: str = "", status: bool = False) -> str:
    return "/api/v1/nodes" + (f"/{quote(name)}" if name else "") + ("/status" if status else "")


def core_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = "/api/v1" + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    return base + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")


def valet_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = f"/apis/{GROUP_VERSION}" + (f"/namespaces/{quote(namespace)}" if namespace else "")
    return f"{base}/{plural}" + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")
