"""Integration tests run the real operator against the emulator (or VALET_E2E_KUBECONFIG)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    logging.getLogger("kopf").setLevel(logging.WARNING)
