"""Managed-signing operations: Put/Get/DeleteSigningConfiguration and DescribeImageSigningStatus.
The service (profiles, configuration, statuses, the signing consumer) is `moorage.signing`."""

from __future__ import annotations

from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.replication import answered_id, target_image
from moorage.ecr.wire import EcrError
from moorage.signing import Signing, SigningConfigurationNotFoundError, parse_profile_arn

__all__ = ["HANDLERS"]


def _service(ctx: EcrContext) -> Signing:
    assert ctx.services.signing is not None
    return ctx.services.signing


def _not_found(exc: SigningConfigurationNotFoundError) -> EcrError:
    return EcrError("SigningConfigurationNotFoundException", str(exc))


async def put_signing_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    config = params["signingConfiguration"]
    for i, rule in enumerate(config.get("rules") or [], start=1):
        if parse_profile_arn(rule["signingProfileArn"]) is None:  # e.g. arn:aws-cn: (not served here)
            raise EcrError(
                "InvalidParameterException",
                f"Invalid parameter at 'signingConfiguration.rules.{i}.member.signingProfileArn' failed to "
                "satisfy constraint: 'Invalid signing profile ARN'",
            )
    stored = await _service(ctx).put_configuration(registry, config)
    return {"signingConfiguration": stored}


async def get_signing_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    try:
        config = await _service(ctx).configuration(registry)
    except SigningConfigurationNotFoundError as exc:
        raise _not_found(exc) from None
    return {"registryId": registry.account_id, "signingConfiguration": config}


async def delete_signing_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    try:
        config = await _service(ctx).delete_configuration(registry)
    except SigningConfigurationNotFoundError as exc:
        raise _not_found(exc) from None
    return {"registryId": registry.account_id, "signingConfiguration": config}


async def describe_image_signing_status(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name, image = await target_image(ctx, params)
    statuses = []
    for row in await _service(ctx).statuses(registry, name, image.digest):
        entry: dict[str, Any] = {"signingProfileArn": row.profile_arn, "status": row.status}
        if row.status == "FAILED":
            entry["failureCode"] = row.failure_code or "Unknown"
            entry["failureReason"] = row.failure_reason or ""
        statuses.append(entry)
    out_id = answered_id(image, params)
    return {
        "repositoryName": name,
        "imageId": out_id,
        "registryId": registry.account_id,
        "signingStatuses": statuses,
    }


HANDLERS: dict[str, Handler] = {
    "PutSigningConfiguration": put_signing_configuration,
    "GetSigningConfiguration": get_signing_configuration,
    "DeleteSigningConfiguration": delete_signing_configuration,
    "DescribeImageSigningStatus": describe_image_signing_status,
}
