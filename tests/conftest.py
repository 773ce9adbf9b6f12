"""Fixtures shared by every tier: the session's real API server (``real_api``).

It is envtest from ``KUBEBUILDER_ASSETS`` (started once, stopped at the end), or the cluster
named by ``VALET_E2E_KUBECONFIG``; valet's CRDs and the chart's PriorityClasses are installed
on it. Without either, tests that need it are skipped, saying how to get the assets.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import pytest

from tests.integration.harness import Backend, prepare_real_api
from valet import envtest
from valet.k8s.client import Api, load_api_client

E2E_KUBECONFIG = os.environ.get("VALET_E2E_KUBECONFIG")


def real_api_description() -> str:
    if E2E_KUBECONFIG:
        return f"the cluster of VALET_E2E_KUBECONFIG={E2E_KUBECONFIG}"
    assets = envtest.assets_dir()
    if assets is not None:
        return f"envtest from {envtest.ASSETS_ENV}={assets}"
    return f"SKIPPED: {envtest.HOW_TO_GET_ASSETS}"


def pytest_report_header() -> str:
    return f"real-API tier: {real_api_description()}"


@pytest.fixture(scope="session")
def real_api() -> Iterator[Backend]:
    """A real API server for the session, with valet's CRDs and PriorityClasses."""
    if E2E_KUBECONFIG:
        backend = Backend("real", E2E_KUBECONFIG)
        _prepare(backend.kubeconfig)
        yield backend
        return
    if envtest.assets_dir() is None:
        pytest.skip(f"real-API tier: {envtest.HOW_TO_GET_ASSETS}")
    with envtest.running() as plane:
        backend = Backend("real", str(plane.admin_kubeconfig), plane)
        _prepare(backend.kubeconfig)
        yield backend


def _prepare(kubeconfig: str | None) -> None:
    api = Api(load_api_client(kubeconfig))
    try:
        asyncio.run(prepare_real_api(api))
    finally:
        api.close()
