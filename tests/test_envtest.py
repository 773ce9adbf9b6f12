"""``valet.envtest``: the real control plane of the tests comes up, serves identities, and
leaves no process or file behind, also when what started it is killed."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from valet import envtest

needs_assets = pytest.mark.skipif(
    envtest.assets_dir() is None, reason=f"real-API tier: {envtest.HOW_TO_GET_ASSETS}"
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); its state in /proc says it is gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _await_gone(pids: list[int], seconds: float = 20) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@needs_assets
def test_a_plane_serves_users_and_tokens_and_stop_leaves_nothing() -> None:
    plane = envtest.start(controllers=False, scheduler=False)
    pids = [p.pid for p in plane._processes.values()]
    try:
        assert plane.components == ("etcd", "kube-apiserver")
        version = plane.request("GET", "/version")
        assert version["gitVersion"].startswith("v1.")
        # A client certificate outside system:masters is a plain user: RBAC refuses it.
        user = plane.kubeconfig_for_user("alice", ["team-a"])
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {"user": "alice", "groups": ["team-a"], "resourceAttributes": {
                "verb": "list", "resource": "nodes"}},
        }  # fmt: skip
        answer = plane.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        assert answer["status"]["allowed"] is False
        assert "client-certificate-data" in user.read_text()
        plane.request(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            {"metadata": {"name": "robot"}},
        )
        token = plane.service_account_token("default", "robot")
        assert token.count(".") == 2  # a JWT
        assert "token:" in plane.kubeconfig_for_token("robot", token).read_text()
    finally:
        plane.stop()
    assert not plane.workdir.exists()
    assert _await_gone(pids) == []


def test_a_component_that_fails_is_reported_with_its_log(tmp_path: Path) -> None:
    for name, script in {
        "etcd": "exec sleep 60",
        "kube-apiserver": "echo 'E0101 flag provided but not defined: --oops'; exit 1",
    }.items():
        path = tmp_path / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    before = set(Path("/tmp").glob("valet-envtest-*"))
    with pytest.raises(envtest.ControlPlaneError, match="flag provided but not defined"):
        envtest.start(tmp_path, timeout=20)
    assert set(Path("/tmp").glob("valet-envtest-*")) <= before  # its files are gone too


@needs_assets
def test_killing_the_process_that_started_it_takes_the_plane_down() -> None:
    script = (
        "import sys, time, valet.envtest as e\n"
        "p = e.start(controllers=False, scheduler=False)\n"
        "print(p.workdir, *[x.pid for x in p._processes.values()], flush=True)\n"
        "time.sleep(600)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        workdir, *words = child.stdout.readline().split()
        pids = [int(p) for p in words]
        assert len(pids) == 2 and all(_alive(p) for p in pids)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _await_gone(pids) == []
    shutil.rmtree(workdir)  # a killed process cannot remove its files; its processes go
