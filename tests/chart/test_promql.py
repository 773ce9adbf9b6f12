"""Every PromQL expression the chart ships (alerts and dashboard) refers only to metrics,
and label names, that valet.metrics defines."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tests.chart.promql import references
from tests.chart.render import CHART, VARIANTS, of_kind, render
from valet.metrics import AgentMetrics, OperatorMetrics

SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
}


def defined() -> dict[str, set[str]]:
    """Every series name valet exports, with its label names."""
    registry = CollectorRegistry()
    AgentMetrics("n", registry)
    OperatorMetrics(registry)
    series: dict[str, set[str]] = {}
    for collector in set(registry._collector_to_names):  # no public listing
        labels = set(getattr(collector, "_labelnames", ()))
        for family in collector.describe():
            names = [family.name + s for s in SUFFIXES.get(family.type, ("",))]
            for name in names:
                series[name] = labels | ({"le"} if name.endswith("_bucket") else set())
    return series


def expressions() -> list[tuple[str, str]]:
    """(where, expr) for every alert and dashboard query the chart renders."""
    manifests = render(VARIANTS["monitoring-on"])
    found = []
    (rule,) = of_kind(manifests, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for alert in group["rules"]:
            found.append((f"PrometheusRule {alert['alert']}", alert["expr"]))
    maps = {m["metadata"]["name"]: m for m in of_kind(manifests, "ConfigMap")}
    grafana = yaml.safe_load(maps["valet-grafana-alerts"]["data"]["valet-alerts.yaml"])
    for group in grafana["groups"]:
        for alert in group["rules"]:
            for query in alert["data"]:
                if "expr" in query["model"]:
                    found.append((f"Grafana rule {alert['title']}", query["model"]["expr"]))
    dashboard = json.loads(maps["valet-dashboard"]["data"]["valet-fleet.json"])
    for panel in dashboard["panels"]:
        for target in panel.get("targets") or ():
            found.append((f"dashboard panel {panel['title']!r}", target["expr"]))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            found.append((f"dashboard variable {variable['name']}", variable["definition"]))
    return found


SERIES = defined()
EXPRESSIONS = expressions()


def test_the_chart_ships_the_alerts_the_issue_asks_for() -> None:
    alerts = {where.split()[-1] for where, _ in EXPRESSIONS if where.startswith("PrometheusRule")}
    assert alerts >= {
        "ValetGPUUnhealthy",
        "ValetXIDBurst",
        "ValetNodeRetired",
        "ValetBufferExhausted",
        "ValetTrainingJobDegraded",
        "ValetHealLatencyHigh",
        "ValetPreemptionStorm",
        "ValetAgentSilent",
    }
    grafana = {where.split()[-1] for where, _ in EXPRESSIONS if where.startswith("Grafana")}
    assert grafana == alerts


@pytest.mark.parametrize(("where", "expr"), EXPRESSIONS, ids=[w for w, _ in EXPRESSIONS])
def test_expression_uses_only_defined_metrics_and_labels(where: str, expr: str) -> None:
    refs = references(expr)
    assert refs.metrics, f"{where}: no metric in {expr!r}"
    assert not refs.unknown, f"{where}: unknown functions {refs.unknown}"
    undefined = refs.metrics - SERIES.keys()
    assert not undefined, f"{where}: {sorted(undefined)} not defined in valet.metrics"
    for metric, label in refs.matchers:
        assert label in SERIES[metric], f"{where}: {metric} has no label {label!r}"
    all_labels = set().union(*(SERIES[m] for m in refs.metrics))
    assert refs.grouping <= all_labels, f"{where}: grouping by {refs.grouping - all_labels}"


def test_the_parser_catches_an_undefined_metric_and_label() -> None:
    refs = references('sum by (pool) (rate(valet_nope_total{zone="a"}[5m])) > 1')
    assert refs.metrics == {"valet_nope_total"}
    assert refs.matchers == {("valet_nope_total", "zone")} and refs.grouping == {"pool"}
    assert "valet_nope_total" not in SERIES


def _dashboard() -> dict[str, Any]:
    return json.loads((CHART / "files" / "dashboards" / "valet-fleet.json").read_text())


def test_the_dashboard_covers_fleet_health_pool_healing_and_jobs() -> None:
    used: set[str] = set()
    for panel in _dashboard()["panels"]:
        for target in panel.get("targets") or ():
            used |= references(target["expr"]).metrics
    assert used >= {
        "valet_gpu_healthy",
        "valet_nodes",
        "valet_spares",
        "valet_spares_target",
        "valet_spot_gpus",
        "valet_preemptions_total",
        "valet_heal_latency_seconds_bucket",
        "valet_job_replicas",
    }
