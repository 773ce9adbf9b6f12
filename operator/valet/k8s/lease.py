"""Leader election over a ``coordination.k8s.io/v1`` Lease, for operators with replicas > 1.

Every replica watches and keeps its cache warm; only the holder of the Lease runs
reconcile passes, so a standby takes over within one lease duration with a full view.
Writes carry the Lease's resourceVersion, so two replicas can never both win a round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog

from valet.k8s import errors
from valet.k8s.client import Api
from valet.model.timefmt import from_rfc3339, to_rfc3339

log = structlog.get_logger("valet.lease")
LEASE_NAME = "valet-operator"


def lease_path(namespace: str, name: str = "") -> str:
    base = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"
    return f"{base}/{name}" if name else base


class LeaderElector:
    def __init__(
        self,
        api: Api,
        namespace: str,
        identity: str,
        active: asyncio.Event,
        *,
        lease_seconds: float = 15.0,
        renew_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.api, self.namespace, self.identity, self.active = api, namespace, identity, active
        self.lease_seconds, self.renew_seconds, self.clock = lease_seconds, renew_seconds, clock

    async def run(self) -> None:
        while True:
            try:
                leading = await self.try_acquire()
            except errors.ApiError as err:
                log.warning("lease round failed", error=str(err))
                leading = False
            if leading and not self.active.is_set():
                log.info("leading", identity=self.identity)
                self.active.set()
            elif not leading and self.active.is_set():
                log.warning("lost the lease", identity=self.identity)
                self.active.clear()
            await asyncio.sleep(self.renew_seconds)

    def _spec(self, transitions: int, acquired: str | None = None) -> dict[str, Any]:
        now = to_rfc3339(self.clock()).replace("Z", "000Z")  # MicroTime: 6 digits, as nodes'
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.lease_seconds),
            "acquireTime": acquired or now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }

    async def try_acquire(self) -> bool:
        path = lease_path(self.namespace, LEASE_NAME)
        try:
            lease = await self.api.call("GET", path)
        except errors.NotFoundError:
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
                "spec": self._spec(0),
            }
            try:
                await self.api.call("POST", lease_path(self.namespace), body)
            except errors.AlreadyExistsError:
                return False
            return True
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = from_rfc3339(spec.get("renewTime"), 0.0)
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        transitions = int(spec.get("leaseTransitions") or 0)
        if holder and holder != self.identity and self.clock() - renewed < duration:
            return False
        mine = holder == self.identity
        lease["spec"] = self._spec(
            transitions if mine else transitions + 1, spec.get("acquireTime") if mine else None
        )
        try:
            await self.api.call("PUT", path, lease, retry_conflicts=False)
        except errors.ConflictError:
            return False
        return True

    async def release(self) -> None:
        """Give the lease up on shutdown, so a standby takes over at once."""
        if not self.active.is_set():
            return
        path = lease_path(self.namespace, LEASE_NAME)
        try:
            lease = await self.api.call("GET", path)
            if (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                await self.api.call("PUT", path, lease, retry_conflicts=False)
        except errors.ApiError as err:
            log.warning("lease release failed", error=str(err))
        self.active.clear()
