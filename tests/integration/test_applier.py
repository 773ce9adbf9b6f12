"""The applier against the emulator when the API server answers a write that it did.

A bind answered with 504 after the server bound the pod is retried, and the retry gets
409 (already bound). The cache must then hold the pod as bound, or the next pass binds it
again and counts the swap twice (found by the 10%-errors chaos test)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from tests.emulator.server import Chaos, kubeconfig, serve
from tests.integration.harness import FAST_RETRY, Backend, cluster
from valet.k8s.apply import Applier
from valet.k8s.cache import Cache, Kind
from valet.k8s.client import Api, core_path, load_api_client
from valet.model.enums import Reason
from valet.model.plan import BindPod, DeletePod, Plan


async def test_a_bind_answered_with_a_timeout_leaves_the_pod_bound_in_the_cache() -> None:
    chaos = Chaos(rate=1.0, faults=("timeout-after-work",), only="/binding")
    async with serve(chaos) as (_, url):
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(url)))
            api = Api(load_api_client(str(path)), retry=FAST_RETRY)
            pod = {
                "metadata": {
                    "name": "llm-w1",
                    "namespace": "default",
                    "labels": {"valet.dev/kind": "worker", "valet.dev/job": "llm"},
                },
                "spec": {"schedulerName": "valet", "containers": [{"name": "c", "image": "x"}]},
            }
            cache = Cache()
            cache.observe(Kind.POD, await api.call("POST", core_path("pods", "default"), pod))
            try:
                result = await Applier(api, cache).apply(
                    Plan((BindPod("default", "llm-w1", "gpu-7"),))
                )
                server = await api.call("GET", core_path("pods", "default", "llm-w1"))
            finally:
                api.close()
    assert chaos.injected >= 1 and not result.failed
    assert server["spec"]["nodeName"] == "gpu-7"
    assert cache.pods["default/llm-w1"].node == "gpu-7"  # no watch ran: the applier said so


async def test_a_name_deleted_twice_then_created_again_is_in_the_cache(backend: Backend) -> None:
    """A worker force-deleted off a dead host, twice (two passes before the watch told the
    first; the second answered 404), then its replacement created under the same name: the
    cache must hold the replacement, or the operator places its rank again and never counts
    the swap (the demo's lemon step on kube-apiserver, about 1 run in 6)."""
    async with cluster(backend, 1) as c:
        await c.namespace(c.train)
        pod = {
            "metadata": {
                "name": "llm-1-0",
                "namespace": c.train,
                "labels": {"valet.dev/kind": "worker", "valet.dev/job": "llm"},
            },
            "spec": {"schedulerName": "valet", "containers": [{"name": "c", "image": "x"}]},
        }
        key, pods = f"{c.train}/llm-1-0", core_path("pods", c.train)
        cache = Cache()
        cache.observe(Kind.POD, await c.api.call("POST", pods, pod))
        assert key in cache.pods
        applier = Applier(c.api, cache)
        delete = Plan((DeletePod(c.train, "llm-1-0", Reason.NODE_DRAINING, force=True),))
        for _ in range(2):
            assert not (await applier.apply(delete)).failed
        assert key not in cache.pods
        cache.observe(Kind.POD, await c.api.call("POST", pods, pod))
        assert key in cache.pods
