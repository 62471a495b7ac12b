"""A client that reads a download slowly holds the server to a chunk or two of it in memory: the
blob is sent through the HTTP server's flow control, not queued whole in the worker.

(Found while trying granian's RSGI interface, whose streamed responses queue every chunk at
once: a 256 MiB blob read at 30 MB/s took the worker from ~110 to ~370 MiB RSS. The slow-tier
memory test reads at full speed and would not see it.)"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.support.live import LiveServer
from tests.support.procs import rss_tree

MiB = 1024 * 1024
SIZE = 96 * MiB
_BLOCK = os.urandom(MiB)


def _blob() -> Iterator[bytes]:
    for index in range(SIZE // MiB):
        yield index.to_bytes(8, "big") + _BLOCK[8:]


def test_a_stalled_download_does_not_queue_the_blob_in_memory(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "data", args=["--auth", "open", "--create-on-push"]) as server:
        digest = hashlib.sha256()
        for chunk in _blob():
            digest.update(chunk)
        blob = "sha256:" + digest.hexdigest()
        location = httpx.post(f"{server.url}/v2/slow/reader/blobs/uploads/", timeout=30).headers["location"]
        done = httpx.put(f"{server.url}{location}", params={"digest": blob}, content=_blob(), timeout=120)
        assert done.status_code == 201, done.text
        assert server.process is not None
        before = sum(rss_tree(server.process.pid).values())

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            sock.connect(("127.0.0.1", server.port))
            request = f"GET /v2/slow/reader/blobs/{blob} HTTP/1.1\r\nHost: {server.address}\r\n\r\n"
            sock.sendall(request.encode())
            data = bytearray(sock.recv(MiB))
            assert data
            peak = before
            for _ in range(20):  # 2 s of reading nothing: the server has all the time to queue it
                time.sleep(0.1)
                peak = max(peak, sum(rss_tree(server.process.pid).values()))
            # Then the reader picks up: the download is whole and correct.
            sock.settimeout(30)
            while b"\r\n\r\n" not in data:
                data += sock.recv(MiB)
            head, _, body = bytes(data).partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200")
            check = hashlib.sha256(body)
            got = len(body)
            while got < SIZE:
                chunk = sock.recv(4 * MiB)
                assert chunk, f"connection closed after {got} of {SIZE} bytes"
                check.update(chunk)
                got += len(chunk)
        assert got == SIZE
        assert "sha256:" + check.hexdigest() == blob
        assert peak - before < 32 * MiB, f"server RSS grew {(peak - before) / MiB:.0f} MiB while the reader stalled"
