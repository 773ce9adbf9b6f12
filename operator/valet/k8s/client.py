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
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import tenacity
import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from valet.k8s import errors

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
GROUP_VERSION = "valet.dev/v1alpha1"


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    initial_seconds: float = 0.05
    max_seconds: float = 2.0
    deadline_seconds: float = 30.0
    timeout_seconds: float = 15.0  # per request


def load_api_client(kubeconfig: str | None = None, pool_size: int = 32) -> k8s_client.ApiClient:
    """In-cluster credentials in a pod, else ``kubeconfig`` (or $KUBECONFIG, ~/.kube/config)."""
    configuration = k8s_client.Configuration()
    try:
        if kubeconfig:
            raise k8s_config.ConfigException("explicit kubeconfig")
        k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]  # untyped client
    except k8s_config.ConfigException:
        k8s_config.load_kube_config(  # type: ignore[no-untyped-call]  # untyped client
            config_file=kubeconfig, client_configuration=configuration
        )
    configuration.connection_pool_maxsize = pool_size
    return k8s_client.ApiClient(configuration)


class Api:
    """Kubernetes REST calls returning parsed JSON; ``call`` for async code, ``call_sync`` for threads."""

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

    def call_sync(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = JSON,
        retry_conflicts: bool = True,
    ) -> dict[str, Any]:
        for attempt in tenacity.Retrying(**self._retry_args(retry_conflicts)):
            with attempt:
                return self._once(method, path, body, query, content_type)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _retry_args(self, retry_conflicts: bool) -> dict[str, Any]:
        r = self.retry

        def transient(err: BaseException) -> bool:
            if isinstance(err, errors.ConflictError):
                return retry_conflicts
            return isinstance(err, errors.TransientError)

        return {
            "retry": tenacity.retry_if_exception(transient),
            "wait": tenacity.wait_exponential_jitter(initial=r.initial_seconds, max=r.max_seconds),
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
            data = response.read()
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
        """List then watch a collection: yields ``{"type", "object"}`` events, forever.

        Starts with the listing (as ADDED events), resumes from the last resourceVersion
        when a stream ends, and relists after ``410 Gone``. For the simulated nodes and
        tools; the operator itself watches through Kopf.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | BaseException] = asyncio.Queue()
        version = ""
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
            holder: list[Any] = []
            loop.run_in_executor(
                self._pool, self._stream, path, params, queue, loop, timeout_seconds, holder
            )
            try:
                while True:
                    item = await queue.get()
                    if isinstance(item, BaseException):
                        break
                    obj = item.get("object") or {}
                    if item.get("type") == "ERROR":
                        if obj.get("code") == 410:
                            version = ""  # too old: list again
                        break
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        version = str(rv)
                    if item.get("type") != "BOOKMARK":
                        yield item
            finally:
                for response in holder:  # unblocks the reading thread when we stop early
                    response.close()
            await asyncio.sleep(0.1)

    def _stream(
        self,
        path: str,
        params: Mapping[str, str],
        queue: asyncio.Queue[dict[str, Any] | BaseException],
        loop: asyncio.AbstractEventLoop,
        timeout_seconds: int,
        holder: list[Any],
    ) -> None:
        full = path + "?" + urlencode(params)
        headers = {"Accept": JSON}
        _, url, headers, _, _ = self.api_client.param_serialize(
            "GET", full, header_params=headers, auth_settings=["BearerToken"]
        )
        try:
            response = self.api_client.rest_client.pool_manager.request(
                "GET",
                url,
                headers=headers,
                preload_content=False,
                timeout=urllib3.Timeout(connect=10, read=timeout_seconds + 30),
            )
            holder.append(response)
            if response.status != 200:
                raise errors.from_response(response.status, response.read(), "GET", path)
            buffer = b""
            for chunk in response.stream(4096, decode_content=True):
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    if line.strip():
                        loop.call_soon_threadsafe(queue.put_nowait, json.loads(line))
            response.release_conn()
            raise EOFError("watch stream ended")
        except BaseException as err:  # noqa: BLE001  # every end of the stream is reported
            loop.call_soon_threadsafe(queue.put_nowait, err)


# --- paths ---------------------------------------------------------------------------------


def node_path(name: str = "", status: bool = False) -> str:
    return "/api/v1/nodes" + (f"/{quote(name)}" if name else "") + ("/status" if status else "")


def core_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = "/api/v1" + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    return base + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")


def valet_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = f"/apis/{GROUP_VERSION}" + (f"/namespaces/{quote(namespace)}" if namespace else "")
    return f"{base}/{plural}" + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")


def selector(labels: Mapping[str, str | None] | Sequence[str]) -> str:
    """A label selector: ``{"k": "v"}`` → ``k=v``; ``{"k": None}`` or ``["k"]`` → ``k`` (exists)."""
    if isinstance(labels, Mapping):
        return ",".join(k if v is None else f"{k}={v}" for k, v in labels.items())
    return ",".join(labels)
