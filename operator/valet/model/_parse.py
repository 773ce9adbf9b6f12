"""Small typed readers over raw dicts that raise SpecError naming the field."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from valet.model.errors import SpecError

Raw = Mapping[str, Any]


def mapping(raw: Raw, key: str, path: str, *, required: bool = False) -> Raw:
    value = raw.get(key)
    if value is None:
        if required:
            raise SpecError(f"{path}.{key}", "is required")
        return {}
    if not isinstance(value, Mapping):
        raise SpecError(f"{path}.{key}", f"must be an object, not {type(value).__name__}")
    return value


def integer(
    raw: Raw,
    key: str,
    path: str,
    *,
    default: int | None = None,
    minimum: int | None = None,
    maximum: int | None = None,
) -> int:
    value = raw.get(key, default)
    field = f"{path}.{key}"
    if value is None:
        raise SpecError(field, "is required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(field, f"must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise SpecError(field, f"must be >= {minimum}, not {value}")
    if maximum is not None and value > maximum:
        raise SpecError(field, f"must be <= {maximum}, not {value}")
    return value


def optional_integer(raw: Raw, key: str, path: str, *, minimum: int | None = None) -> int | None:
    if raw.get(key) is None:
        return None
    return integer(raw, key, path, minimum=minimum)


def string(raw: Raw, key: str, path: str, *, default: str | None = None) -> str:
    value = raw.get(key, default)
    field = f"{path}.{key}"
    if value is None:
        raise SpecError(field, "is required")
    if not isinstance(value, str) or not value:
        raise SpecError(field, f"must be a non-empty string, not {value!r}")
    return value


def boolean(raw: Raw, key: str, path: str, *, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise SpecError(f"{path}.{key}", f"must be true or false, not {value!r}")
    return value


def string_map(raw: Raw, key: str, path: str) -> dict[str, str]:
    value = mapping(raw, key, path)
    for k, v in value.items():
        if not isinstance(v, str):
            raise SpecError(f"{path}.{key}.{k}", f"must be a string, not {v!r}")
    return dict(value)


def string_list(raw: Raw, key: str, path: str) -> tuple[str, ...]:
    value = raw.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise SpecError(f"{path}.{key}", "must be a list of strings")
    return tuple(value)
