"""values.yaml is documented key by key, the chart README lists every value, and bad
values files are rejected with a message naming the offending key."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.render import CHART, render_files

BAD = sorted((Path(__file__).parent / "bad-values").glob("*.yaml"))


def leaf_keys(values: dict[str, Any], prefix: str = "") -> list[str]:
    keys = []
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            keys.extend(leaf_keys(value, f"{path}."))
        else:
            keys.append(path)
    return keys


def documented_keys() -> set[str]:
    """Dotted paths of keys in values.yaml whose line is preceded by a ``# --`` comment."""
    documented, stack = set(), []  # stack of (indent, key)
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^( *)([A-Za-z][\w.-]*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m.group(2)))
        j = i - 1
        while (
            j >= 0 and lines[j].strip().startswith("#") and not lines[j].strip().startswith("# --")
        ):
            j -= 1
        if j >= 0 and lines[j].strip().startswith("# --"):
            documented.add(".".join(k for _, k in stack))
    return documented


def test_every_value_has_a_doc_comment() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    undocumented = [k for k in leaf_keys(values) if not _covered(k, documented_keys())]
    assert not undocumented, f"values without a '# --' comment: {undocumented}"


def _covered(key: str, documented: set[str]) -> bool:
    """A leaf is documented itself, or (for free-form maps and lists) by its parent."""
    parts = key.split(".")
    return any(".".join(parts[:n]) in documented for n in range(len(parts), 0, -1))


def test_the_chart_readme_lists_every_value() -> None:
    readme = (CHART / "README.md").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    missing = [k for k in leaf_keys(values) if not _covered(k, listed)]
    assert not missing, f"values missing from charts/valet/README.md: {missing}"
    assert listed <= _prefixes(leaf_keys(values)), "README lists unknown values"


def _prefixes(keys: list[str]) -> set[str]:
    return {".".join(k.split(".")[:n]) for k in keys for n in range(1, len(k.split(".")) + 1)}


def test_the_schema_accepts_the_defaults() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(chart.values)


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_values_are_rejected_with_a_clear_message(path: Path) -> None:
    expect = re.match(r"# expect: (.+)", path.read_text()).group(1)  # type: ignore[union-attr]
    with pytest.raises(helm.HelmError) as err:
        render_files(yaml.safe_load(path.read_text()))
    assert expect in str(err.value), str(err.value)
