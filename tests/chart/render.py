"""Render charts/valet with the real Helm engine (helm-python-sdk: Helm's Go SDK over ctypes).

Variants are the values files a platform team would actually write; ``render`` returns
the manifests as parsed objects, in template order.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "valet"
# Manifests are validated against the oldest Kubernetes the chart supports (Chart.yaml's
# kubeVersion; ValidatingAdmissionPolicy v1 is GA there) and the newest schema we have.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
RELEASE, NAMESPACE = "valet", "valet-system"

VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "ha-operator": {"operator": {"replicas": 3}},
    "simulated-agent": {
        "agent": {
            "backend": "simulated",
            "gpus": 8,
            # Helm merges maps: null drops the default GPU-node selector.
            "nodeSelector": {"nvidia.com/gpu.present": None, "valet.dev/simulated": "true"},
        }
    },
    "monitoring-off": {
        "dashboard": {"enabled": False},
        "networkPolicy": {"enabled": False},
        "agent": {"admissionPolicy": {"enabled": False}},
    },
    "monitoring-on": {
        "metrics": {"serviceMonitor": {"enabled": True}, "podMonitor": {"enabled": True}},
        "alerts": {"prometheusRule": {"enabled": True}, "grafana": {"enabled": True}},
    },
    "one-namespace-dcgm": {
        "operator": {"watchNamespace": "research", "detectors": {"conditions": ["GpuXidError"]}},
        "agent": {"backend": "dcgm", "remediation": {"rebootCommand": "systemctl reboot"}},
        "priorityClasses": {"create": False},
        "crds": {"install": False},
    },
}


@functools.cache
def _chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render_files(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> dict[str, str]:
    return _chart().render(values or {}, name=release, namespace=namespace, is_install=True)


def render(
    values: dict[str, Any] | None = None, *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    manifests = []
    for name, text in sorted(render_files(values, release=release, namespace=namespace).items()):
        if name.endswith("NOTES.txt"):
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return manifests


def of_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def pod_templates(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Every pod spec the chart ships, by ``Kind/name``."""
    return {
        f"{m['kind']}/{m['metadata']['name']}": m["spec"]["template"]
        for m in manifests
        if m["kind"] in ("Deployment", "DaemonSet", "StatefulSet", "Job")
    }


def prometheus_rules(values: dict[str, Any] | None = None) -> dict[str, Any]:
    """The alert rules the chart ships, in Prometheus's rule-file format (the ``spec`` of its
    PrometheusRule): what ``promtool`` and a plain Prometheus read. ``values`` are merged
    over the monitoring-on variant."""
    merged = {**VARIANTS["monitoring-on"], **(values or {})}
    merged["alerts"] = {**VARIANTS["monitoring-on"]["alerts"], **(values or {}).get("alerts", {})}
    (rule,) = of_kind(render(merged), "PrometheusRule")
    return dict(rule["spec"])
