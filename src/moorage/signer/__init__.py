"""The AWS Signer face (REST-JSON, SigV4 service `signer`): the part of the Signer API that
creates and reads signing profiles, on the same endpoint as ECR.

    PUT    /signing-profiles/{profileName}          PutSigningProfile
    GET    /signing-profiles/{profileName}          GetSigningProfile (?profileOwner=)
    DELETE /signing-profiles/{profileName}          CancelSigningProfile
    PUT    /signing-profiles/{profileName}/revoke   RevokeSigningProfile
    GET    /signing-profiles                        ListSigningProfiles
    POST | DELETE | GET  /tags/{resourceArn}        TagResource | UntagResource | ListTagsForResource

Input is checked against botocore's `signer` model as data (lengths, patterns, enums, required
members of each operation's input); errors are Signer's: the code in `x-amzn-ErrorType` and
`{"message", "code"}` in the body, with the modeled status. Every request is authorized as
`signer:<Operation>` on the profile's ARN (`*` for listing) through the same Authorizer as ECR
(identity policies; the account root in its own account). The service is `moorage.signing`.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import botocore.session
from botocore.model import OperationModel, ServiceModel, Shape

from moorage.asgi import ClientDisconnectedError, Receive, Request, Scope, Send, send_bytes
from moorage.auth import ApiAuthenticator, ApiCaller
from moorage.authz import Authorizer, Need, Origin
from moorage.errors import AccessDeniedError, InvalidRequestError, MoorageError
from moorage.metadata.signing import SigningProfileRecord
from moorage.model import RegistryRef
from moorage.signing import PLATFORM_DISPLAY_NAME, ProfileNotFoundError, Signing, parse_profile_arn, profile_arn
from moorage.sigv4 import SigV4Error

__all__ = ["SignerApi", "SignerError", "route"]

log = logging.getLogger("moorage.signer")

_MAX_BODY = 1 << 20


class SignerError(Exception):
    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else _STATUS.get(code, 400)


_STATUS = {
    "ResourceNotFoundException": 404,
    "NotFoundException": 404,
    "AccessDeniedException": 403,
    "ValidationException": 400,
    "BadRequestException": 400,
    "ConflictException": 409,
    "TooManyRequestsException": 429,
    "InternalServiceErrorException": 500,
}


@lru_cache(maxsize=1)
def _model() -> ServiceModel:
    return botocore.session.get_session().get_service_model("signer")


_NAME = r"[a-zA-Z0-9_]{2,64}"
_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("PUT", re.compile(rf"/signing-profiles/(?P<profileName>{_NAME})/revoke"), "RevokeSigningProfile"),
    ("PUT", re.compile(r"/signing-profiles/(?P<profileName>[^/]+)"), "PutSigningProfile"),
    ("GET", re.compile(r"/signing-profiles/(?P<profileName>[^/]+)"), "GetSigningProfile"),
    ("DELETE", re.compile(r"/signing-profiles/(?P<profileName>[^/]+)"), "CancelSigningProfile"),
    ("GET", re.compile(r"/signing-profiles/?"), "ListSigningProfiles"),
    ("POST", re.compile(r"/tags/(?P<resourceArn>.+)"), "TagResource"),
    ("DELETE", re.compile(r"/tags/(?P<resourceArn>.+)"), "UntagResource"),
    ("GET", re.compile(r"/tags/(?P<resourceArn>.+)"), "ListTagsForResource"),
]


def route(method: str, path: str) -> tuple[str, dict[str, str]] | None:
    """The operation and URI members of a request, or None."""
    for verb, pattern, operation in _ROUTES:
        match = pattern.fullmatch(path)
        if match and verb == method:
            return operation, {k: unquote(v) for k, v in match.groupdict().items()}
    return None


# -- validation from the model -------------------------------------------------------------


def _java(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_java(v) for v in value) + "]"
    return str(value)


def _violations(shape: Shape, value: object, path: str) -> list[str]:
    found: list[str] = []
    meta = shape.metadata
    rule: str | None = None
    if shape.type_name == "string":
        if not isinstance(value, str):
            raise SignerError("SerializationException", f"Expected a string at '{path}'")
        if "min" in meta and len(value) < meta["min"]:
            rule = f"Member must have length greater than or equal to {meta['min']}"
        elif "max" in meta and len(value) > meta["max"]:
            rule = f"Member must have length less than or equal to {meta['max']}"
        elif "pattern" in meta and not re.match(meta["pattern"], value):
            rule = f"Member must satisfy regular expression pattern: {meta['pattern']}"
        elif shape.enum and value not in shape.enum:
            rule = f"Member must satisfy enum value set: [{', '.join(shape.enum)}]"
    elif shape.type_name in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise SignerError("SerializationException", f"Expected a number at '{path}'")
        if "min" in meta and value < meta["min"]:
            rule = f"Member must have value greater than or equal to {meta['min']}"
        elif "max" in meta and value > meta["max"]:
            rule = f"Member must have value less than or equal to {meta['max']}"
    elif shape.type_name == "map":
        if not isinstance(value, dict):
            raise SignerError("SerializationException", f"Expected an object at '{path}'")
        if "min" in meta and len(value) < meta["min"]:
            rule = f"Member must have length greater than or equal to {meta['min']}"
        elif "max" in meta and len(value) > meta["max"]:
            rule = f"Member must have length less than or equal to {meta['max']}"
        else:
            for k, v in value.items():
                found += _violations(shape.key, k, f"{path}.{k}")
                found += _violations(shape.value, v, f"{path}.{k}")
    elif shape.type_name == "list":
        if not isinstance(value, list):
            raise SignerError("SerializationException", f"Expected an array at '{path}'")
        if "min" in meta and len(value) < meta["min"]:
            rule = f"Member must have length greater than or equal to {meta['min']}"
        elif "max" in meta and len(value) > meta["max"]:
            rule = f"Member must have length less than or equal to {meta['max']}"
        else:
            for i, v in enumerate(value, start=1):
                found += _violations(shape.member, v, f"{path}.{i}.member")
    elif shape.type_name == "structure":
        if not isinstance(value, dict):
            raise SignerError("SerializationException", f"Expected an object at '{path}'")
        found += _structure(shape, value, path + ".")
    elif shape.type_name == "boolean" and not isinstance(value, bool):
        raise SignerError("SerializationException", f"Expected a boolean at '{path}'")
    if rule is not None:
        found.append(f"Value '{_java(value)}' at '{path}' failed to satisfy constraint: {rule}")
    return found


def _structure(shape: Shape, value: Mapping[str, Any], prefix: str) -> list[str]:
    found: list[str] = []
    required = set(shape.required_members)
    for name, member in shape.members.items():
        item = value.get(name)
        if item is None:
            if name in required:
                found.append(f"Value null at '{prefix}{name}' failed to satisfy constraint: Member must not be null")
            continue
        found += _violations(member, item, prefix + name)
    return found


def validate(operation: OperationModel, params: Mapping[str, Any]) -> None:
    shape = operation.input_shape
    if shape is None:
        return
    found = _structure(shape, params, "")
    if found:
        count = len(found)
        raise SignerError(
            "ValidationException",
            f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(found),
        )


def _params(operation: OperationModel, uri: Mapping[str, str], request: Request, body: bytes) -> dict[str, Any]:
    """The operation's input members from the URI, the query string and the JSON body."""
    params: dict[str, Any] = {}
    shape = operation.input_shape
    if shape is None:
        return params
    members: Mapping[str, Shape] = shape.members
    if body.strip():
        try:
            doc = json.loads(body)
        except ValueError:
            raise SignerError("SerializationException", "The request body is not valid JSON") from None
        if not isinstance(doc, dict):
            raise SignerError("SerializationException", "The request body must be a JSON object")
        params.update(
            {k: v for k, v in doc.items() if k in members and members[k].serialization.get("location") is None}
        )
    for name, member in members.items():
        location = member.serialization.get("location")
        wire = member.serialization.get("name", name)
        if location == "uri" and wire in uri:
            params[name] = uri[wire]
        elif location == "querystring":
            values = request.query.get(wire)
            if not values:
                continue
            if member.type_name == "list":
                params[name] = values
            elif member.type_name == "boolean":
                params[name] = values[-1].lower() == "true"
            elif member.type_name == "integer":
                try:
                    params[name] = int(values[-1])
                except ValueError:
                    raise SignerError("ValidationException", f"'{wire}' must be a number") from None
            else:
                params[name] = values[-1]
    return params


# -- the operations ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Ctx:
    caller: ApiCaller
    signing: Signing

    def registry(self, owner: str | None = None) -> RegistryRef:
        return RegistryRef(owner or self.caller.principal.account_id, self.caller.region)


def _epoch(at: datetime | None) -> float | None:
    return None if at is None else at.timestamp()


def _profile_view(p: SigningProfileRecord, *, full: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "profileName": p.name,
        "profileVersion": p.version,
        "profileVersionArn": p.version_arn,
        "platformId": p.platform_id,
        "platformDisplayName": PLATFORM_DISPLAY_NAME,
        "signatureValidityPeriod": {"value": p.validity_value, "type": p.validity_type},
        "signingParameters": {},
        "status": p.status,
        "arn": p.arn,
    }
    if p.tags:
        out["tags"] = p.tags
    if full:
        if p.status_reason:
            out["statusReason"] = p.status_reason
        if p.status == "Revoked":
            out["revocationRecord"] = {
                "revocationEffectiveFrom": _epoch(p.revocation_effective_from),
                "revokedAt": _epoch(p.revoked_at),
                "revokedBy": p.revoked_by,
            }
    return out


async def put_signing_profile(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    if params.get("signingMaterial"):
        raise SignerError(
            "ValidationException", "signingMaterial (an ACM certificate) is not supported: Moorage issues the key"
        )
    period = params.get("signatureValidityPeriod") or {}
    validity = None
    if period:
        value, unit = period.get("value"), period.get("type")
        if not isinstance(value, int) or value < 1 or unit not in ("DAYS", "MONTHS", "YEARS"):
            raise SignerError("ValidationException", "signatureValidityPeriod needs a positive value and a type")
        validity = (value, unit)
    profile = await ctx.signing.put_profile(
        ctx.registry(), params["profileName"], params["platformId"], validity=validity, tags=params.get("tags")
    )
    return {"arn": profile.arn, "profileVersion": profile.version, "profileVersionArn": profile.version_arn}


async def get_signing_profile(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    profile = await ctx.signing.profile(ctx.registry(params.get("profileOwner")), params["profileName"])
    return _profile_view(profile, full=True)


def _page_token(name: str) -> str:
    return base64.urlsafe_b64encode(name.encode()).decode()


async def list_signing_profiles(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    found = await ctx.signing.profiles(
        ctx.registry(),
        include_canceled=bool(params.get("includeCanceled")),
        platform_id=params.get("platformId"),
        statuses=params.get("statuses") or (),
    )
    token = params.get("nextToken")
    if token:
        try:
            after = base64.urlsafe_b64decode(token.encode()).decode()
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise SignerError("ValidationException", "The nextToken is not valid") from None
        found = [p for p in found if p.name > after]
    limit = params.get("maxResults") or 25
    out: dict[str, Any] = {"profiles": [_profile_view(p, full=False) for p in found[:limit]]}
    if len(found) > limit:
        out["nextToken"] = _page_token(found[limit - 1].name)
    return out


async def cancel_signing_profile(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    await ctx.signing.cancel_profile(ctx.registry(), params["profileName"])
    return {}


def _timestamp(value: object) -> datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)
        except ValueError:
            pass
    raise SignerError("SerializationException", "effectiveTime is not a timestamp")


async def revoke_signing_profile(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    await ctx.signing.revoke_profile(
        ctx.registry(),
        params["profileName"],
        params["profileVersion"],
        params["reason"],
        _timestamp(params["effectiveTime"]),
        ctx.caller.principal.arn,
    )
    return {}


def _tag_arn(ctx: _Ctx, arn: str) -> str:
    parsed = parse_profile_arn(arn)
    if parsed is None:
        raise SignerError("BadRequestException", f"Invalid resource ARN: {arn}")
    return arn


async def tag_resource(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    try:
        await ctx.signing.tag_profile(_tag_arn(ctx, params["resourceArn"]), params["tags"])
    except ProfileNotFoundError as exc:
        raise SignerError("NotFoundException", str(exc)) from None
    return {}


async def untag_resource(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    try:
        await ctx.signing.untag_profile(_tag_arn(ctx, params["resourceArn"]), params["tagKeys"])
    except ProfileNotFoundError as exc:
        raise SignerError("NotFoundException", str(exc)) from None
    return {}


async def list_tags_for_resource(ctx: _Ctx, params: dict[str, Any]) -> dict[str, Any]:
    try:
        return {"tags": await ctx.signing.profile_tags(_tag_arn(ctx, params["resourceArn"]))}
    except ProfileNotFoundError as exc:
        raise SignerError("NotFoundException", str(exc)) from None


_HANDLERS = {
    "PutSigningProfile": put_signing_profile,
    "GetSigningProfile": get_signing_profile,
    "ListSigningProfiles": list_signing_profiles,
    "CancelSigningProfile": cancel_signing_profile,
    "RevokeSigningProfile": revoke_signing_profile,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
    "ListTagsForResource": list_tags_for_resource,
}


def _need(operation: str, caller: ApiCaller, params: Mapping[str, Any]) -> Need:
    account = caller.principal.account_id
    registry = RegistryRef(params.get("profileOwner") or account, caller.region)
    if "resourceArn" in params:
        parsed = parse_profile_arn(str(params["resourceArn"]))
        if parsed is not None:
            registry = parsed[0]
        return Need(f"signer:{operation}", registry, str(params["resourceArn"]), identity_only=True)
    if "profileName" in params:
        return Need(f"signer:{operation}", registry, profile_arn(registry, params["profileName"]), identity_only=True)
    return Need(f"signer:{operation}", registry, "*", identity_only=True)


class SignerApi:
    """ASGI app for the Signer routes (see the module documentation)."""

    def __init__(self, signing: Signing, authenticator: ApiAuthenticator, authorizer: Authorizer) -> None:
        self._signing = signing
        self._auth = authenticator
        self._authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = str(uuid.uuid4())
        headers = [("content-type", "application/json"), ("x-amzn-requestid", request_id)]
        try:
            status, body = 200, await self._handle(request)
        except ClientDisconnectedError:
            return
        except Exception as exc:
            error = _to_signer(exc)
            if error.status >= 500:
                log.exception("signer %s %s failed", request.method, request.path)
            status, body = error.status, {"message": error.message, "code": error.code}
            headers.append(("x-amzn-errortype", error.code))
        await send_bytes(send, status, headers, json.dumps(body, separators=(",", ":")).encode())

    async def _handle(self, request: Request) -> dict[str, Any]:
        found = route(request.method, request.path)
        if found is None:
            raise SignerError("NotFoundException", f"No operation for {request.method} {request.path}", 404)
        operation_name, uri = found
        operation = _model().operation_model(operation_name)
        raw = await request.read(_MAX_BODY)
        raw_path = request.scope.get("raw_path") or request.path.encode()
        try:
            caller = await self._auth.authenticate(
                request.method,
                raw_path.decode("latin-1").split("?", 1)[0],
                request.scope.get("query_string", b"").decode("latin-1"),
                request.headers,
                raw,
                service="signer",
            )
        except SigV4Error as exc:
            raise SignerError(exc.code, exc.message, status=exc.status) from None
        params = _params(operation, uri, request, raw)
        validate(operation, params)
        await self._authorizer.check(
            caller.principal, Origin.of(request.scope), [_need(operation_name, caller, params)]
        )
        return await _HANDLERS[operation_name](_Ctx(caller, self._signing), params)


def _to_signer(exc: Exception) -> SignerError:
    if isinstance(exc, SignerError):
        return exc
    if isinstance(exc, ProfileNotFoundError):
        return SignerError("ResourceNotFoundException", str(exc))
    if isinstance(exc, AccessDeniedError):
        return SignerError("AccessDeniedException", str(exc))
    if isinstance(exc, InvalidRequestError):
        return SignerError("ValidationException", str(exc))
    if isinstance(exc, MoorageError):
        return SignerError("BadRequestException", str(exc))
    return SignerError("InternalServiceErrorException", "An internal error occurred", 500)
