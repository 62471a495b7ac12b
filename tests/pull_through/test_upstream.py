"""The upstream OCI client against real registries on loopback: the Debian docker-registry with
htpasswd (Basic), and the Docker Hub-like token front end (Bearer with per-repository scope)."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Iterator

import anyio
import httpx
import pytest

from moorage.upstream import Credentials, UpstreamClient, UpstreamError, parse_challenge
from tests.support.upstream import Distribution, TokenFront, push

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    registry = Distribution(tmp_path_factory.mktemp("plain")).start()
    yield registry
    registry.stop()


@pytest.fixture(scope="module")
def basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Distribution]:
    registry = Distribution(tmp_path_factory.mktemp("basic"), users={"alice": "s3cret"}).start()
    yield registry
    registry.stop()


@pytest.fixture
def front(plain: Distribution) -> Iterator[TokenFront]:
    server = TokenFront(plain, users={"bob": "hunter2"}).start()
    yield server
    server.stop()


def test_parse_challenge() -> None:
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="svc",scope="repository:a/b:pull"'
    )
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.example/token", "service": "svc", "scope": "repository:a/b:pull"}


async def test_basic_auth_manifest_and_streamed_blob(basic: Distribution) -> None:
    with httpx.Client(base_url=basic.url, auth=("alice", "s3cret")) as c:
        manifest = push(c, "team/app", "v1", layers=2)
        layer_digest = json.loads(manifest.data)["layers"][0]["digest"]
    client = UpstreamClient(basic.url, Credentials("alice", "s3cret"))
    try:
        got = await client.get_manifest("team/app", "v1")
        assert got.body == manifest.data
        assert got.digest == manifest.digest
        assert got.media_type == manifest.media_type
        assert await client.head_manifest("team/app", "v1") == manifest.digest
        h = hashlib.sha256()
        async with client.blob("team/app", layer_digest) as blob:
            assert blob.size == 512
            async for chunk in blob.chunks:
                h.update(chunk)
        assert "sha256:" + h.hexdigest() == layer_digest
    finally:
        await client.aclose()


async def test_basic_auth_wrong_password_is_denied(basic: Distribution) -> None:
    client = UpstreamClient(basic.url, Credentials("alice", "wrong"))
    with pytest.raises(UpstreamError) as info:
        await client.check()
    assert info.value.kind == "denied"
    anonymous = UpstreamClient(basic.url)
    with pytest.raises(UpstreamError) as info:
        await anonymous.get_manifest("team/app", "v1")
    assert info.value.kind == "denied"


async def test_bearer_token_per_repository_scope(plain: Distribution, front: TokenFront) -> None:
    with httpx.Client(base_url=plain.url) as c:
        one = push(c, "library/one", "latest")
        two = push(c, "library/two", "latest")
    client = UpstreamClient(front.url, Credentials("bob", "hunter2"))
    try:
        await client.check()
        await client.check("library/one")
        assert (await client.get_manifest("library/one", "latest")).digest == one.digest
        # another repository needs another token: the client asks for that scope
        assert (await client.get_manifest("library/two", "latest")).digest == two.digest
        with pytest.raises(UpstreamError) as info:
            await client.get_manifest("library/one", "nope")
        assert info.value.kind == "not_found"
    finally:
        await client.aclose()
    bad = UpstreamClient(front.url, Credentials("bob", "wrong"))
    with pytest.raises(UpstreamError) as info:
        await bad.get_manifest("library/one", "latest")
    assert info.value.kind == "denied"


async def test_429_backs_off_the_host_and_down_is_unavailable(plain: Distribution, front: TokenFront) -> None:
    client = UpstreamClient(front.url)
    front.users.clear()
    front.fail_with, front.retry_after = 429, "2"
    with pytest.raises(UpstreamError) as info:
        await client.get_manifest("library/one", "latest")
    assert info.value.kind == "too_many"
    front.fail_with = None
    with pytest.raises(UpstreamError) as info:  # within Retry-After: not even asked
        await client.get_manifest("library/one", "latest")
    assert info.value.kind == "too_many"
    front.stop()
    await anyio.sleep(2.1)  # the back-off is over; the host is down now
    gone = UpstreamClient(front.url)
    with pytest.raises(UpstreamError) as info:
        await gone.check()
    assert info.value.kind == "unavailable"


async def test_a_blob_dribbling_in_is_read_whole_in_chunks_of_at_most_1_mib() -> None:
    """An upstream that sends its answer in uneven pieces, the body starting right after the head
    (so chunk boundaries never line up with the read buffer's): every byte arrives, in order."""
    body = bytes(range(256)) * (9 * 4096 + 123)  # ~9 MiB
    digest = "sha256:" + hashlib.sha256(body).hexdigest()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(f"HTTP/1.1 200 OK\r\ncontent-length: {len(body)}\r\n\r\n".encode() + body[:1000])
        sent, piece = 1000, 1
        while sent < len(body):
            size = 150_000 + 97_000 * (piece % 7)
            writer.write(body[sent : sent + size])
            await writer.drain()
            await asyncio.sleep(0.001)
            sent, piece = sent + size, piece + 1
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = UpstreamClient(f"http://127.0.0.1:{port}", timeout=5)
    try:
        received = bytearray()
        sizes = []
        async with client.blob("any/app", digest) as blob:
            assert blob.size == len(body)
            async for chunk in blob.chunks:
                sizes.append(len(chunk))
                received.extend(chunk)
        assert bytes(received) == body
        assert max(sizes) <= 1 << 20
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
