"""Lifecycle operations: Put/Get/DeleteLifecyclePolicy, Start/GetLifecyclePolicyPreview, and the
pull-time update exclusions that `sinceImagePulled` rules depend on (Register/Deregister/
ListPullTimeUpdateExclusions). The services are `lifecycle_job.Lifecycle` and `pulls.PullTimes`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch, next_token, page_request

__all__ = ["HANDLERS"]


def _policy_reply(ctx: EcrContext, params: dict[str, Any], text: str) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    return {"registryId": registry.account_id, "repositoryName": params["repositoryName"], "lifecyclePolicyText": text}


def _with_last_evaluation(reply: dict[str, Any], at: datetime | None) -> dict[str, Any]:
    """Get/DeleteLifecyclePolicy always carry lastEvaluatedAt: the epoch (0) before the first evaluation, as ECR."""
    reply["lastEvaluatedAt"] = epoch(at) if at is not None else 0
    return reply


async def put_lifecycle_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text: str = params["lifecyclePolicyText"]
    await ctx.services.lifecycle.put_policy(registry, name, text)
    return _policy_reply(ctx, params, text)


async def get_lifecycle_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    record = await ctx.services.lifecycle.get_policy(registry, name)
    return _with_last_evaluation(_policy_reply(ctx, params, record.document), record.last_evaluated_at)


async def delete_lifecycle_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    record = await ctx.services.lifecycle.delete_policy(registry, name)
    return _with_last_evaluation(_policy_reply(ctx, params, record.document), record.last_evaluated_at)


async def start_lifecycle_policy_preview(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text = await ctx.services.lifecycle.start_preview(registry, name, params.get("lifecyclePolicyText"))
    return {**_policy_reply(ctx, params, text), "status": "IN_PROGRESS"}


def _selected(entry: dict[str, Any], ids: list[dict[str, str]]) -> bool:
    for image_id in ids:
        digest, tag = image_id.get("imageDigest"), image_id.get("imageTag")
        if (digest is None or entry["imageDigest"] == digest) and (tag is None or tag in entry.get("imageTags", ())):
            return True
    return False


def _summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    expiring = sum(1 for r in results if r["action"]["type"] == "EXPIRE")
    transitioning: dict[str, int] = {}
    for r in results:
        if r["action"]["type"] == "TRANSITION":
            target = r["action"].get("targetStorageClass", "ARCHIVE")
            transitioning[target] = transitioning.get(target, 0) + 1
    summary: dict[str, Any] = {"expiringImageTotalCount": expiring}
    if transitioning:
        summary["transitioningImageTotalCounts"] = [
            {"targetStorageClass": target, "imageTotalCount": count} for target, count in sorted(transitioning.items())
        ]
    return summary


async def get_lifecycle_policy_preview(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    if "imageIds" in params and ("nextToken" in params or "maxResults" in params):
        raise EcrError(
            "InvalidParameterException",
            "Invalid parameter at 'imageIds' failed to satisfy constraint: "
            "'imageIds cannot be combined with nextToken or maxResults'",
        )
    scope = f"{registry.account_id}/{name}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    preview = await ctx.services.lifecycle.get_preview(registry, name)
    reply: dict[str, Any] = {**_policy_reply(ctx, params, preview.document), "status": preview.status}
    results = preview.results
    tag_status = (params.get("filter") or {}).get("tagStatus", "ANY")
    if tag_status != "ANY":
        results = [r for r in results if bool(r.get("imageTags")) == (tag_status == "TAGGED")]
    if "imageIds" in params:
        results = [r for r in results if _selected(r, params["imageIds"])]
    start = int(page.after) if page.after is not None and page.after.isdigit() else 0
    end = len(results) if page.limit is None else start + page.limit
    reply["previewResults"] = results[start:end]
    if preview.status == "COMPLETE":
        reply["summary"] = _summary(preview.results)
    after = str(end) if end < len(results) else None
    return {**reply, **next_token(ctx.services.tokens, ctx.operation, scope, after)}


async def register_pull_time_update_exclusion(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    created = await ctx.services.registry.pulls.exclude(registry, params["principalArn"])
    return {"principalArn": params["principalArn"], "createdAt": epoch(created)}


async def deregister_pull_time_update_exclusion(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    await ctx.services.registry.pulls.include(registry, params["principalArn"])
    return {"principalArn": params["principalArn"]}


async def list_pull_time_update_exclusions(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    scope = f"{registry.account_id}/{registry.region}"
    page = page_request(ctx.services.tokens, ctx.operation, scope, params, default=100)
    found = await ctx.services.registry.pulls.exclusions(registry, page)
    return {
        "pullTimeUpdateExclusions": list(found.items),
        **next_token(ctx.services.tokens, ctx.operation, scope, found.next_after),
    }


HANDLERS: dict[str, Handler] = {
    "PutLifecyclePolicy": put_lifecycle_policy,
    "GetLifecyclePolicy": get_lifecycle_policy,
    "DeleteLifecyclePolicy": delete_lifecycle_policy,
    "StartLifecyclePolicyPreview": start_lifecycle_policy_preview,
    "GetLifecyclePolicyPreview": get_lifecycle_policy_preview,
    "RegisterPullTimeUpdateExclusion": register_pull_time_update_exclusion,
    "DeregisterPullTimeUpdateExclusion": deregister_pull_time_update_exclusion,
    "ListPullTimeUpdateExclusions": list_pull_time_update_exclusions,
}
