"""Leader election over a Lease, against the emulator: one leader at a time, fast hand-over."""

from __future__ import annotations

import asyncio

from tests.emulator.test_emulator import emulated
from valet.k8s.lease import LeaderElector


async def test_one_leader_at_a_time_and_release_hands_over() -> None:
    async with emulated() as api:
        clock = [1000.0]
        a_active, b_active = asyncio.Event(), asyncio.Event()
        a = LeaderElector(api, "default", "a", a_active, lease_seconds=15, clock=lambda: clock[0])
        b = LeaderElector(api, "default", "b", b_active, lease_seconds=15, clock=lambda: clock[0])
        assert await a.try_acquire() is True
        assert await b.try_acquire() is False
        assert await a.try_acquire() is True  # renewing its own lease
        clock[0] += 10
        assert await b.try_acquire() is False  # a renewed 10 s ago: still valid
        clock[0] += 20
        assert await b.try_acquire() is True  # a went silent beyond the lease
        assert await a.try_acquire() is False
        b_active.set()
        await b.release()
        assert not b_active.is_set()
        assert await a.try_acquire() is True  # released: no need to wait the lease out
