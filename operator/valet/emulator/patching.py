"""The API server's three patch formats, over plain JSON: merge (RFC 7386), strategic merge
(lists merged by their key, as Kubernetes does for the fields listed here) and JSON Patch
(RFC 6902, with ``test``)."""

from __future__ import annotations

import copy
from typing import Any

# Lists that strategic merge merges by a key (the patchMergeKey of the Kubernetes types);
# every other list is replaced, as the API server does.
MERGE_KEYS = {
    "conditions": "type",
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "ports": "containerPort",
    "volumes": "name",
    "volumeMounts": "mountPath",
    "ownerReferences": "uid",
    "tolerations": None,  # atomic in practice; kept for documentation
}


class PatchError(ValueError):
    """A patch that cannot apply (the API server answers 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: strategic merge with no list merged by key."""
    return strategic_merge_patch(target, patch, keys={})


def strategic_merge_patch(
    target: Any, patch: Any, field: str = "", keys: dict[str, str | None] = MERGE_KEYS
) -> Any:
    if isinstance(patch, list) and isinstance(target, list) and keys.get(field):
        key = keys[field]
        merged = [copy.deepcopy(item) for item in target]
        for item in patch:
            if not isinstance(item, dict) or key not in item:
                merged.append(copy.deepcopy(item))
                continue
            if item.get("$patch") == "delete":
                merged = [m for m in merged if m.get(key) != item[key]]
                continue
            for i, existing in enumerate(merged):
                if isinstance(existing, dict) and existing.get(key) == item[key]:
                    merged[i] = strategic_merge_patch(existing, item, keys=keys)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = strategic_merge_patch(result.get(key), value, key, keys)
    return result


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"bad JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise PatchError(f"path /{'/'.join(parts)} does not exist")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise PatchError(f"bad list index {part!r}") from None
        else:
            raise PatchError(f"path /{'/'.join(parts)} does not exist")
    return doc


def json_patch(target: Any, ops: list[dict[str, Any]]) -> Any:
    doc = copy.deepcopy(target)
    for op in ops:
        kind, parts = op.get("op"), _pointer(str(op.get("path", "")))
        if kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise PatchError(f"test failed at {op.get('path')}")
            continue
        if kind in ("move", "copy"):
            value = copy.deepcopy(_walk(doc, _pointer(str(op.get("from", "")))))
            if kind == "move":
                doc = json_patch(doc, [{"op": "remove", "path": op["from"]}])
            kind, op = "add", {**op, "value": value}
        parent = _walk(doc, parts[:-1]) if parts else None
        last = parts[-1] if parts else ""
        if not parts:
            if kind in ("add", "replace"):
                doc = copy.deepcopy(op.get("value"))
                continue
            raise PatchError("cannot remove the document root")
        if kind == "add":
            if isinstance(parent, list):
                index = len(parent) if last == "-" else int(last)
                parent.insert(index, copy.deepcopy(op.get("value")))
            elif isinstance(parent, dict):
                parent[last] = copy.deepcopy(op.get("value"))
            else:
                raise PatchError(f"cannot add at {op.get('path')}")
        elif kind in ("remove", "replace"):
            _walk(doc, parts)  # must exist
            if isinstance(parent, list):
                if kind == "remove":
                    parent.pop(int(last))
                else:
                    parent[int(last)] = copy.deepcopy(op.get("value"))
            elif isinstance(parent, dict):
                if kind == "remove":
                    del parent[last]
                else:
                    parent[last] = copy.deepcopy(op.get("value"))
        else:
            raise PatchError(f"unknown op {kind!r}")
    return doc
