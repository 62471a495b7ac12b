"""The OCI Distribution / Docker Registry v2 front-end (`/v2/...`), as plain ASGI.

Repository names contain `/`, so routes are matched from the right with one explicit parser
(`parse_path`), then the name is validated with the grammar the OCI spec and ECR share:

    /v2/                                   base
    /v2/_catalog                           catalog
    /v2/<name>/tags/list                   tags
    /v2/<name>/manifests/<reference>       manifest
    /v2/<name>/referrers/<digest>          referrers
    /v2/<name>/blobs/uploads/              uploads
    /v2/<name>/blobs/uploads/<id>          upload
    /v2/<name>/blobs/<digest>              blob

Every request but `/v2/` itself is authorized (`authz.py`: the ECR actions ECR maps the route to)
after authentication and before its handler; a refusal is 403 DENIED.
Handlers live in `oci/blobs.py` and `oci/manifests.py`; each turns wire input into one service
call and the result into a response. Domain errors become OCI errors through `oci/errors.py`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from moorage.asgi import (
    ClientDisconnectedError,
    Message,
    Receive,
    Request,
    ResponseAbortedError,
    Scope,
    Send,
    compact_json,
    send_bytes,
)
from moorage.auth import Principal, RegistryAuthenticator
from moorage.authz import Authorizer, Origin, on_repository
from moorage.errors import (
    AccessDeniedError,
    AuthenticationError,
    MoorageError,
    NameInvalidError,
    RangeNotSatisfiableError,
    UploadOffsetMismatchError,
    UploadUnknownError,
)
from moorage.model import RegistryRef, RepositoryName, parse_repository_name
from moorage.oci.errors import error_body, oci_error
from moorage.pull_through import CachePulls
from moorage.registry import Registry
from moorage.uploads import Uploads

__all__ = ["OciApi", "OciContext", "OciPath", "parse_path"]

log = logging.getLogger("moorage.oci")

Kind = Literal["base", "catalog", "tags", "manifest", "referrers", "uploads", "upload", "blob"]

_ROUTES: list[tuple[Kind, re.Pattern[str]]] = [
    ("manifest", re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)")),
    ("tags", re.compile(r"/v2/(?P<name>.+)/tags/list")),
    ("referrers", re.compile(r"/v2/(?P<name>.+)/referrers/(?P<ref>[^/]+)")),
    ("uploads", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/?")),
    ("upload", re.compile(r"/v2/(?P<name>.+)/blobs/uploads/(?P<ref>[^/]+)")),
    ("blob", re.compile(r"/v2/(?P<name>.+)/blobs/(?P<ref>[^/]+)")),
]

# Upload ids are the UUIDs `Uploads.start` makes; any other text is an unknown upload.
_UPLOAD_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

API_VERSION_HEADER = ("docker-distribution-api-version", "registry/2.0")
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class OciPath:
    kind: Kind
    name: RepositoryName | None = None
    reference: str | None = None


@functools.lru_cache(maxsize=4096)
def parse_path(path: str) -> OciPath | None:
    """The route of a `/v2` path, or None when it is not a registry API path.
    Raises NameInvalidError when the route matches but the repository name is invalid."""
    if path in ("/v2", "/v2/"):
        return OciPath("base")
    if path == "/v2/_catalog":
        return OciPath("catalog")
    for kind, pattern in _ROUTES:
        match = pattern.fullmatch(path)
        if match is not None:
            ref = match.groupdict().get("ref")
            return OciPath(kind, parse_repository_name(match["name"]), ref)
    return None


@dataclass(slots=True)
class OciContext:
    """What a handler gets: the request, the addressed registry and caller, and the services."""

    request: Request
    send: Send
    path: OciPath
    registry_ref: RegistryRef
    principal: Principal
    registry: Registry
    uploads: Uploads
    pull_through: CachePulls | None = None
    authorizer: Authorizer | None = None

    async def allowed(self, action: str) -> bool:
        """Whether the caller may `action` on the addressed repository (pull-through imports)."""
        if self.authorizer is None:
            return True
        need = on_repository(action, self.registry_ref, self.name)
        outcome = await self.authorizer.evaluate(self.principal, Origin.of(self.request.scope), need)
        return outcome.allowed

    @property
    def name(self) -> RepositoryName:
        assert self.path.name is not None
        return self.path.name

    @property
    def reference(self) -> str:
        assert self.path.reference is not None
        return self.path.reference

    async def reply(self, status: int, headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        await send_bytes(
            self.send,
            status,
            [API_VERSION_HEADER, *(headers or [])],
            body,
            head=self.request.method == "HEAD",
        )

    async def reply_json(self, status: int, document: object, headers: list[tuple[str, str]] | None = None) -> None:
        body = compact_json(document)
        await self.reply(status, [("content-type", JSON), *(headers or [])], body)


Handler = Callable[[OciContext], Awaitable[None]]


class OciApi:
    """ASGI app for `/v2/...`."""

    def __init__(
        self,
        registry: Registry,
        uploads: Uploads,
        authenticator: RegistryAuthenticator,
        authorizer: Authorizer,
        pull_through: CachePulls | None = None,
    ) -> None:
        from moorage.oci import blobs, manifests  # the handler modules import this one

        self._registry = registry
        self._uploads = uploads
        self._auth = authenticator
        self._authz = authorizer
        self._pull_through = pull_through
        self._handlers: dict[tuple[Kind, str], Handler] = {
            ("base", "GET"): _base,
            ("base", "HEAD"): _base,
            **manifests.HANDLERS,
            **blobs.HANDLERS,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            path = parse_path(request.path)
        except NameInvalidError as exc:
            await _error(send, request, "NAME_INVALID", 400, exc.message)
            return
        if path is None:
            await _error(send, request, "NOT_FOUND", 404, "no such registry API route")
            return
        handler = self._handlers.get((path.kind, request.method))
        if handler is None:
            await _error(send, request, "UNSUPPORTED", 405, f"{request.method} is not supported here")
            return
        try:
            principal, registry_ref = await self._auth.authenticate(request.headers, request.host)
        except AuthenticationError as exc:
            challenge = self._auth.challenge(request.host, scope.get("scheme", "http"))
            extra = [("www-authenticate", challenge)] if challenge else []
            await _error(send, request, "UNAUTHORIZED", 401, exc.message, extra)
            return
        except AccessDeniedError as exc:  # e.g. an expired token, or one of another region or account
            await _error(send, request, "DENIED", 403, exc.message)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        ctx = OciContext(
            request,
            tracked_send,
            path,
            registry_ref,
            principal,
            self._registry,
            self._uploads,
            self._pull_through,
            self._authz,
        )
        try:
            if path.kind != "base":
                await self._authz.check_registry_api(
                    principal,
                    Origin.of(scope),
                    path.kind,
                    request.method,
                    registry_ref,
                    path.name,
                    param=request.param,
                    has_body=_has_body(request),
                )
            if path.kind == "upload" and not _UPLOAD_ID.fullmatch(ctx.reference):
                raise UploadUnknownError(ctx.reference[:100])  # never sent to a store: ids are UUIDs
            await handler(ctx)
        except MoorageError as exc:
            if started:  # the status line is out: the only honest signal left is a cut-short body
                log.warning("%s %s failed after its response started: %s", request.method, request.path, exc.message)
                raise ResponseAbortedError(exc.message) from exc
            code, status = oci_error(exc)
            await _error(send, request, code, status, exc.message, _error_headers(exc, status))
        except ClientDisconnectedError:
            log.info("client disconnected during %s %s", request.method, request.path)


def _has_body(request: Request) -> bool:
    length = request.header("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return request.header("transfer-encoding") is not None


def _error_headers(exc: MoorageError, status: int) -> list[tuple[str, str]]:
    if isinstance(exc, UploadOffsetMismatchError):
        return [("range", f"0-{max(exc.size - 1, 0)}"), ("docker-upload-uuid", exc.upload_id)]
    if isinstance(exc, RangeNotSatisfiableError):
        return [("content-range", f"bytes */{exc.size}")]
    return []


async def _error(
    send: Send,
    request: Request,
    code: str,
    status: int,
    message: str,
    headers: list[tuple[str, str]] | None = None,
) -> None:
    body = error_body(code, message)
    await send_bytes(
        send,
        status,
        [API_VERSION_HEADER, ("content-type", JSON), *(headers or [])],
        body,
        head=request.method == "HEAD",
    )


async def _base(ctx: OciContext) -> None:
    await ctx.reply_json(200, {})
