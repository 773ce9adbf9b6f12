"""The emulator's object store: what etcd plus the API server's generic registry do.

Server-set metadata (uid, resourceVersion, creationTimestamp, generation, generateName),
optimistic concurrency, the status/scale subresource split, label and field selectors,
pod binding and eviction, graceful pod deletion, finalizers, and an event log that
watches resume from by resourceVersion (410 Gone when it is too old).
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import dataclasses
import datetime as dt
import re
import uuid
from collections import deque
from collections.abc import Iterator
from typing import Any

from valet.emulator import patching

HISTORY = 50_000  # watch events kept for resuming


@dataclasses.dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: tuple[str, ...] = ()
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


CORE = (
    Resource("", "v1", "namespaces", "Namespace", False, ("status",)),
    Resource("", "v1", "nodes", "Node", False, ("status",)),
    Resource("", "v1", "pods", "Pod", True, ("status", "binding", "eviction")),
    Resource("", "v1", "services", "Service", True, ("status",)),
    Resource("", "v1", "events", "Event", True),
    Resource("", "v1", "configmaps", "ConfigMap", True),
    Resource("coordination.k8s.io", "v1", "leases", "Lease", True),
    Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False),
    Resource("events.k8s.io", "v1", "events", "Event", True),
)
VALET = (
    Resource(
        "valet.dev", "v1alpha1", "trainingjobs", "TrainingJob", True, ("status", "scale"), ("tj",)
    ),
    Resource("valet.dev", "v1alpha1", "spotpools", "SpotPool", False, ("status",), ("sp",)),
)


class ApiStatusError(Exception):
    """An answer other than success, rendered as a Kubernetes ``Status``."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message

    def body(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Status",
            "metadata": {},
            "status": "Failure",
            "code": self.code,
            "reason": self.reason,
            "message": self.message,
        }


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# --- selectors ---------------------------------------------------------------------------

_REQ = re.compile(
    r"^\s*(!?)([\w./-]+)\s*(?:(==|=|!=)\s*([\w./-]*)|\s+(in|notin)\s*\(([^)]*)\))?\s*$"
)


def _split(selector: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in selector:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if current.strip():
        parts.append(current)
    return parts


def label_matcher(selector: str | None) -> Any:
    if not selector:
        return lambda labels: True
    reqs = []
    for part in _split(selector):
        m = _REQ.match(part)
        if m is None:
            raise ApiStatusError(400, "BadRequest", f"unable to parse requirement: {part!r}")
        neg, key, op, value, set_op, values = m.groups()
        reqs.append((neg, key, op, value, set_op, [v.strip() for v in (values or "").split(",")]))

    def match(labels: dict[str, str]) -> bool:
        for neg, key, op, value, set_op, values in reqs:
            have = labels.get(key)
            if neg:
                ok = key not in labels
            elif op in ("=", "=="):
                ok = have == value
            elif op == "!=":
                ok = have != value
            elif set_op == "in":
                ok = have in values
            elif set_op == "notin":
                ok = have not in values
            else:
                ok = key in labels
            if not ok:
                return False
        return True

    return match


def field_matcher(selector: str | None) -> Any:
    if not selector:
        return lambda obj: True
    reqs = []
    for part in selector.split(","):
        m = re.match(r"^\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*$", part)
        if m is None:
            raise ApiStatusError(400, "BadRequest", f"invalid field selector: {part!r}")
        reqs.append(m.groups())

    def value_at(obj: dict[str, Any], path: str) -> str:
        cur: Any = obj
        for p in path.split("."):
            cur = cur.get(p) if isinstance(cur, dict) else None
        return "" if cur is None else str(cur)

    def match(obj: dict[str, Any]) -> bool:
        for path, op, value in reqs:
            equal = value_at(obj, path) == value
            if equal != (op != "!="):
                return False
        return True

    return match


# --- the store ---------------------------------------------------------------------------


@dataclasses.dataclass
class Event:
    rv: int
    type: str
    resource: Resource
    obj: dict[str, Any]


class Store:
    def __init__(self, resources: tuple[Resource, ...] = CORE + VALET) -> None:
        self.resources = {(r.group, r.version, r.plural): r for r in resources}
        self.objects: dict[tuple[str, str, str | None, str], dict[str, Any]] = {}
        self.rv = 1
        self.log: deque[Event] = deque(maxlen=HISTORY)
        self.changed = asyncio.Condition()
        self.closed = False  # set on shutdown: open watches end
        self._generated = 0
        for ns in ("default", "kube-system", "kube-node-lease"):
            self.create(self.resource("", "v1", "namespaces"), None, {"metadata": {"name": ns}})

    def resource(self, group: str, version: str, plural: str) -> Resource:
        try:
            return self.resources[(group, version, plural)]
        except KeyError:
            raise ApiStatusError(404, "NotFound", f"the server could not find {plural}") from None

    @staticmethod
    def _key(res: Resource, ns: str | None, name: str) -> tuple[str, str, str | None, str]:
        return (res.group, res.plural, ns if res.namespaced else None, name)

    def _next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, type_: str, res: Resource, obj: dict[str, Any]) -> None:
        self.log.append(
            Event(int(obj["metadata"]["resourceVersion"]), type_, res, copy.deepcopy(obj))
        )

    async def notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    # --- reads ---------------------------------------------------------------------------

    def get(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.objects.get(self._key(res, ns, name))
        if obj is None:
            raise ApiStatusError(404, "NotFound", f'{res.plural} "{name}" not found')
        return copy.deepcopy(obj)

    def select(
        self, res: Resource, ns: str | None, labels: str | None = None, fields: str | None = None
    ) -> Iterator[dict[str, Any]]:
        by_labels, by_fields = label_matcher(labels), field_matcher(fields)
        for (group, plural, ons, _), obj in self.objects.items():
            if (group, plural) != (res.group, res.plural):
                continue
            if ns is not None and ons != ns:
                continue
            if by_labels(obj["metadata"].get("labels") or {}) and by_fields(obj):
                yield obj

    def list(
        self, res: Resource, ns: str | None, labels: str | None = None, fields: str | None = None
    ) -> dict[str, Any]:
        items = [copy.deepcopy(o) for o in self.select(res, ns, labels, fields)]
        return {
            "apiVersion": res.api_version,
            "kind": f"{res.kind}List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    # --- writes --------------------------------------------------------------------------

    def _check_namespace(self, res: Resource, ns: str | None) -> None:
        if res.namespaced:
            if not ns:
                raise ApiStatusError(400, "BadRequest", "a namespaced object needs a namespace")
            if self._key(self.resource("", "v1", "namespaces"), None, ns) not in self.objects:
                raise ApiStatusError(404, "NotFound", f'namespaces "{ns}" not found')

    def create(self, res: Resource, ns: str | None, body: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(body)
        md = obj.setdefault("metadata", {})
        if not md.get("name"):
            if not md.get("generateName"):
                raise ApiStatusError(
                    422, "Invalid", "metadata.name or metadata.generateName is required"
                )
            self._generated += 1
            md["name"] = f"{md['generateName']}{uuid.uuid4().hex[:5]}"
        ns = ns or md.get("namespace")
        if res.namespaced and not ns:
            ns = "default"
        self._check_namespace(res, ns)
        key = self._key(res, ns, md["name"])
        if key in self.objects:
            raise ApiStatusError(
                409, "AlreadyExists", f'{res.plural} "{md["name"]}" already exists'
            )
        if res.namespaced:
            md["namespace"] = ns
        else:
            md.pop("namespace", None)
        md.update(
            uid=str(uuid.uuid4()),
            creationTimestamp=now_rfc3339(),
            generation=1,
            resourceVersion=self._next_rv(),
        )
        md.pop("deletionTimestamp", None)
        obj["apiVersion"], obj["kind"] = res.api_version, res.kind
        if "status" in res.subresources and res.group:
            obj.pop("status", None)  # the status subresource ignores status on create
        if res.plural == "pods":
            self._admit_priority(md["name"], obj.get("spec") or {})
            obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
        self.objects[key] = obj
        self._record("ADDED", res, obj)
        return copy.deepcopy(obj)

    def _admit_priority(self, name: str, spec: dict[str, Any]) -> None:
        """The ``Priority`` admission plugin: a pod's PriorityClass must exist."""
        wanted = spec.get("priorityClassName")
        if not wanted or wanted in ("system-node-critical", "system-cluster-critical"):
            return
        classes = self.resource("scheduling.k8s.io", "v1", "priorityclasses")
        if self._key(classes, None, wanted) not in self.objects:
            raise ApiStatusError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: no PriorityClass with name {wanted} was found',
            )

    def _write(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        new: dict[str, Any],
        sub: str | None,
        expect_rv: str | None,
    ) -> dict[str, Any]:
        key = self._key(res, ns, name)
        old = self.objects.get(key)
        if old is None:
            raise ApiStatusError(404, "NotFound", f'{res.plural} "{name}" not found')
        if expect_rv and expect_rv != old["metadata"]["resourceVersion"]:
            raise ApiStatusError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res.plural} "{name}": the object has been'
                " modified; please apply your changes to the latest version and try again",
            )
        split = "status" in res.subresources
        if sub == "status":
            result = copy.deepcopy(old)
            if "status" in new:
                result["status"] = new["status"]
        else:
            result = copy.deepcopy(new)
            if split:
                if "status" in old:
                    result["status"] = old["status"]
                else:
                    result.pop("status", None)
            md = result.setdefault("metadata", {})
            for fixed in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp"):
                if fixed in old["metadata"]:
                    md[fixed] = old["metadata"][fixed]
                else:
                    md.pop(fixed, None)
            md["generation"] = old["metadata"].get("generation", 1) + (
                1 if result.get("spec") != old.get("spec") else 0
            )
        if result == old:
            return copy.deepcopy(old)  # a no-op write does not bump the resourceVersion
        result["metadata"]["resourceVersion"] = self._next_rv()
        md = result["metadata"]
        if md.get("deletionTimestamp") and not md.get("finalizers") and not _graceful(res, result):
            del self.objects[key]
            self._record("DELETED", res, result)
            return copy.deepcopy(result)
        self.objects[key] = result
        self._record("MODIFIED", res, result)
        return copy.deepcopy(result)

    def replace(
        self, res: Resource, ns: str | None, name: str, body: dict[str, Any], sub: str | None
    ) -> dict[str, Any]:
        expect = (body.get("metadata") or {}).get("resourceVersion")
        return self._write(res, ns, name, body, sub, expect)

    def patch(
        self,
        res: Resource,
        ns: str | None,
        name: str,
        body: Any,
        content_type: str,
        sub: str | None,
    ) -> dict[str, Any]:
        old = self.get(res, ns, name)
        try:
            if "json-patch" in content_type:
                new = patching.json_patch(old, body)
                expect = None
            elif "strategic" in content_type:
                if res.group:
                    raise ApiStatusError(
                        415,
                        "UnsupportedMediaType",
                        "strategic merge patch is not supported for custom resources",
                    )
                new = patching.strategic_merge_patch(old, body)
                expect = ((body or {}).get("metadata") or {}).get("resourceVersion")
            else:
                new = patching.merge_patch(old, body)
                expect = ((body or {}).get("metadata") or {}).get("resourceVersion")
        except patching.PatchError as err:
            raise ApiStatusError(422, "Invalid", str(err)) from None
        return self._write(res, ns, name, new, sub, expect)

    def delete(
        self, res: Resource, ns: str | None, name: str, grace: int | None = None
    ) -> dict[str, Any]:
        key = self._key(res, ns, name)
        obj = self.objects.get(key)
        if obj is None:
            raise ApiStatusError(404, "NotFound", f'{res.plural} "{name}" not found')
        md = obj["metadata"]
        graceful = res.plural == "pods" and (obj.get("spec") or {}).get("nodeName")
        if graceful:
            default = (obj.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
            grace = default if grace is None else grace
            phase = (obj.get("status") or {}).get("phase")
            if phase in ("Succeeded", "Failed"):
                grace = 0
        if md.get("finalizers") or (graceful and grace and grace > 0):
            if md.get("deletionTimestamp"):
                if (
                    graceful
                    and grace is not None
                    and grace < md.get("deletionGracePeriodSeconds", 1 << 30)
                ):
                    md["deletionGracePeriodSeconds"] = grace
                return copy.deepcopy(obj)
            obj = copy.deepcopy(obj)
            obj["metadata"]["deletionTimestamp"] = now_rfc3339()
            if graceful:
                obj["metadata"]["deletionGracePeriodSeconds"] = grace
            obj["metadata"]["resourceVersion"] = self._next_rv()
            self.objects[key] = obj
            self._record("MODIFIED", res, obj)
            return copy.deepcopy(obj)
        del self.objects[key]
        obj = copy.deepcopy(obj)
        obj["metadata"]["resourceVersion"] = self._next_rv()
        self._record("DELETED", res, obj)
        return obj

    # --- pod subresources ----------------------------------------------------------------

    def bind(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        res = self.resource("", "v1", "pods")
        pod = self.get(res, ns, name)
        target = (body.get("target") or {}).get("name")
        if not target:
            raise ApiStatusError(422, "Invalid", "binding needs target.name")
        if (pod.get("spec") or {}).get("nodeName"):
            raise ApiStatusError(
                409,
                "Conflict",
                f"pod {name} is already assigned to node {pod['spec']['nodeName']!r}",
            )
        if pod["metadata"].get("deletionTimestamp"):
            raise ApiStatusError(
                409, "Conflict", f"pod {name} is being deleted, cannot be assigned to a host"
            )
        pod["spec"]["nodeName"] = target
        # As kube-apiserver does: the Binding's annotations land on the pod.
        stamped = (body.get("metadata") or {}).get("annotations") or {}
        if stamped:
            pod["metadata"]["annotations"] = {**(pod["metadata"].get("annotations") or {})}
            pod["metadata"]["annotations"].update(stamped)
        self._write(res, ns, name, pod, None, None)
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}

    def evict(self, ns: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        res = self.resource("", "v1", "pods")
        grace = ((body or {}).get("deleteOptions") or {}).get("gracePeriodSeconds")
        self.delete(res, ns, name, grace)
        return {"apiVersion": "v1", "kind": "Status", "status": "Success", "code": 201}

    # --- scale subresource ---------------------------------------------------------------

    def get_scale(self, res: Resource, ns: str | None, name: str) -> dict[str, Any]:
        obj = self.get(res, ns, name)
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": {
                "name": name,
                "namespace": ns,
                "resourceVersion": obj["metadata"]["resourceVersion"],
            },
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {
                "replicas": (obj.get("status") or {}).get("replicas", 0),
                "selector": (obj.get("status") or {}).get("selector", ""),
            },
        }

    def set_scale(
        self, res: Resource, ns: str | None, name: str, scale: dict[str, Any]
    ) -> dict[str, Any]:
        obj = self.get(res, ns, name)
        obj.setdefault("spec", {})["replicas"] = (scale.get("spec") or {}).get("replicas", 0)
        expect = (scale.get("metadata") or {}).get("resourceVersion")
        self._write(res, ns, name, obj, None, expect)
        return self.get_scale(res, ns, name)

    # --- watch ---------------------------------------------------------------------------

    def events_since(self, since: int) -> builtins.list[Event]:
        if self.log and since < self.log[0].rv - 1:
            raise ApiStatusError(
                410, "Expired", f"too old resource version: {since} ({self.log[0].rv})"
            )
        newer: builtins.list[Event] = []
        for event in reversed(self.log):  # the log is in resourceVersion order
            if event.rv <= since:
                break
            newer.append(event)
        return newer[::-1]


def _graceful(res: Resource, obj: dict[str, Any]) -> bool:
    """A pod in its grace period stays until the kubelet confirms it stopped."""
    return res.plural == "pods" and obj["metadata"].get("deletionGracePeriodSeconds", 0) > 0
