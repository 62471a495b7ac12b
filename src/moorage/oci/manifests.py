"""Manifest, tag-listing, catalog and referrers endpoints of the registry API.

HEAD/GET/PUT/DELETE  /v2/<name>/manifests/<tag|digest>
GET                  /v2/<name>/tags/list?n=&last=
GET                  /v2/_catalog?n=&last=
GET                  /v2/<name>/referrers/<digest>?artifactType=
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from moorage import manifests as mf
from moorage.asgi import compact_json
from moorage.errors import PaginationInvalidError
from moorage.images import convert_for
from moorage.model import Digest, Image, Page, PageRequest
from moorage.oci import Handler, Kind, OciContext

__all__ = ["HANDLERS"]

MAX_PAGE = 10_000


def _manifest_headers(image: Image) -> list[tuple[str, str]]:
    return [
        ("content-type", image.media_type),
        ("docker-content-digest", str(image.digest)),
        ("etag", f'"{image.digest}"'),
        ("content-length", str(image.size)),
    ]


async def get_manifest(ctx: OciContext) -> None:
    head = ctx.request.method == "HEAD"
    cache = None
    if ctx.pull_through is not None:
        cache = await ctx.pull_through.prepare(ctx.registry_ref, ctx.name, ctx.reference, ctx.allowed)
    image = await ctx.registry.get_manifest(ctx.registry_ref, ctx.name, ctx.reference, with_body=not head)
    if not head:  # a pull: lastRecordedPullTime (coalesced, written in the background)
        ctx.registry.pulls.note(image, ctx.principal.arn)
    accept = mf.parse_accept(ctx.request.headers.get("accept", []))
    if accept and not Digest.looks_like(ctx.reference) and not mf.negotiate(image.media_type, accept):
        # ECR converts Docker schema 2 <-> OCI on pull by tag (never by digest); a client that
        # takes neither form gets the stored bytes, as other registries answer.
        if image.body is None:
            image = await ctx.registry.get_manifest(ctx.registry_ref, ctx.name, ctx.reference)
        image = convert_for(image, accept) or image
    headers = _manifest_headers(image)
    if cache is not None:
        headers.append(("x-moorage-cache", cache))
    await ctx.reply(200, headers, image.body or b"")


async def put_manifest(ctx: OciContext) -> None:
    reference = ctx.reference
    body = await ctx.request.read(ctx.registry.limits.max_manifest_bytes)
    is_digest = Digest.looks_like(reference)
    result = await ctx.registry.put_manifest(
        ctx.registry_ref,
        ctx.name,
        body,
        ctx.request.header("content-type"),
        tag=None if is_digest else reference,
        digest=Digest.parse(reference) if is_digest else None,
        principal=ctx.principal.arn,
    )
    image = result.image
    headers = [
        ("location", f"/v2/{ctx.name}/manifests/{image.digest}"),
        ("docker-content-digest", str(image.digest)),
    ]
    if image.subject is not None:
        headers.append(("oci-subject", str(image.subject)))
    await ctx.reply(201, headers)


async def delete_manifest(ctx: OciContext) -> None:
    await ctx.registry.delete_manifest(ctx.registry_ref, ctx.name, ctx.reference)
    await ctx.reply(202)


def _page_request(ctx: OciContext) -> PageRequest:
    return PageRequest(limit=page_size(ctx.request.param("n")), after=page_after(ctx.request.param("last")))


def page_size(raw: str | None) -> int | None:
    """The page size of `?n=` (at most MAX_PAGE); PaginationInvalidError unless ASCII digits."""
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()):  # str.isdigit also takes "²", which int() refuses
        raise PaginationInvalidError(f"invalid page size n={raw[:20]!r}")
    digits = raw.lstrip("0") or "0"  # no int() of thousands of digits: it raises past 4300
    return MAX_PAGE if len(digits) > len(str(MAX_PAGE)) else min(int(digits), MAX_PAGE)


def page_after(last: str | None) -> str | None:
    """The `after` key of `?last=`. Names and tags hold no character below `-`, so the items after
    `x<NUL>...` are exactly those after `x`: cut at a NUL, which no store's text type takes."""
    after = (last or "").split("\x00", 1)[0]
    return after or None


def _link(path: str, page: Page[str], request: PageRequest) -> list[tuple[str, str]]:
    if page.next_after is None or request.limit is None:
        return []
    return [("link", f'<{path}?n={request.limit}&last={quote(page.next_after, safe="")}>; rel="next"')]


async def list_tags(ctx: OciContext) -> None:
    request = _page_request(ctx)
    if request.limit == 0:
        await ctx.registry.get_repository(ctx.registry_ref, ctx.name)
        await ctx.reply_json(200, {"name": ctx.name, "tags": []})
        return
    page = await ctx.registry.list_tags(ctx.registry_ref, ctx.name, request)
    links = _link(f"/v2/{ctx.name}/tags/list", page, request)
    await ctx.reply_json(200, {"name": ctx.name, "tags": list(page.items)}, links)


async def catalog(ctx: OciContext) -> None:
    request = _page_request(ctx)
    if request.limit == 0:
        await ctx.reply_json(200, {"repositories": []})
        return
    page = await ctx.registry.catalog(ctx.registry_ref, request)
    await ctx.reply_json(200, {"repositories": list(page.items)}, _link("/v2/_catalog", page, request))


def _descriptor(image: Image) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": image.media_type, "digest": str(image.digest), "size": image.size}
    if image.artifact_type:
        out["artifactType"] = image.artifact_type
    if image.body is not None:
        annotations = mf.parse(image.body, image.media_type).annotations
        if annotations:
            out["annotations"] = dict(annotations)
    return out


async def referrers(ctx: OciContext) -> None:
    subject = Digest.parse(ctx.reference)
    artifact_type = ctx.request.param("artifactType") or None
    found = await ctx.registry.referrers(ctx.registry_ref, ctx.name, subject, artifact_type)
    index = {"schemaVersion": 2, "mediaType": mf.OCI_INDEX, "manifests": [_descriptor(i) for i in found]}
    headers = [("oci-filters-applied", "artifactType")] if artifact_type else []
    body = compact_json(index)
    await ctx.reply(200, [("content-type", mf.OCI_INDEX), *headers], body)


HANDLERS: dict[tuple[Kind, str], Handler] = {
    ("manifest", "GET"): get_manifest,
    ("manifest", "HEAD"): get_manifest,
    ("manifest", "PUT"): put_manifest,
    ("manifest", "DELETE"): delete_manifest,
    ("tags", "GET"): list_tags,
    ("catalog", "GET"): catalog,
    ("referrers", "GET"): referrers,
}
