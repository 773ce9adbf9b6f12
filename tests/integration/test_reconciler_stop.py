"""Stopping the operator ends its reconciler even when a poke lands at the same moment.

On Python 3.11 ``asyncio.wait_for`` swallows a cancellation that arrives after the awaited
event fired but before the task resumed; the reconciler then loops on and the operator's
stop() never returns (a hung teardown seen in CI runs under load)."""

from __future__ import annotations

import asyncio

import pytest
from kubernetes import client as k8s_client

from valet.handlers.reconciler import LoopConfig, Reconciler
from valet.k8s.apply import Applier
from valet.k8s.cache import Cache
from valet.k8s.client import Api
from valet.metrics import OperatorMetrics


@pytest.mark.parametrize("turns", range(6))
async def test_a_cancel_right_after_a_poke_stops_the_reconciler(turns: int) -> None:
    api = Api(k8s_client.ApiClient())  # an empty view needs no API calls
    cache = Cache()
    reconciler = Reconciler(
        cache, Applier(api, cache), OperatorMetrics(), loop=LoopConfig(debounce_seconds=0)
    )
    reconciler.synced.set()
    reconciler.active.set()
    task = asyncio.create_task(reconciler.run())
    for _ in range(3):
        await asyncio.sleep(0)  # the loop now waits for a poke
    reconciler.poke()
    for _ in range(turns):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    api.close()
    assert done, "the reconciler ignored the cancellation"
    assert task.cancelled()
