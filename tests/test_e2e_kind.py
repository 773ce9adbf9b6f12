"""e2e/kind.sh: the cluster it creates, and a fast, clear failure where Docker or kind
is missing (as on CI and these machines). The run itself needs Docker; see e2e/README.md."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_the_kind_cluster_has_a_control_plane_and_at_least_three_gpu_workers() -> None:
    config = yaml.safe_load((ROOT / "e2e" / "kind-config.yaml").read_text())
    roles = [n["role"] for n in config["nodes"]]
    assert roles.count("control-plane") == 1 and roles.count("worker") >= 3
    workers = [n for n in config["nodes"] if n["role"] == "worker"]
    assert all(w["labels"]["valet.dev/kind-gpu"] == "true" for w in workers)


def test_kind_values_select_the_simulated_agent_and_the_local_image() -> None:
    values = yaml.safe_load((ROOT / "e2e" / "kind-values.yaml").read_text())
    assert values["agent"]["backend"] == "simulated"
    assert values["image"]["pullPolicy"] == "Never"


def test_without_docker_or_kind_the_script_stops_at_once_and_says_why(tmp_path: Path) -> None:
    # A PATH with bash and coreutils only: no docker, kind, kubectl or helm.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "env"):
        found = shutil.which(tool)
        assert found is not None
        (bin_dir / tool).symlink_to(found)
    result = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "e2e" / "kind.sh")],
        env={**os.environ, "PATH": str(bin_dir)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "missing docker kind kubectl helm" in result.stderr
    assert "make test" in result.stderr
