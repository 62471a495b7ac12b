"""S3BlobStore beyond the shared contract: multi-part staging, replicas, redirects, bucket creation.

Runs on the session's real SeaweedFS server (see conftest.py); each test gets a fresh key prefix.
"""

from __future__ import annotations

import hashlib
import random
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError

from moorage.model import BlobInfo, ByteRange, Digest, UploadState
from moorage.storage import BlobMissingError
from moorage.storage.s3 import MIN_PART_SIZE, S3BlobStore
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.anyio, pytest.mark.s3]

MiB = 1024 * 1024
KiB = 1024


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


class Disconnected(Exception):
    pass


async def broken_stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part
    raise Disconnected


async def read_staged(store: S3BlobStore, state: UploadState) -> bytes:
    return b"".join([chunk async for chunk in store.read_upload(state)])


async def read_all(store: S3BlobStore, digest: Digest) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest)])


def new_store(seaweed_s3: SeaweedS3, bucket: str, prefix: str, **options: Any) -> S3BlobStore:
    return S3BlobStore(
        bucket,
        prefix=prefix,
        endpoint_url=seaweed_s3.endpoint_url,
        region=seaweed_s3.region,
        access_key_id=seaweed_s3.access_key,
        secret_access_key=seaweed_s3.secret_key,
        **options,
    )


@pytest.fixture
def prefix() -> str:
    return f"s3-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store(seaweed_s3: SeaweedS3, s3_bucket: str, prefix: str) -> AsyncIterator[S3BlobStore]:
    store = new_store(seaweed_s3, s3_bucket, prefix, redirect=True)
    try:
        yield store
        assert await store.staging_leftovers() == [], "the test left staged uploads behind"
    finally:
        await store.close()


async def staged_object_sizes(store: S3BlobStore, upload_id: str) -> list[int]:
    return sorted([size async for key, size in store._list(f"{store.prefix}uploads/{upload_id}/data/")], reverse=True)


async def test_an_upload_continues_on_another_replica(
    store: S3BlobStore, seaweed_s3: SeaweedS3, s3_bucket: str, prefix: str
) -> None:
    small = [payload(300 * KiB + i, seed=i) for i in range(30)]  # ~9 MiB in sub-5-MiB appends
    large = [payload(6 * MiB + 1, seed=100), payload(7 * MiB + 3, seed=101), payload(123, seed=102)]

    state = await store.begin_upload("replicated")
    for piece in small:
        state = await store.append(state, stream(piece))
    assert state.size == sum(map(len, small))
    # A full segment went out as soon as 8 MiB had accumulated; the rest waits in small pieces.
    sizes = await staged_object_sizes(store, "replicated")
    assert sizes[0] == 8 * MiB
    assert all(size < MIN_PART_SIZE for size in sizes[1:])

    # Another process picks the upload up from nothing but the persisted state.
    replica = new_store(seaweed_s3, s3_bucket, prefix)
    try:
        state = await replica.append(UploadState(state.upload_id, state.size, dict(state.backend)), stream(*large))
        content = b"".join(small + large)
        assert state.size == len(content)
        assert await read_staged(store, state) == content
        assert await read_staged(replica, UploadState(state.upload_id, 5 * MiB, {})) == content[: 5 * MiB]

        digest = sha256(content)
        assert await store.commit_upload(state, digest) == BlobInfo(digest, len(content))
        assert await read_all(replica, digest) == content
        assert await replica.stat(digest) == BlobInfo(digest, len(content))
    finally:
        await replica.close()


async def test_an_append_rewinds_over_a_segment_written_past_the_state(store: S3BlobStore) -> None:
    head = payload(3 * MiB, seed=1)
    lost = payload(10 * MiB, seed=2)
    resumed = payload(2 * MiB + 5, seed=3)
    accepted = await store.begin_upload("rewind")
    accepted = await store.append(accepted, stream(head))

    # The client disconnects after a whole segment [0, 8 MiB) went out.
    with pytest.raises(Disconnected):
        await store.append(accepted, broken_stream(lost[: 6 * MiB], lost[6 * MiB :]))
    assert await read_staged(store, accepted) == head

    # The caller then commits to a longer state, and later rewinds to `accepted` after all:
    # only the 8 MiB segment holds [0, 3 MiB) now, so it is cut server-side.
    longer = await store.append(accepted, stream(lost))
    assert await read_staged(store, longer) == head + lost
    assert await read_staged(store, accepted) == head
    state = await store.append(accepted, stream(resumed))
    assert await read_staged(store, state) == head + resumed

    digest = sha256(head + resumed)
    assert await store.commit_upload(state, digest) == BlobInfo(digest, len(head) + len(resumed))
    assert await read_all(store, digest) == head + resumed


async def test_uploads_beyond_the_part_limit_are_compacted_first(
    seaweed_s3: SeaweedS3, s3_bucket: str, prefix: str
) -> None:
    store = new_store(seaweed_s3, s3_bucket, prefix, part_size=MIN_PART_SIZE, max_parts=3)
    try:
        content = payload(23 * MiB + 77, seed=4)
        state = await store.begin_upload("compacted")
        for offset in range(0, len(content), 3 * MiB):
            state = await store.append(state, stream(content[offset : offset + 3 * MiB]))
        digest = sha256(content)
        assert await store.commit_upload(state, digest) == BlobInfo(digest, len(content))
        assert await read_all(store, digest) == content
        assert await store.staging_leftovers() == []
    finally:
        await store.close()


async def test_an_append_buffers_about_one_part(store: S3BlobStore) -> None:
    chunk = payload(MiB, seed=5)
    chunks = 40

    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield chunk

    state = await store.begin_upload("bounded")
    tracemalloc.start()
    try:
        state = await store.append(state, body())
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert state.size == chunks * MiB
    assert peak < 20 * MiB, f"an append of {chunks} MiB peaked at {peak / MiB:.1f} MiB"
    digest = sha256(chunk * chunks)
    assert await store.commit_upload(state, digest) == BlobInfo(digest, chunks * MiB)
    assert (await store.stat(digest)) == BlobInfo(digest, chunks * MiB)
    await store.delete(digest)


async def test_a_streamed_commit_buffers_the_parts_in_flight_and_one_more(store: S3BlobStore) -> None:
    chunk = payload(MiB, seed=7)
    chunks = 48
    digest = sha256(chunk * chunks)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(chunks):
            yield chunk

    async def ready(size: int) -> None:
        assert await store.stat(digest) is None

    state = await store.begin_upload("streamed-bounded")
    tracemalloc.start()
    try:
        info = await store.commit_stream(state, digest, body(), ready)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info == BlobInfo(digest, chunks * MiB)
    # Two 8 MiB parts uploading and a third filling; never the whole 48 MiB.
    assert peak < 26 * MiB, f"a streamed commit of {chunks} MiB peaked at {peak / MiB:.1f} MiB"
    assert await read_all(store, digest) == chunk * chunks
    await store.delete(digest)


async def test_a_streamed_commit_cut_short_is_reclaimed_with_its_session(
    store: S3BlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    content = payload(20 * MiB, seed=8)
    digest = sha256(content)
    state = await store.begin_upload("crashed")
    abort = store._client.abort_multipart_upload

    def dead(**kwargs: object) -> None:  # the process died before it could abort
        raise ClientError({"Error": {"Code": "InternalError", "Message": "gone"}}, "AbortMultipartUpload")

    async def ready(size: int) -> None:
        raise AssertionError("never reached")

    monkeypatch.setattr(store._client, "abort_multipart_upload", dead)
    with pytest.raises(Disconnected):
        await store.commit_stream(state, digest, broken_stream(content[: 10 * MiB], content[10 * MiB :]), ready)
    assert any(key.startswith("multipart:") for key in await store.staging_leftovers())
    assert await store.stat(digest) is None

    # What expiring the session does: removing its staging also aborts the blob key's multipart upload.
    monkeypatch.setattr(store._client, "abort_multipart_upload", abort)
    await store.abort_upload(state)
    assert await store.staging_leftovers() == []
    assert await store.stat(digest) is None


async def test_redirect_urls_serve_the_blob(store: S3BlobStore, seaweed_s3: SeaweedS3, s3_bucket: str) -> None:
    content = payload(100 * KiB + 1, seed=6)
    digest = sha256(content)
    state = await store.append(await store.begin_upload("redirected"), stream(content))
    await store.commit_upload(state, digest)

    get_url = await store.redirect_url(digest, method="GET", expires_in=timedelta(minutes=5))
    head_url = await store.redirect_url(digest, method="HEAD", expires_in=timedelta(minutes=5))
    assert get_url is not None
    assert head_url is not None
    async with httpx.AsyncClient() as client:
        got = await client.get(get_url)
        assert got.status_code == 200
        assert got.content == content
        headed = await client.head(head_url)
        assert headed.status_code == 200
        assert int(headed.headers["content-length"]) == len(content)
        assert (await client.get(head_url)).status_code == 403  # signed for HEAD only

    plain = new_store(seaweed_s3, s3_bucket, store.prefix)
    try:
        assert await plain.redirect_url(digest, method="GET", expires_in=timedelta(minutes=5)) is None
    finally:
        await plain.close()


async def test_open_creates_a_missing_bucket(seaweed_s3: SeaweedS3) -> None:
    bucket = seaweed_s3.new_bucket_name("opened")
    options: dict[str, Any] = {
        "endpoint_url": seaweed_s3.endpoint_url,
        "region": seaweed_s3.region,
        "access_key_id": seaweed_s3.access_key,
        "secret_access_key": seaweed_s3.secret_key,
    }
    store = await S3BlobStore.open(bucket, **options)
    try:
        state = await store.append(await store.begin_upload("first"), stream(b"hello"))
        digest = sha256(b"hello")
        await store.commit_upload(state, digest)
    finally:
        await store.close()
    again = await S3BlobStore.open(bucket, **options)  # the bucket exists now: kept as it is
    try:
        assert [d async for d in again.digests()] == [digest]
        assert await read_all(again, digest) == b"hello"
    finally:
        await again.close()


async def test_reads_stream_over_presigned_urls_not_botocore(store: S3BlobStore) -> None:
    """Blob and staged reads go through the raw reader on a pre-signed URL (botocore's streaming
    body is ~0.5 CPU-s per GiB dearer); botocore's get_object answers only what that cannot."""
    content = payload(3 * MiB + 17, seed=7)
    state = await store.begin_upload("raw")
    state = await store.append(state, stream(content))
    digest = sha256(content)
    await store.commit_upload(state, digest)

    calls: list[dict[str, Any]] = []
    real_get_object = store._client.get_object

    def counted_get_object(**options: Any) -> Any:
        calls.append(options)
        return real_get_object(**options)

    store._client.get_object = counted_get_object
    try:
        assert await read_all(store, digest) == content
        ranged = b"".join([chunk async for chunk in store.read(digest, ByteRange(MiB + 5, 2 * MiB + 9))])
        assert ranged == content[MiB + 5 : 2 * MiB + 10]
        assert calls == []
        # A missing blob: S3 answers 404 to the raw GET, and botocore's answer becomes BlobMissingError.
        with pytest.raises(BlobMissingError):
            await read_all(store, sha256(b"never stored"))
        assert [call["Key"].rsplit("/", 1)[1] for call in calls] == [sha256(b"never stored").hex]
    finally:
        store._client.get_object = real_get_object
