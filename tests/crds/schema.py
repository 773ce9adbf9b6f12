"""Validate manifests against our CRDs as the API server would: default, check, then CEL.

Structural validation uses jsonschema on the CRD's openAPIV3Schema; defaults are
applied as the API server applies them; every ``x-kubernetes-validations`` rule is
evaluated with cel-python, with ``self`` bound to the value at that schema node.
"""

from __future__ import annotations

import copy
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Violation:
    path: str
    message: str  # the jsonschema error or the CEL rule's message
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
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(schema["items"], v) for v in value]
    return value


def _cel(schema: dict[str, Any], value: Any, path: str, out: list[Violation]) -> None:
    for rule in schema.get("x-kubernetes-validations", ()):
        program = _ENV.program(_ENV.compile(rule["rule"]))
        result = program.evaluate({"self": celpy.json_to_cel(value)})
        if not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            out.append(
                Violation(
                    path + rule.get("fieldPath", ""),
                    rule.get("message", rule["rule"]),
                    rule["rule"],
                )
            )
    if isinstance(value, dict):
        for name, prop in schema.get("properties", {}).items():
            if name in value:
                _cel(prop, value[name], f"{path}.{name}", out)
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            _cel(schema["items"], item, f"{path}[{i}]", out)


def validate(manifest: dict[str, Any]) -> list[Violation]:
    schema = schema_of(manifest["kind"])
    obj = apply_defaults(schema, copy.deepcopy(manifest))
    errors = [
        Violation("." + ".".join(str(p) for p in e.absolute_path), e.message)
        for e in jsonschema.Draft7Validator(schema).iter_errors(obj)
    ]
    if errors:
        return errors  # like the API server: CEL runs only on structurally valid objects
    out: list[Violation] = []
    _cel(schema, obj, "", out)
    return out
