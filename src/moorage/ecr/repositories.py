"""Repository operations: Create/Describe/DeleteRepository, PutImageTagMutability,
PutImageScanningConfiguration, TagResource, UntagResource, ListTagsForResource."""

from __future__ import annotations

import re
import uuid
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request, repository_arn
from moorage.model import RegistryRef, Repository, RepositoryName

__all__ = ["HANDLERS", "repository_record"]

_WITH_EXCLUSION = ("IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION")
_ARN_RE = re.compile(r"arn:aws[a-z-]*:ecr:([a-z0-9-]+):([0-9]{12}):repository/(.+)")
# Names the AWS-managed key for ECR of one account and region: uuid5(namespace, "<account>/<region>").
_MANAGED_KEY_NAMESPACE = uuid.UUID("6f0d3a52-7c1e-5b8e-9a43-2d1c5e0f8b71")


def managed_kms_key(registry: RegistryRef) -> str:
    """The key ARN of the account's AWS-managed key `aws/ecr` in that region: what ECR answers
    as `kmsKey` for KMS/KMS_DSSE without a key of the caller's. Stable per account and region."""
    key_id = uuid.uuid5(_MANAGED_KEY_NAMESPACE, f"{registry.account_id}/{registry.region}")
    return f"arn:aws:kms:{registry.region}:{registry.account_id}:key/{key_id}"


def _kms_key(repo: Repository) -> str | None:
    if repo.encryption_type == "AES256":
        return None
    # Repositories created before the key ARN was stored hold the alias ARN of the managed key.
    if not repo.kms_key or repo.kms_key.endswith(":alias/aws/ecr"):
        return managed_kms_key(repo.registry)
    return repo.kms_key


def repository_record(ctx: EcrContext, repo: Repository) -> dict[str, Any]:
    record: dict[str, Any] = {
        "repositoryArn": repository_arn(repo),
        "registryId": repo.registry.account_id,
        "repositoryName": repo.name,
        "repositoryUri": ctx.repository_uri(repo),
        "createdAt": epoch(repo.created_at),
        "imageTagMutability": repo.tag_mutability,
        "imageScanningConfiguration": {"scanOnPush": repo.scan_on_push},
        "encryptionConfiguration": {"encryptionType": repo.encryption_type},
    }
    if repo.mutability_exclusions:
        record["imageTagMutabilityExclusionFilters"] = [
            {"filterType": "WILDCARD", "filter": f} for f in repo.mutability_exclusions
        ]
    kms_key = _kms_key(repo)
    if kms_key:
        record["encryptionConfiguration"]["kmsKey"] = kms_key
    return record


def _mutability(params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    mode = params.get("imageTagMutability", "MUTABLE")
    filters = params.get("imageTagMutabilityExclusionFilters")
    if mode in _WITH_EXCLUSION and not filters:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
            f"'ImageTagMutabilityExclusionFilters can't be null when imageTagMutability is set as {mode}'",
        )
    if mode not in _WITH_EXCLUSION and filters:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
            f"'ImageTagMutabilityExclusionFilters should be null when imageTagMutability is set as {mode}'",
        )
    return mode, tuple(f["filter"] for f in filters or ())


def _resource_tags(tags: list[dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in tags:
        key, value = tag.get("Key"), tag.get("Value")
        if key is None or value is None:
            raise EcrError("InvalidTagParameterException", "Tag keys and values must not be null")
        if not 1 <= len(key) <= 128 or len(value) > 256:
            raise EcrError(
                "InvalidTagParameterException",
                "Tag keys must be 1-128 characters and values at most 256 characters",
            )
        if key.lower().startswith("aws:"):
            raise EcrError("InvalidTagParameterException", "Tag keys starting with 'aws:' are reserved")
        out[key] = value
    return out


async def create_repository(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    mode, exclusions = _mutability(params)
    encryption = params.get("encryptionConfiguration") or {}
    encryption_type = encryption.get("encryptionType", "AES256")
    kms_key = encryption.get("kmsKey")
    if encryption_type == "AES256" and kms_key:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'encryptionConfiguration' failed to satisfy constraint: "
            "'kmsKey can only be specified when encryptionType is KMS or KMS_DSSE'",
        )
    if encryption_type != "AES256" and not kms_key:
        kms_key = managed_kms_key(registry)
    tags = _resource_tags(params.get("tags") or [])
    if len(tags) > 50:
        raise EcrError("TooManyTagsException", "A repository can have at most 50 resource tags")
    repo = Repository(
        registry=registry,
        name=name,
        created_at=ctx.services.registry.now(),
        tag_mutability=mode,
        mutability_exclusions=exclusions,
        scan_on_push=bool((params.get("imageScanningConfiguration") or {}).get("scanOnPush", False)),
        encryption_type=encryption_type,
        kms_key=kms_key,
    )
    created = await ctx.services.registry.create_repository(repo, tags)
    return {"repository": repository_record(ctx, created)}


async def describe_repositories(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    names = params.get("repositoryNames")
    if names is not None and ("nextToken" in params or "maxResults" in params):
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'repositoryNames' failed to satisfy constraint: "
            "'repositoryNames cannot be combined with nextToken or maxResults'",
        )
    scope = registry.account_id
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    found = await ctx.services.registry.describe_repositories(
        registry, [RepositoryName(n) for n in names] if names is not None else None, page
    )
    return {
        "repositories": [repository_record(ctx, r) for r in found.items],
        **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after),
    }


async def delete_repository(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    repo = await ctx.services.registry.delete_repository(registry, name, force=bool(params.get("force")))
    return {"repository": repository_record(ctx, repo)}


async def put_image_tag_mutability(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    mode, exclusions = _mutability(params)
    repo = await ctx.services.registry.update_repository(
        registry, name, tag_mutability=mode, mutability_exclusions=exclusions
    )
    out: dict[str, Any] = {
        "registryId": registry.account_id,
        "repositoryName": name,
        "imageTagMutability": repo.tag_mutability,
    }
    if exclusions:
        out["imageTagMutabilityExclusionFilters"] = [{"filterType": "WILDCARD", "filter": f} for f in exclusions]
    return out


async def put_image_scanning_configuration(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    scan_on_push = bool(params["imageScanningConfiguration"].get("scanOnPush", False))
    await ctx.services.registry.update_repository(registry, name, scan_on_push=scan_on_push)
    return {
        "registryId": registry.account_id,
        "repositoryName": name,
        "imageScanningConfiguration": {"scanOnPush": scan_on_push},
    }


def _arn_target(ctx: EcrContext, arn: str) -> tuple[RegistryRef, RepositoryName]:
    match = _ARN_RE.fullmatch(arn)
    if match is None:
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN'",
        )
    region, account, name = match.groups()
    registry = ctx.registry_ref({"registryId": account})
    if region != registry.region:
        from moorage.errors import RepositoryNotFoundError

        raise RepositoryNotFoundError(name, account)
    return registry, RepositoryName(name)


async def tag_resource(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = _arn_target(ctx, params["resourceArn"])
    await ctx.services.registry.change_resource_tags(registry, name, add=_resource_tags(params["tags"]))
    return {}


async def untag_resource(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = _arn_target(ctx, params["resourceArn"])
    keys = params["tagKeys"]
    if any(k.lower().startswith("aws:") for k in keys):
        raise EcrError("InvalidTagParameterException", "Tag keys starting with 'aws:' are reserved")
    await ctx.services.registry.change_resource_tags(registry, name, remove=keys)
    return {}


async def list_tags_for_resource(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = _arn_target(ctx, params["resourceArn"])
    tags = await ctx.services.registry.resource_tags(registry, name)
    return {"tags": [{"Key": k, "Value": v} for k, v in tags.items()]}


HANDLERS: dict[str, Handler] = {
    "CreateRepository": create_repository,
    "DescribeRepositories": describe_repositories,
    "DeleteRepository": delete_repository,
    "PutImageTagMutability": put_image_tag_mutability,
    "PutImageScanningConfiguration": put_image_scanning_configuration,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}
