"""Fixtures shared by every tier: the session's real API server (``real_api``).

It is envtest from ``KUBEBUILDER_ASSETS`` (started once, stopped at the end), or the cluster
named by ``VALET_E2E_KUBECONFIG``; valet's CRDs and the chart's PriorityClasses are installed
on it. Without either, tests that need it are skipped, saying how to get the assets.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest

from tests.integration.harness import Backend, prepare_real_api, unprepare
from valet import envtest
from valet.k8s.client import Api, load_api_client

E2E_KUBECONFIG = os.environ.get("VALET_E2E_KUBECONFIG")
T = TypeVar("T")


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
        # Someone's cluster: what this session installs is removed at its end.
        backend = Backend("real", E2E_KUBECONFIG)
        made = _run(backend, prepare_real_api)
        yield backend
        _run(backend, lambda api: unprepare(api, made))
        return
    if envtest.assets_dir() is None:
        if os.environ.get(envtest.ASSETS_ENV):  # asked for, but broken: fail, never skip
            pytest.fail(f"{envtest.ASSETS_ENV} has no kube-apiserver and etcd")
        pytest.skip(f"real-API tier: {envtest.HOW_TO_GET_ASSETS}")
    with envtest.running() as plane:
        backend = Backend("real", str(plane.admin_kubeconfig), plane)
        _run(backend, prepare_real_api)
        yield backend


def _run(backend: Backend, step: Callable[[Api], Awaitable[T]]) -> T:
    api = Api(load_api_client(backend.kubeconfig))
    try:
        return asyncio.run(step(api))  # type: ignore[arg-type]  # a coroutine
    finally:
        api.close()
