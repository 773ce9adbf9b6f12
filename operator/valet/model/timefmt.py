"""Epoch seconds inside valet; RFC 3339 strings on the Kubernetes wire."""

from __future__ import annotations

import datetime as dt
from typing import Any


def to_rfc3339(ts: float) -> str:
    stamp = dt.datetime.fromtimestamp(ts, tz=dt.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def from_rfc3339(value: Any, default: float = 0.0) -> float:
    """Parse a Kubernetes timestamp (or a bare number) into epoch seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, str) or not value:
        return default
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default
