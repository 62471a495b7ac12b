"""Shared plumbing of the event-driven benches (bench/events.py, bench/replication.py): a webhook
receiver on loopback that timestamps the events it is sent, and a small-image pusher over plain
`http.client` (monolithic blob uploads, then the manifest PUT by tag)."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["EventReceiver", "push_image", "sha256_digest"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class EventReceiver:
    """Records, per image digest, (arrival time, event) of every event of `detail_type` (and
    `action_type`, when given) POSTed to `url`; answers 200 to everything."""

    def __init__(self, detail_type: str, action_type: str | None = None) -> None:
        self.arrivals: dict[str, list[tuple[float, dict[str, Any]]]] = {}
        lock = threading.Lock()
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                now = time.perf_counter()
                event = json.loads(body)
                detail = event.get("detail", {})
                if event.get("detail-type") == detail_type and action_type in (None, detail.get("action-type")):
                    with lock:
                        arrivals.setdefault(detail["image-digest"], []).append((now, event))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    response.read()
    return response.status


def push_image(port: int, repo: str, n: int, *, layers: int = 1, layer_bytes: int = 4096) -> tuple[str, float]:
    """Push a fresh image with `layers` random layers as tag `t<n>`; returns its manifest digest and
    the time (perf_counter) the manifest PUT was acknowledged."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n, "salt": os.urandom(8).hex()}).encode()
        blobs = [os.urandom(layer_bytes) for _ in range(layers)]
        for blob in (config, *blobs):
            status = _request(conn, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha256_digest(blob)}", blob, {})
            assert status == 201, status
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(b), "size": len(b)} for b in blobs],
            }
        ).encode()
        status = _request(conn, "PUT", f"/v2/{repo}/manifests/t{n}", manifest, {"content-type": OCI_MANIFEST})
        acked = time.perf_counter()
        assert status == 201, status
        return sha256_digest(manifest), acked
    finally:
        conn.close()
