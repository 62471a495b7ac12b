"""A client that goes away mid-request is the client's doing: the access log records 499 (client
closed request), never a 5xx, and the upload session stays usable."""

from __future__ import annotations

import hashlib
import re
import socket
import time
from pathlib import Path

import httpx

from tests.support.live import LiveServer


def _send_half_and_close(server: LiveServer, method: str, path: str, headers: dict[str, str]) -> None:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {server.address}", "Content-Length: 1000000"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + b"x" * 5000)
        time.sleep(0.3)  # the server has begun reading the body


def _access_status(server: LiveServer, method: str, path: str, timeout: float = 10) -> int:
    pattern = re.compile(rf'"{method} {re.escape(path)} HTTP/1.1" (\d{{3}})')
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.findall(server.log())
        if found:
            return int(found[-1])
        time.sleep(0.1)
    raise AssertionError(f"no access log line for {method} {path}:\n{server.log()[-3000:]}")


def test_disconnect_mid_patch_and_mid_api_call_is_no_server_error(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "data", args=["--auth", "open", "--create-on-push", "--access-log"]) as server:
        started = httpx.post(f"{server.url}/v2/demo/blobs/uploads/", timeout=10)
        assert started.status_code == 202
        location = started.headers["location"]

        _send_half_and_close(server, "PATCH", location, {"Content-Type": "application/octet-stream"})
        assert _access_status(server, "PATCH", location) == 499
        target = {"X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.DescribeRepositories"}
        _send_half_and_close(server, "POST", "/", {**target, "Content-Type": "application/x-amz-json-1.1"})
        assert _access_status(server, "POST", "/") == 499

        log = server.log()
        assert "client disconnected during PATCH" in log
        assert not re.search(r'HTTP/1.1" 5\d\d', log), log[-3000:]
        assert "Traceback" not in log

        # The session is where it was before the broken chunk, and takes the blob.
        status = httpx.get(f"{server.url}{location}", timeout=10)
        assert status.status_code == 204
        body = b"layer bytes"
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        done = httpx.put(f"{server.url}{location}", params={"digest": digest}, content=body, timeout=10)
        assert done.status_code == 201, done.text
        assert httpx.head(f"{server.url}/v2/demo/blobs/{digest}", timeout=10).status_code == 200
