"""Replication operations: PutReplicationConfiguration, DescribeImageReplicationStatus
(DescribeRegistry, in registry_settings.py, answers the stored configuration). The service and
the consumer that copies images are `moorage.replication`."""

from __future__ import annotations

import contextlib
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError
from moorage.errors import ManifestUnknownError
from moorage.replication import Replication

__all__ = ["HANDLERS"]


def _service(ctx: EcrContext) -> Replication:
    assert ctx.services.replication is not None
    return ctx.services.replication


async def put_replication_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    stored = await _service(ctx).put_configuration(registry, params["replicationConfiguration"])
    return {"replicationConfiguration": stored}


def _image_not_found(image_id: dict[str, str], name: str, registry_id: str) -> EcrError:
    digest = image_id.get("imageDigest", "null")
    tag = image_id.get("imageTag", "null")
    return EcrError(
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'{digest}', imageTag:'{tag}'}} does not exist within the repository "
        f"with name '{name}' in the registry with id '{registry_id}'",
    )


async def describe_image_replication_status(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    image_id: dict[str, str] = params["imageId"]
    reference = image_id.get("imageDigest") or image_id.get("imageTag")
    if reference is None:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'imageId' failed to satisfy constraint: 'both tag and digest cannot be null'",
        )
    try:
        image = await ctx.services.registry.get_manifest(registry, name, reference, with_body=False)
    except ManifestUnknownError:
        raise _image_not_found(image_id, name, registry.account_id) from None
    if "imageTag" in image_id and "imageDigest" in image_id:
        by_tag = None
        with contextlib.suppress(ManifestUnknownError):
            by_tag = await ctx.services.registry.get_manifest(registry, name, image_id["imageTag"], with_body=False)
        if by_tag is None or by_tag.digest != image.digest:
            raise _image_not_found(image_id, name, registry.account_id)
    rows = await _service(ctx).statuses(registry, name, image.digest)
    statuses = []
    for row in rows:
        entry: dict[str, Any] = {
            "region": row.destination.region,
            "registryId": row.destination.account_id,
            "status": row.status,
        }
        if row.failure_code:
            entry["failureCode"] = row.failure_code
        statuses.append(entry)
    out_id = {"imageDigest": str(image.digest)}
    if "imageTag" in image_id:
        out_id["imageTag"] = image_id["imageTag"]
    return {"repositoryName": name, "imageId": out_id, "replicationStatuses": statuses}


HANDLERS: dict[str, Handler] = {
    "PutReplicationConfiguration": put_replication_configuration,
    "DescribeImageReplicationStatus": describe_image_replication_status,
}
