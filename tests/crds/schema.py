"""Validate manifests against our CRDs offline, close to what the API server does: default,
check the structure, then CEL.

Strict field validation reports fields the schema neither declares nor preserves; the name
must be a DNS-1123 subdomain (the server's check of every object); structural validation
uses jsonschema on the CRD's openAPIV3Schema, plus the duplicate check of
``x-kubernetes-list-type: set`` and ``map`` lists; defaults are applied as the API server
applies them; every ``x-kubernetes-validations`` rule is evaluated with cel-python, with
``self`` bound to the value at that schema node (properties, array items and map values),
declared property names that are CEL keywords escaped as the server escapes them
(``namespace`` is ``__namespace__``), and a failing rule's ``messageExpression`` evaluated
for its message.

This is a fast approximation, not the authority: tests/crds/test_real_api.py sends the same
kind of manifests to a real API server. Known differences: the server also runs CEL on
parts of an object that has structural errors (here CEL runs only on a structurally valid
object), and it estimates each rule's cost and refuses a CRD over budget (not checked here).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import celpy
import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRDS = {
    "TrainingJob": ROOT / "crds" / "valet.dev_trainingjobs.yaml",
    "SpotPool": ROOT / "crds" / "valet.dev_spotpools.yaml",
}
_ENV = celpy.Environment()
# Property names the API server escapes as __name__ in CEL (the CEL reserved words).
_CEL_KEYWORDS = frozenset(
    (
        *("true", "false", "null", "in", "as", "break", "const", "continue", "else", "for"),
        *("function", "if", "import", "let", "loop", "package", "namespace", "return", "var"),
        *("void", "while"),
    )
)

_DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str
    message: str  # the jsonschema error, or the CEL rule's message(Expression)
    rule: str | None = None  # the CEL rule, when a CEL rule rejected it


def load_crd(kind: str) -> dict[str, Any]:
    return yaml.safe_load(CRDS[kind].read_text())


def schema_of(kind: str) -> dict[str, Any]:
    return load_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object":
        for name, prop in schema.get("properties", {}).items():
            if name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
            if name in value:
                value[name] = apply_defaults(prop, value[name])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = apply_defaults(extra, value[key])
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _cel_value(schema: dict[str, Any], value: Any) -> Any:
    """``value`` as CEL sees it: declared properties named after CEL keywords escaped."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            if key in props:
                name = f"__{key}__" if key in _CEL_KEYWORDS else key
                out[name] = _cel_value(props[key], item)
            else:
                out[key] = _cel_value(extra, item) if isinstance(extra, dict) else item
        return out
    if isinstance(value, list) and "items" in schema:
        return [_cel_value(schema["items"], v) for v in value]
    return value


def _evaluate(expression: str, value: Any) -> Any:
    program = _ENV.program(_ENV.compile(expression))
    return program.evaluate({"self": celpy.json_to_cel(value)})


def _cel(schema: dict[str, Any], value: Any, path: str, out: list[Violation]) -> None:
    for rule in schema.get("x-kubernetes-validations", ()):
        cel_self = _cel_value(schema, value)
        result = _evaluate(rule["rule"], cel_self)
        if isinstance(result, celpy.celtypes.BoolType) and bool(result):
            continue
        message = rule.get("message", rule["rule"])
        if "messageExpression" in rule:
            text = _evaluate(rule["messageExpression"], cel_self)
            if isinstance(text, str):
                message = str(text)
        out.append(Violation(path + rule.get("fieldPath", ""), message, rule["rule"]))
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                _cel(props[name], item, f"{path}.{name}", out)
            elif isinstance(extra, dict):
                _cel(extra, item, f"{path}[{name}]", out)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _cel(schema["items"], item, f"{path}[{i}]", out)


def _duplicates(schema: dict[str, Any], value: Any, path: str, out: list[Violation]) -> None:
    """The API server's check of list-type set (unique items) and map (unique keys)."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            sub = props.get(name, extra if isinstance(extra, dict) else None)
            if sub is not None:
                _duplicates(sub, item, f"{path}.{name}", out)
    elif isinstance(value, list) and "items" in schema:
        kind, keys = schema.get("x-kubernetes-list-type"), schema.get("x-kubernetes-list-map-keys")
        seen: set[str] = set()
        for i, item in enumerate(value):
            if kind in ("set", "map"):
                key = item if kind == "set" else {k: item.get(k) for k in keys or ()}
                text = json.dumps(key, sort_keys=True)
                if text in seen:
                    out.append(Violation(f"{path}[{i}]", f"Duplicate value: {text}"))
                seen.add(text)
            _duplicates(schema["items"], item, f"{path}[{i}]", out)


def _unknown_fields(schema: dict[str, Any], value: Any, path: str, out: list[Violation]) -> None:
    """Strict field validation: fields the schema neither declares nor preserves."""
    if isinstance(value, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for name, item in value.items():
            where = f"{path}.{name}" if path else name
            if name in props:
                _unknown_fields(props[name], item, where, out)
            elif isinstance(extra, dict):
                _unknown_fields(extra, item, where, out)
            elif not preserve:
                out.append(Violation(where, f'strict decoding error: unknown field "{where}"'))
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _unknown_fields(schema["items"], item, f"{path}[{i}]", out)


def _name(manifest: dict[str, Any]) -> list[Violation]:
    """The API server's own check of every object's name (a DNS-1123 subdomain)."""
    name = (manifest.get("metadata") or {}).get("name", "")
    if len(name) <= 253 and re.fullmatch(_DNS1123_SUBDOMAIN, name):
        return []
    return [Violation(".metadata.name", f"{name!r}: a lowercase RFC 1123 subdomain")]


def validate(manifest: dict[str, Any], *, strict: bool = True) -> list[Violation]:
    """What the API server refuses in ``manifest`` (sent with fieldValidation=Strict unless
    ``strict`` is false); an empty list when it would accept it."""
    schema = schema_of(manifest["kind"])
    if strict:
        unknown: list[Violation] = []
        body = {k: v for k, v in manifest.items() if k != "metadata"}  # ObjectMeta is known
        _unknown_fields(schema, body, "", unknown)
        if unknown:
            return unknown  # a 400 before any validation
    obj = apply_defaults(schema, copy.deepcopy(manifest))
    errors = _name(manifest) + [
        Violation("." + ".".join(str(p) for p in e.absolute_path), e.message)
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    if not errors:
        _duplicates(schema, obj, "", errors)
    if errors:
        return errors  # CEL runs only on structurally valid objects (the server runs more)
    out: list[Violation] = []
    _cel(schema, obj, "", out)
    return out
