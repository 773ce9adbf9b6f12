"""Publishes the agent's verdict on its own Node: the GPUHealthy condition and the annotation.

The condition goes through the ``status`` subresource as a strategic-merge patch
(conditions merge by type, so other detectors' conditions are kept). The annotation
goes through a merge patch of metadata. The sync client runs in the agent's own
thread; it never shares an event loop.

``watch`` streams the Node's own annotations (a watch with ``fieldSelector=metadata.name``,
as the kubelet watches its Node), so a simulated fault injected there reaches the agent at
once. It needs ``watch`` on nodes; where RBAC refuses it, it ends with one warning and the
periodic probe still reads the annotation.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

import structlog
from kubernetes import client, watch

from valet.k8s.client import load_api_client
from valet.model import nodehealth

log = structlog.get_logger("valet.agent")
WATCH_SECONDS = 300  # one watch request's life on the server; then it reconnects
RETRY_SECONDS = 5.0


def core_api() -> client.CoreV1Api:
    """In-cluster credentials when running in a pod, else the local kubeconfig."""
    return client.CoreV1Api(load_api_client(component="agent"))


class NodePublisher:
    def __init__(self, api: client.CoreV1Api, node: str) -> None:
        self.api, self.node = api, node

    def current(self) -> tuple[Mapping[str, Any] | None, Mapping[str, str]]:
        raw = self.api.api_client.sanitize_for_serialization(self.api.read_node(self.node))
        conditions = raw.get("status", {}).get("conditions") or []
        annotations = raw.get("metadata", {}).get("annotations") or {}
        return nodehealth.find_condition(conditions, nodehealth.CONDITION_TYPE), annotations

    def annotate(self, annotations: Mapping[str, str | None]) -> None:
        self.api.patch_node(self.node, {"metadata": {"annotations": dict(annotations)}})

    def publish(self, condition: Mapping[str, Any], annotation: str | None) -> None:
        self.api.patch_node_status(self.node, {"status": {"conditions": [dict(condition)]}})
        if annotation is not None:
            self.api.patch_node(
                self.node, {"metadata": {"annotations": {nodehealth.ANNOTATION: annotation}}}
            )

    def watch(
        self, on_annotations: Callable[[Mapping[str, str]], None], stop: threading.Event
    ) -> None:
        """Call ``on_annotations`` with the Node's annotations at every event until ``stop``
        is set (looked at after each event and each reconnect)."""
        version: str | None = None
        while not stop.is_set():
            stream = watch.Watch()  # type: ignore[no-untyped-call]  # untyped client
            try:
                for event in stream.stream(  # type: ignore[no-untyped-call]  # untyped client
                    self.api.list_node,
                    field_selector=f"metadata.name={self.node}",
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                ):
                    node = event["object"]
                    version = node.metadata.resource_version
                    on_annotations(node.metadata.annotations or {})
                    if stop.is_set():
                        break
            except client.ApiException as err:
                if err.status in (401, 403):
                    log.warning(
                        "cannot watch this Node: injected faults wait for the next probe",
                        node=self.node,
                        status=err.status,
                    )
                    return
                if err.status != 410:  # 410: expired, start again from now
                    stop.wait(RETRY_SECONDS)
                version = None
            except Exception as err:  # connection lost, API server restarting
                log.info("node watch interrupted", node=self.node, error=str(err))
                stop.wait(RETRY_SECONDS)
            finally:
                stream.stop()  # type: ignore[no-untyped-call]  # untyped client
