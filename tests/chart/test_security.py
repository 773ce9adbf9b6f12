"""Every pod the chart runs is locked down: non-root, read-only root, no capabilities,
RuntimeDefault seccomp, no host namespaces, not privileged."""

from __future__ import annotations

import pytest

from tests.chart.render import ROOT, VARIANTS, pod_templates, render


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_pod_template_is_locked_down(variant: str) -> None:
    templates = pod_templates(render(VARIANTS[variant]))
    assert templates
    for name, template in templates.items():
        spec = template["spec"]
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert spec.get(host, False) is False, f"{name}: {host}"
        assert not any("hostPath" in v for v in spec.get("volumes") or ()), name
        for container in spec["containers"] + (spec.get("initContainers") or []):
            ctx = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert ctx["runAsNonRoot"] is True, where
            assert ctx["readOnlyRootFilesystem"] is True, where
            assert ctx["allowPrivilegeEscalation"] is False, where
            assert ctx.get("privileged", False) is False, where
            assert ctx["capabilities"] == {"drop": ["ALL"]}, where
            assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}, where
            assert container["resources"]["requests"], where
            assert container["livenessProbe"] and container["readinessProbe"], where


def test_the_image_is_pinned_to_the_chart_version_or_a_digest() -> None:
    images = {c["image"] for t in pod_templates(render()).values() for c in t["spec"]["containers"]}
    assert images == {"ghcr.io/valet-dev/valet:0.1.0"}
    digest = "sha256:" + "ab" * 32
    pinned = pod_templates(render({"image": {"digest": digest}}))
    assert {c["image"] for t in pinned.values() for c in t["spec"]["containers"]} == {
        f"ghcr.io/valet-dev/valet@{digest}"
    }


def test_the_chart_runs_as_the_images_user() -> None:
    user = next(
        line.split()[1]
        for line in (ROOT / "Dockerfile").read_text().splitlines()
        if line.startswith("USER ")
    )
    (template,) = (t for n, t in pod_templates(render()).items() if n.startswith("Deployment"))
    ctx = template["spec"]["securityContext"]
    assert user == f"{ctx['runAsUser']}:{ctx['runAsGroup']}"
