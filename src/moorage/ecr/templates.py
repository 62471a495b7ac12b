"""Repository creation template operations: Create/Describe/Update/DeleteRepositoryCreationTemplate.

Wire shapes and ECR's field rules live here; `moorage.templates.Templates` stores and applies them.
Beyond the model's constraints (checked by `ecr/validation.py`):
- `imageTagMutabilityExclusionFilters` go with the *_WITH_EXCLUSION modes only, as CreateRepository;
- `kmsKey` only with KMS / KMS_DSSE;
- `customRoleArn` must be an IAM role of the registry's own account, and is required when the
  template sets resource tags or a KMS key (ECR acts through that role to apply them);
- `repositoryPolicy` and `lifecyclePolicy` are validated as SetRepositoryPolicy and PutLifecyclePolicy.
Update changes only the fields it is given.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.repositories import _mutability, _resource_tags
from moorage.ecr.wire import EcrError, epoch, next_token, page_request
from moorage.model import RegistryRef
from moorage.policy import PolicyError
from moorage.templates import Template, Templates

__all__ = ["HANDLERS", "template_record"]

_ROLE_RE = re.compile(r"arn:aws[a-z-]*:iam::([0-9]{12}):role/[\w+=,.@/-]+")


def _invalid(member: str, constraint: str) -> EcrError:
    return EcrError(
        "InvalidParameterException", f"Invalid parameter at '{member}' failed to satisfy constraint: '{constraint}'"
    )


def _service(ctx: EcrContext) -> Templates:
    assert ctx.services.templates is not None
    return ctx.services.templates


def template_record(template: Template) -> dict[str, Any]:
    encryption: dict[str, Any] = {"encryptionType": template.encryption_type}
    if template.kms_key:
        encryption["kmsKey"] = template.kms_key
    record: dict[str, Any] = {
        "prefix": template.prefix,
        "encryptionConfiguration": encryption,
        "resourceTags": [{"Key": k, "Value": v} for k, v in template.resource_tags],
        "imageTagMutability": template.tag_mutability,
        "appliedFor": list(template.applied_for),
    }
    if template.description is not None:
        record["description"] = template.description
    if template.mutability_exclusions:
        record["imageTagMutabilityExclusionFilters"] = [
            {"filterType": "WILDCARD", "filter": f} for f in template.mutability_exclusions
        ]
    if template.repository_policy:
        record["repositoryPolicy"] = template.repository_policy
    if template.lifecycle_policy:
        record["lifecyclePolicy"] = template.lifecycle_policy
    if template.custom_role_arn:
        record["customRoleArn"] = template.custom_role_arn
    if template.created_at is not None:
        record["createdAt"] = epoch(template.created_at)
    if template.updated_at is not None:
        record["updatedAt"] = epoch(template.updated_at)
    return record


def _template(registry: RegistryRef, params: dict[str, Any], base: Template | None) -> Template:
    """The template `params` describe; for an update, the fields not given keep `base`'s values."""
    fields: dict[str, Any] = {}
    if "appliedFor" in params:
        applied = tuple(dict.fromkeys(params["appliedFor"]))
        if not applied:
            raise _invalid("appliedFor", "Member must have length greater than or equal to 1")
        fields["applied_for"] = applied
    if "description" in params:
        fields["description"] = params["description"]
    if "imageTagMutability" in params or "imageTagMutabilityExclusionFilters" in params:
        mode, exclusions = _mutability(
            {
                "imageTagMutability": params.get(
                    "imageTagMutability", base.tag_mutability if base is not None else "MUTABLE"
                ),
                **{k: v for k, v in params.items() if k == "imageTagMutabilityExclusionFilters"},
            }
        )
        fields["tag_mutability"], fields["mutability_exclusions"] = mode, exclusions
    if "encryptionConfiguration" in params:
        encryption = params["encryptionConfiguration"]
        kms_key = encryption.get("kmsKey") or None
        if encryption["encryptionType"] == "AES256" and kms_key:
            raise _invalid(
                "encryptionConfiguration", "kmsKey can only be specified when encryptionType is KMS or KMS_DSSE"
            )
        fields["encryption_type"], fields["kms_key"] = encryption["encryptionType"], kms_key
    if "resourceTags" in params:
        tags = _resource_tags(params["resourceTags"])
        if len(tags) > 50:
            raise EcrError("TooManyTagsException", "A repository can have at most 50 resource tags")
        fields["resource_tags"] = tuple(tags.items())
    for member, name in (("repositoryPolicy", "repository_policy"), ("lifecyclePolicy", "lifecycle_policy")):
        if member in params:
            fields[name] = params[member] or None
    if "customRoleArn" in params:
        role = params["customRoleArn"] or None
        if role is not None:
            match = _ROLE_RE.fullmatch(role)
            if match is None:
                raise _invalid("customRoleArn", "Invalid role ARN")
            if match.group(1) != registry.account_id:
                raise _invalid("customRoleArn", "The role must be in the same account as the registry")
        fields["custom_role_arn"] = role
    template = Template(prefix=params["prefix"], **fields) if base is None else replace(base, **fields)
    if (template.resource_tags or template.kms_key) and not template.custom_role_arn:
        raise _invalid("customRoleArn", "customRoleArn is required when the template sets resourceTags or a KMS key")
    return template


def _policy_error(exc: PolicyError) -> EcrError:
    return _invalid("repositoryPolicy", "Invalid repository policy provided")


async def create_repository_creation_template(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    template = _template(registry, params, None)
    try:
        stored = await _service(ctx).create(registry, template)
    except PolicyError as exc:
        raise _policy_error(exc) from None
    return {"registryId": registry.account_id, "repositoryCreationTemplate": template_record(stored)}


async def describe_repository_creation_templates(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    prefixes = params.get("prefixes")
    if prefixes is not None and ("nextToken" in params or "maxResults" in params):
        raise _invalid("prefixes", "prefixes cannot be combined with nextToken or maxResults")
    scope = f"{registry.account_id}/{registry.region}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    found = await _service(ctx).describe(registry, prefixes, page)
    return {
        "registryId": registry.account_id,
        "repositoryCreationTemplates": [template_record(t) for t in found.items],
        **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after),
    }


async def update_repository_creation_template(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    service = _service(ctx)
    current = await service.get(registry, params["prefix"])
    template = _template(registry, params, current)
    try:
        stored = await service.update(registry, template)
    except PolicyError as exc:
        raise _policy_error(exc) from None
    return {"registryId": registry.account_id, "repositoryCreationTemplate": template_record(stored)}


async def delete_repository_creation_template(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    deleted = await _service(ctx).delete(registry, params["prefix"])
    return {"registryId": registry.account_id, "repositoryCreationTemplate": template_record(deleted)}


HANDLERS: dict[str, Handler] = {
    "CreateRepositoryCreationTemplate": create_repository_creation_template,
    "DescribeRepositoryCreationTemplates": describe_repository_creation_templates,
    "UpdateRepositoryCreationTemplate": update_repository_creation_template,
    "DeleteRepositoryCreationTemplate": delete_repository_creation_template,
}
