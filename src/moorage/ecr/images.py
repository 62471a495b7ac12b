"""Image operations: PutImage, BatchGetImage, BatchDeleteImage, DescribeImages, ListImages,
ListImageReferrers, UpdateImageStorageClass."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from moorage import manifests as mf
from moorage.authz import on_repository
from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request
from moorage.errors import (
    DigestInvalidError,
    ManifestBlobUnknownError,
    ManifestUnknownError,
    RepositoryNotFoundError,
    UpstreamFailedError,
)
from moorage.images import ImageFailure, ImageRef
from moorage.model import Digest, Image, RegistryRef

__all__ = ["HANDLERS"]


def _text(value: str | None) -> str:
    """A message's rendering of an absent value, as ECR prints it: null."""
    return "null" if value is None else value


def _image_not_found(image_id: tuple[str | None, str | None], name: str, registry: RegistryRef) -> EcrError:
    digest, tag = image_id
    return EcrError(
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'{_text(digest)}', imageTag:'{_text(tag)}'}} does not exist within "
        f"the repository with name '{name}' in the registry with id '{registry.account_id}'",
    )


def _refs(params: dict[str, Any], key: str = "imageIds") -> list[ImageRef]:
    return [ImageRef(i.get("imageDigest"), i.get("imageTag")) for i in params[key]]


def _image_id(ref: ImageRef) -> dict[str, str]:
    out = {}
    if ref.digest is not None:
        out["imageDigest"] = ref.digest
    if ref.tag is not None:
        out["imageTag"] = ref.tag
    return out


def _failure(failure: ImageFailure) -> dict[str, Any]:
    return {"imageId": _image_id(failure.ref), "failureCode": failure.code, "failureReason": failure.reason}


def _image(registry: RegistryRef, image: Image, tag: str | None) -> dict[str, Any]:
    image_id = {"imageDigest": str(image.digest)}
    if tag is not None:
        image_id["imageTag"] = tag
    return {
        "registryId": registry.account_id,
        "repositoryName": image.repository,
        "imageId": image_id,
        "imageManifest": (image.body or b"").decode("utf-8"),
        "imageManifestMediaType": image.media_type,
    }


async def put_image(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text: str = params["imageManifest"]
    try:
        document = json.loads(text)
    except ValueError:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'",
        ) from None
    media_type = params.get("imageManifestMediaType")
    if not (isinstance(document, dict) and document.get("mediaType")) and not media_type:
        raise EcrError("InvalidParameterException", "image manifest mediatype not provided in manifest or parameter")
    tag = params.get("imageTag")
    digest = None
    if params.get("imageDigest"):
        try:
            digest = Digest.parse(params["imageDigest"])
        except DigestInvalidError:
            raise EcrError("ImageDigestDoesNotMatchException", _digest_mismatch(params, text)) from None
    try:
        result = await ctx.services.registry.put_manifest(
            registry,
            name,
            text.encode(),
            media_type,
            tag=tag,
            digest=digest,
            create_repository=False,
            principal=ctx.caller.principal.arn,
        )
    except ManifestBlobUnknownError as exc:
        # ECR lists the digests as [a, b] (no quotes): never a Python list's repr.
        what = (
            ("ReferencedImagesNotFoundException", "Images") if exc.children else ("LayersNotFoundException", "Layers")
        )
        raise EcrError(
            what[0],
            f"{what[1]} with digests [{', '.join(exc.digests)}] required for pushing image into repository with "
            f"name '{name}' in the registry with id '{registry.account_id}' do not exist",
        ) from None
    except DigestInvalidError:
        raise EcrError("ImageDigestDoesNotMatchException", _digest_mismatch(params, text)) from None
    if not result.changed:
        raise EcrError(
            "ImageAlreadyExistsException",
            f"Image with digest '{result.image.digest}' and tag '{_text(tag)}' already exists in the repository "
            f"with name '{name}' in registry with id '{registry.account_id}'",
        )
    return {"image": _image(registry, result.image, tag)}


def _digest_mismatch(params: dict[str, Any], text: str) -> str:
    return (
        f"Invalid parameter at 'imageDigest' failed to satisfy constraint: 'The provided digest "
        f"{params.get('imageDigest')} does not match the digest {mf.digest_of(text.encode())} of the manifest'"
    )


async def _through_cache(ctx: EcrContext, params: dict[str, Any]) -> tuple[list[ImageRef], list[dict[str, Any]]]:
    """Import what the pull-through cache covers and has not cached (as a /v2/ pull does); the
    references left to read, and a failure per image the upstream could not give."""
    refs = _refs(params)
    cache = ctx.services.cache_pulls
    if cache is None:
        return refs, []
    registry, name = ctx.target(params)
    left: list[ImageRef] = []
    failures: list[dict[str, Any]] = []

    async def allow(action: str) -> bool:
        need = on_repository(action, registry, name)
        return (await ctx.services.authorizer.evaluate(ctx.caller.principal, ctx.origin, need)).allowed

    for ref in refs:
        reference = ref.tag or ref.digest
        if reference is not None:
            try:
                await cache.prepare(registry, name, reference, allow)
            except UpstreamFailedError as exc:
                code = {"too_many": "UpstreamTooManyRequests", "denied": "UpstreamAccessDenied"}.get(
                    exc.kind, "UpstreamUnavailable"
                )
                failures.append({"imageId": _image_id(ref), "failureCode": code, "failureReason": exc.message})
                continue
            except (ManifestUnknownError, RepositoryNotFoundError):
                pass  # answered by batch_get as for any repository
        left.append(ref)
    return left, failures


async def batch_get_image(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    accepted = params.get("acceptedMediaTypes") or []
    refs, upstream_failures = await _through_cache(ctx, params)
    found, failures = await ctx.services.images.batch_get(
        registry, name, refs, accepted, principal_arn=ctx.caller.principal.arn
    )
    return {
        "images": [_image(registry, image, ref.tag) for ref, image in found],
        "failures": [*upstream_failures, *(_failure(f) for f in failures)],
    }


async def batch_delete_image(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    removed, failures = await ctx.services.images.batch_delete(registry, name, _refs(params))
    ids = [{"imageDigest": str(d), **({"imageTag": t} if t is not None else {})} for d, t in removed]
    return {"imageIds": ids, "failures": [_failure(f) for f in failures]}


def _detail(registry: RegistryRef, image: Image, now: datetime) -> dict[str, Any]:
    status = image.status(now)
    detail: dict[str, Any] = {
        "registryId": registry.account_id,
        "repositoryName": image.repository,
        "imageDigest": str(image.digest),
        "imageSizeInBytes": image.image_size,
        "imagePushedAt": epoch(image.pushed_at),
        "imageManifestMediaType": image.media_type,
        "imageStatus": status,
    }
    if image.tags:
        detail["imageTags"] = list(image.tags)
    if image.config_media_type:
        detail["artifactMediaType"] = image.config_media_type
    if image.last_pulled_at is not None:
        detail["lastRecordedPullTime"] = epoch(image.last_pulled_at)
    if image.subject is not None:
        detail["subjectManifestDigest"] = str(image.subject)
    if image.last_archived_at is not None:
        detail["lastArchivedAt"] = epoch(image.last_archived_at)
    if image.last_activated_at is not None and status != "ACTIVATING":
        detail["lastActivatedAt"] = epoch(image.last_activated_at)
    return detail


def _exclusive(params: dict[str, Any]) -> None:
    if "imageIds" in params and ("nextToken" in params or "maxResults" in params):
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'imageIds' failed to satisfy constraint: "
            "'imageIds cannot be combined with nextToken or maxResults'",
        )


async def describe_images(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    _exclusive(params)
    tag_status = (params.get("filter") or {}).get("tagStatus", "ANY")
    image_status = (params.get("filter") or {}).get("imageStatus", "ACTIVE")
    scope = f"{registry.account_id}/{name}/{image_status}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    refs = _refs(params) if "imageIds" in params else None
    try:
        found = await ctx.services.images.describe(registry, name, refs, tag_status, page, image_status)
    except ManifestUnknownError as exc:
        raise _image_not_found(exc.image_id or (None, None), name, registry) from None
    now = ctx.services.registry.now()
    details = [_detail(registry, image, now) for image in found.items]
    from moorage.ecr.scanning import scan_summary

    summaries = await scan_summary(ctx, registry, name, {str(i.digest): i.pushed_at for i in found.items})
    for detail in details:
        detail.update(summaries.get(detail["imageDigest"], {}))
    return {
        "imageDetails": details,
        **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after),
    }


async def list_images(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    tag_status = (params.get("filter") or {}).get("tagStatus", "ANY")
    image_status = (params.get("filter") or {}).get("imageStatus", "ACTIVE")
    scope = f"{registry.account_id}/{name}/{image_status}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    found = await ctx.services.images.list_ids(registry, name, tag_status, page, image_status)
    ids = [{"imageDigest": str(d), **({"imageTag": t} if t is not None else {})} for d, t in found.items]
    return {"imageIds": ids, **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after)}


async def list_image_referrers(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    subject = Digest.parse(params["subjectId"]["imageDigest"])
    wanted = set((params.get("filter") or {}).get("artifactTypes") or [])
    artifact_status = (params.get("filter") or {}).get("artifactStatus", "ACTIVE")
    scope = f"{registry.account_id}/{name}/{subject}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=20)
    found = await ctx.services.registry.referrers(registry, name, subject)
    now = ctx.services.registry.now()
    items = [i for i in found if not wanted or (i.artifact_type or "") in wanted]
    items = [i for i in items if artifact_status == "ANY" or i.status(now) == artifact_status]
    items = [i for i in items if page.after is None or str(i.digest) > page.after]
    more = page.limit is not None and len(items) > page.limit
    items = items[: page.limit] if page.limit is not None else items
    referrers = []
    for image in items:
        entry: dict[str, Any] = {
            "digest": str(image.digest),
            "mediaType": image.media_type,
            "size": image.size,
            "artifactStatus": image.status(now),
        }
        if image.artifact_type:
            entry["artifactType"] = image.artifact_type
        if image.body is not None:
            annotations = mf.parse(image.body, image.media_type).annotations
            if annotations:
                entry["annotations"] = dict(annotations)
        referrers.append(entry)
    after = str(items[-1].digest) if more and items else None
    return {"referrers": referrers, **next_token(ctx.services.tokens, ctx.operation, scope, after)}


async def update_image_storage_class(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    ref = ImageRef(params["imageId"].get("imageDigest"), params["imageId"].get("imageTag"))
    target = params["targetStorageClass"]
    try:
        image = await ctx.services.images.update_storage_class(registry, name, ref, target)
    except ManifestUnknownError:
        raise _image_not_found((ref.digest, ref.tag), name, registry) from None
    image_id = {"imageDigest": str(image.digest)}
    if ref.tag is not None:
        image_id["imageTag"] = ref.tag
    return {
        "registryId": registry.account_id,
        "repositoryName": name,
        "imageId": image_id,
        "imageStatus": image.status(ctx.services.registry.now()),
    }


HANDLERS: dict[str, Handler] = {
    "PutImage": put_image,
    "BatchGetImage": batch_get_image,
    "BatchDeleteImage": batch_delete_image,
    "DescribeImages": describe_images,
    "ListImages": list_images,
    "ListImageReferrers": list_image_referrers,
    "UpdateImageStorageClass": update_image_storage_class,
}
