"""A `BlobStore` on S3 (AWS or any S3-compatible server: SeaweedFS, MinIO, Ceph RGW, ...).

Layout under the key prefix::

    <prefix>blobs/<algorithm>/<hex>                      one committed blob
    <prefix>uploads/<upload_id>/begun                    marker: the upload exists
    <prefix>uploads/<upload_id>/data/<start>-<end>       staged bytes [start, end) of the upload

Staging is a log of immutable objects in the bucket, never local files and never process memory
between requests, so any replica can continue, re-read or commit an upload from nothing but its
`UploadState` (id and size); `UploadState.backend` stays empty. `<start>` and `<end>` are stream
offsets (16 zero-padded decimal digits, end exclusive), so a listing of `uploads/<id>/` tells
exactly which bytes are staged: the bytes `[0, size)` of a state are the chain of objects
`[0, a) [a, b) ... [y, z)` with `z >= size` (found by a shortest-path walk over the offsets; when
`z > size` only a prefix of the last object counts). Every object ever written holds the true bytes
of its range (up to the size of the append that wrote it), which is what makes any chain valid.

- `append` first makes the staging exactly `[0, state.size)`: an object reaching past
  `state.size` (left by an interrupted append) is cut by a server-side ranged copy, and every
  object outside the chain is deleted. New bytes are buffered and written as a *segment* object of
  `part_size` bytes (default 8 MiB, at least the 5 MiB S3 part minimum) as soon as that much has
  accumulated; the segment also absorbs the small *tail pieces* (objects under 5 MiB) at the end
  of the chain, read back once. What is left at the end of an append becomes a new tail piece;
  pieces merge like a binary counter (a piece absorbs the previous one when that one is not
  larger), so a stream of tiny appends keeps O(log) pieces and rewrites each byte O(log) times.
  A segment uploads while the next one fills. Memory per append: about two segments plus one
  incoming chunk.
- `read_upload` streams the chain with ranged GETs (S3 cannot read the parts of an unfinished
  multipart upload, which is why the parts are plain objects until the commit).
- `commit_upload` builds the blob with one multipart upload straight at its final key: each
  segment becomes a part by UploadPartCopy (a server-side copy; no bytes pass through moorage),
  small pieces are read and concatenated into 5 MiB parts (the last part may be smaller). A blob
  made of a single whole object is one CopyObject; a zero-byte blob one PutObject. S3 makes the
  object appear whole or not at all at CompleteMultipartUpload/CopyObject, so readers never see
  a prefix, and concurrent commits of one digest each write an identical complete object. More
  than `max_parts` (S3: 10 000) parts are first compacted into objects of up to 5 GiB in the
  same log. A blob that already exists (HEAD) is kept and the staging dropped.
- `commit_stream` (a whole blob in one request: a monolithic PUT, a pull-through or replication
  fetch) stages nothing: the bytes go straight into a multipart upload at the blob's final key,
  `part_size` bytes per part with `_PARTS_IN_FLIGHT` parts uploading while the next fills, and
  CompleteMultipartUpload runs only after the caller's stream ended (its digest matched) and its
  `ready` returned. A blob smaller than one part is one PutObject at the end. Until then the blob
  key shows nothing; on any error the multipart upload is aborted. Its key and UploadId are noted
  in `uploads/<id>/streaming`, so that removing the staging (the expired session, after a crash)
  aborts it too. Each byte crosses the network to S3 once instead of twice (staged, then copied).
  A HEAD that runs while the first part fills finds a blob that already exists; the bytes are
  then only checked, not written.
- `abort_upload` and the end of a commit delete every object under `uploads/<id>/` (the marker
  last) and abort multipart uploads left there by interrupted cuts or compactions.

boto3 is synchronous: every call runs in a worker thread (`anyio.to_thread`), so the event loop
never blocks on the network. A multipart upload at a blob key that a crash interrupted (between
CreateMultipartUpload and Complete/Abort) is not attributed to any upload; configure the bucket
lifecycle rule `AbortIncompleteMultipartUpload` to reclaim those.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import ssl
import threading
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Self, TypeVar

import anyio
import anyio.to_thread
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path

from moorage.errors import DigestInvalidError
from moorage.model import BlobInfo, ByteRange, Digest, UploadState
from moorage.rawhttp import RawResponse
from moorage.storage import BlobMissingError, UploadStateError

__all__ = ["CHUNK_SIZE", "DEFAULT_PART_SIZE", "MIN_PART_SIZE", "S3BlobStore"]

T = TypeVar("T")

MiB = 1024 * 1024
CHUNK_SIZE = MiB
"""Size of the chunks `read` and `read_upload` yield (the last one may be shorter)."""
MIN_PART_SIZE = 5 * MiB
"""S3's smallest multipart part (all parts but the last)."""
MAX_PART_SIZE = 5 * 1024 * MiB
"""S3's largest part, and the largest object CopyObject accepts."""
MAX_PARTS = 10_000
_PUTS_IN_FLIGHT = 1  # staged segments uploading while the next one fills (memory: one more segment)
_PARTS_IN_FLIGHT = 2  # parts of a streamed blob uploading while the next one fills (commit_stream)
_HEAD_BYTES = MiB  # a streamed blob's first bytes grow a plain buffer; a whole part is allocated past it
_RAW_URL_SECONDS = 300  # lifetime of the pre-signed URL a streamed read uses (it is used at once)
_CONNECT_TIMEOUT = 60.0  # seconds to connect and read the response head (botocore's default)
_READ_TIMEOUT = 60.0  # seconds a body read may wait for the next chunk (botocore's default)
_SSL_CONTEXTS: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    """The trust botocore uses (AWS_CA_BUNDLE, else its default bundle), made once."""
    if not _SSL_CONTEXTS:
        _SSL_CONTEXTS.append(ssl.create_default_context(cafile=os.environ.get("AWS_CA_BUNDLE") or get_cert_path(True)))
    return _SSL_CONTEXTS[0]


DEFAULT_PART_SIZE = 8 * MiB

_UPLOAD_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PIECE_RE = re.compile(r"data/(\d{16})-(\d{16})")
_OFFSET_DIGITS = 16
_MARKER = "begun"
_MAX_NOTE_BYTES = 4096
_STREAMING = "streaming"  # names the multipart upload a commit_stream has open at a blob key
_CONTENT_TYPE = "application/octet-stream"
_COPY_CONCURRENCY = 8
_DELETE_BATCH = 1000
_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})

_session_lock = threading.Lock()
_shared_session: Any = None


def _session() -> Any:
    """One boto3 session per process: creating a client from it reuses the loaded service models
    (a fresh session reloads them, which takes a few hundred milliseconds)."""
    global _shared_session
    with _session_lock:
        if _shared_session is None:
            _shared_session = boto3.session.Session()
        return _shared_session


# --- staging model (pure) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Piece:
    """A staged object holding the upload's bytes [start, end)."""

    key: str
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True, slots=True)
class _Span:
    """`length` bytes of object `key` (of `object_size` bytes) from `offset`."""

    key: str
    offset: int
    length: int
    object_size: int

    @property
    def whole(self) -> bool:
        return self.offset == 0 and self.length == self.object_size


@dataclass(frozen=True, slots=True)
class _Part:
    """One part of a multipart upload: a server-side copy of one span, or spans read and joined."""

    spans: tuple[_Span, ...]
    copy: bool

    @property
    def length(self) -> int:
        return sum(span.length for span in self.spans)


class _Filling:
    """A part being filled: one allocation of its final size, chunks copied in as they arrive (a
    growing bytearray reallocates, copying the bytes and briefly holding them twice)."""

    __slots__ = ("buffer", "filled")

    def __init__(self, size: int) -> None:
        self.buffer = bytearray(size)
        self.filled = 0

    def take(self, chunk: bytes | bytearray | memoryview, start: int) -> int:
        """Copy `chunk[start:]` as far as it fits; returns the number of bytes taken."""
        count = min(len(chunk) - start, len(self.buffer) - self.filled)
        # Through memoryviews: a bytearray slice assigned anything but a bytearray copies it first.
        with memoryview(self.buffer) as target, memoryview(chunk) as source:
            target[self.filled : self.filled + count] = source[start : start + count]
        self.filled += count
        return count

    @property
    def full(self) -> bool:
        return self.filled == len(self.buffer)

    def done(self) -> bytearray:
        """The bytes filled so far (the buffer itself, cut to them)."""
        del self.buffer[self.filled :]
        return self.buffer


@dataclass(frozen=True, slots=True)
class _Staging:
    """What a listing of `uploads/<id>/` found."""

    begun: bool
    pieces: tuple[_Piece, ...]
    other_keys: tuple[str, ...]


def _chain(pieces: Sequence[_Piece], size: int) -> list[_Piece] | None:
    """The fewest pieces that hold the bytes [0, size) back to back, or None when none do.

    A chain ending exactly at `size` is preferred; otherwise its last piece reaches past `size`.
    """
    if size == 0:
        return []
    reach: dict[int, tuple[int, _Piece | None]] = {0: (0, None)}  # offset -> (pieces, last piece)
    beyond: tuple[int, _Piece] | None = None
    # Sorted by start, every piece ending at an offset is seen before pieces starting there.
    for piece in sorted(pieces, key=lambda p: (p.start, p.end)):
        if piece.start >= size or piece.start not in reach:
            continue
        count = reach[piece.start][0] + 1
        if piece.end <= size:
            if piece.end not in reach or count < reach[piece.end][0]:
                reach[piece.end] = (count, piece)
        elif beyond is None or count < beyond[0]:
            beyond = (count, piece)
    chain: list[_Piece] = []
    if size in reach:
        offset = size
    elif beyond is not None:
        chain.append(beyond[1])
        offset = beyond[1].start
    else:
        return None
    while offset:
        last = reach[offset][1]
        assert last is not None
        chain.append(last)
        offset = last.start
    chain.reverse()
    return chain


def _spans(chain: Sequence[_Piece], size: int) -> list[_Span]:
    """The spans of `chain` that hold exactly the bytes [0, size)."""
    spans = []
    for piece in chain:
        length = min(piece.size, size - piece.start)
        spans.append(_Span(piece.key, 0, length, piece.size))
    return spans


def _parts(spans: Sequence[_Span]) -> list[_Part]:
    """Cut `spans` into multipart parts: every part but the last holds at least MIN_PART_SIZE bytes.

    A span large enough for a part of its own (or the end of the last span) is copied server-side;
    smaller runs are joined in memory into parts of exactly MIN_PART_SIZE bytes.
    """
    parts: list[_Part] = []
    joined: list[_Span] = []
    joined_length = 0
    for index, span in enumerate(spans):
        last = index == len(spans) - 1
        offset, remaining = span.offset, span.length
        while remaining:
            if not joined and (remaining >= MIN_PART_SIZE or last):
                take = min(remaining, MAX_PART_SIZE)
                parts.append(_Part((_Span(span.key, offset, take, span.object_size),), copy=True))
            else:
                take = min(remaining, MIN_PART_SIZE - joined_length)
                joined.append(_Span(span.key, offset, take, span.object_size))
                joined_length += take
                if joined_length == MIN_PART_SIZE:
                    parts.append(_Part(tuple(joined), copy=False))
                    joined, joined_length = [], 0
            offset += take
            remaining -= take
    if joined:
        parts.append(_Part(tuple(joined), copy=False))
    return parts


def _error_code(error: Any) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def _is_not_found(error: Any) -> bool:
    return _error_code(error) in _NOT_FOUND


def _first_failure(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in `group` (nested groups flattened) that is not a cancellation."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = current.exceptions
        else:
            leaves.append(current)
    cancelled = anyio.get_cancelled_exc_class()
    return next((leaf for leaf in leaves if not isinstance(leaf, cancelled)), leaves[0])


# --- the store ------------------------------------------------------------------------------------


class S3BlobStore:
    """Blobs and staged uploads in `bucket` under `prefix`; see the module docstring.

    Credentials are `access_key_id`/`secret_access_key` when given, else boto3's default chain
    (environment, shared config, instance or task role). With `redirect`, `redirect_url` hands
    out pre-signed URLs so clients download blobs from S3 directly. Path-style addressing is used
    when `endpoint_url` is set (S3-compatible servers), virtual-hosted style on AWS, unless
    `path_style` says otherwise. The constructor does no I/O; `open` (or `ensure_bucket`) also
    creates the bucket when it is missing.
    """

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        redirect: bool = False,
        part_size: int = DEFAULT_PART_SIZE,
        max_parts: int = MAX_PARTS,
        path_style: bool | None = None,
        max_connections: int = 16,
    ) -> None:
        if not bucket:
            raise ValueError("bucket must not be empty")
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        if not MIN_PART_SIZE <= part_size <= MAX_PART_SIZE:
            raise ValueError(f"part_size must be between {MIN_PART_SIZE} and {MAX_PART_SIZE} bytes")
        if not 2 <= max_parts <= MAX_PARTS:
            raise ValueError(f"max_parts must be between 2 and {MAX_PARTS}")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.redirect = redirect
        self._region = region
        self._part_size = part_size
        self._max_parts = max_parts
        if path_style is None:
            path_style = endpoint_url is not None
        session = _session()
        with _session_lock:  # a session is not thread-safe, even for creating clients
            self._client: Any = session.client(
                "s3",
                endpoint_url=endpoint_url,
                region_name=region,
                aws_access_key_id=access_key_id,
                aws_secret_access_key=secret_access_key,
                config=Config(
                    signature_version="s3v4",
                    # Over plain HTTP botocore signs every payload's SHA-256, which S3 checks: a
                    # CRC32 on top would cost ~0.2-0.4 CPU-s per GiB more for no added integrity.
                    # Over HTTPS the payload is unsigned and the CRC32 is what S3 verifies: kept.
                    request_checksum_calculation=(
                        "when_required" if (endpoint_url or "").startswith("http://") else "when_supported"
                    ),
                    s3={"addressing_style": "path" if path_style else "virtual"},
                    max_pool_connections=max_connections,
                    retries={"mode": "standard", "max_attempts": 5},
                ),
            )

    @classmethod
    async def open(cls, bucket: str, **options: Any) -> Self:
        """A store on `bucket` (created when missing); `options` are the constructor's."""
        store = cls(bucket, **options)
        try:
            await store.ensure_bucket()
        except BaseException:
            await store.close()
            raise
        return store

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists (and is reachable with our credentials)."""
        try:
            await self._call(self._client.head_bucket, Bucket=self.bucket)
            return
        except ClientError as error:
            if not _is_not_found(error) and _error_code(error) != "NoSuchBucket":
                raise
        options: dict[str, Any] = {"Bucket": self.bucket}
        if self._region and self._region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self._call(self._client.create_bucket, **options)
        except ClientError as error:
            if _error_code(error) != "BucketAlreadyOwnedByYou":
                raise

    # -- keys ----------------------------------------------------------------------------------

    def _blob_key(self, digest: Digest) -> str:
        return f"{self.prefix}blobs/{digest.algorithm}/{digest.hex}"

    def _upload_prefix(self, upload_id: str) -> str:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise UploadStateError(f"invalid upload id: {upload_id[:100]!r}")
        return f"{self.prefix}uploads/{upload_id}/"

    @staticmethod
    def _piece_key(upload_prefix: str, start: int, end: int) -> str:
        return f"{upload_prefix}data/{start:0{_OFFSET_DIGITS}d}-{end:0{_OFFSET_DIGITS}d}"

    # -- boto3 in worker threads ----------------------------------------------------------------

    async def _call(self, method: Callable[..., T], /, **kwargs: Any) -> T:
        # The worker thread keeps a reference to its last job until it takes the next one: the
        # job hands its arguments over once, so an idle thread never holds an 8 MiB part body.
        handed = [kwargs]

        def job() -> T:
            return method(**handed.pop())

        return await anyio.to_thread.run_sync(job)

    async def _list(self, prefix: str) -> AsyncIterator[tuple[str, int]]:
        """(key, size) of every object under `prefix`, page by page."""
        token: str | None = None
        while True:
            options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                options["ContinuationToken"] = token
            page = await self._call(self._client.list_objects_v2, **options)
            for item in page.get("Contents", ()):
                yield item["Key"], int(item["Size"])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return

    async def _delete_keys(self, keys: Sequence[str]) -> None:
        for first in range(0, len(keys), _DELETE_BATCH):
            batch = keys[first : first + _DELETE_BATCH]
            result = await self._call(
                self._client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
            )
            failed = [e for e in result.get("Errors", ()) if e.get("Code") not in _NOT_FOUND]
            if failed:
                raise RuntimeError(f"S3 refused to delete {len(failed)} staged objects: {failed[0]}")

    async def _put(self, key: str, body: bytes | bytearray) -> None:
        await self._call(self._client.put_object, Bucket=self.bucket, Key=key, Body=body, ContentType=_CONTENT_TYPE)

    async def _get_range(self, key: str, offset: int, length: int) -> bytes:
        def fetch() -> bytes:
            response = self._client.get_object(
                Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}"
            )
            with contextlib.closing(response["Body"]) as body:
                data: bytes = body.read()
            return data

        try:
            data = await anyio.to_thread.run_sync(fetch)
        except ClientError as error:
            if _is_not_found(error):
                raise UploadStateError(f"staged object {key} is gone") from None
            raise
        if len(data) != length:
            raise UploadStateError(f"staged object {key} holds fewer bytes than expected")
        return data

    async def _stream(self, key: str, byte_range: str | None) -> AsyncGenerator[bytes, None]:
        """The object's bytes (or the HTTP `byte_range` of them) in CHUNK_SIZE pieces.

        Raises ClientError (NoSuchKey, InvalidRange, ...) on the first iteration. The bytes come
        through `RawResponse` on a pre-signed URL when S3 answers a plain 200/206 (botocore's
        streaming body costs ~0.5 CPU-s per GiB more, and a thread hop per chunk); any other
        answer is left to botocore, which retries and raises as usual.
        """
        raw = await self._raw_get(key, byte_range)
        if raw is not None:
            try:
                async for piece in raw.chunks(_READ_TIMEOUT):
                    yield piece
            finally:
                raw.close()
            return
        options: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if byte_range is not None:
            options["Range"] = byte_range
        response = await self._call(self._client.get_object, **options)
        body = response["Body"]
        try:
            while True:
                chunk: bytes = await anyio.to_thread.run_sync(body.read, CHUNK_SIZE)
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def _raw_get(self, key: str, byte_range: str | None) -> RawResponse | None:
        """A GET of the object through a pre-signed URL (signing is local CPU work, done in the
        loop), open at its body when S3 answered 200/206 with a Content-Length; None otherwise."""
        url: str = self._client.generate_presigned_url(
            ClientMethod="get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=_RAW_URL_SECONDS
        )
        headers = {} if byte_range is None else {"range": byte_range}
        try:
            response = await RawResponse.open(url, headers, _CONNECT_TIMEOUT, _ssl_context)
        except (OSError, TimeoutError, ValueError):
            return None  # botocore tries again, with its retries, and reports the error
        if response.status in (200, 206) and response.sized:
            return response
        response.close()
        return None

    async def _head_size(self, key: str) -> int | None:
        try:
            response = await self._call(self._client.head_object, Bucket=self.bucket, Key=key)
        except ClientError as error:
            if _is_not_found(error):
                return None
            raise
        return int(response["ContentLength"])

    # -- committed blobs -----------------------------------------------------------------------

    async def stat(self, digest: Digest) -> BlobInfo | None:
        size = await self._head_size(self._blob_key(digest))
        return None if size is None else BlobInfo(digest, size)

    async def read(self, digest: Digest, byte_range: ByteRange | None = None) -> AsyncIterator[bytes]:
        header: str | None = None
        if byte_range is not None and (byte_range.start > 0 or byte_range.end is not None):
            end = "" if byte_range.end is None else str(byte_range.end)
            header = f"bytes={byte_range.start}-{end}"
        chunks = self._stream(self._blob_key(digest), header)
        try:
            first = await anext(chunks, None)
        except ClientError as error:
            if _is_not_found(error):
                raise BlobMissingError(digest) from None
            if _error_code(error) == "InvalidRange":
                return  # the range starts past the end: nothing to send
            raise
        try:
            if first is not None:
                yield first
                async for chunk in chunks:
                    yield chunk
        finally:
            await chunks.aclose()

    def local_path(self, digest: Digest) -> Path | None:
        return None

    async def redirect_url(self, digest: Digest, *, method: str, expires_in: timedelta) -> str | None:
        if not self.redirect:
            return None
        operations = {"GET": "get_object", "HEAD": "head_object"}
        operation = operations.get(method.upper())
        if operation is None:
            raise ValueError(f"cannot pre-sign {method!r} requests for blobs")
        seconds = max(1, min(int(expires_in.total_seconds()), 7 * 24 * 3600))  # SigV4 allows 7 days
        url: str = await self._call(
            self._client.generate_presigned_url,
            ClientMethod=operation,
            Params={"Bucket": self.bucket, "Key": self._blob_key(digest)},
            ExpiresIn=seconds,
        )
        return url

    async def delete(self, digest: Digest) -> None:
        await self._call(self._client.delete_object, Bucket=self.bucket, Key=self._blob_key(digest))

    async def digests(self) -> AsyncIterator[Digest]:
        root = f"{self.prefix}blobs/"
        async for key, _size in self._list(root):
            algorithm, sep, hexpart = key[len(root) :].partition("/")
            if not sep:
                continue
            try:
                yield Digest.parse(f"{algorithm}:{hexpart}")
            except DigestInvalidError:
                continue

    # -- uploads -------------------------------------------------------------------------------

    async def begin_upload(self, upload_id: str) -> UploadState:
        if not _UPLOAD_ID_RE.fullmatch(upload_id):
            raise ValueError(f"invalid upload id: {upload_id[:100]!r}")
        prefix = self._upload_prefix(upload_id)
        await self._remove_staging(prefix)  # beginning an id again starts it afresh
        marker = json.dumps({"upload_id": upload_id, "begun_at": datetime.now(UTC).isoformat()})
        await self._put(prefix + _MARKER, marker.encode())
        return UploadState(upload_id, 0, {})

    async def _staging(self, upload_prefix: str) -> _Staging:
        begun = False
        pieces: list[_Piece] = []
        other: list[str] = []
        async for key, size in self._list(upload_prefix):
            name = key[len(upload_prefix) :]
            if name == _MARKER:
                begun = True
                continue
            match = _PIECE_RE.fullmatch(name)
            if match is not None:
                start, end = int(match[1]), int(match[2])
                if end > start and size == end - start:
                    pieces.append(_Piece(key, start, end))
                    continue
            other.append(key)
        return _Staging(begun, tuple(pieces), tuple(other))

    async def _chain_of(self, state: UploadState) -> tuple[str, _Staging, list[_Piece]]:
        """The upload prefix, its listing and the chain holding [0, state.size); UploadStateError
        when the upload was never begun, is gone, or stages fewer bytes than `state.size`."""
        prefix = self._upload_prefix(state.upload_id)
        if state.size < 0:
            raise UploadStateError(f"upload {state.upload_id}: negative size {state.size}")
        staging = await self._staging(prefix)
        if not staging.begun:
            raise UploadStateError(f"upload {state.upload_id} has no staging")
        chain = _chain(staging.pieces, state.size)
        if chain is None:
            raise UploadStateError(f"upload {state.upload_id} stages fewer bytes than its state's {state.size}")
        return prefix, staging, chain

    async def append(self, state: UploadState, data: AsyncIterable[bytes]) -> UploadState:
        prefix, staging, chain = await self._chain_of(state)

        # Make the staging exactly [0, state.size): cut a piece reaching past it, drop the rest.
        if chain and chain[-1].end > state.size:
            longer = chain[-1]
            cut = _Piece(self._piece_key(prefix, longer.start, state.size), longer.start, state.size)
            await self._write(cut.key, [_Span(longer.key, 0, cut.size, longer.size)])
            chain[-1] = cut
        keep = {piece.key for piece in chain}
        await self._delete_keys([p.key for p in staging.pieces if p.key not in keep] + list(staging.other_keys))

        tail: list[_Piece] = []  # small pieces at the end of the chain, folded into the next segment
        while chain and chain[-1].size < MIN_PART_SIZE:
            tail.insert(0, chain.pop())
        tail_size = sum(piece.size for piece in tail)
        replaced: list[str] = []  # pieces folded into newer ones; deleted once the append succeeded
        pending = bytearray()  # new bytes that, with the tail, do not make a segment yet
        filling: _Filling | None = None  # the segment being filled, once there is one
        buffer_start = state.size  # upload offset of the first byte not yet sent in a segment
        # _PUTS_IN_FLIGHT segments go out while the next one arrives (each PutObject runs in
        # a worker thread); all have landed before the append returns or fails.
        in_flight: deque[asyncio.Future[None]] = deque()

        async def put(key: str, body: bytes | bytearray) -> None:
            while len(in_flight) >= _PUTS_IN_FLIGHT:
                await in_flight.popleft()
            in_flight.append(asyncio.ensure_future(self._put(key, body)))

        async def feed(chunk: bytes | bytearray) -> None:
            nonlocal filling, buffer_start
            taken = 0
            while taken < len(chunk):
                if filling is None:
                    filling = _Filling(self._part_size)
                taken += filling.take(chunk, taken)
                if filling.full:
                    end = buffer_start + self._part_size
                    segment, filling = filling.done(), None
                    await put(self._piece_key(prefix, buffer_start, end), segment)
                    del segment
                    buffer_start = end

        segmented = False  # a first segment has started: every later byte goes through feed
        try:
            async for chunk in data:
                if segmented:
                    await feed(chunk)
                    continue
                if tail_size + len(pending) + len(chunk) < self._part_size:
                    pending += chunk
                    continue
                segmented = True
                # The first segment: the tail pieces, the bytes so far, then this chunk.
                if tail:
                    buffer_start = tail[0].start
                    replaced += [piece.key for piece in tail]
                    await feed(await self._read_pieces(tail))
                    tail, tail_size = [], 0
                head, pending = pending, bytearray()
                await feed(head)
                del head
                await feed(chunk)

            buffer = filling.done() if filling is not None else pending
            filling = None
            size = buffer_start + len(buffer)
            if buffer:
                while tail and tail[-1].size <= len(buffer):
                    merged = tail.pop()
                    buffer[:0] = await self._read_pieces([merged])
                    buffer_start = merged.start
                    replaced.append(merged.key)
                await put(self._piece_key(prefix, buffer_start, size), buffer)
            while in_flight:
                await in_flight.popleft()
        finally:
            if in_flight:  # failed or cancelled: the PutObjects still running finish first
                for future in in_flight:
                    future.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)
        await self._delete_keys(replaced)
        return UploadState(state.upload_id, size, {})

    async def _read_pieces(self, pieces: Sequence[_Piece]) -> bytes:
        return b"".join([await self._get_range(piece.key, 0, piece.size) for piece in pieces])

    async def read_upload(self, state: UploadState) -> AsyncIterator[bytes]:
        _prefix, _staging, chain = await self._chain_of(state)
        for span in _spans(chain, state.size):
            sent = 0
            try:
                async for chunk in self._stream(span.key, f"bytes={span.offset}-{span.offset + span.length - 1}"):
                    sent += len(chunk)
                    yield chunk
            except ClientError as error:
                if _is_not_found(error):
                    raise UploadStateError(f"upload {state.upload_id} changed while being read") from None
                raise
            if sent != span.length:
                raise UploadStateError(f"upload {state.upload_id} shrank while being read")

    async def commit_upload(self, state: UploadState, digest: Digest) -> BlobInfo:
        prefix, _staging, chain = await self._chain_of(state)
        key = self._blob_key(digest)
        existing = await self._head_size(key)
        if existing is not None:
            await self._remove_staging(prefix)
            return BlobInfo(digest, existing)
        try:
            spans = await self._compact(prefix, _spans(chain, state.size))
            await self._write(key, spans)
        except (ClientError, UploadStateError) as error:
            if isinstance(error, ClientError) and not _is_not_found(error):
                raise
            # A staged object vanished: another commit of this very upload may have won.
            existing = await self._head_size(key)
            if existing is None:
                raise UploadStateError(f"upload {state.upload_id} changed while being committed") from None
            return BlobInfo(digest, existing)
        await self._remove_staging(prefix)
        return BlobInfo(digest, state.size)

    async def commit_stream(
        self,
        state: UploadState,
        digest: Digest,
        data: AsyncIterable[bytes],
        ready: Callable[[int], Awaitable[None]],
    ) -> BlobInfo:
        prefix = self._upload_prefix(state.upload_id)
        if state.size != 0:
            raise UploadStateError(f"upload {state.upload_id} already stages {state.size} bytes")
        key = self._blob_key(digest)
        existing = asyncio.ensure_future(self._head_size(key))  # answered while the first part fills
        try:
            info = await self._stream_to(prefix, key, digest, data, ready, existing)
        finally:
            if existing.done():
                if not existing.cancelled():
                    existing.exception()  # retrieved: an error that was never awaited is not logged
            else:
                existing.cancel()
        await self._remove_staging(prefix, streamed=True)
        return info

    async def _stream_to(
        self,
        upload_prefix: str,
        key: str,
        digest: Digest,
        data: AsyncIterable[bytes],
        ready: Callable[[int], Awaitable[None]],
        existing: asyncio.Future[int | None],
    ) -> BlobInfo:
        """Write `data` at `key` as one multipart upload (a PutObject when it fits in one part),
        completed only after `data` ended and `ready` returned; see commit_stream."""
        upload_id: str | None = None
        noted: asyncio.Future[None] | None = None  # the PutObject naming the multipart upload
        kept: int | None = None  # size of the blob that already exists: bytes are only consumed
        etags: dict[int, str] = {}
        in_flight: deque[asyncio.Future[None]] = deque()
        head = bytearray()  # the first bytes, until a whole part is worth allocating
        filling: _Filling | None = None
        size = 0
        number = 0  # parts queued so far
        step = max(1, self._max_parts // 5)  # parts per part size; the size doubles after each step

        async def send(part_number: int, body: bytearray) -> None:
            assert upload_id is not None
            etags[part_number] = await self._upload_part(key, upload_id, part_number, body)

        async def queue(body: bytearray) -> None:
            nonlocal number
            while len(in_flight) >= _PARTS_IN_FLIGHT:
                await in_flight.popleft()
            number += 1
            if number > self._max_parts:
                raise RuntimeError("the blob does not fit into the S3 part limit")
            in_flight.append(asyncio.ensure_future(send(number, body)))

        try:
            async for chunk in data:
                size += len(chunk)
                if kept is not None:
                    continue
                if filling is None and len(head) + len(chunk) < _HEAD_BYTES:
                    head += chunk
                    continue
                taken = 0
                while taken < len(chunk):
                    if filling is None:
                        filling = _Filling(min(MAX_PART_SIZE, self._part_size << min(number // step, 10)))
                        filling.take(head, 0)
                        head = bytearray()
                    taken += filling.take(chunk, taken)
                    if not filling.full:
                        continue
                    if upload_id is None:
                        kept = await existing
                        if kept is not None:
                            filling = None
                            break
                        upload_id = await self._create_multipart(key)
                        # Written down in the staging, so that removing the staging after a
                        # crash (the expired session) aborts this multipart upload too.
                        noted = asyncio.ensure_future(
                            self._put(
                                upload_prefix + _STREAMING, json.dumps({"key": key, "upload_id": upload_id}).encode()
                            )
                        )
                    await queue(filling.done())
                    filling = None
            rest = filling.done() if filling is not None else head
            del filling, head
            if upload_id is None and kept is None:
                kept = await existing
            if kept is not None:
                await ready(size)
                # The HEAD ran before the caller's claim: a garbage collection may have deleted
                # the blob since, and its bytes were not kept.
                kept = await self._head_size(key)
                if kept is None:
                    raise UploadStateError(f"blob {digest} was deleted while being uploaded again; retry")
                return BlobInfo(digest, kept)
            if upload_id is None:
                await ready(size)
                await self._put(key, rest)
                return BlobInfo(digest, size)
            if rest:
                await queue(rest)
            del rest
            while in_flight:
                await in_flight.popleft()
            if noted is not None:
                await noted
            await ready(size)
            await self._complete_multipart(key, upload_id, etags)
            return BlobInfo(digest, size)
        except BaseException:
            for future in in_flight:
                future.cancel()
            with anyio.CancelScope(shield=True):
                await asyncio.gather(*in_flight, *([noted] if noted is not None else []), return_exceptions=True)
                if upload_id is not None:
                    await self._abort_multipart(key, upload_id)
            raise

    async def abort_upload(self, state: UploadState) -> None:
        await self._remove_staging(self._upload_prefix(state.upload_id))

    async def _remove_staging(self, upload_prefix: str, *, streamed: bool = False) -> None:
        """Delete every object under `upload_prefix` (the marker last) and abort its multipart uploads
        (also the one a commit_stream noted, unless `streamed` says it completed)."""
        sizes = {key: size async for key, size in self._list(upload_prefix)}
        keys = list(sizes)
        note = upload_prefix + _STREAMING
        marker = upload_prefix + _MARKER
        if not streamed and 0 < sizes.get(note, 0) <= _MAX_NOTE_BYTES:
            await self._abort_streaming(note, sizes[note])
        await self._delete_keys([key for key in keys if key != marker])
        for key, upload_id in await self._multipart_uploads(upload_prefix):
            await self._abort_multipart(key, upload_id)
        if marker in keys:
            await self._delete_keys([marker])

    async def _abort_streaming(self, note_key: str, size: int) -> None:
        """Abort the multipart upload a commit_stream noted (harmless when it completed)."""
        try:
            note = json.loads(await self._get_range(note_key, 0, size))
            key, upload_id = str(note["key"]), str(note["upload_id"])
        except ClientError as error:
            if _is_not_found(error):
                return
            raise
        except (ValueError, KeyError, TypeError):
            return  # not ours to read: the object is deleted with the rest of the staging
        if not key.startswith(f"{self.prefix}blobs/"):
            return
        await self._abort_multipart(key, upload_id)

    async def _multipart_uploads(self, prefix: str) -> list[tuple[str, str]]:
        """(key, UploadId) of the multipart uploads in progress under `prefix`."""
        found: list[tuple[str, str]] = []
        options: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        while True:
            page = await self._call(self._client.list_multipart_uploads, **options)
            found += [(item["Key"], item["UploadId"]) for item in page.get("Uploads", ())]
            if not page.get("IsTruncated"):
                return found
            options["KeyMarker"] = page.get("NextKeyMarker", "")
            options["UploadIdMarker"] = page.get("NextUploadIdMarker", "")

    # -- building objects from spans ------------------------------------------------------------

    async def _compact(self, upload_prefix: str, spans: list[_Span]) -> list[_Span]:
        """Spans of the same bytes in at most `max_parts` parts: runs of spans are first joined into
        staged objects of up to MAX_PART_SIZE bytes (in as many rounds as needed)."""
        while len(_parts(spans)) > self._max_parts:
            groups: list[list[_Span]] = [[]]
            for span in spans:
                group = groups[-1]
                too_big = sum(s.length for s in group) + span.length > MAX_PART_SIZE
                # Checking parts is only needed when a group could hold more than max_parts of them.
                too_many = 2 * len(group) + 3 > self._max_parts and len(_parts([*group, span])) > self._max_parts
                if group and (too_big or too_many):
                    groups.append([])
                groups[-1].append(span)
            if all(len(group) == 1 for group in groups):
                raise RuntimeError("cannot fit the upload into the S3 part limit")
            compacted: list[_Span] = []
            offset = 0
            for group in groups:
                length = sum(s.length for s in group)
                if len(group) == 1:
                    compacted.append(group[0])
                else:
                    key = self._piece_key(upload_prefix, offset, offset + length)
                    await self._write(key, group)
                    compacted.append(_Span(key, 0, length, length))
                offset += length
            spans = compacted
        return spans

    async def _write(self, key: str, spans: Sequence[_Span]) -> None:
        """Create object `key` holding the concatenated spans, atomically (it appears whole or not)."""
        if not spans:
            await self._put(key, b"")
            return
        if len(spans) == 1 and spans[0].whole and spans[0].length <= MAX_PART_SIZE:
            await self._call(
                self._client.copy_object,
                Bucket=self.bucket,
                Key=key,
                CopySource={"Bucket": self.bucket, "Key": spans[0].key},
                MetadataDirective="REPLACE",
                ContentType=_CONTENT_TYPE,
            )
            return
        parts = _parts(spans)
        upload_id = await self._create_multipart(key)
        etags: dict[int, str] = {}
        try:
            limiter = anyio.CapacityLimiter(_COPY_CONCURRENCY)
            joining = anyio.Lock()  # at most one joined part in memory at a time

            async def send(number: int, part: _Part) -> None:
                async with limiter:
                    etags[number] = await self._send_part(key, upload_id, number, part, joining)

            try:
                async with anyio.create_task_group() as group:
                    for number, part in enumerate(parts, start=1):
                        group.start_soon(send, number, part)
            except BaseExceptionGroup as failures:
                raise _first_failure(failures) from None
            await self._complete_multipart(key, upload_id, etags)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self._abort_multipart(key, upload_id)
            raise

    async def _send_part(self, key: str, upload_id: str, number: int, part: _Part, joining: anyio.Lock) -> str:
        if part.copy:
            (span,) = part.spans
            response = await self._call(
                self._client.upload_part_copy,
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": span.key},
                CopySourceRange=f"bytes={span.offset}-{span.offset + span.length - 1}",
            )
            copied: str = response["CopyPartResult"]["ETag"]
            return copied
        async with joining:
            body = b"".join([await self._get_range(s.key, s.offset, s.length) for s in part.spans])
            return await self._upload_part(key, upload_id, number, body)

    # -- multipart uploads, as both the streamed and the composed commits make them ------------

    async def _create_multipart(self, key: str) -> str:
        created = await self._call(
            self._client.create_multipart_upload, Bucket=self.bucket, Key=key, ContentType=_CONTENT_TYPE
        )
        upload_id: str = created["UploadId"]
        return upload_id

    async def _upload_part(self, key: str, upload_id: str, number: int, body: bytes | bytearray) -> str:
        """The part's ETag."""
        response = await self._call(
            self._client.upload_part, Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
        )
        etag: str = response["ETag"]
        return etag

    async def _complete_multipart(self, key: str, upload_id: str, etags: Mapping[int, str]) -> None:
        await self._call(
            self._client.complete_multipart_upload,
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in sorted(etags)]},
        )

    async def _abort_multipart(self, key: str, upload_id: str) -> None:
        """Abort it; an abort S3 refuses (already completed or aborted, say) is let be."""
        with contextlib.suppress(ClientError):
            await self._call(self._client.abort_multipart_upload, Bucket=self.bucket, Key=key, UploadId=upload_id)

    # -- housekeeping --------------------------------------------------------------------------

    async def staging_leftovers(self) -> list[str]:
        """Keys of staged objects and of multipart uploads in progress under this store's prefix
        (empty when no upload is staged; for tests and operators)."""
        keys = [key async for key, _size in self._list(f"{self.prefix}uploads/")]
        keys += [f"multipart:{key}" for key, _upload_id in await self._multipart_uploads(self.prefix)]
        return keys

    async def close(self) -> None:
        self._client.close()
