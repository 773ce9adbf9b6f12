"""The documentation in docs/ stays true and self-contained: the fault table is generated
from the code, every relative link (and its #anchor) resolves inside the repository,
nothing points at files outside it, and the code's "DESIGN §N" citations name sections
docs/design.md has."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.docs import FAULTS_MD, ROOT, anchors, render_faults
from valet.model.faults import FAULT_TABLE

DOCS = ROOT / "docs"
MARKDOWN = sorted(
    [ROOT / "README.md", ROOT / "charts" / "valet" / "README.md", ROOT / "e2e" / "README.md"]
)
MARKDOWN += sorted(DOCS.glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")
# Build inputs beside the checkout (the bundled envtest archive), not documentation.
MAY_POINT_OUTSIDE = {"Makefile", ".ci/run"}


def test_faults_md_is_generated_from_the_fault_table() -> None:
    assert FAULTS_MD.read_text() == render_faults(), (
        "docs/faults.md is stale: regenerate it with `.venv/bin/python -m tests.docs`"
    )
    for rule in FAULT_TABLE:
        assert f"`{rule.reason}`" in FAULTS_MD.read_text()


def test_the_docs_are_there_and_the_readme_links_them() -> None:
    readme = (ROOT / "README.md").read_text()
    for name in ("design.md", "faults.md", "operations.md", "runbook.md", "simulator.md"):
        assert (DOCS / name).is_file(), name
        assert f"](docs/{name}" in readme, f"README.md does not link docs/{name}"


def _links() -> list[tuple[str, str]]:
    found = []
    for path in MARKDOWN:
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # code is not links
        for target in LINK.findall(text):
            found.append((str(path.relative_to(ROOT)), target))
    return found


LINKS = [(source, target) for source, target in _links() if not re.match(r"\w+:", target)]


@pytest.mark.parametrize(("source", "target"), LINKS, ids=[f"{s}->{t}" for s, t in LINKS])
def test_relative_links_resolve_inside_the_repository(source: str, target: str) -> None:
    file, _, anchor = target.partition("#")
    resolved = ((ROOT / source).parent / file).resolve() if file else ROOT / source
    assert resolved.is_relative_to(ROOT), f"{source} links outside the repository: {target}"
    assert resolved.exists(), f"{source} links to a missing {target}"
    if anchor and resolved.suffix == ".md":
        assert anchor in anchors(resolved.read_text()), f"{source}: no #{anchor} in {file}"


def _repository_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode != 0:  # not a git checkout: everything but the usual build output
        skip = {".git", ".venv", ".cache", ".mypy_cache", ".pytest_cache", ".ruff_cache"}
        return [
            p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)
        ]
    return [ROOT / line for line in listed.stdout.splitlines() if (ROOT / line).is_file()]


def test_nothing_points_at_files_outside_the_repository() -> None:
    offenders = []
    for path in _repository_files():
        name = str(path.relative_to(ROOT))
        if name in MAY_POINT_OUTSIDE or path.suffix in (".png", ".gz", ".xz"):
            continue
        try:
            text = path.read_text()
        except (UnicodeDecodeError, OSError):
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if "../shared" in line and name != "tests/test_docs.py":
                offenders.append(f"{name}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_design_citations_in_the_code_name_sections_of_design_md() -> None:
    sections = {
        int(m.group(1))
        for m in re.finditer(r"^## (\d+)\. ", (DOCS / "design.md").read_text(), re.M)
    }
    cited = {
        (str(path.relative_to(ROOT)), int(n))
        for path in (ROOT / "operator").rglob("*.py")
        for n in re.findall(r"DESIGN §(\d+)", path.read_text())
    }
    assert cited, "no DESIGN § citations found: update this test"
    missing = sorted((path, n) for path, n in cited if n not in sections)
    assert not missing, f"cited sections missing from docs/design.md: {missing}"
