"""Publishes the agent's verdict on its own Node: the GPUHealthy condition and the annotation.

The condition goes through the ``status`` subresource as a strategic-merge patch
(conditions merge by type, so other detectors' conditions are kept). The annotation
goes through a merge patch of metadata. The sync client runs in the agent's own
thread; it never shares an event loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from kubernetes import client

from valet.k8s.client import load_api_client
from valet.model import nodehealth


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
