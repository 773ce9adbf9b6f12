"""The agent's ValidatingAdmissionPolicy, evaluated with a CEL interpreter on the
admission requests the API server would send: the agent may update only its own Node,
and only that Node's annotations and status.

The requests are shaped as the real server's are: an empty field is left out, not set to
``""`` or ``{}`` (no ``subResource`` on a patch of the Node itself, no ``extra`` on a token
without claims), so an expression that reads one without ``has()`` fails here as it does
there. tests/chart/test_real_api.py sends the same cases to a real API server."""

from __future__ import annotations

import copy
import functools
from typing import Any

import celpy
import pytest

from tests.chart.render import of_kind, render

AGENT = "system:serviceaccount:valet-system:valet-agent"
OPERATOR = "system:serviceaccount:valet-system:valet-operator"
NODE_CLAIM = "authentication.kubernetes.io/node-name"
_ENV = celpy.Environment()


@functools.cache
def _policy() -> dict[str, Any]:
    manifests = render()
    (policy,) = of_kind(manifests, "ValidatingAdmissionPolicy")
    (binding,) = of_kind(manifests, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    return policy["spec"]  # type: ignore[no-any-return]


class _RuntimeError(Exception):
    """An expression failed at run time; with failurePolicy Fail the server denies with it."""


def _eval(expr: str, activation: dict[str, Any]) -> Any:
    try:
        result = _ENV.program(_ENV.compile(expr)).evaluate(activation)
    except celpy.CELEvalError as err:
        raise _RuntimeError(f"expression {expr!r} resulted in error: {err}") from err
    if isinstance(result, celpy.CELEvalError):
        raise _RuntimeError(f"expression {expr!r} resulted in error: {result}")
    return result


def admit(user: str, token_node: str | None, target: str, change: str) -> str | None:
    """None if admitted, else the message the API server would return."""
    try:
        return _admit(user, token_node, target, change)
    except _RuntimeError as err:
        return str(err)


def _admit(user: str, token_node: str | None, target: str, change: str) -> str | None:
    old = {
        "metadata": {"name": target, "labels": {"valet.dev/state": "spare"}, "annotations": {}},
        "spec": {"taints": []},
        "status": {"conditions": []},
    }
    new = copy.deepcopy(old)
    subresource = None
    if change == "annotation":
        new["metadata"]["annotations"]["valet.dev/gpu-health"] = "{}"
    elif change == "condition":
        new["status"]["conditions"].append({"type": "GPUHealthy", "status": "False"})
        subresource = "status"
    elif change == "label":
        new["metadata"]["labels"]["valet.dev/state"] = "active"
    elif change == "label via status":  # nodes/status keeps metadata changes (not spec ones)
        new["metadata"]["labels"]["valet.dev/state"] = "active"
        subresource = "status"
    elif change == "cordon":
        new["spec"]["unschedulable"] = True
    user_info: dict[str, Any] = {"username": user}
    if token_node:
        user_info["extra"] = {NODE_CLAIM: [token_node]}
    request: dict[str, Any] = {"userInfo": user_info, "name": target, "operation": "UPDATE"}
    if subresource:
        request["subResource"] = subresource
    spec = _policy()
    activation: dict[str, Any] = {
        "request": celpy.json_to_cel(request),
        "object": celpy.json_to_cel(new),
        "oldObject": celpy.json_to_cel(old),
    }
    if not all(bool(_eval(c["expression"], activation)) for c in spec["matchConditions"]):
        return None  # the policy does not apply to this user
    activation["variables"] = celpy.json_to_cel(
        {v["name"]: _eval(v["expression"], activation) for v in spec["variables"]}
    )
    for rule in spec["validations"]:
        if not bool(_eval(rule["expression"], activation)):
            if "messageExpression" in rule:
                return str(_eval(rule["messageExpression"], activation))
            return str(rule["message"])
    return None


# (user, the node in its token, the Node it updates, the change, what the denial says or None).
# The changes are those of ``admit``; tests/chart/test_real_api.py makes each on a real server.
CASES = [
    pytest.param(AGENT, "gpu-1", "gpu-1", "annotation", None, id="own node annotation"),
    pytest.param(AGENT, "gpu-1", "gpu-1", "condition", None, id="own node condition"),
    pytest.param(
        AGENT,
        "gpu-1",
        "gpu-2",
        "annotation",
        "only its own Node gpu-1, not gpu-2",
        id="another node",
    ),
    pytest.param(
        AGENT,
        "gpu-1",
        "gpu-2",
        "condition",
        "only its own Node gpu-1, not gpu-2",
        id="another node's status",
    ),
    pytest.param(
        AGENT, None, "gpu-1", "annotation", "its token names no node", id="token without node"
    ),
    pytest.param(AGENT, "gpu-1", "gpu-1", "label", "not its labels or spec", id="own labels"),
    pytest.param(AGENT, "gpu-1", "gpu-1", "cordon", "not its labels or spec", id="cordon"),
    pytest.param(
        AGENT,
        "gpu-1",
        "gpu-1",
        "label via status",
        "not its labels or spec",
        id="own labels through nodes/status",
    ),
    pytest.param(
        OPERATOR,
        None,
        "gpu-2",
        "label",
        None,
        id="the operator is not restricted",
    ),
]


@pytest.mark.parametrize(("user", "token_node", "target", "change", "denied"), CASES)
def test_agent_may_touch_only_its_own_node(
    user: str, token_node: str | None, target: str, change: str, denied: str | None
) -> None:
    message = admit(user, token_node, target, change)
    if denied is None:
        assert message is None
    else:
        assert message is not None and denied in message
