"""A small Kubernetes API for Node objects over real HTTP: GET, and PATCH of the object and
its status, with the API server's merge rules for what the agent sends (strategic merge
of ``status.conditions`` by type, JSON merge of metadata). It records every request."""

from __future__ import annotations

import copy
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class NodeAPI:
    def __init__(self, nodes: dict[str, dict[str, Any]]) -> None:
        self.nodes = nodes
        self.requests: list[tuple[str, str, str, Any]] = []  # method, path, content type, body
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, code: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _node(self) -> tuple[str | None, bool]:
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] != ["api", "v1", "nodes"] or len(parts) < 4:
                    return None, False
                return parts[3], parts[4:] == ["status"]

            def do_GET(self) -> None:
                name, _ = self._node()
                api.requests.append(("GET", self.path, "", None))
                if name not in api.nodes:
                    self._reply(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                    return
                self._reply(200, api.nodes[name])

            def do_PATCH(self) -> None:
                name, status = self._node()
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                kind = self.headers.get("Content-Type", "")
                api.requests.append(("PATCH", self.path, kind, body))
                if name not in api.nodes:
                    self._reply(404, {"kind": "Status", "reason": "NotFound", "code": 404})
                    return
                node = api.nodes[name]
                if status:
                    merged = {c["type"]: c for c in node["status"].get("conditions", [])}
                    for cond in body.get("status", {}).get("conditions", []):
                        merged[cond["type"]] = {**merged.get(cond["type"], {}), **cond}
                    node["status"]["conditions"] = list(merged.values())
                else:
                    meta = body.get("metadata", {})
                    node["metadata"].setdefault("annotations", {}).update(
                        meta.get("annotations", {})
                    )
                self._reply(200, node)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> NodeAPI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def node(self, name: str) -> dict[str, Any]:
        return copy.deepcopy(self.nodes[name])


def gpu_node(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": {}, "annotations": {}},
        "status": {
            "capacity": {"nvidia.com/gpu": "8"},
            "allocatable": {"nvidia.com/gpu": "8"},
            "conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                {"type": "KernelDeadlock", "status": "False", "reason": "KernelHasNoDeadlock"},
            ],
        },
    }
