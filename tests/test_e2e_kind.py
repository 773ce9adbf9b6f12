"""e2e/kind.sh: the cluster it creates, and a fast, clear failure where Docker or kind
is missing (as on CI and these machines). The run itself needs Docker; see e2e/README.md."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.crds.schema import validate

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


def test_the_kind_smoke_resources_are_valid_and_select_the_kind_workers() -> None:
    docs = list(yaml.safe_load_all((ROOT / "e2e" / "kind-smoke.yaml").read_text()))
    valet_docs = [d for d in docs if d["apiVersion"].startswith("valet.dev/")]
    assert {d["kind"] for d in valet_docs} == {"SpotPool", "TrainingJob"}
    for doc in valet_docs:
        assert validate(doc) == [], doc["kind"]
    pool = next(d for d in valet_docs if d["kind"] == "SpotPool")
    assert pool["spec"]["nodeSelector"] == {"valet.dev/kind-gpu": "true"}
    namespaces = {d["metadata"]["name"] for d in docs if d["kind"] == "Namespace"}
    assert not namespaces & {"train", "batch"}, "the CI scenarios that follow use these"
