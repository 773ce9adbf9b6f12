"""The HTTP client of the operator, the agent and the simulated nodes.

Raw JSON in and out, with no model classes, over aiohttp: the ``kubernetes`` package only
loads the configuration (kubeconfig or in-cluster: server, CA, client certificate, bearer
token and its refresh hook). ``Api.call`` is a coroutine all the way down; no thread pool.

Flow control, as client-go's REST client does it:

- at most ``max_in_flight`` calls in flight (default 32) per event loop;
- an optional client-side token bucket (``qps``, ``burst``; see ``TokenBucket``) that every
  attempt passes through; the operator sets one (``OperatorOptions.api_qps``), tools and
  the simulated nodes (a thousand kubelets through one client) do not;
- transient errors (see ``valet.k8s.errors``) are retried with exponential backoff and
  jitter, except that a 429 or 5xx carrying ``Retry-After`` (API Priority and Fairness
  rejecting a request) waits what the server asked, bounded by the retry deadline;
- a 401 with a token refresh hook (in-cluster projected tokens, exec plugins) refreshes the
  token and tries once more; the hook also runs every ``AUTH_REFRESH_SECONDS``.

One aiohttp session per running event loop, made on first use; ``aclose()`` (or ``close()``
from sync code) closes them, and a loop that ends (``asyncio.run`` returning) closes its own,
so an ``Api`` may be built outside any loop and used from several in turn.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
import tenacity
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from valet import __version__
from valet.k8s import errors

JSON = "application/json"
MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
GROUP_VERSION = "valet.dev/v1alpha1"
AUTH_REFRESH_SECONDS = 10.0  # how often a token refresh hook runs (it re-reads when due)
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


class TokenBucket:
    """client-go's token bucket rate limiter (``flowcontrol.NewTokenBucketRateLimiter``):
    ``burst`` tokens, refilled at ``qps`` a second; each request takes one, and waits for it
    when none is left. Reservations are first come, first served (tokens may go negative:
    later requests wait longer), and use no event loop, so one bucket serves every loop."""

    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        if qps <= 0:
            raise ValueError("qps must be positive")
        self.qps, self.burst, self.clock = qps, max(1, burst), clock
        self._tokens = float(self.burst)
        self._at = clock()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        """Take a token: the seconds to wait before using it (0 when one was there)."""
        with self._lock:
            now = self.clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
            self._at = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


@dataclasses.dataclass
class _Conn:
    """What one event loop holds: its session, its in-flight slots, and the task that
    closes the session when the loop ends or ``Api.close`` asks."""

    session: aiohttp.ClientSession
    slots: asyncio.Semaphore
    keeper: asyncio.Task[None] | None = None


class Api:
    """REST calls returning parsed JSON, over aiohttp, with bounded concurrency, an optional
    client-side rate limit, and retries (see the module's docstring)."""

    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        retry: RetryPolicy = RetryPolicy(),
        max_in_flight: int = 32,
        qps: float | None = None,
        burst: int | None = None,
    ) -> None:
        """``qps``: the token bucket's rate (None: no client-side limit); ``burst``: its
        size (default twice ``qps``)."""
        self.api_client = api_client
        self.retry = retry
        self.max_in_flight = max_in_flight
        self.bucket = (
            TokenBucket(qps, burst if burst is not None else int(2 * qps)) if qps else None
        )
        self._conns: dict[asyncio.AbstractEventLoop, _Conn] = {}
        self._auth_due = 0.0
        self._timeout = aiohttp.ClientTimeout(total=retry.timeout_seconds, sock_connect=10)
        cfg = api_client.configuration
        self._request_options: dict[str, Any] = {}
        if getattr(cfg, "proxy", None):
            self._request_options["proxy"] = cfg.proxy
        if getattr(cfg, "tls_server_name", None):
            self._request_options["server_hostname"] = cfg.tls_server_name

    # --- closing -------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every session; awaits the one of this loop."""
        conn = self._conns.get(asyncio.get_running_loop())
        self.close()
        if conn is not None and conn.keeper is not None:
            await asyncio.wait({conn.keeper})

    def close(self) -> None:
        """Close every session (this loop's shortly after: its keeper task closes it).
        Safe from sync code, from any loop, and more than once; a later call opens anew."""
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for loop, conn in list(self._conns.items()):
            keeper = conn.keeper
            if keeper is None or keeper.done() or loop.is_closed():
                self._conns.pop(loop, None)
            elif loop is running:
                keeper.cancel()
            elif loop.is_running():
                loop.call_soon_threadsafe(keeper.cancel)
            elif running is None:
                keeper.cancel()
                loop.run_until_complete(asyncio.wait({keeper}))

    def _conn(self) -> _Conn:
        loop = asyncio.get_running_loop()
        conn = self._conns.get(loop)
        if conn is None or conn.keeper is None or conn.keeper.done():
            conn = _Conn(self._session(), asyncio.Semaphore(self.max_in_flight))
            conn.keeper = loop.create_task(self._keep(loop, conn), name="valet-api-session")
            self._conns[loop] = conn
        return conn

    async def _keep(self, loop: asyncio.AbstractEventLoop, conn: _Conn) -> None:
        """Wait until cancelled (``close``, or the loop ending: ``asyncio.run`` cancels its
        remaining tasks), then close the session while the loop still runs."""
        try:
            await loop.create_future()
        finally:
            if self._conns.get(loop) is conn:
                del self._conns[loop]
            await conn.session.close()

    # --- calls ---------------------------------------------------------------------------

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
        data = json.dumps(body).encode() if body is not None else None
        async for attempt in tenacity.AsyncRetrying(**self._retry_args(retry_conflicts)):
            with attempt:
                return await self._once(method, path, data, query, content_type)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _retry_args(self, retry_conflicts: bool) -> dict[str, Any]:
        r = self.retry
        backoff = tenacity.wait_exponential_jitter(multiplier=r.initial_seconds, max=r.max_seconds)

        def transient(err: BaseException) -> bool:
            if isinstance(err, errors.ConflictError):
                return retry_conflicts
            return isinstance(err, errors.TransientError)

        def wait(state: tenacity.RetryCallState) -> float:
            """What the server asked for (``Retry-After``), else exponential backoff; never
            past the deadline."""
            err = state.outcome.exception() if state.outcome is not None else None
            after = getattr(err, "retry_after", None)
            if after is None:
                return float(backoff(state))
            left = r.deadline_seconds - (state.seconds_since_start or 0.0)
            return max(0.0, min(float(after), left))

        return {
            "retry": tenacity.retry_if_exception(transient),
            "wait": wait,
            "stop": tenacity.stop_after_attempt(r.attempts)
            | tenacity.stop_after_delay(r.deadline_seconds),
            "reraise": True,
        }

    async def _once(
        self,
        method: str,
        path: str,
        data: bytes | None,
        query: Mapping[str, str] | None,
        content_type: str,
    ) -> dict[str, Any]:
        if self.bucket is not None:
            delay = self.bucket.reserve()
            if delay > 0:
                await asyncio.sleep(delay)
        conn = self._conn()
        url = self._url(path)
        async with conn.slots:
            for refreshed in (False, True):
                headers = {"Content-Type": content_type}
                auth = await self._authorization(force=refreshed)
                if auth:
                    headers["Authorization"] = auth
                try:
                    async with conn.session.request(
                        method,
                        url,
                        params=query,
                        data=data,
                        headers=headers,
                        timeout=self._timeout,
                        **self._request_options,
                    ) as response:
                        status = response.status
                        content = await response.read()
                        retry_after = response.headers.get("Retry-After")
                except (aiohttp.ClientError, TimeoutError, OSError) as err:
                    raise errors.from_transport(err, method, path) from err
                if status != 401 or refreshed or not self._refreshable():
                    break
        if not 200 <= status < 300:
            raise errors.from_response(status, content, method, path, retry_after)
        result: dict[str, Any] = json.loads(content) if content else {}
        return result

    def _url(self, path: str) -> str:
        return str(self.api_client.configuration.host).rstrip("/") + path

    def _refreshable(self) -> bool:
        return self.api_client.configuration.refresh_api_key_hook is not None

    async def _authorization(self, force: bool = False) -> str | None:
        """The ``Authorization`` header. A refresh hook (in-cluster: re-reads the projected
        token once a minute; kubeconfig: re-runs an exec plugin near expiry) runs every
        ``AUTH_REFRESH_SECONDS``, or now when ``force``, off the loop (it may block)."""
        cfg = self.api_client.configuration
        hook = cfg.refresh_api_key_hook
        if hook is not None:
            now = time.monotonic()
            if force or now >= self._auth_due:
                self._auth_due = now + AUTH_REFRESH_SECONDS
                await asyncio.to_thread(hook, cfg)
        return _bearer(cfg)

    async def watch(
        self,
        path: str,
        query: Mapping[str, str] | None = None,
        timeout_seconds: int = 300,
        resource_version: str = "",
        listings: bool = False,
    ) -> AsyncIterator[dict[str, Any]]:
        """List then watch a collection: yields ``{"type", "object"}`` events until cancelled.

        Starts with the listing (as ADDED events), or from ``resource_version`` when the
        caller has listed already; resumes from the last resourceVersion when a stream
        ends, and lists again after ``410 Gone``. With ``listings``, each listing comes as
        one ``{"type": "LISTING", "object": <the list>}`` event instead, so that the caller
        can forget what it lacks: a deletion while the watch was gone is never an event.
        Streams with aiohttp, so cancelling is immediate. A stream takes no in-flight slot.
        """
        version = resource_version
        url = self._url(path)
        stream_timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        while True:
            if not version:
                listing = await self.call("GET", path, query=query)
                if listings:
                    yield {"type": "LISTING", "object": listing}
                for item in () if listings else listing.get("items") or ():
                    yield {"type": "ADDED", "object": item}
                version = str((listing.get("metadata") or {}).get("resourceVersion") or "")
            params = {
                **(query or {}),
                "watch": "true",
                "resourceVersion": version,
                "timeoutSeconds": str(timeout_seconds),
                "allowWatchBookmarks": "true",
            }
            auth = await self._authorization()
            headers = {"Authorization": auth} if auth else {}
            try:
                async with self._conn().session.get(
                    url,
                    params=params,
                    headers=headers,
                    timeout=stream_timeout,
                    **self._request_options,
                ) as response:
                    if response.status == 410:
                        version = ""
                        continue
                    if response.status != 200:
                        raise errors.from_response(
                            response.status, await response.read(), "GET", path
                        )
                    async for line in _lines(response.content):
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
        """An aiohttp session with the configuration's TLS (CA, client certificate) and this
        client's User-Agent; the bearer token goes on each request (it may be refreshed).
        No connection limit of its own: ``max_in_flight`` bounds the calls, and watch
        streams hold a connection each."""
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
        return aiohttp.ClientSession(
            headers={"Accept": JSON, "User-Agent": self.api_client.user_agent},
            connector=aiohttp.TCPConnector(ssl=context, limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )


def _bearer(cfg: k8s_client.Configuration) -> str | None:
    """The bearer token with its prefix, as ``Configuration.get_api_key_with_prefix`` gives
    it, without running the refresh hook."""
    keys = cfg.api_key or {}
    prefixes = cfg.api_key_prefix or {}
    for ident in ("BearerToken", "authorization"):
        key = keys.get(ident)
        if key:
            prefix = prefixes.get(ident)
            return f"{prefix} {key}" if prefix else str(key)
    return None


async def _lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The non-empty lines of a watch stream, however long: one event is one line, and a
    Node with many images can exceed aiohttp's own line limit (twice its 256 KiB buffer)."""
    pending: list[bytes] = []
    async for chunk in content.iter_any():
        *complete, rest = chunk.split(b"\n")
        for line in complete:
            if pending:
                line = b"".join((*pending, line))
                pending.clear()
            if line.strip():
                yield line
        if rest:
            pending.append(rest)
    if pending and b"".join(pending).strip():
        yield b"".join(pending)


# --- paths ---------------------------------------------------------------------------------


def node_path(name: str = "", status: bool = False) -> str:
    return "/api/v1/nodes" + (f"/{quote(name)}" if name else "") + ("/status" if status else "")


def core_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = "/api/v1" + (f"/namespaces/{quote(namespace)}" if namespace else "") + f"/{plural}"
    return base + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")


def valet_path(plural: str, namespace: str | None, name: str = "", sub: str = "") -> str:
    base = f"/apis/{GROUP_VERSION}" + (f"/namespaces/{quote(namespace)}" if namespace else "")
    return f"{base}/{plural}" + (f"/{quote(name)}" if name else "") + (f"/{sub}" if sub else "")
