"""A `BlobStore` held in process memory, for tests and throw-away development servers.

Committed blobs are `bytes` keyed by digest; each staged upload is a `bytearray` keyed by
upload id. Nothing survives the process, so the durability guarantee holds trivially, and every
mutation happens between two awaits, so commits are atomic for every reader.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

from moorage.model import BlobInfo, ByteRange, Digest, UploadState
from moorage.storage import BlobMissingError, UploadStateError, commit_by_staging

__all__ = ["CHUNK_SIZE", "MemoryBlobStore"]

CHUNK_SIZE = 1024 * 1024
"""Size of the chunks `read` and `read_upload` yield (the last one may be shorter)."""

_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


class MemoryBlobStore:
    def __init__(self) -> None:
        self._blobs: dict[Digest, bytes] = {}
        self._uploads: dict[str, bytearray] = {}

    @property
    def staged_upload_ids(self) -> frozenset[str]:
        """Ids of the uploads that currently have staging (for tests)."""
        return frozenset(self._uploads)

    def _staging(self, state: UploadState) -> bytearray:
        """The staging of `state`, checked to hold at least `state.size` bytes."""
        if not _UPLOAD_ID_RE.fullmatch(state.upload_id):
            raise UploadStateError(f"invalid upload id: {state.upload_id[:100]!r}")
        if state.size < 0:
            raise UploadStateError(f"upload {state.upload_id}: negative size {state.size}")
        staging = self._uploads.get(state.upload_id)
        if staging is None:
            raise UploadStateError(f"upload {state.upload_id} has no staging")
        if len(staging) < state.size:
            raise UploadStateError(
                f"upload {state.upload_id} stages {len(staging)} bytes but its state says {state.size}"
            )
        return staging

    # -- committed blobs -----------------------------------------------------------------------

    async def stat(self, digest: Digest) -> BlobInfo | None:
        blob = self._blobs.get(digest)
        return None if blob is None else BlobInfo(digest, len(blob))

    async def read(self, digest: Digest, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        blob = self._blobs.get(digest)
        if blob is None:
            raise BlobMissingError(digest)
        span = (byte_range or ByteRange(0)).resolve(len(blob))
        if span is None:
            return
        start, end = span
        for offset in range(start, end + 1, CHUNK_SIZE):
            yield blob[offset : min(offset + CHUNK_SIZE, end + 1)]

    def local_path(self, digest: Digest) -> Path | None:
        return None

    async def redirect_url(self, digest: Digest, *, method: str, expires_in: timedelta) -> str | None:
        return None

    async def delete(self, digest: Digest) -> None:
        self._blobs.pop(digest, None)

    async def digests(self) -> AsyncIterator[Digest]:
        for digest in list(self._blobs):
            yield digest

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> UploadState:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise ValueError(f"invalid upload id: {upload_id[:100]!r}")
        self._uploads[upload_id] = bytearray()
        return UploadState(upload_id, 0, {})

    async def append(self, state: UploadState, data: AsyncIterable[bytes]) -> UploadState:
        staging = self._staging(state)
        del staging[state.size :]
        size = state.size
        async for chunk in data:
            staging += chunk
            size += len(chunk)
        return UploadState(state.upload_id, size, {})

    async def read_upload(self, state: UploadState) -> AsyncIterator[bytes]:
        staging = self._staging(state)
        for offset in range(0, state.size, CHUNK_SIZE):
            if len(staging) < min(offset + CHUNK_SIZE, state.size):
                raise UploadStateError(f"upload {state.upload_id} shrank while being read")
            yield bytes(staging[offset : min(offset + CHUNK_SIZE, state.size)])

    async def commit_upload(self, state: UploadState, digest: Digest) -> BlobInfo:
        staging = self._staging(state)
        del self._uploads[state.upload_id]
        if digest not in self._blobs:
            self._blobs[digest] = bytes(staging[: state.size])
        return BlobInfo(digest, len(self._blobs[digest]))

    async def commit_stream(
        self,
        state: UploadState,
        digest: Digest,
        data: AsyncIterable[bytes],
        ready: Callable[[int], Awaitable[None]],
    ) -> BlobInfo:
        return await commit_by_staging(self, state, digest, data, ready)

    async def abort_upload(self, state: UploadState) -> None:
        if not _UPLOAD_ID_RE.fullmatch(state.upload_id):
            raise UploadStateError(f"invalid upload id: {state.upload_id[:100]!r}")
        self._uploads.pop(state.upload_id, None)

    async def close(self) -> None:
        return None
