"""RBAC is what we claim: each component's rules equal this table, and every rule sits
under a commented ``# Framework:`` or ``# Application:`` heading in its template.

Why each verb is there is in the templates' comments and the chart README; that the
code needs no more than this is shown by tests/chart/test_rbac_calls.py, which records
every API call the real operator and agent make against the emulator.
"""

from __future__ import annotations

import re
from typing import Any

from tests.chart.render import CHART, VARIANTS, of_kind, render

Rule = tuple[str, str, str, str]  # (apiGroup, resource, verb, resourceName or "")

OPERATOR: set[Rule] = {
    # Framework
    ("apiextensions.k8s.io", "customresourcedefinitions", "list", ""),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch", ""),
    ("", "events", "create", ""),
    ("", "events", "patch", ""),
    # Application
    ("", "nodes", "get", ""),
    ("", "nodes", "list", ""),
    ("", "nodes", "watch", ""),
    ("", "nodes", "patch", ""),
    ("coordination.k8s.io", "leases", "list", ""),
    ("coordination.k8s.io", "leases", "watch", ""),
    ("", "pods", "list", ""),
    ("", "pods", "watch", ""),
    ("", "pods", "create", ""),
    ("", "pods", "delete", ""),
    ("", "pods/binding", "create", ""),
    ("", "pods/eviction", "create", ""),
    ("", "services", "get", ""),
    ("", "services", "create", ""),
    ("", "services", "delete", ""),
    ("valet.dev", "trainingjobs", "list", ""),
    ("valet.dev", "trainingjobs", "watch", ""),
    ("valet.dev", "spotpools", "list", ""),
    ("valet.dev", "spotpools", "watch", ""),
    ("valet.dev", "trainingjobs/status", "patch", ""),
    ("valet.dev", "spotpools/status", "patch", ""),
}
LEADER_ELECTION: set[Rule] = {
    ("coordination.k8s.io", "leases", "create", ""),
    ("coordination.k8s.io", "leases", "get", "valet-operator"),
    ("coordination.k8s.io", "leases", "update", "valet-operator"),
}
AGENT: set[Rule] = {
    ("", "nodes", "get", ""),
    ("", "nodes", "patch", ""),
    ("", "nodes/status", "patch", ""),
}
SIMULATED_AGENT: set[Rule] = {("", "nodes", "watch", "")}  # its own Node, for injected faults


def flatten(role: dict[str, Any]) -> set[Rule]:
    return {
        (group, resource, verb, name)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
        for name in rule.get("resourceNames") or [""]
    }


def rules_by_subject(manifests: list[dict[str, Any]]) -> dict[str, set[Rule]]:
    """What each ServiceAccount may do, through every binding the chart ships."""
    roles = {(m["kind"], m["metadata"]["name"]): flatten(m) for m in manifests if "rules" in m}
    granted: dict[str, set[Rule]] = {}
    for binding in manifests:
        if binding["kind"] not in ("ClusterRoleBinding", "RoleBinding"):
            continue
        rules = roles[(binding["roleRef"]["kind"], binding["roleRef"]["name"])]
        for subject in binding["subjects"]:
            granted.setdefault(subject["name"], set()).update(rules)
    return granted


def test_rbac_equals_the_table() -> None:
    assert rules_by_subject(render()) == {"valet-operator": OPERATOR, "valet-agent": AGENT}


def test_ha_adds_only_the_leader_election_lease() -> None:
    granted = rules_by_subject(render(VARIANTS["ha-operator"]))
    assert granted == {"valet-operator": OPERATOR | LEADER_ELECTION, "valet-agent": AGENT}
    (role,) = of_kind(render(VARIANTS["ha-operator"]), "Role")
    assert role["metadata"]["namespace"] == "valet-system"  # not a ClusterRole: one namespace


def test_the_simulated_agent_adds_only_a_watch_of_nodes() -> None:
    granted = rules_by_subject(render(VARIANTS["simulated-agent"]))
    assert granted == {"valet-operator": OPERATOR, "valet-agent": AGENT | SIMULATED_AGENT}


def test_no_wildcards_and_no_secrets() -> None:
    for subject, rules in rules_by_subject(render(VARIANTS["ha-operator"])).items():
        for group, resource, verb, _ in rules:
            assert "*" not in (group, resource, verb), subject
            assert resource not in ("secrets", "configmaps"), subject


def test_every_rule_is_under_a_framework_or_application_comment() -> None:
    for path in (CHART / "templates").rglob("rbac.yaml"):
        heading = None
        for line in path.read_text().splitlines():
            if m := re.match(r"\s*# (Framework|Application):", line):
                heading = m.group(1)
            elif re.match(r"\s*- apiGroups:", line):
                assert heading, f"{path.name}: a rule before any # Framework:/# Application: line"
            elif re.match(r"^(kind|---)", line):
                heading = None
