"""Image scanning operations: Put/GetRegistryScanningConfiguration,
BatchGetRepositoryScanningConfiguration, StartImageScan, DescribeImageScanFindings."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request
from moorage.errors import ManifestUnknownError, RepositoryNotFoundError
from moorage.model import RegistryRef, RepositoryName
from moorage.scanning.service import (
    ScanLimitExceededError,
    Scanning,
    ScanNotFoundError,
    UnsupportedImageTypeError,
)

__all__ = ["HANDLERS", "scan_summary"]


def _service(ctx: EcrContext) -> Scanning:
    scanning = ctx.services.scanning
    if scanning is None:
        raise EcrError("UnsupportedOperationException", f"{ctx.operation} is not available in this process")
    return scanning


def _text(value: str | None) -> str:
    return "null" if value is None else value


def _reference(params: dict[str, Any]) -> tuple[str, dict[str, str]]:
    image_id = params.get("imageId") or {}
    digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
    return str(digest or tag), {k: v for k, v in (("imageDigest", digest), ("imageTag", tag)) if v}


def _not_found(params: dict[str, Any], name: str, registry: RegistryRef) -> EcrError:
    image_id = params.get("imageId") or {}
    return EcrError(
        "ImageNotFoundException",
        f"The image with imageId {{imageDigest:'{_text(image_id.get('imageDigest'))}', "
        f"imageTag:'{_text(image_id.get('imageTag'))}'}} does not exist within the repository with name "
        f"'{name}' in the registry with id '{registry.account_id}'",
    )


async def put_registry_scanning_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = RegistryRef(ctx.caller.principal.account_id, ctx.caller.region)
    config = await _service(ctx).put_configuration(registry, params.get("scanType", "BASIC"), params.get("rules") or [])
    return {"registryScanningConfiguration": config}


async def get_registry_scanning_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = RegistryRef(ctx.caller.principal.account_id, ctx.caller.region)
    return {"registryId": registry.account_id, "scanningConfiguration": await _service(ctx).configuration(registry)}


async def batch_get_repository_scanning_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = RegistryRef(ctx.caller.principal.account_id, ctx.caller.region)
    scanning = _service(ctx)
    config = await scanning.configuration(registry)
    found, failures = [], []
    for name in params["repositoryNames"]:
        try:
            repo = await ctx.services.registry.get_repository(registry, RepositoryName(name))
        except RepositoryNotFoundError:
            failures.append(
                {
                    "repositoryName": name,
                    "failureCode": "REPOSITORY_NOT_FOUND",
                    "failureReason": "REPOSITORY_NOT_FOUND",
                }
            )
            continue
        effective = scanning.effective(config, name, repo.scan_on_push)
        found.append(
            {
                "repositoryArn": f"arn:aws:ecr:{registry.region}:{registry.account_id}:repository/{name}",
                "repositoryName": name,
                "scanOnPush": effective.scan_frequency == "SCAN_ON_PUSH",
                "scanFrequency": effective.scan_frequency,
                "appliedScanFilters": effective.applied_filters,
            }
        )
    return {"scanningConfigurations": found, "failures": failures}


async def start_image_scan(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    reference, image_id = _reference(params)
    try:
        image = await _service(ctx).start(registry, name, reference)
    except ManifestUnknownError:
        raise _not_found(params, name, registry) from None
    except UnsupportedImageTypeError:
        raise EcrError("UnsupportedImageTypeException", "The image type is not supported for scanning.") from None
    except ScanLimitExceededError:
        raise EcrError(
            "LimitExceededException", "The scan quota per image has been exceeded. Wait and try again."
        ) from None
    return {
        "registryId": registry.account_id,
        "repositoryName": name,
        "imageId": {**image_id, "imageDigest": str(image.digest)},
        "imageScanStatus": {"status": "IN_PROGRESS"},
    }


def _wire(value: Any) -> Any:
    """Stored findings back to the wire: `{"$ts": epoch}` timestamps become epoch seconds."""
    if isinstance(value, dict):
        if set(value) == {"$ts"}:
            return round(float(value["$ts"]), 3)
        return {k: _wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wire(v) for v in value]
    return value


async def describe_image_scan_findings(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    reference, image_id = _reference(params)
    scanning = _service(ctx)
    try:
        image, record = await scanning.result(registry, name, reference)
    except ManifestUnknownError:
        raise _not_found(params, name, registry) from None
    except ScanNotFoundError:
        raise EcrError(
            "ScanNotFoundException",
            f"Image scan does not exist for the image with '{{imageDigest:'{_text(image_id.get('imageDigest'))}', "
            f"imageTag:'{_text(image_id.get('imageTag'))}'}}' in the repository with name '{name}' "
            f"in the registry with id '{registry.account_id}'",
        ) from None
    enhanced = record.scan_type == "ENHANCED"
    status = record.status
    if enhanced and status == "COMPLETE":
        status = "ACTIVE"
    out: dict[str, Any] = {
        "registryId": registry.account_id,
        "repositoryName": name,
        "imageId": {**image_id, "imageDigest": str(image.digest)},
        "imageScanStatus": {"status": status, **({"description": record.description} if record.description else {})},
    }
    if record.status != "COMPLETE" or record.result is None:
        return out
    result = json.loads(record.result)
    items = result["enhanced"] if enhanced else result["findings"]
    scope = f"{registry.account_id}/{name}/{image.digest}/{record.requested_at.timestamp()}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    start = int(page.after or 0)
    limit = page.limit or 100
    chunk = items[start : start + limit]
    findings: dict[str, Any] = {"findingSeverityCounts": result["counts"]}
    if record.completed_at is not None:
        findings["imageScanCompletedAt"] = epoch(record.completed_at)
    findings["vulnerabilitySourceUpdatedAt"] = round(float(result["vulndb_imported_at"]), 3)
    findings["enhancedFindings" if enhanced else "findings"] = _wire(chunk)
    out["imageScanFindings"] = findings
    after = str(start + limit) if start + limit < len(items) else None
    return {**out, **next_token(ctx.services.tokens, ctx.operation, scope, after)}


async def scan_summary(
    ctx: EcrContext, registry: RegistryRef, name: str, pushed: Mapping[str, datetime]
) -> dict[str, Any]:
    """`imageScanStatus` / `imageScanFindingsSummary` of DescribeImages, by digest."""
    scanning = ctx.services.scanning
    if scanning is None:
        return {}
    out: dict[str, Any] = {}
    for digest, record in (await scanning.status_of(registry, name, pushed)).items():
        status = "ACTIVE" if record.scan_type == "ENHANCED" and record.status == "COMPLETE" else record.status
        entry: dict[str, Any] = {"imageScanStatus": {"status": status}}
        if record.description:
            entry["imageScanStatus"]["description"] = record.description
        if record.status == "COMPLETE" and record.result is not None:
            result = json.loads(record.result)
            summary: dict[str, Any] = {"findingSeverityCounts": result["counts"]}
            if record.completed_at is not None:
                summary["imageScanCompletedAt"] = epoch(record.completed_at)
            summary["vulnerabilitySourceUpdatedAt"] = round(float(result["vulndb_imported_at"]), 3)
            entry["imageScanFindingsSummary"] = summary
        out[digest] = entry
    return out


HANDLERS: dict[str, Handler] = {
    "PutRegistryScanningConfiguration": put_registry_scanning_configuration,
    "GetRegistryScanningConfiguration": get_registry_scanning_configuration,
    "BatchGetRepositoryScanningConfiguration": batch_get_repository_scanning_configuration,
    "StartImageScan": start_image_scan,
    "DescribeImageScanFindings": describe_image_scan_findings,
}
