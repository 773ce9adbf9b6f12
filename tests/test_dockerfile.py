"""The Dockerfile's structure (no Docker engine here to build it): pinned base, multi-stage,
non-root numeric user, no build tools in the final stage, an entrypoint that exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parents[1]
TEXT = (ROOT / "Dockerfile").read_text()
LINES = [ln.strip() for ln in TEXT.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]


def _stages() -> list[list[str]]:
    stages: list[list[str]] = []
    for line in LINES:
        if line.startswith("FROM "):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return stages


def test_base_image_is_pinned_and_never_latest() -> None:
    base = re.search(r"ARG PYTHON_IMAGE=(\S+)", TEXT)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+", base.group(1)), base.group(1)
    assert ":latest" not in TEXT


def test_multi_stage_final_stage_is_slim_and_non_root() -> None:
    stages = _stages()
    assert len(stages) >= 2
    final = stages[-1]
    assert not any(ln.startswith("RUN") for ln in final), "no build steps in the final stage"
    assert not any("gcc" in ln or "build-essential" in ln for ln in final)
    user = [ln for ln in final if ln.startswith("USER ")]
    assert user and re.fullmatch(r"USER [1-9]\d*(:[1-9]\d*)?", user[-1]), user
    assert any(ln.startswith("LABEL org.opencontainers.image.") for ln in final)


def test_dependencies_install_from_the_projects_pinned_constraints() -> None:
    assert "pip install -c constraints.txt ." in TEXT
    assert "PIP_NO_CACHE_DIR=1" in TEXT


def test_entrypoint_names_the_console_script_the_package_defines() -> None:
    entry = re.search(r'ENTRYPOINT \["([^"]+)"\]', TEXT)
    assert entry is not None
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry.group(1) in scripts
    module, _, func = scripts[entry.group(1)].partition(":")
    assert module == "valet.cli" and func == "main"
    cmd = re.search(r'CMD \["([^"]+)"\]', TEXT)
    from valet.cli import build_parser

    assert cmd is not None
    build_parser().parse_args([cmd.group(1)])  # a subcommand the CLI knows
