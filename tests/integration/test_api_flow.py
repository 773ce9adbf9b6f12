"""Writes as client-go makes them: Events correlated by the recorder's rules, and the API
client's flow control (in-flight bound, token bucket, 429 Retry-After, token refresh).

Event tests run on both backends (the real API server must accept the PATCHes of
``count``). The 429 and 401 tests use a stub server: a real kube-apiserver answers 429
only when API Priority and Fairness is out of seats, which a test cannot provoke on cue,
and the emulator's injected 429 carries no ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from kubernetes import client as k8s_client

from tests.emulator.server import serve
from tests.integration.harness import FAST_RETRY, Backend, Cluster, cluster
from valet.k8s import apply, errors
from valet.k8s.apply import Applier
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import Api, RetryPolicy, TokenBucket, core_path
from valet.model.enums import EventType


async def node_events(c: Cluster, node: str, reason: str) -> list[dict[str, Any]]:
    events = await c.items(core_path("events", "default"))
    return [e for e in events if e["involvedObject"]["name"] == node and e["reason"] == reason]


async def applier_for(c: Cluster) -> Applier:
    cache = Cache()
    cache.observe(Kind.NODE, await c.node(c.nodes[0]))  # so Events carry the node's uid
    return Applier(c.api, cache)


# --- Events ------------------------------------------------------------------------------


async def test_the_same_event_repeated_is_one_event_with_a_count(backend: Backend) -> None:
    async with cluster(backend, 1) as c:
        applier, node = await applier_for(c), c.nodes[0]
        for _ in range(3):
            await applier.event("Node", None, node, EventType.WARNING, "Tested", "same text")
        # Concurrent repeats ride on the write under way: fewer requests, the same count.
        await asyncio.gather(
            *(
                applier.event("Node", None, node, EventType.WARNING, "Tested", "same text")
                for _ in range(7)
            )
        )
        [event] = await node_events(c, node, "Tested")
        assert event["count"] == 10 and event["message"] == "same text"
        assert event["firstTimestamp"] <= event["lastTimestamp"]
        assert event["involvedObject"]["uid"] == (await c.node(node))["metadata"]["uid"]
        assert event["type"] == "Warning" and "series" not in event


async def test_similar_events_beyond_the_tenth_message_are_combined(backend: Backend) -> None:
    async with cluster(backend, 1) as c:
        applier, node = await applier_for(c), c.nodes[0]
        for i in range(12):
            await applier.event("Node", None, node, EventType.NORMAL, "Tested", f"message {i}")
        events = await node_events(c, node, "Tested")
        combined = [e for e in events if e["message"].startswith(apply.AGGREGATE_PREFIX)]
        # As client-go: nine Events of their own, then the 10th, 11th and 12th combined.
        assert len(events) == 10 and len(combined) == 1
        assert combined[0]["count"] == 3
        assert combined[0]["message"] == apply.AGGREGATE_PREFIX + "message 11"
        assert sorted(e["message"] for e in events if e not in combined) == [
            f"message {i}" for i in range(9)
        ]


async def test_an_event_deleted_meanwhile_is_created_anew(backend: Backend) -> None:
    async with cluster(backend, 1) as c:
        applier, node = await applier_for(c), c.nodes[0]
        await applier.event("Node", None, node, EventType.NORMAL, "Tested", "again")
        [first] = await node_events(c, node, "Tested")
        await c.api.call("DELETE", core_path("events", "default", first["metadata"]["name"]))
        await applier.event("Node", None, node, EventType.NORMAL, "Tested", "again")
        [second] = await node_events(c, node, "Tested")
        assert second["metadata"]["name"] != first["metadata"]["name"]
        assert second["count"] == 1


async def test_different_objects_and_reasons_keep_their_own_events() -> None:
    async with serve() as (emulator, url):
        api = Api(_client(url), retry=FAST_RETRY)
        applier = Applier(api, Cache())
        for node in ("gpu-0", "gpu-1"):
            for reason in ("A", "B"):
                for _ in range(2):
                    await applier.event("Node", None, node, EventType.NORMAL, reason, "x")
        await api.aclose()
        events = emulator.store.list(emulator.store.resources[("", "v1", "events")], None)
    assert sorted(
        (e["involvedObject"]["name"], e["reason"], e["count"]) for e in events["items"]
    ) == [
        ("gpu-0", "A", 2),
        ("gpu-0", "B", 2),
        ("gpu-1", "A", 2),
        ("gpu-1", "B", 2),
    ]


def test_similar_events_start_afresh_after_ten_quiet_minutes() -> None:
    correlator = apply._EventCorrelator()
    similar = ("valet-operator", "Node", "", "gpu-0", "", "v1", "Normal", "Tested")
    keys = [correlator.correlate(similar, f"m{i}", now=float(i))[0] for i in range(10)]
    assert keys[-1] == (similar, None)  # the 10th distinct message within the interval
    later = 9 + apply.AGGREGATE_INTERVAL_SECONDS + 1
    assert correlator.correlate(similar, "m10", now=later) == ((similar, "m10"), "m10")


def test_the_event_caches_are_bounded() -> None:
    lru: apply._Lru[int, int] = apply._Lru(size=3)
    for i in range(5):
        lru.put(i, i)
    assert len(lru) == 3 and lru.get(0) is None and lru.get(4) == 4


# --- flow control ------------------------------------------------------------------------


def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=5, clock=lambda: now[0])
    waits = [bucket.reserve() for _ in range(8)]
    assert waits[:5] == [0.0] * 5
    assert waits[5:] == pytest.approx([0.1, 0.2, 0.3])  # queued, first come first served
    now[0] = 10.0  # refilled, but never above the burst
    assert [bucket.reserve() for _ in range(6)][-1] == pytest.approx(0.1)


async def test_the_rate_limit_bounds_the_calls(backend: Backend) -> None:
    async with cluster(backend, 1) as c:
        api = Api(c.api.api_client, retry=FAST_RETRY, qps=20, burst=5)
        started = time.monotonic()
        await asyncio.gather(*(api.call("GET", core_path("namespaces", None)) for _ in range(25)))
        elapsed = time.monotonic() - started
        await api.aclose()
    assert elapsed >= (25 - 5) / 20 * 0.95  # the burst at once, then 20 a second


@contextlib.asynccontextmanager
async def stub(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with TestServer(app) as server:
        yield str(server.make_url("")).rstrip("/")


def _client(url: str, token: str = "emulator") -> k8s_client.ApiClient:
    cfg = k8s_client.Configuration(host=url)
    cfg.api_key = {"BearerToken": f"Bearer {token}"}
    client = k8s_client.ApiClient(cfg)
    client.user_agent = "valet-test/0"
    return client


def _throttled(first: int, retry_after: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    """429 with ``Retry-After`` for the ``first`` requests, then 200."""
    seen: list[float] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(time.monotonic())
        if len(seen) <= first:
            body = {"kind": "Status", "reason": "TooManyRequests", "message": "APF: no seats"}
            return web.json_response(body, status=429, headers={"Retry-After": retry_after})
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})

    handler.seen = seen  # type: ignore[attr-defined]
    return handler


async def test_a_429_waits_what_retry_after_says() -> None:
    handler = _throttled(first=1, retry_after="1")
    async with stub(handler) as url:
        api = Api(_client(url), retry=FAST_RETRY)  # its own backoff is at most 0.2 s
        result = await api.call("GET", "/api/v1/namespaces/default")
        await api.aclose()
    seen = handler.seen  # type: ignore[attr-defined]
    assert result["metadata"]["name"] == "default" and len(seen) == 2
    assert seen[1] - seen[0] >= 0.95


async def test_retry_after_never_waits_past_the_deadline() -> None:
    handler = _throttled(first=100, retry_after="60")
    retry = RetryPolicy(attempts=10, initial_seconds=0.01, max_seconds=0.2, deadline_seconds=1)
    async with stub(handler) as url:
        api = Api(_client(url), retry=retry)
        started = time.monotonic()
        with pytest.raises(errors.TransientError) as raised:
            await api.call("GET", "/api/v1/namespaces/default")
        elapsed = time.monotonic() - started
        await api.aclose()
    assert raised.value.status == 429 and raised.value.retry_after == 60
    assert 0.9 <= elapsed < 5


def test_retry_after_is_read_as_seconds_or_a_date() -> None:
    assert errors.parse_retry_after("3") == 3.0
    assert errors.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert errors.parse_retry_after("soon") is None and errors.parse_retry_after(None) is None
    assert errors.from_response(404, b"{}", "GET", "/x", "5").retry_after is None


async def test_a_401_refreshes_the_token_once() -> None:
    async def handler(request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer fresh":
            return web.json_response({"kind": "Status", "reason": "Unauthorized"}, status=401)
        return web.json_response({"kind": "Namespace", "metadata": {"name": "default"}})

    refreshed: list[str] = []
    async with stub(handler) as url:
        client = _client(url, token="stale")

        def hook(cfg: k8s_client.Configuration) -> None:  # as in-cluster config's, sync
            refreshed.append("hook")
            if len(refreshed) > 1:  # the first run (before any request) finds it current
                cfg.api_key["BearerToken"] = "Bearer fresh"

        client.configuration.refresh_api_key_hook = hook
        api = Api(client, retry=FAST_RETRY)
        result = await api.call("GET", "/api/v1/namespaces/default")
        client.configuration.refresh_api_key_hook = lambda cfg: None  # stays stale
        client.configuration.api_key["BearerToken"] = "Bearer revoked"
        with pytest.raises(errors.PermanentError) as raised:
            await api.call("GET", "/api/v1/namespaces/default")
        await api.aclose()
    assert result["metadata"]["name"] == "default" and refreshed == ["hook", "hook"]
    assert raised.value.status == 401


async def test_at_most_max_in_flight_calls_at_once() -> None:
    now, peak = [0], [0]

    async def handler(request: web.Request) -> web.Response:
        now[0] += 1
        peak[0] = max(peak[0], now[0])
        await asyncio.sleep(0.2)  # long enough for the others to arrive, even under load
        now[0] -= 1
        return web.json_response({})

    async with stub(handler) as url:
        api = Api(_client(url), retry=FAST_RETRY, max_in_flight=4)
        await asyncio.gather(*(api.call("GET", "/api/v1/namespaces") for _ in range(12)))
        await api.aclose()
    assert peak[0] == 4


def test_an_api_serves_one_loop_after_another_and_closes_each_session() -> None:
    """Built outside any loop (as tests/conftest.py does), used by asyncio.run twice."""
    sessions: list[aiohttp.ClientSession] = []

    async def use(api: Api) -> None:
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        async with stub(handler) as url:
            api.api_client.configuration.host = url
            assert await api.call("GET", "/api/v1/namespaces") == {"ok": True}
            sessions.append(api._conn().session)

    api = Api(_client("http://127.0.0.1:1"), retry=FAST_RETRY)
    asyncio.run(use(api))
    asyncio.run(use(api))
    api.close()
    assert len(sessions) == 2 and sessions[0] is not sessions[1]
    assert all(s.closed for s in sessions)  # each closed as its loop ended


async def test_close_from_sync_code_in_a_loop_closes_the_session() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.json_response({})

    async with stub(handler) as url:
        api = Api(_client(url), retry=FAST_RETRY)
        await api.call("GET", "/api/v1/namespaces")
        session = api._conn().session
        api.close()
        await asyncio.sleep(0.05)
        assert session.closed
        await api.call("GET", "/api/v1/namespaces")  # a later call opens a new session
        await api.aclose()
        assert api._conns == {}
