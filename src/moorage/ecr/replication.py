"""Replication operations: PutReplicationConfiguration, DescribeImageReplicationStatus, and the
backfills (Start/StopReplicationBackfill, ListReplicationBackfills,
DescribeReplicationBackfillResults). DescribeRegistry, in registry_settings.py, answers the stored
configuration. The service and
the consumer that copies images are `moorage.replication`."""

from __future__ import annotations

import contextlib
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request
from moorage.errors import ManifestUnknownError
from moorage.metadata.replication import BackfillRecord
from moorage.model import Image, RegistryRef, RepositoryName
from moorage.replication import Destination, Replication

__all__ = ["HANDLERS"]


def _service(ctx: EcrContext) -> Replication:
    assert ctx.services.replication is not None
    return ctx.services.replication


async def put_replication_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    stored = await _service(ctx).put_configuration(registry, params["replicationConfiguration"])
    return {"replicationConfiguration": stored}


def image_not_found(image_id: dict[str, str], name: str, registry_id: str) -> EcrError:
    digest = image_id.get("imageDigest", "null")
    tag = image_id.get("imageTag", "null")
    return EcrError(
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'{digest}', imageTag:'{tag}'}} does not exist within the repository "
        f"with name '{name}' in the registry with id '{registry_id}'",
    )


async def target_image(ctx: EcrContext, params: dict[str, Any]) -> tuple[RegistryRef, RepositoryName, Image]:
    """The image an `imageId` of a status operation names (DescribeImageReplicationStatus,
    DescribeImageSigningStatus): by digest, by tag, or both when they agree; else ECR's
    ImageNotFoundException (InvalidParameterException when it names neither)."""
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
        raise image_not_found(image_id, name, registry.account_id) from None
    if "imageTag" in image_id and "imageDigest" in image_id:
        by_tag = None
        with contextlib.suppress(ManifestUnknownError):
            by_tag = await ctx.services.registry.get_manifest(registry, name, image_id["imageTag"], with_body=False)
        if by_tag is None or by_tag.digest != image.digest:
            raise image_not_found(image_id, name, registry.account_id)
    return registry, name, image


def answered_id(image: Image, params: dict[str, Any]) -> dict[str, str]:
    """The `imageId` a status operation answers with: the digest, and the tag when one was asked for."""
    out_id = {"imageDigest": str(image.digest)}
    if "imageTag" in params["imageId"]:
        out_id["imageTag"] = params["imageId"]["imageTag"]
    return out_id


async def describe_image_replication_status(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name, image = await target_image(ctx, params)
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
    out_id = answered_id(image, params)
    return {"repositoryName": name, "imageId": out_id, "replicationStatuses": statuses}


HANDLERS: dict[str, Handler] = {
    "PutReplicationConfiguration": put_replication_configuration,
    "DescribeImageReplicationStatus": describe_image_replication_status,
}


# -- replication backfills --------------------------------------------------------------------


def _destination(record: BackfillRecord) -> dict[str, str]:
    return {"region": record.destination.region, "registryId": record.destination.account_id}


def _progress(record: BackfillRecord) -> dict[str, Any]:
    if record.total is None:  # still preparing: ECR answers no progress yet
        return {}
    return {
        "progress": {
            "totalReplicationCount": record.total,
            "completedReplicationCount": record.completed,
            "failedReplicationCount": record.failed,
            "failureCodes": list(record.failure_codes),
        }
    }


def _summary(record: BackfillRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "replicationBackfillId": record.id,
        "destination": _destination(record),
        "status": record.status,
        "startedAt": epoch(record.started_at),
        **_progress(record),
    }
    if record.failure_code:
        out["failureCode"] = record.failure_code
    if record.ended_at is not None:
        out["endedAt"] = epoch(record.ended_at)
    return out


async def start_replication_backfill(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    dest = params["destination"]
    record = await _service(ctx).start_backfill(registry, Destination(dest["region"], dest["registryId"]))
    return {
        "replicationBackfillId": record.id,
        "registryId": registry.account_id,
        "destination": _destination(record),
        "status": record.status,
        "startedAt": epoch(record.started_at),
    }


async def stop_replication_backfill(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    record = await _service(ctx).stop_backfill(registry, params["replicationBackfillId"])
    return {
        "registryId": registry.account_id,
        "replicationBackfillId": record.id,
        "destination": _destination(record),
        "status": record.status,
        "startedAt": epoch(record.started_at),
    }


async def list_replication_backfills(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    scope = f"{registry.account_id}/{registry.region}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=50)
    found = await _service(ctx).list_backfills(registry, page)
    return {
        "registryId": registry.account_id,
        "backfills": [_summary(b) for b in found.items],
        **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after),
    }


async def describe_replication_backfill_results(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    backfill_id = params["replicationBackfillId"]
    scope = f"{registry.account_id}/{registry.region}/{backfill_id}/{params.get('resultStatusFilter', '')}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    record, results = await _service(ctx).backfill_results(
        registry, backfill_id, params.get("resultStatusFilter"), page
    )
    summary = _summary(record)
    summary.pop("replicationBackfillId")
    rendered = []
    for item in results.items:
        image_id = {"imageDigest": item.digest, **({"imageTag": item.tag} if item.tag else {})}
        entry: dict[str, Any] = {"repositoryName": item.repository, "imageId": image_id, "status": item.status}
        if item.failure_code:
            entry["failureCode"] = item.failure_code
        rendered.append(entry)
    return {
        "registryId": registry.account_id,
        "replicationBackfillId": record.id,
        **summary,
        "results": rendered,
        **next_token(ctx.services.tokens, ctx.operation, scope, results.next_after),
    }


HANDLERS.update(
    {
        "StartReplicationBackfill": start_replication_backfill,
        "StopReplicationBackfill": stop_replication_backfill,
        "ListReplicationBackfills": list_replication_backfills,
        "DescribeReplicationBackfillResults": describe_replication_backfill_results,
    }
)
