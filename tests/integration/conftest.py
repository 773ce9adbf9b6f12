"""Integration tests run the real operator on two backends: the emulator and a real API
server (the session's ``real_api``, see tests/conftest.py).

A test that takes the ``backend`` fixture runs once per backend (ids ``emulator`` and
``real``); without envtest assets or a kubeconfig the ``real`` run is skipped.
"""

from __future__ import annotations

import logging

import pytest

from tests.integration.harness import EMULATOR, Backend


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.WARNING)


@pytest.fixture(params=["emulator", "real"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "emulator":
        return EMULATOR
    return request.getfixturevalue("real_api")  # type: ignore[no-any-return]
