"""The BlobStore protocol: content-addressed bytes plus upload staging.

A blob store knows digests and upload ids, nothing else: no repositories, no manifests, no
permissions. The metadata store decides what exists; the blob store only holds bytes. A blob
that is in the blob store but not linked in the metadata store is invisible to clients and is
reclaimed by garbage collection.

Life of an upload:

    begin_upload(id) ──► append(state, chunk) ──► append(...) ──► commit_upload(state, digest)
         │                                                          │
         └──────────────────────► abort_upload(state) ◄─────────────┘ (on failure)

    begin_upload(id) ──► commit_stream(state, digest, data, ready)     (a whole blob in one go)

`UploadState` is returned by every step and persisted by the caller (the Uploads service)
between requests, so a session can continue in another process or after a restart. The store
never verifies digests itself: the caller hashes the bytes as they stream through `append` (or
re-reads them with `read_upload`) and only then calls `commit_upload`.

Guarantees every implementation gives (checked by tests/contract/test_blob_store.py):
- `commit_upload` is atomic: readers see either no blob or all of its bytes, never a prefix,
  even across a crash at any instant. Committed bytes are durable (fsync or equivalent)
  before it returns.
- committing a digest that already exists succeeds and keeps one copy (idempotent).
- `append` on a state whose `size` is smaller than what is staged (for instance after a crash
  mid-append) first discards the staged bytes past `state.size`; the caller's recorded size
  is the truth.
- nothing is left behind by `abort_upload` or by a successful commit.
- `commit_stream` publishes nothing unless `data` ended normally and `ready` returned; when
  either raises, nothing is published and `abort_upload` leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Protocol

from moorage.errors import MoorageError
from moorage.model import BlobInfo, ByteRange, Digest, UploadState

__all__ = ["BlobMissingError", "BlobStore", "UploadStateError", "commit_by_staging"]


class BlobMissingError(MoorageError):
    """The blob store holds no blob with this digest."""

    def __init__(self, digest: Digest) -> None:
        super().__init__(f"blob {digest} is not in the blob store")
        self.digest = digest


class UploadStateError(MoorageError):
    """The staged upload is gone or does not match the state given (e.g. aborted elsewhere)."""


class BlobStore(Protocol):
    async def stat(self, digest: Digest) -> BlobInfo | None:
        """Size of a committed blob, or None when it is not stored."""
        ...

    def read(self, digest: Digest, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        """Stream a committed blob (or the inclusive `byte_range` of it, already clamped by the caller).

        Raises BlobMissingError (on first iteration) when the blob is not stored.
        """
        ...

    def local_path(self, digest: Digest) -> Path | None:
        """A filesystem path holding exactly the committed blob's bytes, for zero-copy sending,
        or None when the store is not local. The path is never a staging file."""
        ...

    async def redirect_url(self, digest: Digest, *, method: str, expires_in: timedelta) -> str | None:
        """A URL the client may fetch the blob from directly (e.g. an S3 pre-signed GET), or None
        when the store cannot serve clients itself."""
        ...

    async def delete(self, digest: Digest) -> None:
        """Remove a committed blob. Idempotent: deleting a missing blob is not an error."""
        ...

    def digests(self) -> AsyncIterator[Digest]:
        """Every committed digest, in no particular order (for orphan sweeps)."""
        ...

    async def begin_upload(self, upload_id: str) -> UploadState:
        """Create empty staging for `upload_id` (URL-safe, at most 64 characters). Returns size 0."""
        ...

    async def append(self, state: UploadState, data: AsyncIterable[bytes]) -> UploadState:
        """Append every chunk of `data` to the staging at `state.size`; return the new state.

        Staged bytes past `state.size` (left by an interrupted append) are discarded first.
        If `data` raises, the exception propagates and the staging may hold a partial tail past
        `state.size`, which the next append discards. Raises UploadStateError when the staging
        is gone.
        """
        ...

    def read_upload(self, state: UploadState) -> AsyncIterator[bytes]:
        """Stream the first `state.size` staged bytes (to re-hash when no live hasher exists)."""
        ...

    async def commit_upload(self, state: UploadState, digest: Digest) -> BlobInfo:
        """Atomically publish the first `state.size` staged bytes as blob `digest` and remove the
        staging. The caller has verified the digest. If the blob already exists, the staging is
        removed and the existing blob kept. Raises UploadStateError when the staging is gone.
        """
        ...

    async def commit_stream(
        self,
        state: UploadState,
        digest: Digest,
        data: AsyncIterable[bytes],
        ready: Callable[[int], Awaitable[None]],
    ) -> BlobInfo:
        """Publish every byte of `data` as blob `digest`, the whole content of an upload with
        nothing staged yet (`state.size` is 0), and remove the staging.

        The caller verifies as the bytes stream: `data` raises (for instance DigestMismatchError)
        rather than end when they do not match `digest`. The blob is published only after `data`
        has ended and `await ready(size)` has returned (the caller's last word before the blob
        becomes visible), with the same atomicity and durability as `commit_upload`; when either
        raises, nothing is published and the exception propagates. A store may skip staging here
        (S3 writes the parts of a multipart upload straight at the blob's key). If the blob
        already exists, the bytes are consumed, `ready` awaited, and the existing blob kept.
        Raises UploadStateError when `state.size` is not 0.
        """
        ...

    async def abort_upload(self, state: UploadState) -> None:
        """Remove the staging. Idempotent."""
        ...

    async def close(self) -> None:
        """Release connections and other resources."""
        ...


async def commit_by_staging(
    store: BlobStore,
    state: UploadState,
    digest: Digest,
    data: AsyncIterable[bytes],
    ready: Callable[[int], Awaitable[None]],
) -> BlobInfo:
    """`commit_stream` for a store where staging costs nothing extra (a local file, memory): the
    bytes are appended, `ready` awaited, then published as by `commit_upload`."""
    if state.size != 0:
        raise UploadStateError(f"upload {state.upload_id} already stages {state.size} bytes")
    staged = await store.append(state, data)
    await ready(staged.size)
    return await store.commit_upload(staged, digest)
