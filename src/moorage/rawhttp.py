"""A bare HTTP/1.1 GET for large bodies: one request on its own connection, the body handed out
in CHUNK pieces.

httpx (pull-through upstreams) and botocore (S3) stream a body at 0.5-7 CPU-s per GiB here
(small reads, several copies per chunk, a thread hop per read for botocore). This is for the hot
blob paths only: a `200`/`206` with a Content-Length. Anything else (redirects, challenges,
chunked bodies, errors) is for the caller to handle with its regular client.

- Plain http (S3 endpoints inside a deployment, SeaweedFS/MinIO next to Moorage): the socket is
  read directly, `recv` straight into each chunk's `bytes`, so the kernel's copy is the only one.
  `SO_RCVLOWAT` is set to what the chunk still needs, so the event loop wakes once per chunk, not
  once per segment that arrives, and not at all when the chunk is already queued (FIONREAD).
  What waits to be read stays in the kernel's receive buffer (bounded by net.ipv4.tcp_rmem and
  TCP flow control), which is also the read-ahead that lets the next chunk arrive while this one
  is sent on.
- https: an asyncio `BufferedProtocol` reads into 1 MiB buffers (TLS decrypts into them), each
  copied once into its chunk's `bytes`; reading pauses while `_MAX_READY` bytes wait for the
  consumer.
"""

from __future__ import annotations

import array
import asyncio
import fcntl
import socket
import ssl
import termios
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from typing import cast
from urllib.parse import urlsplit

__all__ = ["CHUNK", "RawBodyError", "RawResponse"]

CHUNK = 1 << 20
"""Size of the chunks `RawResponse.chunks` yields (the last one may be shorter)."""
_MAX_READY = 4 << 20
_MAX_HEAD = 64 * 1024


class RawBodyError(ConnectionError):
    """The body did not arrive whole: the connection closed early, or a read timed out."""


class RawResponse:
    """One `GET`: `await RawResponse.open(...)` sends it and reads the status line and headers;
    `chunks()` yields exactly Content-Length body bytes; `close()` drops the connection."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.length: int | None = None

    @classmethod
    async def open(
        cls,
        url: str,
        headers: Mapping[str, str],
        timeout: float,
        ssl_context: Callable[[], ssl.SSLContext] | None = None,
    ) -> RawResponse:
        """Connect, send `GET url` with `headers` (plus `host`, `user-agent`, `accept-encoding:
        identity` unless given, and `connection: close`) and read the response head, all within
        `timeout` seconds. `ssl_context` makes the https context. ValueError for a URL that is
        not http(s) with a host, or an answer that is not HTTP/1."""
        parts = urlsplit(url)
        scheme, host, port = parts.scheme, parts.hostname, parts.port
        if scheme not in ("http", "https") or not host:
            raise ValueError(f"not an http(s) URL: {url[:100]!r}")
        target = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        headers = {"host": parts.netloc, "user-agent": "moorage", "accept-encoding": "identity", **headers}
        lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"GET {target} HTTP/1.1\r\n{lines}connection: close\r\n\r\n".encode()
        async with asyncio.timeout(timeout):
            if scheme == "https":
                context = ssl_context() if ssl_context is not None else ssl.create_default_context()
                return await _TlsResponse.connect(host, port or 443, request, context)
            return await _PlainResponse.connect(host, port or 80, request)

    @property
    def sized(self) -> bool:
        """The body is delimited by a Content-Length (what `chunks` reads), not chunked."""
        return self.length is not None and "transfer-encoding" not in self.headers

    def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        """The body, exactly Content-Length bytes, in CHUNK pieces; RawBodyError when the
        connection ends early or no chunk arrives within `timeout` seconds."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _parse_head(self, head: bytes) -> None:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError("not an HTTP/1 response")
        self.status = int(rest[:3])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        length = self.headers.get("content-length", "")
        self.length = int(length) if length.isdigit() else None


def _queued(sock: socket.socket) -> int:
    """Bytes waiting in the socket's receive queue (FIONREAD)."""
    count = array.array("i", [0])
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, count, True)
    return count[0]


def _set_done(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _PlainResponse(RawResponse):
    """http: the socket itself, read with `recv` when the event loop says it is readable."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__()
        self._sock = sock
        self._leftover = b""  # body bytes that came with the head
        self._lowat = 1

    @classmethod
    async def connect(cls, host: str, port: int, request: bytes) -> _PlainResponse:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: OSError = OSError(f"no address for {host}")
        for family, kind, proto, _name, address in infos:
            sock = socket.socket(family, kind, proto)
            response = cls(sock)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                await loop.sock_sendall(sock, request)
                await response._read_head()
            except BaseException:
                sock.close()
                raise
            return response
        raise error

    async def _readable(self) -> None:
        """Until the socket has `SO_RCVLOWAT` bytes to read (or its end, or an error)."""
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        fd = self._sock.fileno()
        loop.add_reader(fd, _set_done, waiter)
        try:
            await waiter
        finally:
            loop.remove_reader(fd)

    def _recv(self, size: int) -> bytes | None:
        """At most `size` bytes; None when none are there after all (a spurious wake-up)."""
        try:
            return self._sock.recv(size)
        except (BlockingIOError, InterruptedError):
            return None

    async def _read_head(self) -> None:
        received = b""
        while (end := received.find(b"\r\n\r\n")) < 0:
            if len(received) >= _MAX_HEAD:
                raise ValueError("no HTTP response head")
            await self._readable()
            data = self._recv(_MAX_HEAD)
            if data == b"":
                raise ValueError("no HTTP response head")
            received += data or b""
        self._parse_head(received[:end])
        self._leftover = received[end + 4 : end + 4 + (self.length or 0)]

    def _want(self, size: int) -> None:
        if size != self._lowat:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, size)
            self._lowat = size

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        remaining = self.length or 0
        parts = [self._leftover] if self._leftover else []
        have = len(self._leftover)
        self._leftover = b""
        while remaining > 0:
            want = min(CHUNK, remaining)
            while have < want:
                self._want(want - have)
                try:
                    if _queued(self._sock) < want - have:  # else no trip through the event loop
                        async with asyncio.timeout(timeout):
                            await self._readable()
                    data = self._recv(want - have)
                except TimeoutError:
                    raise RawBodyError("the body read timed out") from None
                except OSError as exc:
                    raise RawBodyError(f"the body read failed: {type(exc).__name__}") from None
                if data == b"":
                    if parts:  # what did arrive goes out first, as it would have with the rest
                        yield b"".join(parts)
                    raise RawBodyError("the connection closed before the whole body arrived")
                if data:
                    parts.append(data)
                    have += len(data)
            chunk = parts[0] if len(parts) == 1 else b"".join(parts)
            parts = []
            have = 0
            remaining -= want
            yield chunk

    def close(self) -> None:
        self._sock.close()


class _TlsResponse(RawResponse, asyncio.BufferedProtocol):
    """https: a protocol reading (decrypted) bytes into 1 MiB buffers."""

    def __init__(self) -> None:
        super().__init__()
        self._current = bytearray(CHUNK)
        self._filled = 0  # bytes of `_current` holding data
        self._ready: deque[bytearray] = deque()  # full chunks not yet handed out
        self._ready_bytes = 0
        self._eof = False
        self._waiter: asyncio.Future[None] | None = None
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._want = 1  # `_filled` at which a waiting reader is woken

    @classmethod
    async def connect(cls, host: str, port: int, request: bytes, context: ssl.SSLContext) -> _TlsResponse:
        loop = asyncio.get_running_loop()
        response = cls()
        await loop.create_connection(lambda: response, host, port, ssl=context, server_hostname=host)
        assert response._transport is not None
        response._transport.write(request)
        try:
            await response._read_head()
        except BaseException:
            response.close()
            raise
        return response

    # -- protocol ----------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no asyncio.Transport subclass

    def get_buffer(self, sizehint: int) -> memoryview:
        return memoryview(self._current)[self._filled :]

    def buffer_updated(self, nbytes: int) -> None:
        self._filled += nbytes
        if self._filled == len(self._current) and not self.status:  # a full buffer and no head yet
            if self._transport is not None:
                self._transport.pause_reading()  # `_read_head` finds the head or gives up
            self._wake()
        elif self._filled == len(self._current):
            self._ready.append(self._current)
            self._ready_bytes += self._filled
            self._current = bytearray(CHUNK)
            self._filled = 0
            if self._ready_bytes >= _MAX_READY and self._transport is not None and not self._paused:
                self._paused = True
                self._transport.pause_reading()
            self._wake()
        elif self._filled >= self._want:
            self._wake()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- reading -----------------------------------------------------------------------------

    async def _read_head(self) -> None:
        searched = 0
        while True:
            end = self._current.find(b"\r\n\r\n", max(searched - 3, 0), self._filled)
            if end >= 0:
                break
            if self._eof or self._filled >= _MAX_HEAD:
                raise ValueError("no HTTP response head")
            searched = self._filled
            self._want = self._filled + 1
            await self._wait()
        self._parse_head(bytes(self._current[:end]))
        start = end + 4  # the body bytes that came with the head move to the buffer's start
        self._current[: self._filled - start] = self._current[start : self._filled]
        self._filled -= start
        self._want = CHUNK
        if self._transport is not None:
            self._transport.resume_reading()  # in case a full buffer paused it before the head was read

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        remaining = self.length or 0
        while remaining > 0:
            self._want = min(CHUNK, remaining)
            while not self._ready and self._filled < self._want and not self._eof:
                try:
                    async with asyncio.timeout(timeout):
                        await self._wait()
                except TimeoutError:
                    raise RawBodyError("the body read timed out") from None
            if self._ready:
                buffer = self._ready.popleft()
                self._ready_bytes -= len(buffer)
                take = min(len(buffer), remaining)
                chunk = bytes(buffer) if take == len(buffer) else bytes(memoryview(buffer)[:take])
                if self._paused and self._ready_bytes < _MAX_READY and self._transport is not None:
                    self._paused = False
                    self._transport.resume_reading()
            elif self._filled:
                take = min(self._filled, remaining)
                chunk = bytes(memoryview(self._current)[:take])
                self._current[: self._filled - take] = self._current[take : self._filled]
                self._filled -= take
            else:
                raise RawBodyError("the connection closed before the whole body arrived")
            remaining -= take
            yield chunk

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
