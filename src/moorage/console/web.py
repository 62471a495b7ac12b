"""The console's ASGI app: routing, sign-in, sessions, authorization, and rendering.

Every page and action is authorized as the signed-in principal by the same `Authorizer` as the
ECR API, with the ECR operation the page stands for (the repository list is
DescribeRepositories, an image page BatchGetImage and DescribeImages, deleting images
BatchDeleteImage, ...), so a console user can do exactly what the same identity can do with the
AWS CLI. Data comes from the services (`Registry`, `Images`, `Lifecycle`, `Scanning`, ...), never
from SQL; listings are paged in the metadata store (`Images.browse`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from types import SimpleNamespace
from typing import Any, Literal
from urllib.parse import parse_qs, quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape

from moorage import manifests as mf
from moorage.asgi import Receive, Request, Scope, Send, send_bytes
from moorage.auth import Principal, TokenRegistryAuthenticator
from moorage.authz import Authorizer, Origin
from moorage.config import Settings
from moorage.console.session import COOKIE, FLASH_COOKIE, PRE_COOKIE, Session, SessionCodec
from moorage.errors import (
    AccessDeniedError,
    ManifestUnknownError,
    MoorageError,
    NotFoundError,
    RepositoryNotFoundError,
    TooLargeError,
)
from moorage.identity import Identities
from moorage.images import ImageRef, Images, TagStatus
from moorage.lifecycle_job import Lifecycle
from moorage.metadata import MetadataStore
from moorage.model import Digest, Image, PageRequest, RegistryRef, Repository, RepositoryName, parse_repository_name
from moorage.pull_through import PullThroughCache
from moorage.registry import Registry
from moorage.replication import Replication
from moorage.scanning.service import Scanning, ScanNotFoundError
from moorage.signing import Signing
from moorage.templates import Templates
from moorage.tokens import TokenError

__all__ = ["ConsoleApp", "ConsoleServices"]

log = logging.getLogger("moorage.console")

PAGE_SIZE = 50
SCAN_LIMIT = 2000
MAX_FORM_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 1024 * 1024
SEVERITIES = ("CRITICAL", "HIGH", "MEDIUM", "LOW", "INFORMATIONAL", "UNDEFINED")
_STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'; connect-src 'self'"
)


@dataclass(frozen=True, slots=True)
class ConsoleServices:
    settings: Settings
    registry: Registry
    images: Images
    identities: Identities
    registry_tokens: TokenRegistryAuthenticator
    authorizer: Authorizer
    lifecycle: Lifecycle
    metadata: MetadataStore
    session_key: bytes
    templates: Templates | None = None
    replication: Replication | None = None
    scanning: Scanning | None = None
    pull_through: PullThroughCache | None = None
    signing: Signing | None = None
    # the background jobs' names and when each last ran; events pending per consumer
    job_runs: Callable[[], Awaitable[Mapping[str, datetime | None]]] | None = None
    backlog: Callable[[], Awaitable[Mapping[str, int]]] | None = None
    regions: Sequence[str] = ()


class _Denied(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


class _Missing(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


@dataclass
class _Page:
    """One request as the handlers see it."""

    request: Request
    session: Session | None
    form: dict[str, list[str]] = field(default_factory=dict)
    cookies: list[str] = field(default_factory=list)
    flash: str | None = None

    @property
    def principal(self) -> Principal:
        assert self.session is not None
        return Principal.of(self.session.account_id, self.session.user_name)

    @property
    def registry(self) -> RegistryRef:
        assert self.session is not None
        return RegistryRef(self.session.registry_account, self.session.region)

    def param(self, name: str, default: str = "") -> str:
        return self.request.param(name) or default

    def field(self, name: str, default: str = "") -> str:
        values = self.form.get(name)
        return values[0] if values else default


def _cookies(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for header in request.headers.get("cookie", ()):
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name not in out:
                out[name] = value
    return out


def _size(value: int | None) -> str:
    if value is None:
        return "—"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def _when(value: datetime | float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short(digest: object) -> str:
    text = str(digest)
    algo, _, hexa = text.partition(":")
    return f"{algo}:{hexa[:12]}" if hexa else text


class ConsoleApp:
    """ASGI app for `/console` and everything under it."""

    def __init__(self, services: ConsoleServices) -> None:
        self.s = services
        self.codec = SessionCodec(services.session_key)
        self.env = Environment(
            loader=PackageLoader("moorage.console", "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["size"] = _size
        self.env.filters["when"] = _when
        self.env.filters["short"] = _short
        self.env.filters["q"] = lambda v: quote(str(v), safe="")
        self.env.globals["severities"] = SEVERITIES
        self._static = {
            name: (resources.files("moorage.console") / "static" / name).read_bytes()
            for name in ("console.css", "console.js")
        }
        self._secure = bool(services.settings.http.tls_cert)

    # -- plumbing ------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        path = request.path
        if path in ("/console", "/console/index.html"):
            await self._redirect(send, "/console/")
            return
        if path.startswith("/console/static/"):
            await self._static_file(request, send, path[len("/console/static/") :])
            return
        page = _Page(request, self._session(request))
        flash = _cookies(request).get(FLASH_COOKIE)
        if flash:
            page.flash = self.codec.unsign_text(flash)
            page.cookies.append(self._cookie(FLASH_COOKIE, "", max_age=0))
        try:
            await self._dispatch(page, send)
        except _Denied as denied:
            await self._render(page, send, "error.html", status=403, title="Access denied", message=denied.message)
        except _Missing as missing:
            await self._render(page, send, "error.html", status=404, title="Not found", message=missing.message)
        except TooLargeError:
            await self._render(
                page, send, "error.html", status=413, title="Too large", message="The form is too large."
            )

    async def _dispatch(self, page: _Page, send: Send) -> None:
        request = page.request
        method = request.method
        path = request.path[len("/console") :]
        if method not in ("GET", "HEAD", "POST"):
            await send_bytes(
                send, 405, [("content-type", "text/plain"), ("allow", "GET, HEAD, POST")], b"GET or POST\n"
            )
            return
        if path == "/signin":
            await (self._signin_post(page, send) if method == "POST" else self._signin_form(page, send))
            return
        if page.session is None:
            if method == "POST":
                await self._render(
                    page, send, "error.html", status=403, title="Signed out", message="Sign in again and retry."
                )
                return
            await self._redirect(send, "/console/signin?" + urlencode({"next": _local(request.path)}))
            return
        if method == "POST":
            page.form = await self._form(request)
            if not self._same_origin(request) or not self.codec.check_csrf(page.session, page.field("csrf")):
                await self._render(
                    page,
                    send,
                    "error.html",
                    status=403,
                    title="Request refused",
                    message="The form's CSRF token is missing or wrong. Reload the page and try again.",
                )
                return
        if not await self._still_valid(page.session):
            page.session = None
            page.cookies.append(self._cookie(COOKIE, "", max_age=0))
            await self._redirect(send, "/console/signin", page.cookies)
            return
        route = self._route(method, path)
        if route is None:
            raise _Missing(f"There is no console page at {request.path}")
        handler, args = route
        await handler(page, send, *args)

    def _route(self, method: str, path: str) -> tuple[Callable[..., Awaitable[None]], tuple[str, ...]] | None:
        get = method in ("GET", "HEAD")
        if path in ("/", "/repositories"):
            return (self.repositories if get else self.create_repository), ()
        if path == "/signout" and not get:
            return self.signout, ()
        if path == "/context" and not get:
            return self.switch_context, ()
        if path == "/registry" and get:
            return self.registry_page, ()
        if path == "/status" and get:
            return self.status_page, ()
        if path.startswith("/repositories/"):
            rest = path[len("/repositories/") :]
            name, sep, tail = rest.partition("/-/")
            if not sep:
                return (self.repository, (name,)) if get else None
            if tail == "delete" and not get:
                return self.delete_repository, (name,)
            if tail == "delete-images" and not get:
                return self.delete_images, (name,)
            if tail == "lifecycle":
                return (self.lifecycle_page if get else self.lifecycle_save), (name,)
            if tail == "lifecycle/preview" and not get:
                return self.lifecycle_preview, (name,)
            if tail.startswith("images/"):
                digest, _, action = tail[len("images/") :].partition("/")
                if not action and get:
                    return self.image_page, (name, digest)
                if action in ("archive", "restore") and not get:
                    return self.storage_class, (name, digest, action)
        return None

    def _session(self, request: Request) -> Session | None:
        return self.codec.decode(_cookies(request).get(COOKIE), now=time.time())

    async def _still_valid(self, session: Session) -> bool:
        """A key-signed session ends when its key is deleted (or moved to another identity)."""
        if session.method != "key" or session.access_key_id is None or self.s.settings.auth.mode == "open":
            return True
        key = await self.s.identities.lookup(session.access_key_id)
        return key is not None and key.account_id == session.account_id and key.user_name == session.user_name

    @staticmethod
    def _same_origin(request: Request) -> bool:
        """A browser's Origin header, when it sends one, must name this host (defence besides the token)."""
        origin = request.header("origin")
        if origin is None or origin == "null":
            return origin is None
        host = request.host or ""
        return origin.split("://", 1)[-1] == host

    async def _form(self, request: Request) -> dict[str, list[str]]:
        body = await request.read(MAX_FORM_BYTES)
        return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)

    def _cookie(self, name: str, value: str, *, max_age: int) -> str:
        parts = [f"{name}={value}", "Path=/console", f"Max-Age={max(max_age, 0)}", "HttpOnly", "SameSite=Strict"]
        if self._secure:
            parts.append("Secure")
        return "; ".join(parts)

    def _headers(self, content_type: str, cookies: Sequence[str] = ()) -> list[tuple[str, str]]:
        headers = [
            ("content-type", content_type),
            ("cache-control", "no-store"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("x-frame-options", "DENY"),
            ("content-security-policy", _CSP),
        ]
        headers += [("set-cookie", c) for c in cookies]
        return headers

    async def _redirect(self, send: Send, location: str, cookies: Sequence[str] = ()) -> None:
        headers = self._headers("text/plain", cookies)
        headers.append(("location", location))
        await send_bytes(send, 303, headers, b"")

    async def _done(self, page: _Page, send: Send, location: str, message: str) -> None:
        """Redirect after a successful action, with a message for the next page."""
        page.cookies.append(self._cookie(FLASH_COOKIE, self.codec.sign_text(message), max_age=60))
        await self._redirect(send, location, page.cookies)

    async def _render(self, page: _Page, send: Send, template: str, *, status: int = 200, **context: Any) -> None:
        session = page.session
        context.setdefault("title", "Moorage")
        body = self.env.get_template(template).render(
            session=session,
            csrf=self.codec.csrf(session) if session is not None else "",
            flash=page.flash,
            regions=self._regions(session),
            principal_arn=page.principal.arn if session is not None else None,
            **context,
        )
        await send_bytes(
            send,
            status,
            self._headers("text/html; charset=utf-8", page.cookies),
            body.encode(),
            head=page.request.method == "HEAD",
        )

    def _regions(self, session: Session | None) -> list[str]:
        if session is None:
            return []
        if session.method == "password":
            return [session.region]  # a registry password is bound to its region
        return sorted({self.s.settings.region, session.region, *self.s.regions})

    async def _static_file(self, request: Request, send: Send, name: str) -> None:
        data = self._static.get(name)
        if data is None:
            await send_bytes(send, 404, [("content-type", "text/plain")], b"not found\n")
            return
        content_type = _STATIC_TYPES[name[name.rindex(".") :]]
        headers = [
            ("content-type", content_type),
            ("cache-control", "max-age=300"),
            ("x-content-type-options", "nosniff"),
        ]
        await send_bytes(send, 200, headers, data, head=request.method == "HEAD")

    # -- authorization -------------------------------------------------------------------------

    def _params(self, page: _Page, **params: Any) -> dict[str, Any]:
        assert page.session is not None
        if page.session.registry_account != page.session.account_id:
            params["registryId"] = page.session.registry_account
        return params

    async def _allowed(self, page: _Page, operation: str, **params: Any) -> bool:
        try:
            await self._require(page, operation, **params)
        except _Denied:
            return False
        return True

    async def _require(self, page: _Page, operation: str, **params: Any) -> None:
        assert page.session is not None
        try:
            await self.s.authorizer.check_ecr(
                page.principal,
                Origin.of(page.request.scope),
                operation,
                self._params(page, **params),
                page.session.region,
            )
        except AccessDeniedError as exc:
            raise _Denied(exc.message) from None

    def _host(self, page: _Page) -> str:
        settings = self.s.settings
        registry = page.registry
        if settings.registry_domain:
            port = f":{settings.public_port}" if settings.public_port is not None else ""
            return f"{registry.account_id}.dkr.ecr.{registry.region}.{settings.registry_domain}{port}"
        return settings.public_host or page.request.host or f"{settings.http.host}:{settings.http.port}"

    def _cli(self, page: _Page, command: str) -> str:
        assert page.session is not None
        endpoint = f"{'https' if self._secure else 'http'}://{page.request.host or self._host(page)}"
        return f"aws ecr {command} --region {page.session.region} --endpoint-url {endpoint}"

    # -- sign in / out -------------------------------------------------------------------------

    async def _signin_form(self, page: _Page, send: Send, *, error: str | None = None, status: int = 200) -> None:
        token = secrets.token_urlsafe(24)
        page.cookies.append(self._cookie(PRE_COOKIE, token, max_age=3600))
        page.session = None
        await self._render(
            page,
            send,
            "signin.html",
            status=status,
            title="Sign in",
            signin_token=token,
            error=error,
            next=_local(page.param("next", page.field("next", "/console/"))),
            default_region=self.s.settings.region,
            regions_all=sorted({self.s.settings.region, *self.s.regions}),
        )

    async def _signin_post(self, page: _Page, send: Send) -> None:
        page.form = await self._form(page.request)
        expected = _cookies(page.request).get(PRE_COOKIE)
        given = page.field("signin_token")
        if not expected or not given or not hmac.compare_digest(expected.encode(), given.encode()):
            await self._signin_form(
                page, send, error="The sign-in form expired or was not sent by this page. Try again.", status=403
            )
            return
        session = await self._authenticate(page)
        if session is None:
            # Same words whatever was wrong: no telling which key ids exist.
            await self._signin_form(page, send, error="Sign-in failed: those credentials are not valid.", status=401)
            return
        page.cookies.append(self._cookie(PRE_COOKIE, "", max_age=0))
        page.cookies.append(
            self._cookie(COOKIE, self.codec.encode(session), max_age=int(session.expires_at - time.time()))
        )
        await self._redirect(send, _local(page.field("next", "/console/")), page.cookies)

    async def _authenticate(self, page: _Page) -> Session | None:
        settings = self.s.settings
        ttl = settings.console.session_ttl.total_seconds()
        now = time.time()
        region = page.field("region", settings.region).strip() or settings.region
        if region not in self._known_regions():
            return None
        password = page.field("password").strip()
        if password:
            try:
                claims = self.s.registry_tokens.claims(password, check_expiry=settings.auth.mode != "open")
            except TokenError:
                return None
            user = claims.get("u")
            expires = float(claims.get("exp") or now + ttl)
            return self.codec.new(
                str(claims["p"]),
                None if user is None else str(user),
                str(claims["r"]),
                method="password",
                access_key_id=None,
                expires_at=min(now + ttl, expires),
            )
        key_id = page.field("access_key_id").strip()
        secret = page.field("secret_access_key")
        if not key_id or len(key_id) > 128 or len(secret) > 256:
            return None
        if settings.auth.mode == "open":
            account = key_id if key_id.isdigit() and len(key_id) == 12 else settings.account_id
            if account != settings.account_id:
                await self.s.identities.ensure_account(account)
            return self.codec.new(account, None, region, method="key", access_key_id=key_id, expires_at=now + ttl)
        key = await self.s.identities.lookup(key_id)
        # Compare against a dummy when the key is unknown, so both paths cost the same.
        stored = key.secret_access_key if key is not None else "x" * 40
        if not hmac.compare_digest(stored.encode(), secret.encode()) or key is None:
            return None
        return self.codec.new(
            key.account_id, key.user_name, region, method="key", access_key_id=key_id, expires_at=now + ttl
        )

    def _known_regions(self) -> set[str]:
        return {self.s.settings.region, *self.s.regions}

    async def signout(self, page: _Page, send: Send) -> None:
        page.cookies.append(self._cookie(COOKIE, "", max_age=0))
        page.session = None
        await self._redirect(send, "/console/signin", page.cookies)

    async def switch_context(self, page: _Page, send: Send) -> None:
        assert page.session is not None
        region = page.field("region", page.session.region)
        account = page.field("registry_account", page.session.registry_account).strip()
        if region not in self._regions(page.session) or not (account.isdigit() and len(account) == 12):
            await self._render(
                page, send, "error.html", status=400, title="Bad request", message="Unknown region or account id."
            )
            return
        session = page.session.switched(region=region, registry_account=account)
        page.cookies.append(
            self._cookie(COOKIE, self.codec.encode(session), max_age=int(session.expires_at - time.time()))
        )
        await self._redirect(send, "/console/", page.cookies)

    # -- repositories --------------------------------------------------------------------------

    async def repositories(self, page: _Page, send: Send) -> None:
        query = page.param("q").strip().lower()[:256]
        after = page.param("after") or None
        all_allowed = await self._allowed(page, "DescribeRepositories")
        shown: list[Repository] = []
        more: str | None = None
        cursor = after
        scanned = 0
        # Walk the name-ordered listing until a page of matching, permitted repositories is full,
        # reading at most SCAN_LIMIT names per request (the next page goes on from there).
        while len(shown) <= PAGE_SIZE:
            batch = await self.s.registry.describe_repositories(page.registry, None, PageRequest(200, cursor))
            for repo in batch.items:
                scanned += 1
                cursor = repo.name
                if query and query not in repo.name:
                    continue
                if not all_allowed and not await self._allowed(
                    page, "DescribeRepositories", repositoryNames=[repo.name]
                ):
                    continue
                shown.append(repo)
                if len(shown) > PAGE_SIZE:
                    break
            if batch.next_after is None or len(shown) > PAGE_SIZE:
                break
            if scanned >= SCAN_LIMIT:
                more = cursor
                break
        if len(shown) > PAGE_SIZE:
            shown = shown[:PAGE_SIZE]
            more = shown[-1].name
        summaries = await self.s.images.summaries(shown)
        host = self._host(page)
        rows = [
            {
                "repo": repo,
                "uri": f"{host}/{repo.name}",
                "count": summaries.get(repo.id, (0, 0))[0],
                "bytes": summaries.get(repo.id, (0, 0))[1],
            }
            for repo in shown
        ]
        await self._render(
            page,
            send,
            "repositories.html",
            title="Repositories",
            rows=rows,
            q=query,
            after=after,
            more=more,
            restricted=not all_allowed,
            cli=self._cli(page, "describe-repositories"),
        )

    async def create_repository(self, page: _Page, send: Send) -> None:
        raw = page.field("name").strip()
        try:
            name = parse_repository_name(raw)
        except MoorageError as exc:
            await self._repository_error(page, send, exc.message)
            return
        await self._require(page, "CreateRepository", repositoryName=name)
        mutability = page.field("mutability", "MUTABLE")
        if mutability not in ("MUTABLE", "IMMUTABLE"):
            mutability = "MUTABLE"
        repo = Repository(
            registry=page.registry,
            name=name,
            created_at=self.s.registry.now(),
            tag_mutability=mutability,
            scan_on_push=page.field("scan_on_push") == "on",
        )
        try:
            await self.s.registry.create_repository(repo)
        except MoorageError as exc:
            await self._repository_error(page, send, exc.message)
            return
        finally:
            self.s.authorizer.store.invalidate(page.registry, name, registry_wide=False)
        await self._done(page, send, f"/console/repositories/{name}", f"Created repository {name}.")

    async def _repository_error(self, page: _Page, send: Send, message: str) -> None:
        page.flash = message
        await self.repositories(page, send)

    async def delete_repository(self, page: _Page, send: Send, raw: str) -> None:
        name = self._name(raw)
        await self._require(page, "DeleteRepository", repositoryName=name)
        if page.field("confirm") != name:
            await self._render(
                page,
                send,
                "error.html",
                status=400,
                title="Not deleted",
                message=f"Type the repository's name ({name}) to confirm deleting it.",
            )
            return
        try:
            await self.s.registry.delete_repository(page.registry, name, force=page.field("force") == "on")
        except NotFoundError as exc:
            raise _Missing(exc.message) from None
        except MoorageError as exc:
            page.flash = exc.message
            await self.repository(page, send, raw)
            return
        finally:
            self.s.authorizer.store.invalidate(page.registry, name)
        await self._done(page, send, "/console/", f"Deleted repository {name}.")

    def _name(self, raw: str) -> RepositoryName:
        try:
            return parse_repository_name(raw)
        except MoorageError:
            raise _Missing(f"There is no repository named {raw[:256]!r}") from None

    async def _repository(self, page: _Page, name: RepositoryName) -> Repository:
        try:
            return await self.s.registry.get_repository(page.registry, name)
        except RepositoryNotFoundError as exc:
            raise _Missing(exc.message) from None

    # -- one repository ------------------------------------------------------------------------

    async def repository(self, page: _Page, send: Send, raw: str) -> None:
        name = self._name(raw)
        await self._require(page, "DescribeImages", repositoryName=name)
        repo = await self._repository(page, name)
        status = page.param("tagged", "ANY").upper()
        tag_status: TagStatus = status if status in ("TAGGED", "UNTAGGED") else "ANY"  # type: ignore[assignment]
        tag_text = page.param("tag").strip()[:128] or None
        order = "size" if page.param("sort") == "size" else "pushed"
        ascending = page.param("dir") == "asc"
        try:
            number = max(1, min(int(page.param("page", "1")), 100_000))
        except ValueError:
            number = 1
        images, total = await self.s.images.browse(
            page.registry,
            name,
            tag_status=tag_status,
            tag_contains=tag_text,
            order=order,  # type: ignore[arg-type]
            descending=not ascending,
            offset=(number - 1) * PAGE_SIZE,
            limit=PAGE_SIZE,
            with_body=True,
        )
        scans = {}
        if self.s.scanning is not None and await self._allowed(page, "DescribeImageScanFindings", repositoryName=name):
            scans = await self.s.scanning.current_many(page.registry, name, images)
        host = self._host(page)
        now = self.s.registry.now()
        rows = []
        for image in images:
            scan = scans.get(str(image.digest))
            counts: dict[str, int] = {}
            if scan is not None and scan.status == "COMPLETE" and scan.result:
                counts = json.loads(scan.result).get("counts") or {}
            rows.append(
                SimpleNamespace(
                    image=image,
                    status=image.status(now),
                    platforms=", ".join(_platforms(image)),
                    label=", ".join(image.tags) or _short(image.digest),
                    scan=scan,
                    counts=[(s, counts[s]) for s in SEVERITIES if counts.get(s)],
                    pull=f"{host}/{name}:{image.tags[0]}" if image.tags else f"{host}/{name}@{image.digest}",
                    size=image.image_size or image.size,
                )
            )
        filters = {"tagged": tag_status, "tag": tag_text or "", "sort": order, "dir": "asc" if ascending else "desc"}
        pages = max(1, -(-total // PAGE_SIZE))
        await self._render(
            page,
            send,
            "repository.html",
            title=name,
            repo=repo,
            uri=f"{host}/{name}",
            rows=rows,
            total=total,
            number=number,
            pages=pages,
            filters=filters,
            link=lambda **change: "?" + urlencode({**filters, "page": number, **change}),
            can_delete=await self._allowed(page, "BatchDeleteImage", repositoryName=name),
            can_delete_repo=await self._allowed(page, "DeleteRepository", repositoryName=name),
            cli=self._cli(page, f"describe-images --repository-name {name}"),
        )

    async def delete_images(self, page: _Page, send: Send, raw: str) -> None:
        name = self._name(raw)
        await self._require(page, "BatchDeleteImage", repositoryName=name)
        digests = [d for d in page.form.get("digest", []) if d][:100]
        if not digests:
            await self._done(page, send, f"/console/repositories/{name}", "No images were selected.")
            return
        try:
            removed, failures = await self.s.images.batch_delete(page.registry, name, [ImageRef(d) for d in digests])
        except RepositoryNotFoundError as exc:
            raise _Missing(exc.message) from None
        gone = len({d for d, _ in removed})
        message = f"Deleted {gone} image{'s' if gone != 1 else ''}."
        if failures:
            message += " Not deleted: " + "; ".join(f"{_short(f.ref.digest)}: {f.reason}" for f in failures)
        await self._done(page, send, f"/console/repositories/{name}", message)

    # -- one image -----------------------------------------------------------------------------

    async def image_page(self, page: _Page, send: Send, raw: str, reference: str) -> None:
        name = self._name(raw)
        await self._require(page, "DescribeImages", repositoryName=name)
        await self._require(page, "BatchGetImage", repositoryName=name)
        registry = page.registry
        try:
            image = await self.s.images.resolve(registry, name, ImageRef(digest=reference))
        except (ManifestUnknownError, RepositoryNotFoundError) as exc:
            raise _Missing(exc.message) from None
        status = image.status(self.s.registry.now())
        body: bytes | None = None
        if status == "ACTIVE":
            try:
                body = (await self.s.registry.get_manifest(registry, name, str(image.digest))).body
            except ManifestUnknownError:
                body = None
        parsed = None
        pretty = None
        if body is not None:
            try:
                pretty = json.dumps(json.loads(body), indent=2, sort_keys=False)
                parsed = mf.parse(body, image.media_type)
            except (ValueError, MoorageError):
                parsed = None
        layers: list[dict[str, Any]] = []
        children: list[dict[str, Any]] = []
        config: dict[str, Any] | None = None
        document: dict[str, Any] = json.loads(body) if pretty is not None and body is not None else {}
        if parsed is not None and parsed.is_index:
            for entry in document.get("manifests") or []:
                if isinstance(entry, dict):
                    platform = entry.get("platform") or {}
                    children.append(
                        {
                            "digest": entry.get("digest"),
                            "size": entry.get("size"),
                            "media_type": entry.get("mediaType"),
                            "platform": _platform_text(platform),
                        }
                    )
        elif document:
            for entry in document.get("layers") or []:
                if isinstance(entry, dict):
                    layers.append(
                        {"digest": entry.get("digest"), "size": entry.get("size"), "media_type": entry.get("mediaType")}
                    )
            config_ref = document.get("config") or {}
            if isinstance(config_ref, dict) and config_ref.get("digest"):
                config = await self._config(registry, name, str(config_ref["digest"]))
        referrers = []
        for ref in await self.s.registry.referrers(registry, name, image.digest):
            annotations: dict[str, Any] = {}
            if ref.body is not None:
                try:
                    annotations = json.loads(ref.body).get("annotations") or {}
                except ValueError:
                    annotations = {}
            referrers.append({"image": ref, "annotations": annotations, "kind": _referrer_kind(ref.artifact_type)})
        findings, counts, scan = await self._findings(page, name, image)
        severity = page.param("severity").upper()
        if severity in SEVERITIES:
            findings = [f for f in findings if f.get("severity") == severity]
        replication = []
        if self.s.replication is not None and await self._allowed(
            page, "DescribeImageReplicationStatus", repositoryName=name
        ):
            replication = list(await self.s.replication.statuses(registry, name, image.digest))
        signing = None  # None: not allowed to see it; []: no profile signs this image
        if self.s.signing is not None and await self._allowed(page, "DescribeImageSigningStatus", repositoryName=name):
            signing = list(await self.s.signing.statuses(registry, str(name), image.digest))
        host = self._host(page)
        await self._render(
            page,
            send,
            "image.html",
            title=f"{name}@{_short(image.digest)}",
            name=name,
            image=image,
            image_status=status,
            pretty=pretty,
            layers=layers,
            children=children,
            config=config,
            referrers=referrers,
            findings=findings,
            counts=[(s, counts.get(s, 0)) for s in SEVERITIES if counts.get(s)],
            scan=scan,
            severity=severity if severity in SEVERITIES else "",
            replication=replication,
            signing=signing,
            pull_tag=f"{host}/{name}:{image.tags[0]}" if image.tags else None,
            pull_digest=f"{host}/{name}@{image.digest}",
            can_archive=await self._allowed(page, "UpdateImageStorageClass", repositoryName=name),
            cli=self._cli(
                page, f"describe-image-scan-findings --repository-name {name} --image-id imageDigest={image.digest}"
            ),
        )

    async def _config(self, registry: RegistryRef, name: RepositoryName, digest: str) -> dict[str, Any] | None:
        try:
            blob = await self.s.registry.open_blob(registry, name, Digest.parse(digest))
        except MoorageError:
            return None
        if blob.info.size > MAX_CONFIG_BYTES:
            return None
        if blob.path is not None:
            data = await asyncio.to_thread(blob.path.read_bytes)
        else:
            assert blob.chunks is not None
            parts = [chunk async for chunk in blob.chunks]
            data = b"".join(parts)
        try:
            document = json.loads(data)
        except ValueError:
            return None
        if not isinstance(document, dict):
            return None
        found = document.get("config")
        inner: dict[str, Any] = found if isinstance(found, dict) else {}
        return {
            "os": document.get("os"),
            "architecture": document.get("architecture"),
            "created": document.get("created"),
            "env": inner.get("Env") or [],
            "entrypoint": inner.get("Entrypoint"),
            "cmd": inner.get("Cmd"),
            "workdir": inner.get("WorkingDir"),
            "user": inner.get("User"),
            "labels": inner.get("Labels") or {},
            "history": [h for h in document.get("history") or [] if isinstance(h, dict)],
        }

    async def _findings(
        self, page: _Page, name: RepositoryName, image: Image
    ) -> tuple[list[dict[str, Any]], dict[str, int], Any]:
        if self.s.scanning is None or not await self._allowed(page, "DescribeImageScanFindings", repositoryName=name):
            return [], {}, None
        try:
            _, record = await self.s.scanning.result(page.registry, name, str(image.digest))
        except (ScanNotFoundError, MoorageError):
            return [], {}, None
        if record.status != "COMPLETE" or not record.result:
            return [], {}, record
        result = json.loads(record.result)
        return list(result.get("findings") or []), dict(result.get("counts") or {}), record

    async def storage_class(self, page: _Page, send: Send, raw: str, reference: str, action: str) -> None:
        name = self._name(raw)
        await self._require(page, "UpdateImageStorageClass", repositoryName=name)
        target: Literal["ARCHIVE", "STANDARD"] = "ARCHIVE" if action == "archive" else "STANDARD"
        location = f"/console/repositories/{name}/-/images/{quote(reference)}"
        try:
            await self.s.images.update_storage_class(page.registry, name, ImageRef(digest=reference), target)
        except NotFoundError as exc:
            raise _Missing(exc.message) from None
        except MoorageError as exc:
            await self._done(page, send, location, exc.message)
            return
        await self._done(page, send, location, "Archived the image." if target == "ARCHIVE" else "Restoring the image.")

    # -- lifecycle -----------------------------------------------------------------------------

    async def lifecycle_page(
        self, page: _Page, send: Send, raw: str, *, text: str | None = None, error: str | None = None, status: int = 200
    ) -> None:
        name = self._name(raw)
        await self._require(page, "GetLifecyclePolicy", repositoryName=name)
        await self._repository(page, name)
        stored = None
        last_evaluated = None
        try:
            record = await self.s.lifecycle.get_policy(page.registry, name)
            stored, last_evaluated = record.document, record.last_evaluated_at
        except NotFoundError:
            pass
        if text is None:
            text = _pretty_json(stored) if stored else _EXAMPLE_POLICY
        preview = None
        if await self._allowed(page, "GetLifecyclePolicyPreview", repositoryName=name):
            try:
                preview = await self.s.lifecycle.get_preview(page.registry, name)
            except NotFoundError:
                preview = None
        history = await self.s.lifecycle.history(page.registry, name, limit=100)
        await self._render(
            page,
            send,
            "lifecycle.html",
            status=status,
            title=f"Lifecycle of {name}",
            name=name,
            text=text,
            stored=stored is not None,
            last_evaluated=last_evaluated,
            error=error,
            preview=preview,
            history=history,
            can_save=await self._allowed(page, "PutLifecyclePolicy", repositoryName=name),
            cli=self._cli(page, f"get-lifecycle-policy-preview --repository-name {name}"),
        )

    async def lifecycle_save(self, page: _Page, send: Send, raw: str) -> None:
        name = self._name(raw)
        text = page.field("policy")
        await self._require(page, "PutLifecyclePolicy", repositoryName=name)
        try:
            await self.s.lifecycle.put_policy(page.registry, name, text)
        except RepositoryNotFoundError as exc:
            raise _Missing(exc.message) from None
        except MoorageError as exc:
            await self.lifecycle_page(page, send, raw, text=text, error=exc.message, status=400)
            return
        await self._done(page, send, f"/console/repositories/{name}/-/lifecycle", "Saved the lifecycle policy.")

    async def lifecycle_preview(self, page: _Page, send: Send, raw: str) -> None:
        name = self._name(raw)
        text = page.field("policy") or None
        await self._require(page, "StartLifecyclePolicyPreview", repositoryName=name)
        try:
            await self.s.lifecycle.start_preview(page.registry, name, text)
        except RepositoryNotFoundError as exc:
            raise _Missing(exc.message) from None
        except MoorageError as exc:
            await self.lifecycle_page(page, send, raw, text=text, error=exc.message, status=400)
            return
        # A preview runs in the background; wait a little for it so the page usually shows the result.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            preview = await self.s.lifecycle.get_preview(page.registry, name)
            if preview.status != "IN_PROGRESS":
                break
            await asyncio.sleep(0.05)
        await self.lifecycle_page(page, send, raw, text=text)

    # -- the registry and the status -----------------------------------------------------------

    async def registry_page(self, page: _Page, send: Send) -> None:
        registry = page.registry
        sections: dict[str, Any] = {}
        if self.s.pull_through is not None and await self._allowed(page, "DescribePullThroughCacheRules"):
            sections["rules"] = list(await self.s.pull_through.describe(registry, None))
        if self.s.replication is not None and await self._allowed(page, "DescribeRegistry"):
            sections["replication"] = _pretty_json(json.dumps(await self.s.replication.configuration(registry)))
        if self.s.templates is not None and await self._allowed(page, "DescribeRepositoryCreationTemplates"):
            found = await self.s.templates.describe(registry, None, PageRequest(100, None))
            sections["templates"] = list(found.items)
        if self.s.scanning is not None and await self._allowed(page, "GetRegistryScanningConfiguration"):
            sections["scanning"] = _pretty_json(json.dumps(await self.s.scanning.configuration(registry)))
        if await self._allowed(page, "GetRegistryPolicy"):
            text = await self.s.authorizer.store.registry_policy(registry)
            sections["policy"] = _pretty_json(text) if text else None
            sections["policy_known"] = True
        await self._render(
            page,
            send,
            "registry.html",
            title="Registry",
            sections=sections,
            commands={
                "rules": self._cli(page, "describe-pull-through-cache-rules"),
                "replication": self._cli(page, "describe-registry"),
                "templates": self._cli(page, "describe-repository-creation-templates"),
                "scanning": self._cli(page, "get-registry-scanning-configuration"),
                "policy": self._cli(page, "get-registry-policy"),
            },
        )

    async def status_page(self, page: _Page, send: Send) -> None:
        await self._require(page, "DescribeRegistry")
        jobs = dict(await self.s.job_runs()) if self.s.job_runs is not None else {}
        backlog = dict(await self.s.backlog()) if self.s.backlog is not None else {}
        repositories, images, total = await self.s.images.usage(page.registry)
        await self._render(
            page,
            send,
            "status.html",
            title="Status",
            jobs=sorted(jobs.items()),
            backlog=sorted(backlog.items()),
            repositories=repositories,
            images=images,
            total=total,
            now=self.s.registry.now(),
            webhooks=[w.name for w in self.s.settings.events.all_webhooks()],
        )


_EXAMPLE_POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "description": "Expire untagged images older than 14 days",
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 14,
                },
                "action": {"type": "expire"},
            }
        ]
    },
    indent=2,
)


def _pretty_json(text: str | None) -> str:
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2)
    except ValueError:
        return text


def _local(target: str) -> str:
    """Only a path inside the console is a place to go after sign-in (no open redirects)."""
    if target.startswith("/console/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/console/"


def _platform_text(platform: Mapping[str, Any]) -> str:
    if not isinstance(platform, Mapping):
        return ""
    parts = [str(platform.get("os") or ""), str(platform.get("architecture") or "")]
    if platform.get("variant"):
        parts.append(str(platform["variant"]))
    return "/".join(p for p in parts if p)


def _platforms(image: Image) -> list[str]:
    """The platforms an index lists (from its body); none for a single-platform manifest."""
    if image.body is None or image.media_type not in (mf.OCI_INDEX, mf.DOCKER_MANIFEST_LIST):
        return []
    try:
        document = json.loads(image.body)
    except ValueError:
        return []
    out = []
    for entry in document.get("manifests") or []:
        if isinstance(entry, dict):
            text = _platform_text(entry.get("platform") or {})
            if text and text != "unknown/unknown" and text not in out:
                out.append(text)
    return out


def _referrer_kind(artifact_type: str | None) -> str:
    kind = (artifact_type or "").lower()
    if "signature" in kind or "cosign" in kind or "notary" in kind:
        return "signature"
    if "spdx" in kind or "cyclonedx" in kind or "sbom" in kind:
        return "SBOM"
    if "in-toto" in kind or "attestation" in kind or "provenance" in kind:
        return "attestation"
    return "artifact"
