"""Blob and blob-upload endpoints of the registry API.

HEAD/GET/DELETE  /v2/<name>/blobs/<digest>            (GET honours a single Range)
POST             /v2/<name>/blobs/uploads/            new session | ?digest= monolithic | ?mount=&from=
GET/PATCH/PUT/DELETE /v2/<name>/blobs/uploads/<id>    status | append | complete | cancel
"""

from __future__ import annotations

import contextlib
import re

from moorage.asgi import send_file, send_stream
from moorage.errors import DigestInvalidError, RangeNotSatisfiableError, UploadInvalidError
from moorage.model import ByteRange, Digest, UploadSession, parse_repository_name
from moorage.oci import API_VERSION_HEADER, Handler, Kind, OciContext

__all__ = ["HANDLERS"]

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")
_CONTENT_RANGE_RE = re.compile(r"(?:bytes )?(\d+)-(\d+)(?:/(?:\d+|\*))?")


def _parse_range(value: str | None) -> ByteRange | int | None:
    """A single `bytes=a-b` or `bytes=a-` range, or the length n of a suffix range `bytes=-n`
    (resolved against the blob's size by the caller); anything else means the whole blob."""
    if value is None:
        return None
    match = _RANGE_RE.fullmatch(value.strip())
    if match is None or (not match[1] and not match[2]):
        return None
    if not match[1]:
        return int(match[2])
    return ByteRange(int(match[1]), int(match[2]) if match[2] else None)


def _digest(ctx: OciContext) -> Digest:
    return Digest.parse(ctx.reference)


def _blob_headers(ctx: OciContext, digest: Digest) -> list[tuple[str, str]]:
    return [
        ("docker-content-digest", str(digest)),
        ("accept-ranges", "bytes"),
        ("content-type", "application/octet-stream"),
    ]


async def head_blob(ctx: OciContext) -> None:
    digest = _digest(ctx)
    cache = None
    if ctx.pull_through is not None:  # a cached repository's blob not fetched yet: fetch it first
        cached = await ctx.pull_through.blob(ctx.registry_ref, ctx.name, digest, stream=False)
        cache = cached.state if cached is not None else None
    info = await ctx.registry.stat_blob(ctx.registry_ref, ctx.name, digest, cached=cache is None)
    headers = [*_blob_headers(ctx, digest), ("content-length", str(info.size))]
    if cache is not None:
        headers.append(("x-moorage-cache", cache))
    await ctx.reply(200, headers)


async def get_blob(ctx: OciContext) -> None:
    digest = _digest(ctx)
    cache = None
    if ctx.pull_through is not None:
        # A cached repository's blob not fetched yet: the upstream's bytes are streamed to this
        # client while they are written and hashed (a ranged GET waits for the whole blob).
        streamed = ctx.request.header("range") is None
        cached = await ctx.pull_through.blob(ctx.registry_ref, ctx.name, digest, stream=streamed)
        if cached is not None and cached.chunks is not None:
            headers = [API_VERSION_HEADER, *_blob_headers(ctx, digest), ("x-moorage-cache", cached.state)]
            if cached.size is not None:
                headers.append(("content-length", str(cached.size)))
            async with contextlib.aclosing(cached.chunks) as chunks:
                await send_stream(ctx.send, 200, headers, chunks)
            return
        cache = cached.state if cached is not None else None
    wanted = _parse_range(ctx.request.header("range"))
    if isinstance(wanted, int):  # the last `wanted` bytes
        info = await ctx.registry.stat_blob(ctx.registry_ref, ctx.name, digest)
        if wanted == 0:  # a zero-length suffix is never satisfiable (RFC 9110, 14.1.1)
            raise RangeNotSatisfiableError(info.size)
        wanted = ByteRange(max(info.size - wanted, 0), None)
    blob = await ctx.registry.open_blob(ctx.registry_ref, ctx.name, digest, wanted, allow_redirect=True)
    if blob.redirect is not None:
        await ctx.reply(307, [("location", blob.redirect), ("docker-content-digest", str(digest))])
        return
    headers = [API_VERSION_HEADER, *_blob_headers(ctx, digest)]
    if cache is not None:
        headers.append(("x-moorage-cache", cache))
    status = 200
    if blob.span is not None:
        start, end = blob.span
        status = 206
        headers += [
            ("content-range", f"bytes {start}-{end}/{blob.info.size}"),
            ("content-length", str(end - start + 1)),
        ]
    else:
        headers.append(("content-length", str(blob.info.size)))
    if blob.path is not None:
        await send_file(ctx.send, status, headers, blob.path, blob.span)
    else:
        assert blob.chunks is not None
        await send_stream(ctx.send, status, headers, blob.chunks)


async def delete_blob(ctx: OciContext) -> None:
    await ctx.registry.delete_blob(ctx.registry_ref, ctx.name, _digest(ctx))
    await ctx.reply(202)


def _session_headers(ctx: OciContext, session: UploadSession) -> list[tuple[str, str]]:
    end = session.size - 1 if session.size > 0 else 0
    return [
        ("location", f"/v2/{ctx.name}/blobs/uploads/{session.upload_id}"),
        ("range", f"0-{end}"),
        ("docker-upload-uuid", session.upload_id),
    ]


def _blob_created(ctx: OciContext, digest: Digest) -> list[tuple[str, str]]:
    return [("location", f"/v2/{ctx.name}/blobs/{digest}"), ("docker-content-digest", str(digest))]


def _limit(ctx: OciContext) -> int:
    return ctx.registry.limits.max_blob_bytes


async def start_upload(ctx: OciContext) -> None:
    request = ctx.request
    mount, source = request.param("mount"), request.param("from")
    if mount is not None and source:
        digest = Digest.parse(mount)
        mounted = await ctx.registry.mount_blob(ctx.registry_ref, ctx.name, parse_repository_name(source), digest)
        if mounted is not None:
            await ctx.reply(201, _blob_created(ctx, digest))
            return
    given = request.param("digest")
    if given is not None:
        digest = Digest.parse(given)
        await ctx.uploads.upload_blob(ctx.registry_ref, ctx.name, digest, request.stream(_limit(ctx)))
        await ctx.reply(201, _blob_created(ctx, digest))
        return
    session = await ctx.uploads.start(ctx.registry_ref, ctx.name)
    await ctx.reply(202, _session_headers(ctx, session))


async def upload_status(ctx: OciContext) -> None:
    session = await ctx.uploads.status(ctx.registry_ref, ctx.name, ctx.reference)
    await ctx.reply(204, _session_headers(ctx, session))


def _first_byte(ctx: OciContext) -> int | None:
    """The chunk's first byte from `Content-Range: <start>-<end>`, checked against Content-Length."""
    value = ctx.request.header("content-range")
    if value is None:
        return None
    match = _CONTENT_RANGE_RE.fullmatch(value.strip())
    if match is None:
        raise UploadInvalidError(f"malformed Content-Range: {value[:100]!r}")
    start, end = int(match[1]), int(match[2])
    length = ctx.request.header("content-length")
    if end < start or (length is not None and length.isdigit() and int(length) != end - start + 1):
        raise UploadInvalidError(f"Content-Range {value[:100]!r} does not match the body length")
    return start


async def patch_upload(ctx: OciContext) -> None:
    first = _first_byte(ctx)
    session = await ctx.uploads.append(
        ctx.registry_ref, ctx.name, ctx.reference, ctx.request.stream(_limit(ctx)), first_byte=first
    )
    await ctx.reply(202, _session_headers(ctx, session))


async def put_upload(ctx: OciContext) -> None:
    given = ctx.request.param("digest")
    if not given:
        raise DigestInvalidError("the digest query parameter is required to complete an upload")
    digest = Digest.parse(given)
    first = _first_byte(ctx)
    body = ctx.request.stream(_limit(ctx))
    await ctx.uploads.complete(ctx.registry_ref, ctx.name, ctx.reference, digest, body, first_byte=first)
    await ctx.reply(201, _blob_created(ctx, digest))


async def cancel_upload(ctx: OciContext) -> None:
    await ctx.uploads.cancel(ctx.registry_ref, ctx.name, ctx.reference)
    await ctx.reply(204)


HANDLERS: dict[tuple[Kind, str], Handler] = {
    ("blob", "HEAD"): head_blob,
    ("blob", "GET"): get_blob,
    ("blob", "DELETE"): delete_blob,
    ("uploads", "POST"): start_upload,
    ("upload", "GET"): upload_status,
    ("upload", "PATCH"): patch_upload,
    ("upload", "PUT"): put_upload,
    ("upload", "DELETE"): cancel_upload,
}
