"""RawResponse, the bare HTTP/1.1 GET reader of the blob hot paths, against loopback servers that
answer in awkward pieces: a head split byte by byte, a head and a whole body in one write, a body
larger than the read-ahead bound, a connection that closes early, a server that stalls. Each over
plain http (the socket read directly) and over https (the TLS protocol reader)."""

from __future__ import annotations

import asyncio
import random
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from moorage.rawhttp import CHUNK, RawBodyError, RawResponse
from tests.support.tls import self_signed

pytestmark = pytest.mark.anyio

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# The servers of the test running: no TLS, or (server context, client context).
_TLS: list[tuple[ssl.SSLContext, ssl.SSLContext] | None] = [None]


def _contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A self-signed certificate for 127.0.0.1: the server's context and a client context trusting it."""
    cert_path, key_path = self_signed(directory, "server")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    return server, ssl.create_default_context(cafile=str(cert_path))


@pytest.fixture(autouse=True, params=["http", "https"])
def scheme(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    _TLS[0] = _contexts(tmp_path) if request.param == "https" else None
    yield request.param
    _TLS[0] = None


async def serve(handler: Handler) -> tuple[asyncio.Server, int]:
    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        try:
            await handler(reader, writer)
        finally:
            writer.close()

    tls = _TLS[0]
    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=tls[0] if tls else None)
    return server, server.sockets[0].getsockname()[1]


async def get(port: int, timeout: float = 5.0) -> RawResponse:
    tls = _TLS[0]
    if tls is None:
        return await RawResponse.open(f"http://127.0.0.1:{port}/blob", {}, timeout)
    client = tls[1]
    return await RawResponse.open(f"https://127.0.0.1:{port}/blob", {}, timeout, lambda: client)


async def body_of(response: RawResponse, timeout: float = 5.0) -> tuple[bytes, list[int]]:
    sizes: list[int] = []
    parts: list[bytes] = []
    async for chunk in response.chunks(timeout):
        assert isinstance(chunk, bytes)
        sizes.append(len(chunk))
        parts.append(chunk)
    return b"".join(parts), sizes


def head(status: str, length: int, extra: str = "") -> bytes:
    return f"HTTP/1.1 {status}\r\nContent-Length: {length}\r\n{extra}\r\n".encode()


async def test_a_head_split_byte_by_byte_then_a_body_in_odd_pieces() -> None:
    content = random.Random(1).randbytes(3 * CHUNK + 12345)

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for byte in head("200 OK", len(content), "X-Thing: a: b\r\n"):
            writer.write(bytes([byte]))
            await writer.drain()
        position = 0
        for size in (1, 70_000, CHUNK - 3, 5, 2 * CHUNK):
            writer.write(content[position : position + size])
            await writer.drain()
            position += size

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        assert (response.status, response.length, response.sized) == (200, len(content), True)
        assert response.headers["x-thing"] == "a: b"
        data, sizes = await body_of(response)
        response.close()
    assert data == content
    assert sizes == [CHUNK, CHUNK, CHUNK, 12345]


async def test_head_and_more_than_a_buffer_of_body_in_one_write() -> None:
    content = random.Random(2).randbytes(2 * CHUNK + 1)

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head("206 Partial Content", len(content)) + content)
        await writer.drain()

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        data, _sizes = await body_of(response)
        response.close()
    assert response.status == 206
    assert data == content


async def test_a_slow_consumer_bounds_what_is_read_ahead() -> None:
    content = random.Random(3).randbytes(96 * CHUNK)
    sent = 0

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(head("200 OK", len(content)))
        for position in range(0, len(content), CHUNK):
            writer.write(content[position : position + CHUNK])
            await writer.drain()
            sent = position + CHUNK

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        chunks = response.chunks(5.0)
        first = await anext(chunks)
        await asyncio.sleep(0.5)  # the server writes as fast as the client reads ahead
        # Read-ahead is what the kernel buffers hold (a loopback socket's receive buffer grows to
        # net.ipv4.tcp_rmem's maximum, 32 MiB on Debian), plus 4 MiB in the https reader.
        assert sent < 56 * CHUNK
        rest = [chunk async for chunk in chunks]
        response.close()
    assert first + b"".join(rest) == content


async def test_a_connection_closed_before_the_whole_body_is_an_error() -> None:
    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head("200 OK", 3 * CHUNK) + b"x" * (CHUNK + 10))
        await writer.drain()

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        got: list[int] = []

        async def read() -> None:
            async for chunk in response.chunks(5.0):
                got.append(len(chunk))

        with pytest.raises(RawBodyError):
            await read()
        response.close()
    assert sum(got) == CHUNK + 10


async def test_a_stalled_body_times_out() -> None:
    release = asyncio.Event()

    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head("200 OK", 10) + b"12345")
        await writer.drain()
        await release.wait()

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        with pytest.raises(RawBodyError, match="timed out"):
            await body_of(response, timeout=0.3)
        response.close()
        release.set()


async def test_an_answer_that_is_not_http_fails_to_open() -> None:
    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    server, port = await serve(handler)
    async with server:
        with pytest.raises(ValueError, match="not an HTTP/1 response"):
            await get(port)


async def test_statuses_and_headers_without_a_length_are_reported_for_the_caller() -> None:
    async def handler(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        await writer.drain()

    server, port = await serve(handler)
    async with server:
        response = await get(port)
        response.close()
    assert (response.status, response.length, response.headers["transfer-encoding"]) == (404, None, "chunked")
    assert not response.sized


async def test_only_http_urls_with_a_host_are_fetched() -> None:
    for url in ("ftp://127.0.0.1/blob", "http:///blob", "file:///etc/passwd"):
        with pytest.raises(ValueError, match="not an http"):
            await RawResponse.open(url, {}, 1.0)
