"""The HTTP face of the emulator: kmock's server and API discovery, with valet's store behind.

kmock 0.8 serves discovery, its request log and the aiohttp server; every request for
a known resource goes to ``Store`` instead of kmock's own object tracking, which lacks
server-set metadata, selectors, subresources, PUT and watch resumption. ``Chaos`` makes
a share of requests fail the way a loaded API server does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp.web
import kmock

from valet.emulator.store import ApiStatusError, Resource, Store


@dataclasses.dataclass
class Chaos:
    """Fail ``rate`` of non-watch requests (those whose path contains ``only``) with 409,
    429, 500 or a 504 after doing the work, chosen among ``faults``."""

    rate: float = 0.0
    seed: int = 0
    faults: tuple[str, ...] = ("conflict", "throttle", "internal", "timeout-after-work")
    only: str = ""
    injected: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def pick(self, path: str) -> str | None:
        if self.rate <= 0 or self.only not in path or self.rng.random() >= self.rate:
            return None
        self.injected += 1
        return self.rng.choice(self.faults)


@dataclasses.dataclass(frozen=True)
class Request:
    """One resource request as RBAC sees it."""

    user_agent: str
    method: str
    group: str
    namespace: str | None
    plural: str
    name: str | None
    subresource: str | None
    query: dict[str, str]

    @property
    def verb(self) -> str:
        if self.method == "GET":
            if self.query.get("watch") in ("true", "1"):
                return "watch"
            return "get" if self.name else "list"
        if self.method == "DELETE" and not self.name:
            return "deletecollection"
        return {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[
            self.method
        ]

    @property
    def resource(self) -> str:
        return f"{self.plural}/{self.subresource}" if self.subresource else self.plural


def _parse_path(path: str) -> tuple[str, str, str | None, str, str | None, str | None] | None:
    """(group, version, namespace, plural, name, subresource) of a resource URL, else None."""
    parts = path.strip("/").split("/")
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest[0]:
        return None
    ns = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        ns, rest = rest[1], rest[2:]
    plural = rest[0]
    name = rest[1] if len(rest) > 1 else None
    sub = "/".join(rest[2:]) or None
    return group, version, ns, plural, name, sub


class Emulator(kmock.KubernetesScaffold):
    """A Kubernetes API server in memory; ``serve()`` starts one on a localhost port."""

    def __init__(self, *args: Any, chaos: Chaos | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.store = Store()
        self.chaos = chaos or Chaos()
        self.requests: list[Request] = []  # every resource request, for RBAC checks
        for res in self.store.resources.values():
            info = self.resources[
                f"{res.group}/{res.version}/{res.plural}"
                if res.group
                else f"{res.version}/{res.plural}"
            ]
            info.kind = res.kind
            info.namespaced = res.namespaced
            info.singular = res.kind.lower()
            info.verbs = {"get", "list", "watch", "create", "update", "patch", "delete"}
            info.subresources = set(res.subresources)
            info.shortnames = set(res.short_names)

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        """Resource requests go to the store; discovery and the rest to kmock."""
        parsed = _parse_path(raw.path)
        if parsed is None:
            return await super().__call__(raw)
        group, version, ns, plural, name, sub = parsed
        if (group, version, plural) not in self.store.resources:
            return _status(ApiStatusError(404, "NotFound", f"the server could not find {plural}"))
        res = self.store.resources[(group, version, plural)]
        params = dict(raw.query)
        method = raw.method.upper()
        self.requests.append(
            Request(raw.headers.get("User-Agent", ""), method, group, ns, plural, name, sub, params)
        )
        try:
            if method == "GET" and params.get("watch") in ("true", "1"):
                return await self._watch(raw, res, ns, params)
            text = await raw.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                raise ApiStatusError(400, "BadRequest", "the body is not JSON") from None
            fault = self.chaos.pick(raw.path)
            if fault in ("conflict", "throttle", "internal"):
                raise ApiStatusError(*_FAULTS[fault])
            content_type = raw.headers.get("Content-Type", "application/json")
            result, code = self._dispatch(method, res, ns, name, sub, params, body, content_type)
            await self.store.notify()
            if fault == "timeout-after-work":
                raise ApiStatusError(
                    504, "Timeout", "the server was unable to return a response in time"
                )
            return aiohttp.web.json_response(result, status=code)
        except ApiStatusError as err:
            return _status(err)

    def _dispatch(
        self,
        method: str,
        res: Resource,
        ns: str | None,
        name: str | None,
        sub: str | None,
        params: dict[str, str],
        body: Any,
        content_type: str,
    ) -> tuple[dict[str, Any], int]:
        store = self.store
        if name is None:
            if method == "GET":
                return store.list(
                    res, ns, params.get("labelSelector"), params.get("fieldSelector")
                ), 200
            if method == "POST":
                return store.create(res, ns, _object(body)), 201
            raise ApiStatusError(405, "MethodNotAllowed", f"{method} on a collection")
        if sub == "binding" and method == "POST":
            return store.bind(ns or "", name, _object(body)), 201
        if sub == "eviction" and method == "POST":
            return store.evict(ns or "", name, _object(body)), 201
        if sub == "scale":
            if method == "GET":
                return store.get_scale(res, ns, name), 200
            if method == "PUT":
                return store.set_scale(res, ns, name, _object(body)), 200
            if method == "PATCH":
                scale = store.get_scale(res, ns, name)
                scale["spec"].update(_object(body).get("spec") or {})
                scale["metadata"].pop("resourceVersion", None)
                return store.set_scale(res, ns, name, scale), 200
        if sub not in (None, "status") or (sub and sub not in res.subresources):
            raise ApiStatusError(404, "NotFound", f"no subresource {sub!r} of {res.plural}")
        if method == "GET":
            return store.get(res, ns, name), 200
        if method == "PUT":
            return store.replace(res, ns, name, _object(body), sub), 200
        if method == "PATCH":
            return store.patch(res, ns, name, body, content_type, sub), 200
        if method == "DELETE":
            grace = params.get("gracePeriodSeconds")
            if grace is None and isinstance(body, dict):
                grace = body.get("gracePeriodSeconds")
            return store.delete(res, ns, name, int(grace) if grace is not None else None), 200
        raise ApiStatusError(405, "MethodNotAllowed", method)

    async def _watch(
        self, raw: aiohttp.web.BaseRequest, res: Resource, ns: str | None, params: dict[str, str]
    ) -> aiohttp.web.StreamResponse:
        from valet.emulator.store import field_matcher, label_matcher

        by_labels = label_matcher(params.get("labelSelector"))
        by_fields = field_matcher(params.get("fieldSelector"))
        timeout = float(params.get("timeoutSeconds") or 0) or None
        since_text = params.get("resourceVersion") or ""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw)

        def selected(obj: dict[str, Any]) -> bool:
            md = obj["metadata"]
            if ns is not None and md.get("namespace") != ns:
                return False
            return bool(by_labels(md.get("labels") or {}) and by_fields(obj))

        async def send(type_: str, obj: dict[str, Any]) -> None:
            await response.write(json.dumps({"type": type_, "object": obj}).encode() + b"\n")

        store = self.store
        if since_text in ("", "0"):
            since = store.rv
            for obj in list(
                store.select(res, ns, params.get("labelSelector"), params.get("fieldSelector"))
            ):
                await send("ADDED", obj)
        else:
            since = int(since_text)
        with contextlib.suppress(
            asyncio.TimeoutError, ConnectionResetError, asyncio.CancelledError
        ):
            async with asyncio.timeout(timeout):
                while True:
                    try:
                        events = store.events_since(since)
                    except ApiStatusError as err:
                        await send("ERROR", err.body())
                        break
                    for event in events:
                        since = event.rv
                        if event.resource == res and selected(event.obj):
                            await send(event.type, event.obj)
                    async with store.changed:
                        if store.closed:
                            break
                        if store.rv == since or not store.events_since(since):
                            await store.changed.wait()
        return response


_FAULTS = {
    "conflict": (409, "Conflict", "injected: the object has been modified"),
    "throttle": (429, "TooManyRequests", "injected: too many requests"),
    "internal": (500, "InternalError", "injected: etcdserver: request timed out"),
}


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiStatusError(400, "BadRequest", "the body must be a JSON object")
    return body


def _status(err: ApiStatusError) -> aiohttp.web.Response:
    return aiohttp.web.json_response(err.body(), status=err.code)


@contextlib.asynccontextmanager
async def serve(chaos: Chaos | None = None) -> AsyncIterator[tuple[Emulator, str]]:
    """Start an emulator on a free localhost port; yields it and its URL."""
    async with Emulator(chaos=chaos) as api, kmock.Server(api) as server:
        try:
            yield api, str(server.url).rstrip("/")
        finally:
            api.store.closed = True  # end the open watch streams, or shutdown waits for them
            await api.store.notify()


def kubeconfig(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "emulator", "cluster": {"server": url}}],
        "users": [{"name": "valet", "user": {"token": "emulator"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "valet"}}],
        "current-context": "emulator",
    }
