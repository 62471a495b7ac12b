"""The BlobStore contract (see moorage.storage), checked against every backend in conftest.py.

The `blob_store` fixture also checks, after each test, that no staged upload is left behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import random
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from moorage.model import BlobInfo, ByteRange, Digest, UploadState
from moorage.storage import BlobMissingError, BlobStore, UploadStateError
from tests.contract.conftest import staging_is_empty

pytestmark = pytest.mark.anyio

MiB = 1024 * 1024
KiB = 1024


class InterruptedError_(Exception):
    """Raised by a body stream to simulate a client that disconnects mid-upload."""


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


async def stream(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        await asyncio.sleep(0)
        yield part


async def broken_stream(*parts: bytes) -> AsyncIterator[bytes]:
    async for part in stream(*parts):
        yield part
    raise InterruptedError_("client went away")


async def read_all(store: BlobStore, digest: Digest, byte_range: ByteRange | None = None) -> bytes:
    return b"".join([chunk async for chunk in store.read(digest, byte_range)])


async def read_staged(store: BlobStore, state: UploadState) -> bytes:
    return b"".join([chunk async for chunk in store.read_upload(state)])


async def stage(store: BlobStore, upload_id: str, *appends: list[bytes]) -> UploadState:
    """Begin `upload_id` and append each list of chunks as one `append` call."""
    state = await store.begin_upload(upload_id)
    for chunks in appends:
        state = await store.append(state, stream(*chunks))
    return state


async def put(store: BlobStore, content: bytes, upload_id: str = "put") -> Digest:
    digest = sha256(content)
    state = await stage(store, upload_id, [content])
    assert await store.commit_upload(state, digest) == BlobInfo(digest, len(content))
    return digest


async def test_round_trip_of_a_multi_chunk_upload(blob_store: BlobStore) -> None:
    content = payload(2 * MiB + 512 * KiB + 7, seed=1)
    cuts = [0, 100, 700 * KiB, MiB + 3, 2 * MiB, 2 * MiB + 1, len(content)]
    pieces = [content[a:b] for a, b in itertools.pairwise(cuts)]

    state = await blob_store.begin_upload("round-trip")
    assert state.upload_id == "round-trip"
    assert state.size == 0
    state = await blob_store.append(state, stream(*pieces[:3]))
    assert state.size == cuts[3]
    state = await blob_store.append(state, stream(*pieces[3:]))
    assert state.size == len(content)

    digest = sha256(content)
    assert await blob_store.stat(digest) is None
    assert await blob_store.commit_upload(state, digest) == BlobInfo(digest, len(content))

    assert await blob_store.stat(digest) == BlobInfo(digest, len(content))
    assert await read_all(blob_store, digest) == content


async def test_zero_byte_blob(blob_store: BlobStore) -> None:
    state = await blob_store.begin_upload("empty")
    state = await blob_store.append(state, stream())
    assert state.size == 0
    assert await read_staged(blob_store, state) == b""

    digest = sha256(b"")
    assert await blob_store.commit_upload(state, digest) == BlobInfo(digest, 0)
    assert await blob_store.stat(digest) == BlobInfo(digest, 0)
    assert await read_all(blob_store, digest) == b""
    path = blob_store.local_path(digest)
    assert path is None or path.read_bytes() == b""


async def test_many_small_appends_then_commit(blob_store: BlobStore) -> None:
    pieces = [payload(17 * KiB, seed=i) for i in range(300)]
    state = await blob_store.begin_upload("small-appends")
    for i, piece in enumerate(pieces, start=1):
        state = await blob_store.append(state, stream(piece))
        assert state.size == i * 17 * KiB

    content = b"".join(pieces)
    digest = sha256(content)
    assert await blob_store.commit_upload(state, digest) == BlobInfo(digest, len(content))
    stored = await read_all(blob_store, digest)
    assert len(stored) == len(content)
    assert sha256(stored) == digest


async def test_commit_publishes_only_the_state_size_prefix(blob_store: BlobStore) -> None:
    head, tail = b"accepted bytes|", b"never acknowledged"
    accepted = await stage(blob_store, "prefix", [head])
    await blob_store.append(accepted, stream(tail))

    digest = sha256(head)
    assert await blob_store.commit_upload(accepted, digest) == BlobInfo(digest, len(head))
    assert await read_all(blob_store, digest) == head


async def test_committing_an_existing_digest_is_idempotent(blob_store: BlobStore) -> None:
    content = payload(300 * KiB, seed=2)
    digest = await put(blob_store, content, "first")

    again = await stage(blob_store, "second", [content[:1000], content[1000:]])
    assert await blob_store.commit_upload(again, digest) == BlobInfo(digest, len(content))
    assert await staging_is_empty(blob_store)

    # The existing blob is kept: bytes staged under a digest already stored are dropped.
    impostor = await stage(blob_store, "third", [payload(len(content), seed=3)])
    assert await blob_store.commit_upload(impostor, digest) == BlobInfo(digest, len(content))
    assert await staging_is_empty(blob_store)

    assert await read_all(blob_store, digest) == content
    assert [d async for d in blob_store.digests()] == [digest]


async def test_concurrent_commits_of_the_same_digest_all_succeed(blob_store: BlobStore) -> None:
    content = payload(3 * MiB + 11, seed=4)
    digest = sha256(content)
    states = [await stage(blob_store, f"concurrent-{i}", [content[: MiB + i], content[MiB + i :]]) for i in range(4)]

    infos = await asyncio.gather(*(blob_store.commit_upload(state, digest) for state in states))

    assert infos == [BlobInfo(digest, len(content))] * 4
    assert await staging_is_empty(blob_store)
    assert await read_all(blob_store, digest) == content
    path = blob_store.local_path(digest)
    assert path is None or path.read_bytes() == content


async def test_concurrent_reads_during_commit_see_nothing_or_everything(blob_store: BlobStore) -> None:
    content = payload(2 * MiB, seed=5)
    digest = sha256(content)
    state = await stage(blob_store, "observed", [content])
    seen: list[bytes | None] = []

    async def watch() -> None:
        while not seen or seen[-1] is None:
            try:
                seen.append(await read_all(blob_store, digest))
            except BlobMissingError:
                seen.append(None)
            await asyncio.sleep(0)

    watcher = asyncio.ensure_future(watch())
    await blob_store.commit_upload(state, digest)
    await asyncio.wait_for(watcher, timeout=10)
    assert all(observed is None or observed == content for observed in seen)
    assert seen[-1] == content


async def test_abort_removes_staging(blob_store: BlobStore) -> None:
    state = await stage(blob_store, "aborted", [b"some bytes"])
    await blob_store.abort_upload(state)
    assert await staging_is_empty(blob_store)

    with pytest.raises(UploadStateError):
        await blob_store.append(state, stream(b"more"))
    with pytest.raises(UploadStateError):
        await read_staged(blob_store, state)
    with pytest.raises(UploadStateError):
        await blob_store.commit_upload(state, sha256(b"some bytes"))
    await blob_store.abort_upload(state)  # idempotent
    assert await blob_store.stat(sha256(b"some bytes")) is None
    assert await staging_is_empty(blob_store)


async def test_append_and_commit_without_begin_raise(blob_store: BlobStore) -> None:
    never_begun = UploadState("never-begun", 0, {})
    with pytest.raises(UploadStateError):
        await blob_store.append(never_begun, stream(b"x"))
    with pytest.raises(UploadStateError):
        await blob_store.commit_upload(never_begun, sha256(b""))
    await blob_store.abort_upload(never_begun)


async def test_append_after_an_interrupted_append_discards_the_tail(blob_store: BlobStore) -> None:
    first = payload(150 * KiB, seed=6)
    lost = payload(MiB + 5, seed=7)
    resumed = payload(64 * KiB + 1, seed=8)

    accepted = await stage(blob_store, "interrupted", [first[:10], first[10:]])
    with pytest.raises(InterruptedError_):
        await blob_store.append(accepted, broken_stream(lost[: MiB // 2], lost[MiB // 2 :]))

    # The caller still holds `accepted`: its size is the truth.
    assert await read_staged(blob_store, accepted) == first
    state = await blob_store.append(accepted, stream(resumed))
    assert state.size == len(first) + len(resumed)
    assert await read_staged(blob_store, state) == first + resumed

    digest = sha256(first + resumed)
    assert await blob_store.commit_upload(state, digest) == BlobInfo(digest, len(first) + len(resumed))
    assert await read_all(blob_store, digest) == first + resumed


async def test_append_with_a_state_ahead_of_the_staging_raises(blob_store: BlobStore) -> None:
    state = await stage(blob_store, "ahead", [b"12345"])
    with pytest.raises(UploadStateError):
        await blob_store.append(UploadState(state.upload_id, 6, {}), stream(b"x"))
    assert await read_staged(blob_store, state) == b"12345"
    await blob_store.abort_upload(state)


BLOB_SIZE = 2 * MiB + 1000


@pytest.mark.parametrize(
    ("start", "end"),
    [
        pytest.param(0, 0, id="first-byte"),
        pytest.param(0, 99, id="start"),
        pytest.param(MiB - 10, MiB + 10, id="middle-across-chunk-boundary"),
        pytest.param(1234, 2 * MiB - 1, id="middle-large"),
        pytest.param(BLOB_SIZE - 1, BLOB_SIZE - 1, id="last-byte"),
        pytest.param(BLOB_SIZE - 100, BLOB_SIZE - 1, id="suffix"),
        pytest.param(777, None, id="open-ended"),
        pytest.param(BLOB_SIZE - 1, None, id="open-ended-last-byte"),
    ],
)
async def test_range_reads(blob_store: BlobStore, start: int, end: int | None) -> None:
    content = payload(BLOB_SIZE, seed=9)
    digest = await put(blob_store, content)
    expected = content[start:] if end is None else content[start : end + 1]
    assert await read_all(blob_store, digest, ByteRange(start, end)) == expected
    assert await read_all(blob_store, digest, ByteRange(0)) == content


async def test_read_of_a_missing_blob_raises_on_first_iteration(blob_store: BlobStore) -> None:
    digest = sha256(b"not stored")
    chunks = blob_store.read(digest)
    with pytest.raises(BlobMissingError) as caught:
        await anext(chunks)
    assert caught.value.digest == digest
    with pytest.raises(BlobMissingError):
        await read_all(blob_store, digest, ByteRange(0, 10))


async def test_stat_of_a_missing_blob_is_none(blob_store: BlobStore) -> None:
    assert await blob_store.stat(sha256(b"not stored")) is None
    assert blob_store.local_path(sha256(b"not stored")) is None


async def test_delete_is_idempotent(blob_store: BlobStore) -> None:
    keep = await put(blob_store, b"keep me", "keep")
    gone = await put(blob_store, b"delete me", "gone")

    await blob_store.delete(gone)
    assert await blob_store.stat(gone) is None
    assert blob_store.local_path(gone) is None
    with pytest.raises(BlobMissingError):
        await read_all(blob_store, gone)
    await blob_store.delete(gone)
    await blob_store.delete(sha256(b"never stored"))

    assert await read_all(blob_store, keep) == b"keep me"
    assert [d async for d in blob_store.digests()] == [keep]


async def test_digests_lists_committed_blobs_only(blob_store: BlobStore) -> None:
    assert [d async for d in blob_store.digests()] == []
    contents = [b"", b"a", payload(70 * KiB, seed=10), payload(5, seed=11)]
    committed = {await put(blob_store, content, f"blob-{i}") for i, content in enumerate(contents)}
    sha512 = Digest("sha512", hashlib.sha512(b"five12").hexdigest())
    state = await stage(blob_store, "sha512", [b"five12"])
    await blob_store.commit_upload(state, sha512)
    committed.add(sha512)
    pending = await stage(blob_store, "pending", [b"staged, not committed"])

    listed = [d async for d in blob_store.digests()]
    assert sorted(map(str, listed)) == sorted(map(str, committed))
    assert await read_all(blob_store, sha512) == b"five12"
    await blob_store.abort_upload(pending)


async def test_read_upload_returns_the_staged_prefix(blob_store: BlobStore) -> None:
    first = payload(MiB + 17, seed=12)
    second = payload(3000, seed=13)
    early = await stage(blob_store, "reread", [first])
    late = await blob_store.append(early, stream(second[:1000], second[1000:]))

    assert await read_staged(blob_store, late) == first + second
    assert await read_staged(blob_store, early) == first
    assert await read_staged(blob_store, UploadState(early.upload_id, 0, {})) == b""
    await blob_store.abort_upload(late)


async def test_redirect_url_is_none_or_a_url(blob_store: BlobStore) -> None:
    digest = await put(blob_store, b"redirect me")
    url = await blob_store.redirect_url(digest, method="GET", expires_in=timedelta(minutes=5))
    assert url is None or (isinstance(url, str) and url.startswith(("http://", "https://")))


async def test_local_path_holds_exactly_the_blob(blob_store: BlobStore) -> None:
    content = payload(MiB + 3, seed=14)
    digest = await put(blob_store, content)
    path = blob_store.local_path(digest)
    assert path is None or path.read_bytes() == content


@pytest.mark.parametrize("upload_id", ["", "../escape", "a/b", "dot.ted", "x" * 65, "spa ce", "nul\0"])
async def test_unsafe_upload_ids_are_rejected(blob_store: BlobStore, upload_id: str) -> None:
    with pytest.raises(ValueError, match="upload id"):
        await blob_store.begin_upload(upload_id)
    state = UploadState(upload_id, 0, {})
    with pytest.raises(UploadStateError):
        await blob_store.append(state, stream(b"x"))
    with pytest.raises(UploadStateError):
        await blob_store.commit_upload(state, sha256(b""))
    with pytest.raises(UploadStateError):
        await blob_store.abort_upload(state)


async def test_longest_safe_upload_id_is_accepted(blob_store: BlobStore) -> None:
    upload_id = "A-z_9" * 12 + "abcd"
    assert len(upload_id) == 64
    state = await stage(blob_store, upload_id, [b"ok"])
    digest = sha256(b"ok")
    assert await blob_store.commit_upload(state, digest) == BlobInfo(digest, 2)


# --- commit_stream: a whole blob in one go -------------------------------------------------------


class _Readiness:
    """A `ready` callback that records the sizes it was given and whether the blob was visible."""

    def __init__(self, store: BlobStore, digest: Digest, *, fail: bool = False) -> None:
        self.store, self.digest, self.fail = store, digest, fail
        self.calls: list[tuple[int, BlobInfo | None]] = []

    async def __call__(self, size: int) -> None:
        self.calls.append((size, await self.store.stat(self.digest)))
        if self.fail:
            raise InterruptedError_("the caller refused")


@pytest.mark.parametrize("size", [0, 300 * KiB, 17 * MiB + 5], ids=["empty", "one-part", "three-parts"])
async def test_commit_stream_publishes_after_the_stream_ended_and_ready(blob_store: BlobStore, size: int) -> None:
    content = payload(size, seed=40)
    digest = sha256(content)
    state = await blob_store.begin_upload("streamed")
    ready = _Readiness(blob_store, digest)

    chunks = [content[i : i + MiB] for i in range(0, size, MiB)]
    info = await blob_store.commit_stream(state, digest, stream(*chunks), ready)

    assert info == BlobInfo(digest, size)
    assert ready.calls == [(size, None)]  # told once, with the size, before the blob was visible
    assert await read_all(blob_store, digest) == content
    assert await staging_is_empty(blob_store)


async def test_commit_stream_publishes_nothing_when_the_stream_breaks(blob_store: BlobStore) -> None:
    content = payload(17 * MiB, seed=41)
    digest = sha256(content)
    state = await blob_store.begin_upload("broken")
    ready = _Readiness(blob_store, digest)

    with pytest.raises(InterruptedError_):
        await blob_store.commit_stream(state, digest, broken_stream(content[: 9 * MiB], content[9 * MiB :]), ready)

    assert ready.calls == []
    assert await blob_store.stat(digest) is None
    with pytest.raises(BlobMissingError):
        await read_all(blob_store, digest)
    await blob_store.abort_upload(state)  # what the caller does: no part or staged byte remains


@pytest.mark.parametrize("size", [300 * KiB, 17 * MiB], ids=["one-part", "three-parts"])
async def test_commit_stream_publishes_nothing_when_ready_refuses(blob_store: BlobStore, size: int) -> None:
    content = payload(size, seed=42)
    digest = sha256(content)
    state = await blob_store.begin_upload("refused")
    ready = _Readiness(blob_store, digest, fail=True)

    with pytest.raises(InterruptedError_):
        await blob_store.commit_stream(state, digest, stream(content[:MiB], content[MiB:]), ready)

    assert ready.calls == [(size, None)]
    assert await blob_store.stat(digest) is None
    await blob_store.abort_upload(state)


@pytest.mark.parametrize("size", [300 * KiB, 17 * MiB], ids=["one-part", "three-parts"])
async def test_commit_stream_of_an_existing_digest_keeps_the_blob(blob_store: BlobStore, size: int) -> None:
    content = payload(size, seed=43)
    digest = await put(blob_store, content)
    state = await blob_store.begin_upload("again")
    ready = _Readiness(blob_store, digest)

    impostor = payload(size, seed=44)  # a caller's check would refuse these; the store keeps the blob
    info = await blob_store.commit_stream(state, digest, stream(impostor[:MiB], impostor[MiB:]), ready)

    assert info == BlobInfo(digest, size)
    assert [told for told, _seen in ready.calls] == [size]
    assert await read_all(blob_store, digest) == content
    assert await staging_is_empty(blob_store)


async def test_commit_stream_needs_an_empty_upload(blob_store: BlobStore) -> None:
    state = await stage(blob_store, "begun", [b"staged"])
    with pytest.raises(UploadStateError):
        await blob_store.commit_stream(state, sha256(b"x"), stream(b"x"), _Readiness(blob_store, sha256(b"x")))
    await blob_store.abort_upload(state)
