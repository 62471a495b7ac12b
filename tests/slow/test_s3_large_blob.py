"""S3BlobStore with a blob larger than S3's 5 GiB single-copy/part limit, on a real SeaweedFS.

The content is never held in memory: block `i` (1 MiB) is one fixed random block with `i` written
over its first 8 bytes, so every block differs and any byte range can be regenerated on demand.
The upload goes in through several appends whose boundaries fall mid-block and off the 8 MiB
segment grid, is hashed as it streams in, committed, then read back (whole, and a range across
the 5 GiB mark) and deleted.

Runs in a few minutes (5 GiB in, server-side copies at commit, 5 GiB out): slow tier only.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from moorage.model import BlobInfo, ByteRange, Digest
from moorage.storage.s3 import MAX_PART_SIZE, S3BlobStore
from tests.support.seaweed import SeaweedS3

pytestmark = [pytest.mark.anyio, pytest.mark.slow, pytest.mark.s3]

MiB = 1024 * 1024
GiB = 1024 * MiB
BLOCK = MiB
SIZE = 5 * GiB + 7 * MiB + 12_345  # past the 5 GiB limit, not a whole number of blocks
CHUNK = 4 * MiB + 3  # what one iteration of an append's body yields (off the block grid)
# Append boundaries: mid-block, off the 8 MiB segment grid, one append spanning the 5 GiB mark.
APPEND_ENDS = (1 * GiB + 5 * MiB + 17, 2 * GiB + 3, 4 * GiB + 2 * MiB + 511, SIZE)
_BASE = os.urandom(BLOCK)


def content(offset: int, length: int) -> bytes:
    """The blob's bytes [offset, offset + length)."""
    out = bytearray()
    end = offset + length
    while offset < end:
        index, within = divmod(offset, BLOCK)
        block = index.to_bytes(8, "big") + _BASE[8:]
        take = min(BLOCK - within, end - offset)
        out += block[within : within + take]
        offset += take
    return bytes(out)


def chunks(start: int, end: int) -> Iterator[bytes]:
    for offset in range(start, end, CHUNK):
        yield content(offset, min(CHUNK, end - offset))


async def body(start: int, end: int, hasher: hashlib._Hash) -> AsyncIterator[bytes]:
    for chunk in chunks(start, end):
        hasher.update(chunk)
        yield chunk


@pytest.fixture(
    params=[
        pytest.param({}, id="default"),
        # ~645 segments and tail pieces but at most 640 parts: the commit first compacts the first
        # ~5 GiB of them into one staged object (a multipart upload of up to 640 part copies), then
        # copies that object as one part of nearly 5 GiB (S3's largest) into the blob.
        pytest.param({"max_parts": 640}, id="compacted"),
    ]
)
async def store(seaweed: SeaweedS3, request: pytest.FixtureRequest) -> AsyncIterator[S3BlobStore]:
    options: dict[str, Any] = request.param
    store = await S3BlobStore.open(
        seaweed.new_bucket_name("large"),
        prefix=f"large-{uuid.uuid4().hex[:12]}",
        endpoint_url=seaweed.endpoint_url,
        region=seaweed.region,
        access_key_id=seaweed.access_key,
        secret_access_key=seaweed.secret_key,
        **options,
    )
    try:
        yield store
    finally:
        await store.close()


def _log(began: float, message: str) -> None:
    print(f"[{time.monotonic() - began:6.1f} s] {message}", flush=True)


@pytest.mark.timeout(1200)
async def test_a_blob_over_5_gib_round_trips(store: S3BlobStore) -> None:
    began = time.monotonic()
    hasher = hashlib.sha256()
    state = await store.begin_upload("large")
    for end in APPEND_ENDS:
        state = await store.append(state, body(state.size, end, hasher))
        assert state.size == end
    digest = Digest("sha256", hasher.hexdigest())
    _log(began, f"staged {SIZE / GiB:.3f} GiB in {len(APPEND_ENDS)} appends")

    assert await store.commit_upload(state, digest) == BlobInfo(digest, SIZE)
    assert await store.staging_leftovers() == []
    assert await store.stat(digest) == BlobInfo(digest, SIZE)
    _log(began, "committed")

    reread = hashlib.sha256()
    received = 0
    async for chunk in store.read(digest):
        reread.update(chunk)
        received += len(chunk)
    assert received == SIZE
    assert reread.hexdigest() == digest.hex
    _log(began, "read back")

    # Across the 5 GiB mark (where a single CopyObject/UploadPartCopy source must end), and the tail.
    for start, end in [(MAX_PART_SIZE - 3 * MiB - 5, MAX_PART_SIZE + 2 * MiB + 7), (SIZE - 100, SIZE - 1)]:
        got = b"".join([chunk async for chunk in store.read(digest, ByteRange(start, end))])
        assert got == content(start, end - start + 1), f"bytes {start}-{end} differ"

    await store.delete(digest)
    assert await store.stat(digest) is None
    assert await store.staging_leftovers() == []
    _log(began, "deleted")
