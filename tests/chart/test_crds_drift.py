"""The chart ships exactly the CRDs in crds/, the single source of truth."""

from __future__ import annotations

from typing import Any

import yaml

from tests.chart.render import CHART, ROOT, of_kind, render


def test_the_charts_crd_files_are_copies_of_crds() -> None:
    source = {p.name: p.read_text() for p in (ROOT / "crds").glob("*.yaml")}
    shipped = {p.name: p.read_text() for p in (CHART / "files" / "crds").glob("*.yaml")}
    assert shipped == source, "charts/valet/files/crds drifted from crds/: run make chart-crds"


def _without_helm_metadata(crd: dict[str, Any]) -> dict[str, Any]:
    metadata = {k: v for k, v in crd["metadata"].items() if k not in ("labels", "annotations")}
    return {**crd, "metadata": metadata}


def test_the_rendered_crds_equal_crds_apart_from_helm_labels() -> None:
    source = {
        crd["metadata"]["name"]: crd
        for crd in (yaml.safe_load(p.read_text()) for p in (ROOT / "crds").glob("*.yaml"))
    }
    rendered = {
        crd["metadata"]["name"]: _without_helm_metadata(crd)
        for crd in of_kind(render(), "CustomResourceDefinition")
    }
    assert rendered == source
