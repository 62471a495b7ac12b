"""The Amazon ECR API front-end (AWS JSON 1.1), as plain ASGI.

    POST /   X-Amz-Target: AmazonEC2ContainerRegistry_V20150921.<Operation>
             Content-Type: application/x-amz-json-1.1, SigV4-signed

Per request: target → operation name; bounded body read; SigV4 authentication; JSON decode;
validation of the input against botocore's ECR model (`ecr/validation.py`); a model operation
without a handler answers UnsupportedOperationException here; authorization of the operation's IAM
actions and resources (`authz.py`, for every implemented operation, before the handler); the
handler from the explicit HANDLERS tables of `ecr/<area>.py`; the result serialised as JSON. Every
response carries `x-amzn-RequestId`. Handlers are thin: they translate wire shapes and call the services.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moorage.asgi import ClientDisconnectedError, Receive, Request, Scope, Send, send_aws_json
from moorage.auth import ApiAuthenticator, ApiCaller, TokenRegistryAuthenticator
from moorage.authz import INVALIDATING_OPERATIONS, REPOSITORY_ONLY_INVALIDATIONS, Authorizer, Origin
from moorage.config import Settings
from moorage.ecr.validation import InputValidator, ValidationFailure, operation_names
from moorage.ecr.wire import EcrError, decode_body, to_ecr
from moorage.errors import MoorageError
from moorage.identity import Identities
from moorage.images import Images
from moorage.lifecycle_job import Lifecycle
from moorage.model import RegistryRef, Repository, RepositoryName
from moorage.pull_through import CachePulls, PullThroughCache
from moorage.registry import Registry
from moorage.replication import Replication
from moorage.scanning.service import Scanning
from moorage.signing import Signing
from moorage.sigv4 import SigV4Error
from moorage.templates import Templates
from moorage.tokens import TokenSigner
from moorage.uploads import Uploads

__all__ = [
    "TARGET_PREFIX",
    "EcrApi",
    "EcrContext",
    "EcrServices",
    "Handler",
    "all_handlers",
    "pending_operations",
]

log = logging.getLogger("moorage.ecr")

TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


@dataclass(frozen=True, slots=True)
class EcrServices:
    settings: Settings
    registry: Registry
    images: Images
    uploads: Uploads
    identities: Identities
    tokens: TokenSigner
    registry_tokens: TokenRegistryAuthenticator
    authorizer: Authorizer
    lifecycle: Lifecycle
    templates: Templates | None = None
    replication: Replication | None = None
    scanning: Scanning | None = None
    pull_through: PullThroughCache | None = None
    cache_pulls: CachePulls | None = None
    signing: Signing | None = None


@dataclass(slots=True)
class EcrContext:
    """What a handler gets: the authenticated (and authorized) caller, the services and the request's host."""

    caller: ApiCaller
    services: EcrServices
    host: str | None
    operation: str
    origin: Origin = field(default_factory=Origin)

    def registry_ref(self, params: Mapping[str, Any]) -> RegistryRef:
        """The registry addressed: `registryId` (default: the caller's account) in the signed region.
        Another account's registry is fine here: the dispatcher authorized the call already."""
        account = params.get("registryId") or self.caller.principal.account_id
        return RegistryRef(account, self.caller.region)

    def target(self, params: Mapping[str, Any]) -> tuple[RegistryRef, RepositoryName]:
        return self.registry_ref(params), RepositoryName(params["repositoryName"])

    def registry_host(self, registry: RegistryRef) -> str:
        """The host[:port] a client pushes to for this registry. With `registry_domain` it is ECR's
        form `<account>.dkr.ecr.<region>.<domain>`, with a port only when `public_port` says so;
        otherwise `public_host` (with whatever port it carries) or the request's host."""
        settings = self.services.settings
        if settings.registry_domain:
            port = f":{settings.public_port}" if settings.public_port is not None else ""
            return f"{registry.account_id}.dkr.ecr.{registry.region}.{settings.registry_domain}{port}"
        return settings.public_host or self.host or f"{settings.http.host}:{settings.http.port}"

    def repository_uri(self, repo: Repository) -> str:
        return f"{self.registry_host(repo.registry)}/{repo.name}"

    def proxy_endpoint(self, registry: RegistryRef) -> str:
        """GetAuthorizationToken's `proxyEndpoint`: always https for ECR host names (clients treat
        them as TLS), else the scheme of this listener."""
        scheme = "https" if self.services.settings.registry_domain else self.scheme
        return f"{scheme}://{self.registry_host(registry)}"

    @property
    def scheme(self) -> str:
        return "https" if self.services.settings.http.tls_cert else "http"


Handler = Callable[[EcrContext, dict[str, Any]], Awaitable[dict[str, Any]]]


def all_handlers() -> dict[str, Handler]:
    from moorage.ecr import (
        images,
        layers,
        lifecycle,
        policies,
        pull_through,
        registry_settings,
        replication,
        repositories,
        scanning,
        signing,
        templates,
    )

    table: dict[str, Handler] = {}
    modules = (
        repositories,
        images,
        layers,
        registry_settings,
        policies,
        lifecycle,
        templates,
        replication,
        scanning,
        pull_through,
        signing,
    )
    for module in modules:
        overlap = table.keys() & module.HANDLERS.keys()
        assert not overlap, f"operations handled twice: {overlap}"
        table.update(module.HANDLERS)
    return table


def pending_operations() -> frozenset[str]:
    """The operations of the installed botocore ECR model that no handler implements yet: they
    answer UnsupportedOperationException naming the operation (never canned data), before any
    authorization. A newer model's new operations land here until they are implemented."""
    return operation_names() - all_handlers().keys()


def unknown_operation(target: str) -> EcrError:
    """ECR's answer to a request that names no operation of the service (400 UnknownOperationException)."""
    if not target:
        return EcrError("UnknownOperationException", "The request has no X-Amz-Target header naming an operation")
    shown = target if len(target) <= 256 else target[:256] + "..."
    return EcrError("UnknownOperationException", f"Unknown operation {shown}")


class EcrApi:
    """ASGI app for `POST /` with an `X-Amz-Target` header."""

    def __init__(self, services: EcrServices, authenticator: ApiAuthenticator, validator: InputValidator) -> None:
        self._services = services
        self._auth = authenticator
        self._validator = validator
        self._handlers = all_handlers()
        self._known = operation_names()
        self._max_body = services.settings.limits.max_json_body_bytes

    @property
    def authorizer(self) -> Authorizer:
        return self._services.authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        request_id = str(uuid.uuid4())
        try:
            body = await self._handle(request, request_id)
            status = 200
        except ClientDisconnectedError:
            return
        except Exception as exc:
            error = to_ecr(exc)
            if error.status >= 500:
                log.exception("ECR %s failed", request.header("x-amz-target"))
            status, body = error.status, error.body()
        await send_aws_json(send, status, body, request_id)

    async def _handle(self, request: Request, request_id: str) -> dict[str, Any]:
        target = request.header("x-amz-target") or ""
        operation = target[len(TARGET_PREFIX) :] if target.startswith(TARGET_PREFIX) else ""
        if request.method != "POST" or operation not in self._known:
            raise unknown_operation(target)
        raw = await request.read(self._max_body)
        try:
            caller = await self._auth.authenticate(
                request.method,
                request.scope.get("raw_path", request.path.encode()).decode("latin-1").split("?", 1)[0],
                request.scope.get("query_string", b"").decode("latin-1"),
                request.headers,
                raw,
            )
        except SigV4Error as exc:
            raise EcrError(exc.code, exc.message, status=exc.status) from None
        params = decode_body(raw)
        try:
            self._validator.validate(operation, params)
        except ValidationFailure as failure:
            raise EcrError(failure.code, failure.message) from None
        handler = self._handlers.get(operation)
        if handler is None:  # a model operation not implemented yet: say so, before authorization
            raise EcrError(
                "UnsupportedOperationException", f"The operation {operation} is not implemented by Moorage yet"
            )
        origin = Origin.of(request.scope)
        authorizer = self._services.authorizer
        try:
            needs = await authorizer.check_ecr(caller.principal, origin, operation, params, caller.region)
        except MoorageError as exc:
            raise to_ecr(exc) from None
        ctx = EcrContext(caller, self._services, request.host, operation, origin)
        try:
            return await handler(ctx, params)
        except MoorageError as exc:
            raise to_ecr(exc) from None
        finally:
            if operation in INVALIDATING_OPERATIONS:
                for need in needs:
                    authorizer.store.invalidate(
                        need.registry,
                        need.repository,
                        registry_wide=operation not in REPOSITORY_ONLY_INVALIDATIONS,
                    )
