"""Plain-ASGI plumbing shared by both wire front-ends: a small request view, bounded body
reading, and responses (bytes, streamed chunks, or a file handed to the server's native sender).

The hot paths (blob and manifest GET/HEAD, blob upload) run on this instead of a framework:
no per-request routing tables, no middleware stack, the request body streamed straight through.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from moorage.errors import TooLargeError

__all__ = [
    "CLIENT_CLOSED_REQUEST",
    "DRAIN_LIMIT",
    "UNREAD_DRAIN_LIMIT",
    "ClientDisconnectedError",
    "Receive",
    "Request",
    "Scope",
    "Send",
    "answer_disconnected",
    "guard_unread_body",
    "send_bytes",
    "send_file",
    "send_stream",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = Iterable[tuple[str, str]]

_FILE_CHUNK = 1024 * 1024

# A body refused for its size is still read to its end and discarded when the whole body is at
# most this many bytes, before the error goes out. Answering while the client is still sending
# and then closing the connection makes most clients (httpx, docker, skopeo) see a reset instead
# of the 413. Past this size the answer goes at once: reading gigabytes only to refuse them costs
# more than a client that sees a reset.
DRAIN_LIMIT = 64 * 1024 * 1024


CLIENT_CLOSED_REQUEST = 499
"""The status recorded for a request whose client went away before it was answered (nginx's
"client closed request"): a client's doing, never a server error."""
_DISCONNECTED = "moorage.client_disconnected"  # scope key: the body stream saw http.disconnect


# A request answered before its body was read (a 404, 405, 401 or 400 that needs no body) has the
# rest of its body read and discarded before the answer goes out when at most this many bytes
# remain; past that the answer says `Connection: close`. Either way the client knows where the
# connection stands: answering with body bytes still unread and no `Connection: close` makes the
# server close the connection after the answer, and a client that sends its next request on it
# meanwhile sees the connection dropped without an answer.
UNREAD_DRAIN_LIMIT = 8 * 1024 * 1024


def _has_body(scope: Scope) -> int | None:
    """The declared body length (-1 for a chunked body), or None when the request has no body."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            return int(value) if value.isdigit() and value != b"0" else None
        if key == b"transfer-encoding":
            return -1
    return None


async def guard_unread_body(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], scope: Scope, receive: Receive, send: Send
) -> None:
    """Run `app` on an HTTP request so that it never answers with request body bytes unread
    without telling the client (see UNREAD_DRAIN_LIMIT). Requests without a body go straight
    through."""
    declared = _has_body(scope)
    if declared is None:
        await app(scope, receive, send)
        return
    received = 0
    complete = False

    async def tracked_receive() -> Message:
        nonlocal received, complete
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
        else:
            complete = True  # a disconnect: nothing more will come
        return message

    async def guarded_send(message: Message) -> None:
        if message["type"] == "http.response.start" and not complete:
            remaining = declared - received if declared >= 0 else 0
            started = received
            while not complete and remaining <= UNREAD_DRAIN_LIMIT and received - started <= UNREAD_DRAIN_LIMIT:
                await tracked_receive()
            if not complete:
                message = dict(message)
                message["headers"] = [*message.get("headers", ()), (b"connection", b"close")]
        await send(message)

    await app(scope, tracked_receive, guarded_send)


class ClientDisconnectedError(Exception):
    """The client went away before the request body was complete."""


class ResponseAbortedError(Exception):
    """A handler failed after its response had started: the server must drop the connection so
    the client sees a body cut short (a status line cannot be taken back)."""


async def answer_disconnected(scope: Scope, send: Send) -> None:
    """After a handler gave up on a request whose client disconnected (it sent no response),
    record it as CLIENT_CLOSED_REQUEST: a server logs a request left unanswered as a 500. Nothing
    reaches the client, which is gone."""
    if scope.get(_DISCONNECTED):
        await send_bytes(send, CLIENT_CLOSED_REQUEST, [("content-type", "text/plain")], b"client closed request\n")


class Request:
    """A read-only view of one HTTP request scope plus its body stream."""

    __slots__ = ("_headers", "_query", "method", "path", "receive", "scope")

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self._headers: dict[str, list[str]] | None = None
        self._query: dict[str, list[str]] | None = None

    @property
    def headers(self) -> dict[str, list[str]]:
        if self._headers is None:
            found: dict[str, list[str]] = {}
            for key, value in self.scope["headers"]:
                found.setdefault(key.decode("latin-1").lower(), []).append(value.decode("latin-1"))
            self._headers = found
        return self._headers

    def header(self, name: str) -> str | None:
        values = self.headers.get(name)
        return values[-1] if values else None

    @property
    def query(self) -> dict[str, list[str]]:
        if self._query is None:
            self._query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        return self._query

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    @property
    def host(self) -> str | None:
        return self.header("host")

    async def stream(self, limit: int | None = None) -> AsyncIterator[bytes]:
        """The request body, chunk by chunk as it arrives; TooLargeError past `limit` bytes."""
        total = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.scope[_DISCONNECTED] = True
                raise ClientDisconnectedError
            chunk: bytes = message.get("body", b"")
            more = bool(message.get("more_body", False))
            if chunk:
                total += len(chunk)
                if limit is not None and total > limit:
                    if more:
                        await self._drain(DRAIN_LIMIT - total)
                    raise TooLargeError("request body", limit)
                yield chunk
            if not more:
                return

    async def _drain(self, budget: int) -> None:
        """Read and discard the rest of the body while at most `budget` more bytes arrive (stops
        at once when `budget` is negative, past it, or when the client goes away)."""
        while budget >= 0:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.scope[_DISCONNECTED] = True
                return
            budget -= len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def read(self, limit: int) -> bytes:
        """The whole body (small bodies only: manifests, JSON); TooLargeError past `limit`. A body
        declared (Content-Length) or found larger than `limit` is drained first when the whole body
        is at most DRAIN_LIMIT bytes, so that the client reads the answer."""
        declared = self.header("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            if int(declared) <= DRAIN_LIMIT:
                await self._drain(int(declared))
            raise TooLargeError("request body", limit)
        parts = [chunk async for chunk in self.stream(limit)]
        return b"".join(parts)


def _raw_headers(headers: Headers) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]


async def send_bytes(send: Send, status: int, headers: Headers, body: bytes = b"", *, head: bool = False) -> None:
    """A complete response. `head` sends the headers (with the body's Content-Length) only."""
    raw = _raw_headers(headers)
    if not any(k == b"content-length" for k, _ in raw):
        raw.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else body})


AWS_JSON_1_1 = "application/x-amz-json-1.1"


# orjson would write datetimes and dataclasses itself; `json` refuses them, and so must we: a
# handler that forgets to convert one is a bug to surface, not a format to invent.
_ORJSON_STRICT = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def compact_json(value: Any) -> bytes:
    """`value` as compact UTF-8 JSON. orjson writes a page of a hundred image details in ~1/8 of
    the standard library's time; what it refuses (an integer beyond 64 bits, a key that is not a
    string, a lone surrogate) goes through `json` instead, so exactly the values `json` encodes
    encode, and the rest raise TypeError as `json` does."""
    try:
        return orjson.dumps(value, option=_ORJSON_STRICT)
    except TypeError:
        return json.dumps(value, separators=(",", ":")).encode()


async def send_aws_json(send: Send, status: int, body: Mapping[str, Any], request_id: str) -> None:
    """An answer of an AWS JSON 1.1 face (ECR, Secrets Manager): the compact JSON body with its
    request id, and for an error the `x-amzn-errortype` the SDKs read the error code from."""
    payload = compact_json(body)
    headers = [("content-type", AWS_JSON_1_1), ("x-amzn-requestid", request_id)]
    if status != 200:
        headers.append(("x-amzn-errortype", str(body.get("__type"))))
    await send_bytes(send, status, headers, payload)


async def send_stream(send: Send, status: int, headers: Headers, chunks: AsyncIterator[bytes]) -> None:
    """A response whose body comes from an async iterator (Content-Length set by the caller).

    The headers go out only once the first chunk is in hand, so an iterator that fails before
    yielding anything still lets the caller answer with a proper error instead of a 200."""
    iterator = aiter(chunks)
    try:
        first: bytes | None = await anext(iterator)
    except StopAsyncIteration:
        first = None
    await send({"type": "http.response.start", "status": status, "headers": _raw_headers(headers)})
    if first is not None:
        await send({"type": "http.response.body", "body": first, "more_body": True})
        async for chunk in iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


async def send_file(send: Send, status: int, headers: Headers, path: Path, span: tuple[int, int] | None) -> None:
    """Send a file, or the inclusive byte `span` of it, in 1 MiB `pread`s, each awaited through
    the server's flow control (a slow client holds at most a chunk or two in memory).

    Not through granian's `http.response.pathsend`: measured side by side on a 512 MiB file it
    served 1,400-1,900 MiB/s at ~0.6 server CPU-s/GiB, 1 MiB body messages 2,600-2,800 MiB/s
    at ~0.4 (16 MiB messages are slower again: they leave the CPU caches).

    The file is opened before the status goes out, so a missing one still lets the caller answer
    an error; once open, a concurrent unlink (GC) does not cut the body short. granian gives no
    sign of a client that went away mid-body (its `send` returns, `receive` stays quiet), so an
    abandoned download reads the rest of its file from the page cache without sending it
    (~0.2 CPU-s/GiB): less than finishing the download would have cost."""
    fd = os.open(path, os.O_RDONLY)
    try:
        await send({"type": "http.response.start", "status": status, "headers": _raw_headers(headers)})
        start, end = span if span is not None else (0, os.fstat(fd).st_size - 1)
        position = start
        while position <= end:
            chunk = os.pread(fd, min(_FILE_CHUNK, end - position + 1), position)
            if not chunk:
                break
            position += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        os.close(fd)
    await send({"type": "http.response.body", "body": b""})
