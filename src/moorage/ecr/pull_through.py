"""Pull-through cache rule operations: Create/Describe/Update/Delete/ValidatePullThroughCacheRule."""

from __future__ import annotations

from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request
from moorage.metadata import PullThroughRule
from moorage.pull_through import PullThroughCache

__all__ = ["HANDLERS"]


def _service(ctx: EcrContext) -> PullThroughCache:
    service = ctx.services.pull_through
    if service is None:
        raise EcrError("UnsupportedOperationException", "The pull-through cache is not configured")
    return service


def _shape(rule: PullThroughRule, *, created: bool = True, updated: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ecrRepositoryPrefix": rule.prefix,
        "upstreamRegistryUrl": rule.upstream_url,
        "registryId": rule.registry.account_id,
    }
    if created:
        out["createdAt"] = epoch(rule.created_at)
    if rule.upstream_registry is not None:
        out["upstreamRegistry"] = rule.upstream_registry
    if rule.credential_arn is not None:
        out["credentialArn"] = rule.credential_arn
    if rule.custom_role_arn is not None:
        out["customRoleArn"] = rule.custom_role_arn
    if rule.upstream_prefix != "ROOT" or rule.prefix != "ROOT":
        out["upstreamRepositoryPrefix"] = rule.upstream_prefix
    if updated and rule.updated_at is not None:
        out["updatedAt"] = epoch(rule.updated_at)
    return out


async def create_rule(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    rule = await _service(ctx).create(
        ctx.registry_ref(params),
        params["ecrRepositoryPrefix"],
        params["upstreamRegistryUrl"],
        upstream_registry=params.get("upstreamRegistry"),
        upstream_prefix=params.get("upstreamRepositoryPrefix"),
        credential_arn=params.get("credentialArn"),
        custom_role_arn=params.get("customRoleArn"),
    )
    return _shape(rule)


async def describe_rules(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    rules = await _service(ctx).describe(registry, params.get("ecrRepositoryPrefixes"))
    scope = f"{registry.account_id}/{registry.region}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    if page.after is not None:
        rules = [r for r in rules if r.prefix > page.after]
    limit = page.limit or 100
    shown = list(rules[:limit])
    out: dict[str, Any] = {"pullThroughCacheRules": [_shape(r, updated=True) for r in shown]}
    if len(rules) > limit:
        out.update(next_token(ctx.services.tokens, ctx.operation, scope, shown[-1].prefix))
    return out


async def update_rule(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    rule = await _service(ctx).update(
        ctx.registry_ref(params),
        params["ecrRepositoryPrefix"],
        params.get("credentialArn"),
        params.get("customRoleArn"),
    )
    out = _shape(rule, created=False, updated=True)
    out.pop("upstreamRegistryUrl", None)
    out.pop("upstreamRegistry", None)
    return out


async def delete_rule(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    rule = await _service(ctx).delete(ctx.registry_ref(params), params["ecrRepositoryPrefix"])
    out = _shape(rule)
    out.pop("upstreamRegistry", None)
    return out


async def validate_rule(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    rule, failure = await _service(ctx).validate(ctx.registry_ref(params), params["ecrRepositoryPrefix"])
    out = _shape(rule, created=False)
    out.pop("upstreamRegistry", None)
    out["isValid"] = failure is None
    if failure is not None:
        out["failure"] = failure
    return out


HANDLERS: dict[str, Handler] = {
    "CreatePullThroughCacheRule": create_rule,
    "DescribePullThroughCacheRules": describe_rules,
    "UpdatePullThroughCacheRule": update_rule,
    "DeletePullThroughCacheRule": delete_rule,
    "ValidatePullThroughCacheRule": validate_rule,
}
