"""The stack floor for bench/registry.py: the least a verified, durable blob upload costs on
Moorage's HTTP stack (granian ASGI, uvloop, one worker), with no registry behind it.

It answers only the calls bench/registry.py's upload and download make, the way a registry
would, and nothing else: no metadata, no authentication, no validation beyond the digest.

    POST  /v2/<repo>/blobs/uploads/              202, Location of a new upload
    PATCH /v2/<repo>/blobs/uploads/<n>           append the body (hashed as it arrives), 202
    PUT   /v2/<repo>/blobs/uploads/<n>?digest=   append, verify sha256, fsync, rename, fsync dir; 201
    GET   /v2/<repo>/blobs/sha256:<hex>          the file, sent by Moorage's own send_file (1 MiB preads)

What it shares with Moorage is exactly the physical work: each chunk hashed in the event-loop
thread as it arrives and written to a staging file, fsync before the blob is published. Its
CPU per GiB is what any app on this stack pays at least; Moorage's column beside it shows what
the registry adds. Data goes under $MOORAGE_BENCH_FLOOR_DIR.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from moorage.asgi import send_file

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROOT = os.environ.get("MOORAGE_BENCH_FLOOR_DIR", "/tmp/moorage-bench-floor")
_ids = itertools.count(1)
_uploads: dict[str, Any] = {}  # upload path -> running sha256


async def _answer(send: Send, status: int, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0"), *headers]})
    await send({"type": "http.response.body", "body": b""})


async def _append(receive: Receive, path: str, hasher: Any) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            if chunk:
                hasher.update(chunk)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            if not message.get("more_body", False):
                return
    finally:
        os.close(fd)


def _publish(staging: str, target: str) -> None:
    fd = os.open(staging, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(staging, target)
    fd = os.open(os.path.dirname(target), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                os.makedirs(os.path.join(_ROOT, "uploads"), exist_ok=True)
                os.makedirs(os.path.join(_ROOT, "blobs"), exist_ok=True)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if method == "POST" and path.endswith("/blobs/uploads/"):
        upload = f"{path}{next(_ids)}"
        _uploads[upload] = hashlib.sha256()
        staging = os.path.join(_ROOT, "uploads", upload.rsplit("/", 1)[1])
        os.close(os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))
        await _answer(send, 202, [(b"location", upload.encode())])
        return
    if method in ("PATCH", "PUT") and path in _uploads:
        staging = os.path.join(_ROOT, "uploads", path.rsplit("/", 1)[1])
        hasher = _uploads[path]
        await _append(receive, staging, hasher)
        if method == "PATCH":
            await _answer(send, 202, [(b"location", path.encode())])
            return
        del _uploads[path]
        wanted = parse_qs(scope["query_string"].decode()).get("digest", [""])[0]
        if wanted != "sha256:" + hasher.hexdigest():
            os.unlink(staging)
            await _answer(send, 400)
            return
        _publish(staging, os.path.join(_ROOT, "blobs", hasher.hexdigest()))
        await _answer(send, 201, [(b"location", path.encode()), (b"docker-content-digest", wanted.encode())])
        return
    if method == "GET" and "/blobs/sha256:" in path:
        target = os.path.join(_ROOT, "blobs", path.rsplit(":", 1)[1])
        try:
            size = os.stat(target).st_size
        except FileNotFoundError:
            size = -1
        if size >= 0:
            headers = [("content-length", str(size)), ("content-type", "application/octet-stream")]
            await send_file(send, 200, headers, Path(target), None)
            return
    await _answer(send, 404)
