"""The chart renders with the real Helm engine, lints clean, and every manifest is valid
Kubernetes for the version we state."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from tests.chart.render import (
    CHART,
    KUBE_VERSIONS,
    VARIANTS,
    of_kind,
    pod_templates,
    render,
    render_files,
)
from valet.cli import build_parser

# Kinds from other projects' CRDs; kubernetes-validate has no schema for them, so they are
# checked against the fields their operators require.
FOREIGN: dict[str, tuple[str, ...]] = {
    "ServiceMonitor": ("selector", "endpoints"),
    "PodMonitor": ("selector", "podMetricsEndpoints"),
    "PrometheusRule": ("groups",),
}


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_against_the_kubernetes_schema(
    variant: str, kube_version: str
) -> None:
    manifests = render(VARIANTS[variant])
    assert manifests
    for manifest in manifests:
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] in FOREIGN:
            assert manifest["apiVersion"] == "monitoring.coreos.com/v1", name
            assert all(manifest["spec"].get(key) for key in FOREIGN[manifest["kind"]]), name
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as err:
            path = ".".join(str(p) for p in err.path)
            pytest.fail(f"{variant}: {name} is invalid in {kube_version} at {path}: {err.message}")


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_is_clean(variant: str, kube_version: str) -> None:
    report = helm.lint(CHART, VARIANTS[variant], strict=True, kube_version=f"v{kube_version}")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def _kinds(manifests: list[dict[str, Any]]) -> list[str]:
    return sorted(f"{m['kind']}/{m['metadata']['name']}" for m in manifests)


def test_default_install_ships_operator_agent_crds_and_dashboard_but_no_foreign_crs() -> None:
    assert _kinds(render()) == [
        "ClusterRole/valet-agent",
        "ClusterRole/valet-operator",
        "ClusterRoleBinding/valet-agent",
        "ClusterRoleBinding/valet-operator",
        "ConfigMap/valet-dashboard",
        "CustomResourceDefinition/spotpools.valet.dev",
        "CustomResourceDefinition/trainingjobs.valet.dev",
        "DaemonSet/valet-agent",
        "Deployment/valet-operator",
        "NetworkPolicy/valet-agent",
        "NetworkPolicy/valet-operator",
        "PodDisruptionBudget/valet-operator",
        "PriorityClass/valet-spot",
        "PriorityClass/valet-training",
        "Service/valet-agent-metrics",
        "Service/valet-operator-metrics",
        "ServiceAccount/valet-agent",
        "ServiceAccount/valet-operator",
        "ValidatingAdmissionPolicy/valet-agent-own-node",
        "ValidatingAdmissionPolicyBinding/valet-agent-own-node",
    ]


def _args(manifests: list[dict[str, Any]], workload: str) -> list[str]:
    container = pod_templates(manifests)[workload]["spec"]["containers"][0]
    return list(container["args"])


def test_ha_operator_runs_replicas_with_lease_leader_election() -> None:
    manifests = render(VARIANTS["ha-operator"])
    deployment = of_kind(manifests, "Deployment")[0]
    assert deployment["spec"]["replicas"] == 3
    assert "--leader-elect" in _args(manifests, "Deployment/valet-operator")
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    assert (
        anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"]
        == "kubernetes.io/hostname"
    )
    assert of_kind(manifests, "Role")[0]["metadata"]["namespace"] == "valet-system"
    assert "--leader-elect" not in _args(render(), "Deployment/valet-operator")
    assert not of_kind(render(), "Role")


def test_operator_args_follow_the_values() -> None:
    args = _args(render(VARIANTS["one-namespace-dcgm"]), "Deployment/valet-operator")
    assert "--namespace=research" in args
    assert "--detector-condition=GpuXidError" in args
    assert not any(a.startswith("--worker-priority-class") for a in args)
    default = _args(render(), "Deployment/valet-operator")
    assert "--worker-priority-class=valet-training" in default
    assert "--spot-priority-class=valet-spot" in default


def test_agent_gets_gpus_the_nvidia_way_and_its_node_from_the_downward_api() -> None:
    spec = pod_templates(render())["DaemonSet/valet-agent"]["spec"]
    container = spec["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert env["NVIDIA_VISIBLE_DEVICES"]["value"] == "all"
    assert spec["runtimeClassName"] == "nvidia"
    assert "--backend=nvml" in container["args"]
    assert not any(a.startswith("--dcgm-url") for a in container["args"])
    dcgm = pod_templates(render(VARIANTS["one-namespace-dcgm"]))["DaemonSet/valet-agent"]
    assert "--dcgm-url=http://$(HOST_IP):9400/metrics" in dcgm["spec"]["containers"][0]["args"]
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "valet.dev/spare", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]


def test_simulated_agent_needs_no_gpu_runtime() -> None:
    spec = pod_templates(render(VARIANTS["simulated-agent"]))["DaemonSet/valet-agent"]["spec"]
    container = spec["containers"][0]
    assert "--backend=simulated" in container["args"] and "--gpus=8" in container["args"]
    assert "runtimeClassName" not in spec
    assert "NVIDIA_VISIBLE_DEVICES" not in {e["name"] for e in container["env"]}
    assert spec["nodeSelector"] == {"valet.dev/simulated": "true"}


def test_monitoring_resources_are_optional() -> None:
    off = {m["kind"] for m in render(VARIANTS["monitoring-off"])}
    assert not off & {"ConfigMap", "NetworkPolicy", "ValidatingAdmissionPolicy"}
    on = render(VARIANTS["monitoring-on"])
    assert {"ServiceMonitor", "PodMonitor", "PrometheusRule"} <= {m["kind"] for m in on}
    sidecar = {m["metadata"]["name"]: m["metadata"]["labels"] for m in of_kind(on, "ConfigMap")}
    assert sidecar["valet-grafana-alerts"]["grafana_alert"] == "1"
    assert sidecar["valet-dashboard"]["grafana_dashboard"] == "1"


def test_crds_are_kept_on_uninstall_and_skippable() -> None:
    for crd in of_kind(render(), "CustomResourceDefinition"):
        assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert not of_kind(render(VARIANTS["one-namespace-dcgm"]), "CustomResourceDefinition")


def test_network_policies_admit_only_the_metrics_port() -> None:
    for policy in of_kind(render(), "NetworkPolicy"):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
        assert rule["from"], "an empty from would admit everyone"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_command_line_the_chart_writes_is_one_valet_accepts(variant: str) -> None:
    parser = build_parser()
    for name, template in pod_templates(render(VARIANTS[variant])).items():
        args = template["spec"]["containers"][0]["args"]
        try:
            parsed = parser.parse_args(args)
        except SystemExit:
            pytest.fail(f"{variant}: valet rejects the args of {name}: {args}")
        assert (
            parsed.command == {"Deployment": "operator", "DaemonSet": "agent"}[name.split("/")[0]]
        )


def test_the_install_notes_say_what_runs_and_how_to_check_it() -> None:
    notes = render_files(VARIANTS["ha-operator"])["valet/templates/NOTES.txt"]
    assert "3 replica(s), Lease leader election" in notes
    assert "kubectl get tj,sp -A -w" in notes
    assert "Alerts are off" in notes
    assert (
        "Alerts are off" not in render_files(VARIANTS["monitoring-on"])["valet/templates/NOTES.txt"]
    )
