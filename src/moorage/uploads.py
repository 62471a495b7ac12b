"""The Uploads service: one blob-upload session model for the registry API and ECR's layer API.

OCI `POST`/`PATCH`/`PUT ?digest=` and ECR `InitiateLayerUpload`/`UploadLayerPart`/
`CompleteLayerUpload` are the same calls here. Bytes stream from the request through a live
sha256 into `BlobStore.append`; the session's size is stored in the metadata store after every
append (compare-and-set on the previous size), so a session continues in any process and after
a restart.

A `PUT ?digest=` that carries the whole blob (nothing staged before it) skips the session save:
`BlobStore.commit_stream` publishes the bytes as they stream, once the digest matched.

The live hasher stays in this process only (never pickled). When a later request of the session
lands in another process, or after a restart, `complete` re-hashes the staged bytes instead.
A blob becomes visible only after its digest is verified, the bytes are committed durably in the
blob store, and the metadata transaction that records and links it has committed.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Callable
from datetime import timedelta
from typing import Any

from moorage.clock import Clock
from moorage.errors import (
    DigestMismatchError,
    TooLargeError,
    UploadInvalidError,
    UploadOffsetMismatchError,
    UploadUnknownError,
)
from moorage.metadata import MetadataStore
from moorage.model import BlobInfo, Digest, RegistryRef, RepositoryName, UploadSession
from moorage.registry import Registry
from moorage.storage import BlobStore, UploadStateError

__all__ = ["Uploads"]

_MAX_LIVE_HASHERS = 512
# How long a claimed blob is protected from GC while its bytes are committed and linked; a
# process that dies in between leaves a blob GC reclaims after this hold plus the grace period.
_COMMIT_HOLD = timedelta(hours=1)


class Uploads:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        registry: Registry,
        *,
        clock: Clock,
        max_blob_bytes: int,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._registry = registry
        self._clock = clock
        self._max_blob_bytes = max_blob_bytes
        # upload id -> (bytes hashed so far, live sha256); bounded, least recently used dropped
        self._hashers: OrderedDict[str, tuple[int, Any]] = OrderedDict()

    async def start(self, registry: RegistryRef, name: RepositoryName) -> UploadSession:
        """Open a new, empty session in the repository (created on push when so configured)."""
        repo = await self._registry.repository_for_push(registry, name)
        upload_id = str(uuid.uuid4())
        state = await self._blobs.begin_upload(upload_id)
        now = self._clock.now()
        try:
            async with self._metadata.transaction(write=True) as tx:
                await tx.uploads.create(repo.id, state, now)
        except BaseException:
            await self._blobs.abort_upload(state)
            raise
        self._remember(upload_id, 0, hashlib.sha256())
        return UploadSession(registry, name, upload_id, state, now, now)

    async def status(self, registry: RegistryRef, name: RepositoryName, upload_id: str) -> UploadSession:
        """The session. Raises UploadUnknownError when it does not exist in that repository."""
        async with self._metadata.transaction() as tx:
            session = await tx.uploads.get(registry, name, upload_id)
        if session is None:
            raise UploadUnknownError(upload_id)
        return session

    async def append(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        upload_id: str,
        data: AsyncIterable[bytes],
        *,
        first_byte: int | None = None,
    ) -> UploadSession:
        """Append a chunk. When `first_byte` is given it must equal the session's size, else
        UploadOffsetMismatchError(size). Raises UploadUnknownError, TooLargeError."""
        session = await self._status_at(registry, name, upload_id, first_byte)
        return await self._append(session, data)

    async def _status_at(
        self, registry: RegistryRef, name: RepositoryName, upload_id: str, first_byte: int | None
    ) -> UploadSession:
        """The session, checked to end at `first_byte` when that is given (the one offset check
        every append path shares)."""
        session = await self.status(registry, name, upload_id)
        if first_byte is not None and first_byte != session.size:
            raise UploadOffsetMismatchError(upload_id, session.size)
        return session

    async def _append(
        self,
        session: UploadSession,
        data: AsyncIterable[bytes],
        written: Callable[[Any], None] | None = None,
    ) -> UploadSession:
        """Stage `data` after the session's bytes and save the new size. `written` is called with
        the live sha256 of the whole upload (None when this process has none) once the bytes are
        staged, before the save."""
        upload_id = session.upload_id
        live = self._hashers.pop(upload_id, None)
        hasher = live[1] if live is not None and live[0] == session.size else None
        if hasher is None and session.size == 0:
            # Nothing staged yet: this process can hash the whole blob as it streams, even when
            # the session was started by another worker or replica.
            hasher = hashlib.sha256()
        try:
            state = await self._blobs.append(session.state, _metered(data, session.size, self._max_blob_bytes, hasher))
        except UploadStateError:
            raise UploadUnknownError(upload_id) from None
        if written is not None:
            written(hasher)
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            saved = await tx.uploads.save(
                upload_id, state, now, expected_size=session.size, part_size=state.size - session.size
            )
        if not saved:
            raise UploadInvalidError(f"upload {upload_id} was changed by a concurrent request")
        if hasher is not None:
            self._remember(upload_id, state.size, hasher)
        parts = (*session.part_sizes, state.size - session.size)
        return UploadSession(session.registry, session.repository, upload_id, state, session.created_at, now, parts)

    async def complete(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        upload_id: str,
        digest: Digest,
        final: AsyncIterable[bytes] | None = None,
        *,
        first_byte: int | None = None,
        on_verified: Callable[[], None] | None = None,
    ) -> BlobInfo:
        """Append an optional last chunk (starting at `first_byte` when given, as `append`
        checks), verify the content against `digest`, publish the blob and link it into the
        repository; the session ends. A digest mismatch cancels the session (nothing is kept)
        and raises DigestMismatchError. `on_verified` is called once the digest matched, before
        the blob is published (the pull-through cache then releases a streamed body's last bytes)."""
        session = await self._status_at(registry, name, upload_id, first_byte)
        if final is not None and session.size == 0:
            return await self._complete_whole(session, digest, final, on_verified)
        told = False

        def early(hasher: Any) -> None:
            # The last chunk is staged and the live hash matches: say so now rather than after
            # the session's save (a database write a streamed pull-through body would wait on).
            nonlocal told
            matched = hasher is not None and digest.algorithm == "sha256" and hasher.hexdigest() == digest.hex
            if on_verified is not None and matched:
                told = True
                on_verified()

        if final is not None:
            session = await self._append(session, final, early)
        actual = await self._digest_of(session, digest.algorithm)
        if actual != digest:
            await self.cancel(registry, name, upload_id)
            raise DigestMismatchError(str(digest), str(actual))
        if on_verified is not None and not told:
            on_verified()
        await self._claim(BlobInfo(digest, session.size))
        try:
            info = await self._blobs.commit_upload(session.state, digest)
        except UploadStateError:
            raise UploadUnknownError(upload_id) from None
        await self._link(session, info)
        return info

    async def _complete_whole(
        self,
        session: UploadSession,
        digest: Digest,
        data: AsyncIterable[bytes],
        on_verified: Callable[[], None] | None,
    ) -> BlobInfo:
        """`complete` when the last chunk is the whole blob (monolithic PUT, a pull-through fetch):
        the store publishes the bytes as they stream (`BlobStore.commit_stream`), with no session
        save in between; the digest check ends the stream, so a mismatch publishes nothing."""
        upload_id = session.upload_id
        self._hashers.pop(upload_id, None)
        hasher = hashlib.new(digest.algorithm)

        def check() -> None:  # the stream's end: a mismatch raises from it, before anything is published
            actual = Digest(digest.algorithm, hasher.hexdigest())
            if actual != digest:
                raise DigestMismatchError(str(digest), str(actual))
            if on_verified is not None:
                on_verified()

        verified = _metered(data, 0, self._max_blob_bytes, hasher, check)
        try:
            info = await self._blobs.commit_stream(
                session.state, digest, verified, lambda size: self._claim(BlobInfo(digest, size))
            )
        except DigestMismatchError:
            await self.cancel(session.registry, session.repository, upload_id, missing_ok=True)
            raise
        except UploadStateError:
            raise UploadUnknownError(upload_id) from None
        await self._link(session, info)
        return info

    async def _link(self, session: UploadSession, info: BlobInfo) -> None:
        """Record the committed blob, link it into the session's repository and end the session."""
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(session.registry, session.repository, for_update=True)
            if repo is None:
                raise UploadUnknownError(session.upload_id)
            await tx.blobs.claim(info, now)  # the grace period starts now, not at the hold below
            await tx.blobs.link(repo.id, info.digest, now)
            await tx.uploads.delete(session.upload_id)

    async def _claim(self, info: BlobInfo) -> None:
        """Tell garbage collection this blob is in use before its bytes are committed: a GC that
        is deleting the same digest right now finishes first (its bytes and rows are gone before
        ours are written), and one that comes later sees the blob touched in the future (a hold
        covering the commit), so it cannot delete the bytes before they are linked."""
        for _attempt in range(600):
            async with self._metadata.transaction(write=True) as tx:
                if await tx.blobs.claim(info, self._clock.now() + _COMMIT_HOLD):
                    return
            await asyncio.sleep(0.05)
        raise UploadInvalidError(f"blob {info.digest} is being garbage-collected; retry the upload")

    async def upload_blob(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        data: AsyncIterable[bytes],
        *,
        on_verified: Callable[[], None] | None = None,
    ) -> BlobInfo:
        """A whole blob in one request (OCI monolithic `POST ?digest=`)."""
        session = await self.start(registry, name)
        try:
            return await self.complete(registry, name, session.upload_id, digest, data, on_verified=on_verified)
        except BaseException:
            await self.cancel(registry, name, session.upload_id, missing_ok=True)
            raise

    async def cancel(
        self, registry: RegistryRef, name: RepositoryName, upload_id: str, *, missing_ok: bool = False
    ) -> None:
        """End the session and drop its staged bytes. Raises UploadUnknownError unless `missing_ok`."""
        async with self._metadata.transaction() as tx:
            session = await tx.uploads.get(registry, name, upload_id)
        self._hashers.pop(upload_id, None)
        if session is None:
            if missing_ok:
                return
            raise UploadUnknownError(upload_id)
        async with self._metadata.transaction(write=True) as tx:
            await tx.uploads.delete(upload_id)
        await self._blobs.abort_upload(session.state)

    async def _digest_of(self, session: UploadSession, algorithm: str) -> Digest:
        live = self._hashers.pop(session.upload_id, None)
        if algorithm == "sha256" and live is not None and live[0] == session.size:
            return Digest("sha256", live[1].hexdigest())
        hasher = hashlib.new(algorithm)
        try:
            async for chunk in self._blobs.read_upload(session.state):
                hasher.update(chunk)
        except UploadStateError:
            raise UploadUnknownError(session.upload_id) from None
        return Digest(algorithm, hasher.hexdigest())

    def _remember(self, upload_id: str, size: int, hasher: Any) -> None:
        self._hashers[upload_id] = (size, hasher)
        self._hashers.move_to_end(upload_id)
        while len(self._hashers) > _MAX_LIVE_HASHERS:
            self._hashers.popitem(last=False)


async def _metered(
    data: AsyncIterable[bytes],
    size: int,
    limit: int,
    hasher: Any,
    at_end: Callable[[], None] | None = None,
) -> AsyncIterator[bytes]:
    """`data` as it streams into an upload that holds `size` bytes already: TooLargeError as soon
    as the upload would pass `limit` bytes, each chunk fed to `hasher` (unless None) on its way
    through, and `at_end` called after the last chunk (it may raise, ending the stream with that)."""
    async for chunk in data:
        size += len(chunk)
        if size > limit:
            raise TooLargeError("blob", limit)
        if hasher is not None:
            hasher.update(chunk)
        yield chunk
    if at_end is not None:
        at_end()
