"""``valet demo --headless``: the whole script (XID 79, a dead host, a lemon, a burst that
trips the circuit breaker) against the bundled emulator, and on a real kube-apiserver when
``KUBEBUILDER_ASSETS`` names envtest binaries. The output is plain lines, one per event and
heal, and ends with the summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from valet import envtest


def _run(env: dict[str, str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "valet", "demo", "--headless", "--nodes", "8", "--step-timeout",
         "40"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def _check(code: int, out: str, plane: str) -> None:
    assert code == 0, out
    lines = out.splitlines()
    assert "\x1b[" not in out, "headless output has no terminal control codes"
    assert all(re.match(r"^(\[ *\d+\.\ds\] |summary: )", line) for line in lines), out
    assert plane in next(line for line in lines if line.startswith("summary: control plane")), out
    totals = next(line for line in lines if line.startswith("summary: faults="))
    heals = int(re.search(r"heals=(\d+)", totals).group(1))  # type: ignore[union-attr]
    assert heals >= 3, out
    assert re.search(r"heal_max=(\d+\.\d+)s", totals), totals
    state = lines[-1]
    assert "breaker=tripped" in state and "lemons_retired=1" in state, out
    assert int(re.search(r"shards_done=(\d+)", state).group(1)) > 0, state  # type: ignore[union-attr]
    # one line per heal and per fault, as they happen
    assert sum(1 for line in lines if "] HEALED " in line) >= 3, out
    assert sum(1 for line in lines if "] FAULT " in line) >= 5, out  # lemon: twice
    assert any("] RETIRED " in line for line in lines), out
    assert any("] BREAKER tripped" in line for line in lines), out


def test_demo_headless_on_the_emulator() -> None:
    env = {k: v for k, v in os.environ.items() if k != envtest.ASSETS_ENV}
    _check(*_run(env), "the bundled API emulator")


@pytest.mark.skipif(envtest.assets_dir() is None, reason=envtest.HOW_TO_GET_ASSETS)
def test_demo_headless_on_a_real_api_server() -> None:
    _check(*_run(dict(os.environ)), "kube-apiserver (envtest")
