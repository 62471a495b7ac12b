"""Registry-level operations: GetAuthorizationToken, DescribeRegistry, GetAccountSetting,
PutAccountSetting."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from typing import Any

from moorage.ecr import EcrContext, Handler
from moorage.ecr.wire import EcrError, epoch
from moorage.model import RegistryRef
from moorage.registry import ACCOUNT_SETTINGS

__all__ = ["HANDLERS"]


async def get_authorization_token(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    principal = ctx.caller.principal
    ttl: timedelta = ctx.services.settings.auth.token_ttl
    now = datetime.now(UTC)  # real time: token expiry never follows the clock-control offset
    expires = now + ttl
    accounts = params.get("registryIds") or [principal.account_id]
    data = []
    for account in accounts:
        registry = RegistryRef(account, ctx.caller.region)
        password = ctx.services.registry_tokens.issue(principal, registry, expires_at=expires.timestamp())
        data.append(
            {
                "authorizationToken": base64.b64encode(f"AWS:{password}".encode()).decode(),
                "expiresAt": epoch(expires),
                "proxyEndpoint": ctx.proxy_endpoint(registry),
            }
        )
    return {"authorizationData": data}


async def describe_registry(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref(params)
    replication = await ctx.services.registry.document(registry, "replication")
    return {"registryId": registry.account_id, "replicationConfiguration": replication or {"rules": []}}


def _check_setting(name: str, value: str | None = None) -> None:
    allowed = ACCOUNT_SETTINGS.get(name)
    if allowed is None:
        raise EcrError(
            "InvalidParameterException",
            f"Invalid parameter at 'name' failed to satisfy constraint: 'Member must satisfy enum value set: "
            f"[{', '.join(ACCOUNT_SETTINGS)}]'",
        )
    if value is not None and value not in allowed[1]:
        raise EcrError(
            "InvalidParameterException",
            f"Invalid parameter at 'value' failed to satisfy constraint: 'Member must satisfy enum value set: "
            f"[{', '.join(allowed[1])}]'",
        )


async def get_account_setting(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    _check_setting(params["name"])
    value = await ctx.services.registry.account_setting(registry, params["name"])
    return {"name": params["name"], "value": value}


async def put_account_setting(ctx: EcrContext, params: dict[str, Any]) -> dict[str, Any]:
    registry = ctx.registry_ref({})
    _check_setting(params["name"], params["value"])
    await ctx.services.registry.put_account_setting(registry, params["name"], params["value"])
    return {"name": params["name"], "value": params["value"]}


HANDLERS: dict[str, Handler] = {
    "GetAuthorizationToken": get_authorization_token,
    "DescribeRegistry": describe_registry,
    "GetAccountSetting": get_account_setting,
    "PutAccountSetting": put_account_setting,
}
