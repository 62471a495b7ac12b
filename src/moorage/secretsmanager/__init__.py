"""The AWS Secrets Manager API face (AWS JSON 1.1), as plain ASGI, on the same port as ECR.

    POST /   X-Amz-Target: secretsmanager.<Operation>
             Content-Type: application/x-amz-json-1.1, SigV4-signed for service `secretsmanager`

Per request, as the ECR face does it: target → operation; bounded body read; SigV4
authentication (credential scope `<date>/<region>/secretsmanager/aws4_request`; the region is
where the secret lives); JSON decode; validation against botocore's Secrets Manager model
(`moorage.validation`, Coral's ValidationException wording); an operation of the model that Moorage
does not serve answers UnsupportedOperationException; authorization of `secretsmanager:<Op>` on
the secret's ARN (`*` for ListSecrets) through the same Authorizer, identity policies only (no
resource policies on secrets); the handler; JSON out. Errors go as Secrets Manager sends them:
`{"__type": "<Code>", "Message": "..."}`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from moorage import errors as e
from moorage.asgi import ClientDisconnectedError, Receive, Request, Scope, Send, send_aws_json
from moorage.auth import ApiAuthenticator, ApiCaller
from moorage.authz import Authorizer, Need, Origin
from moorage.metadata import SecretRecord
from moorage.model import RegistryRef
from moorage.secrets import Secret, Secrets
from moorage.sigv4 import SigV4Error
from moorage.tokens import TokenError, TokenSigner
from moorage.validation import VALIDATION, InputValidator, ValidationFailure, operation_names, service_model

__all__ = ["SERVICE", "TARGET_PREFIX", "SecretsManagerApi", "SecretsManagerError"]

log = logging.getLogger("moorage.secretsmanager")

SERVICE = "secretsmanager"
TARGET_PREFIX = "secretsmanager."


class SecretsManagerError(Exception):
    def __init__(self, code: str, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    def body(self) -> dict[str, Any]:
        return {"__type": self.code, "Message": self.message}


# Most specific first.
_TABLE: list[tuple[type[e.MoorageError], str]] = [
    (e.SecretNotFoundError, "ResourceNotFoundException"),
    (e.SecretExistsError, "ResourceExistsException"),
    (e.SecretStateError, "InvalidRequestException"),
    (e.SecretDecryptionError, "DecryptionFailure"),
    (e.AccessDeniedError, "AccessDeniedException"),
    (e.InvalidRequestError, "InvalidParameterException"),
    (e.TooLargeError, "InvalidParameterException"),
]


def to_wire(exc: Exception) -> SecretsManagerError:
    if isinstance(exc, SecretsManagerError):
        return exc
    if isinstance(exc, e.MoorageError):
        for cls, code in _TABLE:
            if isinstance(exc, cls):
                return SecretsManagerError(code, exc.message)
    return SecretsManagerError("InternalServiceError", "An internal error occurred", status=500)


def _epoch(value: datetime) -> float:
    return round(value.timestamp(), 3)


def _tags(raw: object) -> list[tuple[str, str]]:
    if not isinstance(raw, list):
        return []
    return [(str(t.get("Key", "")), str(t.get("Value", ""))) for t in raw if isinstance(t, dict)]


def _value(params: dict[str, Any]) -> str | bytes | None:
    string_value, binary = params.get("SecretString"), params.get("SecretBinary")
    if string_value is not None and binary is not None:
        raise SecretsManagerError(
            "InvalidParameterException",
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )
    if binary is not None:
        try:
            return base64.b64decode(binary, validate=True)
        except (binascii.Error, ValueError):
            raise SecretsManagerError("SerializationException", "SecretBinary is not base64") from None
    return str(string_value) if string_value is not None else None


def _shape_tags(record: SecretRecord) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in record.tags]


def _describe(secret: Secret, *, stages_key: str) -> dict[str, Any]:
    record = secret.record
    out: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if record.description is not None:
        out["Description"] = record.description
    if record.kms_key_id is not None:
        out["KmsKeyId"] = record.kms_key_id
    out["RotationEnabled"] = False
    out["LastChangedDate"] = _epoch(record.last_changed_at)
    if record.last_accessed_at is not None:
        out["LastAccessedDate"] = _epoch(record.last_accessed_at)
    if record.deleted_at is not None:
        out["DeletedDate"] = _epoch(record.deleted_at)
    if record.tags:
        out["Tags"] = _shape_tags(record)
    out[stages_key] = secret.stages()
    out["CreatedDate"] = _epoch(record.created_at)
    return out


class _Call:
    """One request: the caller, the registry (account and region) it addresses, the services."""

    def __init__(self, api: SecretsManagerApi, caller: ApiCaller, origin: Origin, operation: str) -> None:
        self.api = api
        self.caller = caller
        self.origin = origin
        self.operation = operation
        self.registry = RegistryRef(caller.principal.account_id, caller.region)

    @property
    def secrets(self) -> Secrets:
        return self.api.secrets

    async def allow(self, resource: str, *actions: str, tags: list[tuple[str, str]] | None = None) -> None:
        needs = [
            Need(
                f"{SERVICE}:{action}",
                self.registry,
                resource,
                identity_only=True,
                request_tags=tuple(tags or ()),
                tag_keys=tuple(k for k, _ in tags) if tags else None,
            )
            for action in actions or (self.operation,)
        ]
        await self.api.authorizer.check(self.caller.principal, self.origin, needs)

    async def on_secret(self, params: dict[str, Any], *actions: str) -> str:
        """Authorize the operation on the secret `SecretId` names; returns the id."""
        secret_id = str(params["SecretId"])
        await self.allow(await self.secrets.resource_arn(self.registry, secret_id), *actions)
        return secret_id


Handler = Callable[[_Call, dict[str, Any]], Awaitable[dict[str, Any]]]


async def create_secret(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    name = str(params["Name"])
    tags = _tags(params.get("Tags"))
    arn = call.secrets.new_arn(call.registry, name)
    await call.allow(arn, "CreateSecret", *(("TagResource",) if tags else ()))
    value = _value(params)
    record, version = await call.secrets.create(
        call.registry,
        name,
        arn=arn,
        value=value,
        version_id=params.get("ClientRequestToken"),
        description=params.get("Description"),
        kms_key_id=params.get("KmsKeyId"),
        tags=tags,
    )
    out: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if version is not None:
        out["VersionId"] = version.version_id
    return out


async def put_secret_value(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    value = _value(params)
    if value is None:
        raise SecretsManagerError("InvalidRequestException", "You must provide either SecretString or SecretBinary.")
    stages = params.get("VersionStages")
    record, version = await call.secrets.put_value(
        call.registry, secret_id, value, version_id=params.get("ClientRequestToken"), stages=stages
    )
    return {
        "ARN": record.arn,
        "Name": record.name,
        "VersionId": version.version_id,
        "VersionStages": list(version.stages),
    }


async def update_secret(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    value = _value(params)
    record, version = await call.secrets.update(
        call.registry,
        secret_id,
        value=value,
        version_id=params.get("ClientRequestToken") if value is not None else None,
        description=params.get("Description"),
        kms_key_id=params.get("KmsKeyId"),
    )
    out: dict[str, Any] = {"ARN": record.arn, "Name": record.name}
    if version is not None:
        out["VersionId"] = version.version_id
    return out


async def get_secret_value(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    found = await call.secrets.get_value(
        call.registry, secret_id, version_id=params.get("VersionId"), stage=params.get("VersionStage")
    )
    out: dict[str, Any] = {"ARN": found.secret.arn, "Name": found.secret.name, "VersionId": found.version.version_id}
    if isinstance(found.value, bytes):
        out["SecretBinary"] = base64.b64encode(found.value).decode()
    else:
        out["SecretString"] = found.value
    out["VersionStages"] = list(found.version.stages)
    out["CreatedDate"] = _epoch(found.version.created_at)
    return out


async def describe_secret(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    return _describe(await call.secrets.describe(call.registry, secret_id), stages_key="VersionIdsToStages")


_PAGE_TTL = 86400


def _page_scope(call: _Call, params: dict[str, Any]) -> str:
    """What a NextToken is bound to: the registry and the listing's parameters."""
    shape = {k: params.get(k) for k in ("Filters", "SortBy", "SortOrder", "IncludePlannedDeletion")}
    digest = hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]
    return f"{call.registry.account_id}/{call.registry.region}/{digest}"


async def list_secrets(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    await call.allow("*")
    tokens = call.api.tokens
    scope = _page_scope(call, params)
    after: str | None = None
    if params.get("NextToken") is not None:
        try:
            claims = tokens.verify("page", str(params["NextToken"]), now=time.time())
        except TokenError:
            claims = {}
        if claims.get("o") != "ListSecrets" or claims.get("s") != scope:
            raise SecretsManagerError("InvalidNextTokenException", "The NextToken value is invalid.")
        after = str(claims["a"])
    filters = [
        (str(f.get("Key")), [str(v) for v in f.get("Values") or ()])
        for f in params.get("Filters") or ()
        if isinstance(f, dict)
    ]
    found = await call.secrets.list(
        call.registry,
        include_deleted=bool(params.get("IncludePlannedDeletion")),
        filters=filters,
        sort_by=str(params.get("SortBy") or "created-date"),
        descending=params.get("SortOrder") == "desc",
    )
    if after is not None:
        arns = [s.arn for s in found]
        found = found[arns.index(after) + 1 :] if after in arns else []
    limit = int(params.get("MaxResults") or 100)
    shown = found[:limit]
    out: dict[str, Any] = {"SecretList": [_describe(s, stages_key="SecretVersionsToStages") for s in shown]}
    if len(found) > limit:
        payload = {"o": "ListSecrets", "s": scope, "a": shown[-1].arn}
        out["NextToken"] = tokens.sign("page", payload, expires_at=time.time() + _PAGE_TTL)
    return out


async def delete_secret(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    days = params.get("RecoveryWindowInDays")
    record, when = await call.secrets.delete(
        call.registry,
        secret_id,
        recovery_days=int(days) if days is not None else None,
        force=bool(params.get("ForceDeleteWithoutRecovery")),
    )
    return {"ARN": record.arn, "Name": record.name, "DeletionDate": _epoch(when)}


async def restore_secret(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    record = await call.secrets.restore(call.registry, secret_id)
    return {"ARN": record.arn, "Name": record.name}


async def get_resource_policy(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    secret = await call.secrets.describe(call.registry, secret_id)
    return {"ARN": secret.arn, "Name": secret.name}  # secrets here have no resource policy


async def tag_resource(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    tags = _tags(params.get("Tags"))
    secret_id = str(params["SecretId"])
    arn = await call.secrets.resource_arn(call.registry, secret_id)
    await call.allow(arn, "TagResource", tags=tags)
    await call.secrets.tag(call.registry, secret_id, tags)
    return {}


async def untag_resource(call: _Call, params: dict[str, Any]) -> dict[str, Any]:
    secret_id = await call.on_secret(params)
    await call.secrets.untag(call.registry, secret_id, [str(k) for k in params.get("TagKeys") or ()])
    return {}


HANDLERS: dict[str, Handler] = {
    "CreateSecret": create_secret,
    "PutSecretValue": put_secret_value,
    "UpdateSecret": update_secret,
    "GetSecretValue": get_secret_value,
    "DescribeSecret": describe_secret,
    "ListSecrets": list_secrets,
    "DeleteSecret": delete_secret,
    "RestoreSecret": restore_secret,
    "GetResourcePolicy": get_resource_policy,
    "TagResource": tag_resource,
    "UntagResource": untag_resource,
}


def _decode(raw: bytes) -> Any:
    if not raw:
        return {}
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=lambda name: _bad_json(name))
    except (ValueError, RecursionError):
        raise SecretsManagerError("SerializationException", "The request body is not valid JSON") from None


def _bad_json(name: str) -> None:
    raise ValueError(name)


class SecretsManagerApi:
    """ASGI app for `POST /` with `X-Amz-Target: secretsmanager.<Op>`."""

    def __init__(
        self,
        secrets: Secrets,
        authenticator: ApiAuthenticator,
        authorizer: Authorizer,
        tokens: TokenSigner,
        *,
        max_body: int,
    ) -> None:
        self.secrets = secrets
        self.authorizer = authorizer
        self.tokens = tokens
        self._auth = authenticator
        self._max_body = max_body
        self._validator = InputValidator(service_model(SERVICE), constraint_code=VALIDATION, lower_camel_paths=True)
        self._known = operation_names(SERVICE)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = str(uuid.uuid4())
        try:
            body = await self._handle(request)
            status = 200
        except ClientDisconnectedError:
            return
        except Exception as exc:
            error = to_wire(exc)
            if error.status >= 500:
                log.exception("Secrets Manager %s failed", request.header("x-amz-target"))
            status, body = error.status, error.body()
        await send_aws_json(send, status, body, request_id)

    async def _handle(self, request: Request) -> dict[str, Any]:
        target = request.header("x-amz-target") or ""
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        if request.method != "POST" or operation not in self._known:
            raise SecretsManagerError("UnknownOperationException", f"Unknown operation {target[:256]}")
        raw = await request.read(self._max_body)
        try:
            caller = await self._auth.authenticate(
                request.method,
                request.scope.get("raw_path", request.path.encode()).decode("latin-1").split("?", 1)[0],
                request.scope.get("query_string", b"").decode("latin-1"),
                request.headers,
                raw,
                service=SERVICE,
            )
        except SigV4Error as exc:
            raise SecretsManagerError(exc.code, exc.message, status=exc.status) from None
        params = _decode(raw)
        try:
            self._validator.validate(operation, params)
        except ValidationFailure as failure:
            raise SecretsManagerError(failure.code, failure.message) from None
        handler = HANDLERS.get(operation)
        if handler is None:
            raise SecretsManagerError(
                "UnsupportedOperationException", f"The operation {operation} is not implemented by Moorage"
            )
        call = _Call(self, caller, Origin.of(request.scope), operation)
        try:
            return await handler(call, params)
        except e.MoorageError as exc:
            raise to_wire(exc) from None
