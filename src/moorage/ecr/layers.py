"""Layer operations: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer.

The upload session is the same one `/v2/` uses (uploads.py). ECR's own rules are checked here:
parts are base64 in JSON with inclusive byte offsets, every part but the last must be at least
5 MiB (checked at completion, as ECR does), an upload without parts cannot be completed, and a
layer the repository already has is refused.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import AsyncIterator
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError
from moorage.errors import (
    BlobUnknownError,
    DigestInvalidError,
    DigestMismatchError,
    RepositoryNotFoundError,
    UploadOffsetMismatchError,
    UpstreamFailedError,
)
from moorage.model import Digest

__all__ = ["HANDLERS", "LAYER_URL_TTL_SECONDS", "MIN_PART_SIZE", "PART_SIZE"]

MIN_PART_SIZE = 5 * 1024 * 1024
PART_SIZE = 10 * 1024 * 1024
LAYER_URL_TTL_SECONDS = 3600


async def _one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def batch_check_layer_availability(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    layers: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    for raw in params["layerDigests"]:
        try:
            digest = Digest.parse(raw)
        except DigestInvalidError:
            failures.append(
                {
                    "layerDigest": raw,
                    "failureCode": "InvalidLayerDigest",
                    "failureReason": "Invalid layer digest",
                }
            )
            continue
        # Uploaded counts, referenced or not: pushers check this to skip layers already sent
        # (CompleteLayerUpload of such a layer answers LayerAlreadyExistsException).
        found = await ctx.services.registry.layer(registry, name, digest, referenced=False)
        if found is None:
            failures.append(
                {
                    "layerDigest": raw,
                    "failureCode": "MissingLayerDigest",
                    "failureReason": "Requested layer digest is not available in the repository",
                }
            )
            continue
        info, media_type = found
        layer: dict[str, Any] = {"layerDigest": raw, "layerAvailability": "AVAILABLE", "layerSize": info.size}
        if media_type:
            layer["mediaType"] = media_type
        layers.append(layer)
    return {"layers": layers, "failures": failures}


async def initiate_layer_upload(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    await ctx.services.registry.get_repository(registry, name)
    session = await ctx.services.uploads.start(registry, name)
    return {"uploadId": session.upload_id, "partSize": PART_SIZE}


async def upload_layer_part(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    upload_id: str = params["uploadId"]
    first, last = params["partFirstByte"], params["partLastByte"]
    try:
        data = base64.b64decode(params["layerPartBlob"], validate=True)
    except (binascii.Error, ValueError):
        raise EcrError("InvalidParameterException", "Invalid parameter at 'layerPartBlob': not valid base64") from None
    await ctx.services.registry.get_repository(registry, name)
    session = await ctx.services.uploads.status(registry, name, upload_id)

    def invalid(message: str, size: int) -> EcrError:
        return EcrError(
            "InvalidLayerPartException",
            message,
            registryId=registry.account_id,
            repositoryName=name,
            uploadId=upload_id,
            lastValidByteReceived=size - 1,
        )

    if last - first + 1 != len(data):
        raise invalid(
            f"The part's byte range {first}-{last} does not match the length {len(data)} of the part",
            session.size,
        )
    if len(session.part_sizes) >= 4200:
        raise EcrError("LimitExceededException", "An upload can have at most 4200 parts")
    try:
        await ctx.services.uploads.append(registry, name, upload_id, _one(data), first_byte=first)
    except UploadOffsetMismatchError as exc:
        raise invalid(
            f"The part must start at byte {exc.size}, the end of the bytes received so far; it starts at {first}",
            exc.size,
        ) from None
    return {
        "registryId": registry.account_id,
        "repositoryName": name,
        "uploadId": upload_id,
        "lastByteReceived": last,
    }


async def complete_layer_upload(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    upload_id: str = params["uploadId"]
    uploads = ctx.services.uploads
    await ctx.services.registry.get_repository(registry, name)
    session = await uploads.status(registry, name, upload_id)
    if not session.part_sizes or session.size == 0:
        raise EcrError(
            "EmptyUploadException",
            f"The upload with id '{upload_id}' in the repository with name '{name}' in registry with id "
            f"'{registry.account_id}' cannot be completed because it does not have any parts",
        )
    if any(size < MIN_PART_SIZE for size in session.part_sizes[:-1]):
        raise EcrError("LayerPartTooSmallException", "All layer parts except the last part should be at least 5MB")
    raw = params["layerDigests"][0]
    try:
        digest = Digest.parse(raw)
    except DigestInvalidError:
        raise EcrError("InvalidLayerException", f"The layer digest {raw} is not a valid digest") from None
    if await ctx.services.registry.layer(registry, name, digest, referenced=False) is not None:
        await uploads.cancel(registry, name, upload_id, missing_ok=True)
        raise EcrError(
            "LayerAlreadyExistsException",
            f"The layer with digest {digest} already exists in the repository with name '{name}' in the registry "
            f"with id '{registry.account_id}'",
        )
    try:
        await uploads.complete(registry, name, upload_id, digest)
    except DigestMismatchError as exc:
        raise EcrError(
            "InvalidLayerException",
            f"The layer digest {raw} does not match the digest {exc.actual} of the uploaded content",
        ) from None
    return {
        "registryId": registry.account_id,
        "repositoryName": name,
        "uploadId": upload_id,
        "layerDigest": str(digest),
    }


async def get_download_url_for_layer(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    raw = params["layerDigest"]
    not_found = EcrError(
        "LayersNotFoundException",
        f"The layer with digest {raw} does not exist within the repository with name '{name}' in the registry "
        f"with id '{registry.account_id}'",
    )
    try:
        digest = Digest.parse(raw)
    except DigestInvalidError:
        raise not_found from None
    if ctx.services.cache_pulls is not None:  # a cached repository's layer not fetched yet: import it
        try:
            await ctx.services.cache_pulls.blob(registry, name, digest, stream=False)
        except BlobUnknownError:
            raise not_found from None
        except RepositoryNotFoundError:
            pass  # answered below as for any repository
        except UpstreamFailedError as exc:
            raise EcrError("UnableToGetUpstreamLayerException", exc.message) from None
    if await ctx.services.registry.layer(registry, name, digest, referenced=False) is None:
        raise not_found
    if await ctx.services.registry.layer(registry, name, digest) is None:
        raise EcrError(
            "LayerInaccessibleException",
            f"The layer with digest {raw} is not referenced by any image in the repository with name '{name}'",
        )
    token = ctx.services.tokens.sign(
        "layer",
        {"a": registry.account_id, "r": registry.region, "n": name, "d": str(digest)},
        expires_at=time.time() + LAYER_URL_TTL_SECONDS,
    )
    host = ctx.registry_host(registry)
    return {"downloadUrl": f"{ctx.scheme}://{host}/_moorage/layers/{token}", "layerDigest": str(digest)}


HANDLERS: dict[str, Handler] = {
    "BatchCheckLayerAvailability": batch_check_layer_availability,
    "InitiateLayerUpload": initiate_layer_upload,
    "UploadLayerPart": upload_layer_part,
    "CompleteLayerUpload": complete_layer_upload,
    "GetDownloadUrlForLayer": get_download_url_for_layer,
}
