"""A `BlobStore` on a local (POSIX) filesystem.

Layout under the root directory::

    <root>/
    ├── blobs/
    │   └── <algorithm>/              sha256, sha512
    │       └── <first two hex>/      fan-out, keeps directories small
    │           └── <hex>             one committed blob, never modified in place
    └── uploads/
        └── <upload_id>               staging file of one upload in progress

`blobs/` and `uploads/` live on the same filesystem, so committing is one `os.replace` of the
fsynced staging file onto its final path followed by an fsync of the directory: a reader sees
either no file or the whole blob. Two commits of the same digest both succeed; the second
rename atomically swaps one complete copy for another, identical one.

Chunk writes and reads are plain blocking calls in the event-loop thread: they hit the page
cache and are cheaper than a thread hop per chunk. Only `commit_upload`, whose fsyncs wait on
the disk, runs in a worker thread (one hop per commit).
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import anyio.to_thread

from moorage.errors import DigestInvalidError
from moorage.model import BlobInfo, ByteRange, Digest, UploadState
from moorage.storage import BlobMissingError, UploadStateError, commit_by_staging

__all__ = ["CHUNK_SIZE", "FilesystemBlobStore"]

CHUNK_SIZE = 1024 * 1024
"""Size of the chunks `read` and `read_upload` yield (the last one may be shorter)."""

_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> int:
    view = memoryview(data)
    total = len(view)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    return total


async def _pread_span(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    """Yield the inclusive byte span [start, end] of `fd` in CHUNK_SIZE pieces; stops early at EOF."""
    offset = start
    while offset <= end:
        chunk = os.pread(fd, min(CHUNK_SIZE, end - offset + 1), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


class FilesystemBlobStore:
    """Blobs and staging files under `root` (created if missing); see the module docstring."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._blobs = self.root / "blobs"
        self._uploads = self.root / "uploads"
        self._blobs.mkdir(parents=True, exist_ok=True)
        self._uploads.mkdir(parents=True, exist_ok=True)

    # -- paths ---------------------------------------------------------------------------------

    def _blob_path(self, digest: Digest) -> Path:
        return self._blobs / digest.algorithm / digest.hex[:2] / digest.hex

    def _staging_path(self, upload_id: str) -> Path:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise UploadStateError(f"invalid upload id: {upload_id[:100]!r}")
        return self._uploads / upload_id

    def _open_staging(self, state: UploadState, *, writable: bool) -> int:
        """Open the staging file and check it holds at least `state.size` bytes; when `writable`,
        cut the bytes past `state.size` (the tail of an interrupted append)."""
        path = self._staging_path(state.upload_id)
        if state.size < 0:
            raise UploadStateError(f"upload {state.upload_id}: negative size {state.size}")
        try:
            fd = os.open(path, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise UploadStateError(f"upload {state.upload_id} has no staging") from None
        try:
            staged = os.fstat(fd).st_size
            if staged < state.size:
                raise UploadStateError(
                    f"upload {state.upload_id} stages {staged} bytes but its state says {state.size}"
                )
            if writable and staged > state.size:
                os.ftruncate(fd, state.size)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # -- committed blobs -----------------------------------------------------------------------

    async def stat(self, digest: Digest) -> BlobInfo | None:
        try:
            st = os.stat(self._blob_path(digest))
        except FileNotFoundError:
            return None
        return BlobInfo(digest, st.st_size)

    async def read(self, digest: Digest, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        try:
            fd = os.open(self._blob_path(digest), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobMissingError(digest) from None
        try:
            span = (byte_range or ByteRange(0)).resolve(os.fstat(fd).st_size)
            if span is not None:
                async for chunk in _pread_span(fd, *span):
                    yield chunk
        finally:
            os.close(fd)

    def local_path(self, digest: Digest) -> Path | None:
        path = self._blob_path(digest)
        return path if os.path.exists(path) else None

    async def redirect_url(self, digest: Digest, *, method: str, expires_in: timedelta) -> str | None:
        return None

    async def delete(self, digest: Digest) -> None:
        # Fan-out directories are kept: removing one could race with a commit into it.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._blob_path(digest))

    async def digests(self) -> AsyncIterator[Digest]:
        for algorithm in _list_dir(self._blobs):
            for prefix in _list_dir(self._blobs / algorithm):
                for name in _list_dir(self._blobs / algorithm / prefix):
                    try:
                        digest = Digest.parse(f"{algorithm}:{name}")
                    except DigestInvalidError:
                        continue
                    if digest.hex[:2] == prefix:
                        yield digest

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> UploadState:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise ValueError(f"invalid upload id: {upload_id[:100]!r}")
        # O_TRUNC: beginning an id again starts it afresh.
        fd = os.open(self._uploads / upload_id, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        return UploadState(upload_id, 0, {})

    async def append(self, state: UploadState, data: AsyncIterable[bytes]) -> UploadState:
        fd = self._open_staging(state, writable=True)
        size = state.size
        try:
            os.lseek(fd, size, os.SEEK_SET)
            async for chunk in data:
                size += _write_all(fd, chunk)
        finally:
            os.close(fd)
        return UploadState(state.upload_id, size, {})

    async def read_upload(self, state: UploadState) -> AsyncIterator[bytes]:
        fd = self._open_staging(state, writable=False)
        try:
            sent = 0
            async for chunk in _pread_span(fd, 0, state.size - 1):
                sent += len(chunk)
                yield chunk
            if sent != state.size:
                raise UploadStateError(f"upload {state.upload_id} shrank while being read")
        finally:
            os.close(fd)

    async def commit_upload(self, state: UploadState, digest: Digest) -> BlobInfo:
        return await anyio.to_thread.run_sync(self._commit_blocking, state, digest)

    def _commit_blocking(self, state: UploadState, digest: Digest) -> BlobInfo:
        staging = self._staging_path(state.upload_id)
        target = self._blob_path(digest)
        fd = self._open_staging(state, writable=True)
        try:
            if os.path.exists(target):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(staging)
                return BlobInfo(digest, os.stat(target).st_size)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._make_dirs(target.parent)
        try:
            os.replace(staging, target)
        except FileNotFoundError:
            # Someone else committed this very upload between our open and our rename.
            if os.path.exists(target):
                return BlobInfo(digest, os.stat(target).st_size)
            raise UploadStateError(f"upload {state.upload_id} has no staging") from None
        _fsync_dir(target.parent)
        return BlobInfo(digest, state.size)

    def _make_dirs(self, path: Path) -> None:
        """Create `path` and its missing parents below the blobs root, making each entry durable."""
        missing: list[Path] = []
        while not path.is_dir():
            missing.append(path)
            path = path.parent
        for directory in reversed(missing):
            with contextlib.suppress(FileExistsError):
                os.mkdir(directory)
            _fsync_dir(directory.parent)

    async def commit_stream(
        self,
        state: UploadState,
        digest: Digest,
        data: AsyncIterable[bytes],
        ready: Callable[[int], Awaitable[None]],
    ) -> BlobInfo:
        return await commit_by_staging(self, state, digest, data, ready)

    async def abort_upload(self, state: UploadState) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._staging_path(state.upload_id))

    async def close(self) -> None:
        return None


def _list_dir(path: Path) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []
