"""The k8s layer's error tree; nothing above ``valet.k8s`` sees the client's own exceptions.

::

    ApiError                      any failed call; .status, .reason, .message, .retry_after
    ├── TransientError            worth retrying: 409 Conflict, 429, 5xx, timeouts, resets
    │   └── ConflictError         409 with reason Conflict (a stale write)
    └── PermanentError            retrying cannot help: 400, 401, 403, 404, 405, 422, ...
        ├── ForbiddenError        403 (RBAC, or admission: e.g. a missing PriorityClass)
        ├── NotFoundError         404 (the object or its namespace is gone)
        ├── AlreadyExistsError    409 with reason AlreadyExists (a create that already happened)
        └── InvalidError          422 (the API server rejected the object)

Idempotent actions treat ``NotFoundError`` on delete and ``AlreadyExistsError`` on create
as success; everything else permanent surfaces as an Event and a metric.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ):
        super().__init__(f"{method} {path}: {status} {reason}: {message}".strip())
        self.status, self.reason, self.message = status, reason, message
        self.method, self.path = method, path
        # Seconds the server asked us to wait (``Retry-After`` of a 429 or 5xx), if it did.
        self.retry_after = retry_after


class TransientError(ApiError):
    pass


class ConflictError(TransientError):
    pass


class PermanentError(ApiError):
    pass


class ForbiddenError(PermanentError):
    pass


class NotFoundError(PermanentError):
    pass


class AlreadyExistsError(PermanentError):
    pass


class InvalidError(PermanentError):
    pass


def from_response(
    status: int, data: bytes, method: str, path: str, retry_after: str | None = None
) -> ApiError:
    """The error for a non-2xx answer, from its status code and Kubernetes ``Status`` body.

    ``retry_after`` is the answer's ``Retry-After`` header: on a 429 (API Priority and
    Fairness rejecting the request) or a 5xx it becomes ``.retry_after``, the wait before the
    next attempt, as client-go's ``checkWait`` does."""
    reason, message = "", ""
    try:
        body: Any = json.loads(data or b"{}")
        if isinstance(body, dict):
            reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
    except ValueError:
        message = data[:200].decode(errors="replace")
    cls: type[ApiError]
    if status == 403:
        cls = ForbiddenError
    elif status == 404:
        cls = NotFoundError
    elif status == 409:
        cls = AlreadyExistsError if reason == "AlreadyExists" else ConflictError
    elif status == 422:
        cls = InvalidError
    elif status == 429 or status >= 500:
        cls = TransientError
    else:
        cls = PermanentError
    wait = parse_retry_after(retry_after) if status == 429 or status >= 500 else None
    return cls(status, reason or _REASONS.get(status, "Error"), message, method, path, wait)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds: delta-seconds (what the API server sends) or an HTTP-date;
    None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def from_transport(err: BaseException, method: str, path: str) -> TransientError:
    """A timeout, reset or refused connection: the request may not have reached the server."""
    return TransientError(0, type(err).__name__, str(err), method, path)


_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
