"""Policy operations: Set/Get/DeleteRepositoryPolicy, Put/Get/DeleteRegistryPolicy.

Documents are validated by `moorage.policy.parse_policy` and may name only ECR's actions (at most
10,240 characters, as ECR). An invalid one answers ECR's InvalidParameterException text ("Invalid
repository policy provided" / "Invalid registry policy provided"); what exactly is wrong goes to
the server log at INFO. Accepted documents are stored as the exact text given, which Get* answers.
Enforcement is `authz.py`'s.

SetRepositoryPolicy's lock-out guard (`force`): the new policy is refused unless `force` is true
when, with it in place of the current repository policy, the very same request (same caller,
same source address, same time, same identity and registry policies) would be denied
ecr:SetRepositoryPolicy on the repository — whether by an explicit Deny in the new policy or
because the caller's only Allow came from the policy being replaced. Conditions are evaluated
against this request's context, so a policy that would refuse the caller only from another
address or at another time is not caught.

A registry policy in a registry whose REGISTRY_POLICY_SCOPE is V1 may name only
ecr:ReplicateImage, ecr:BatchImportUpstreamImage, ecr:CreateRepository (or ecr:*).
"""

from __future__ import annotations

import logging
from typing import Any

from moorage.authz import on_repository
from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError
from moorage.model import RegistryRef
from moorage.policy import PolicyDocument, PolicyError, check_ecr_actions, check_registry_policy_scope, parse_policy

__all__ = ["HANDLERS"]

log = logging.getLogger("moorage.ecr")


def _invalid(what: str) -> EcrError:
    return EcrError(
        "InvalidParameterException",
        f"Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid {what} policy provided'",
    )


def _repository_policy(text: str, registry: RegistryRef, name: str) -> PolicyDocument:
    try:
        document = parse_policy(text, kind="resource", name=f"repository policy of '{name}'")
        check_ecr_actions(document)
    except PolicyError as exc:
        log.info("SetRepositoryPolicy %s in %s refused: %s", name, registry.account_id, exc.detail)
        raise _invalid("repository") from None
    return document


async def _registry_policy(ctx: EcrContext, text: str, registry: RegistryRef) -> None:
    try:
        document = parse_policy(text, kind="resource", name="registry policy")
        check_ecr_actions(document)
        scope = await ctx.services.registry.account_setting(registry, "REGISTRY_POLICY_SCOPE")
        check_registry_policy_scope(document, scope)
    except PolicyError as exc:
        log.info("PutRegistryPolicy in %s/%s refused: %s", registry.account_id, registry.region, exc.detail)
        raise _invalid("registry") from None


async def set_repository_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text: str = params["policyText"]
    await ctx.services.registry.get_repository(registry, name)
    document = _repository_policy(text, registry, name)
    if not params.get("force"):
        need = on_repository("ecr:SetRepositoryPolicy", registry, name)
        outcome = await ctx.services.authorizer.evaluate(
            ctx.caller.principal, ctx.origin, need, repository_policy=document
        )
        if not outcome.allowed:
            raise PolicyError(
                "lock-out",
                constraint=(
                    f"The policy would prevent {ctx.caller.principal.arn} from setting the repository policy again "
                    f"({outcome.decision.reason}); set force to true to set it anyway"
                ),
            )
    await ctx.services.authorizer.store.set_repository_policy(registry, name, text)
    return {"registryId": registry.account_id, "repositoryName": name, "policyText": text}


def _no_repository_policy(registry_id: str, name: str) -> EcrError:
    return EcrError(
        "RepositoryPolicyNotFoundException",
        f"Repository policy does not exist for the repository with name '{name}' in the registry with id "
        f"'{registry_id}'",
    )


async def get_repository_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text = await ctx.services.authorizer.store.repository_policy(registry, name)
    if text is None:
        raise _no_repository_policy(registry.account_id, name)
    return {"registryId": registry.account_id, "repositoryName": name, "policyText": text}


async def delete_repository_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry, name = ctx.target(params)
    text = await ctx.services.authorizer.store.delete_repository_policy(registry, name)
    if text is None:
        raise _no_repository_policy(registry.account_id, name)
    return {"registryId": registry.account_id, "repositoryName": name, "policyText": text}


def _no_registry_policy(registry_id: str) -> EcrError:
    return EcrError(
        "RegistryPolicyNotFoundException", f"Registry policy does not exist in the registry with id '{registry_id}'"
    )


async def put_registry_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    text: str = params["policyText"]
    await _registry_policy(ctx, text, registry)
    await ctx.services.authorizer.store.put_registry_policy(registry, text)
    return {"registryId": registry.account_id, "policyText": text}


async def get_registry_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    text = await ctx.services.authorizer.store.registry_policy(registry)
    if text is None:
        raise _no_registry_policy(registry.account_id)
    return {"registryId": registry.account_id, "policyText": text}


async def delete_registry_policy(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    text = await ctx.services.authorizer.store.delete_registry_policy(registry)
    if text is None:
        raise _no_registry_policy(registry.account_id)
    return {"registryId": registry.account_id, "policyText": text}


HANDLERS: dict[str, Handler] = {
    "SetRepositoryPolicy": set_repository_policy,
    "GetRepositoryPolicy": get_repository_policy,
    "DeleteRepositoryPolicy": delete_repository_policy,
    "PutRegistryPolicy": put_registry_policy,
    "GetRegistryPolicy": get_registry_policy,
    "DeleteRegistryPolicy": delete_registry_policy,
}
