"""A client of an upstream OCI registry (Distribution API), for the pull-through cache.

Authentication as registries do it: a request goes out anonymously (or with the credentials the
host asked for before); a `401` with `WWW-Authenticate: Bearer realm=...,service=...,scope=...`
(Docker Hub, ghcr.io, quay.io, the CNCF distribution with token auth) is answered by fetching a
token from the realm, with HTTP Basic credentials when the rule has some, and retrying with it; a
`Basic` challenge is answered with the credentials. Tokens are kept per scope until they expire.

Upstream failures are classified the way ECR reports them (`UpstreamError.kind`):
`denied` (401/403 after authenticating), `not_found` (404), `too_many` (429, with `Retry-After`
honoured per upstream host: calls during the back-off fail at once without contacting it) and
`unavailable` (5xx, timeouts, connection errors).
"""

from __future__ import annotations

import base64
import hashlib
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from moorage.rawhttp import RawBodyError, RawResponse

__all__ = [
    "MANIFEST_ACCEPT",
    "CredentialProvider",
    "Credentials",
    "UpstreamBlob",
    "UpstreamClient",
    "UpstreamError",
    "UpstreamManifest",
    "parse_challenge",
]

MANIFEST_ACCEPT = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)

_CHALLENGE_PARAM = re.compile(r'([a-zA-Z_]+)=(?:"([^"]*)"|([^,\s]*))')

# upstream host -> monotonic time before which it is not contacted again (after a 429)
_BACKOFF: dict[str, float] = {}


class UpstreamError(Exception):
    """An upstream registry could not give what was asked. `kind` is one of `denied`,
    `not_found`, `too_many`, `unavailable`."""

    def __init__(self, kind: str, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


class CredentialProvider:
    """Credentials looked up when the upstream asks for them (a pull-through rule's secret, read
    at fetch time), and looked up again when the upstream refuses them (rotated since). `get`
    raises UpstreamError when there are none to be had."""

    async def get(self) -> Credentials | None:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class UpstreamManifest:
    digest: str
    media_type: str
    body: bytes


@dataclass(frozen=True, slots=True)
class UpstreamBlob:
    size: int | None
    chunks: AsyncIterator[bytes]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` → ("bearer", {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {
        m.group(1).lower(): m.group(2) if m.group(2) is not None else m.group(3)
        for m in _CHALLENGE_PARAM.finditer(rest)
    }
    return scheme.lower(), params


def _retry_after(value: str | None) -> float:
    if not value:
        return 1.0
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        return 1.0


class UpstreamClient:
    """One upstream registry: `base_url` is `scheme://host[:port]` (a path after it is a prefix of
    every repository name, as `https://host/path` upstream URLs mean)."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | CredentialProvider | None = None,
        *,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        parts = urlsplit(base_url if "://" in base_url else f"https://{base_url}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path_prefix = parts.path.strip("/")
        self._host = parts.netloc
        self._provider = credentials if isinstance(credentials, CredentialProvider) else None
        self._credentials = credentials if isinstance(credentials, Credentials) else None
        self._looked_up = self._provider is None
        self._timeout = timeout
        self._client = client or httpx.AsyncClient(timeout=timeout, follow_redirects=True)
        self._owns_client = client is None
        self._tokens: dict[str, tuple[str, float]] = {}  # scope -> (Authorization value, expiry)
        self._basic = False  # the host asked for Basic before

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    @property
    def host(self) -> str:
        return self._host

    def _repo(self, repository: str) -> str:
        return f"{self._path_prefix}/{repository}" if self._path_prefix else repository

    # -- authentication ----------------------------------------------------------------------

    def _auth_header(self, scope: str) -> str | None:
        token = self._tokens.get(scope)
        if token is not None and token[1] > time.monotonic():
            return token[0]
        if self._basic and self._credentials is not None:
            return self._credentials.basic()
        return None

    async def _answer_challenge(self, header: str, scope: str, *, sent: str | None) -> bool:
        """Obtain what the challenge asks for; False when there is nothing new to try. `sent` is
        the Authorization the refused request carried: one sent bare while a concurrent request
        answered the same challenge is simply sent again with what that one obtained."""
        if not sent and self._auth_header(scope):
            return True
        if not self._looked_up:
            await self._look_up()
        scheme, params = parse_challenge(header)
        if scheme == "basic":
            if self._credentials is None or (self._basic and not await self._look_up()):
                return False
            self._basic = True
            return True
        if scheme != "bearer" or "realm" not in params:
            return False
        query = {"service": params["service"]} if params.get("service") else {}
        wanted = scope or params.get("scope", "")
        if wanted:
            query["scope"] = wanted
        while True:
            headers = {"authorization": self._credentials.basic()} if self._credentials is not None else {}
            try:
                response = await self._client.get(params["realm"], params=query, headers=headers)
            except httpx.HTTPError as exc:
                raise UpstreamError("unavailable", f"token endpoint unreachable: {exc}") from None
            if response.status_code not in (401, 403):
                break
            if self._credentials is None or not await self._look_up():
                raise UpstreamError("denied", "the upstream token endpoint refused the credentials", status=401)
        self._check_status(response)
        try:
            body = response.json()
            token = str(body.get("token") or body.get("access_token"))
            lifetime = float(body.get("expires_in") or 60)
        except (ValueError, AttributeError):
            raise UpstreamError("unavailable", "the upstream token endpoint answered no token") from None
        self._tokens[scope] = (f"Bearer {token}", time.monotonic() + max(lifetime - 10, 5))
        return True

    async def _look_up(self) -> bool:
        """Ask the provider for the credentials (again); True when they changed."""
        self._looked_up = True
        if self._provider is None:
            return False
        found = await self._provider.get()
        changed = found is not None and found != self._credentials
        self._credentials = found
        return changed

    def _check_status(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if status == 429:
            _BACKOFF[self._host] = time.monotonic() + _retry_after(response.headers.get("retry-after"))
            raise UpstreamError("too_many", "the upstream registry answered 429 Too Many Requests", status=429)
        if status in (401, 403):
            raise UpstreamError("denied", f"the upstream registry refused access ({status})", status=status)
        if status == 404:
            raise UpstreamError("not_found", "not found upstream", status=404)
        if status >= 500:
            raise UpstreamError("unavailable", f"the upstream registry answered {status}", status=status)
        raise UpstreamError("unavailable", f"the upstream registry answered {status}", status=status)

    @asynccontextmanager
    async def _send(
        self,
        method: str,
        path: str,
        scope: str,
        headers: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[httpx.Response]:
        until = _BACKOFF.get(self._host)
        if until is not None and until > time.monotonic():
            raise UpstreamError("too_many", f"backing off {self._host} after a 429", status=429)
        url = self._origin + path
        for _attempt in range(3):
            request_headers = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                request_headers["authorization"] = auth
            try:
                request = self._client.build_request(
                    method, url, headers=request_headers, timeout=timeout if timeout is not None else self._timeout
                )
                response = await self._client.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise UpstreamError("unavailable", f"upstream {self._host} unreachable: {type(exc).__name__}") from None
            if response.status_code == 401:
                challenge = response.headers.get("www-authenticate", "")
                await response.aclose()
                if auth and auth.startswith("Bearer") and scope in self._tokens:
                    del self._tokens[scope]  # expired early: one fresh token, then give up
                    if not await self._answer_challenge(challenge, scope, sent=auth):
                        raise UpstreamError("denied", "the upstream registry refused the credentials", status=401)
                    continue
                if not challenge or not await self._answer_challenge(challenge, scope, sent=auth):
                    raise UpstreamError("denied", "the upstream registry refused the credentials", status=401)
                continue
            try:
                if response.status_code >= 400:
                    await response.aread()
                    self._check_status(response)
                yield response
            finally:
                await response.aclose()
            return
        raise UpstreamError("denied", "the upstream registry refused the credentials", status=401)

    # -- the API ------------------------------------------------------------------------------

    async def check(self, repository: str | None = None) -> None:
        """Reach the registry and authenticate (for a repository, with pull scope): raises
        UpstreamError when that fails. A 404 for the repository counts as reachable."""
        if repository is None:
            async with self._send("GET", "/v2/", ""):
                return
        try:
            async with self._send("GET", f"/v2/{self._repo(repository)}/tags/list?n=1", self._scope(repository)):
                return
        except UpstreamError as exc:
            if exc.kind != "not_found":
                raise

    async def _raw_get(self, url: str, auth: str | None) -> RawResponse | None:
        """GET `url` with `RawResponse`: the open body of a `200` with a Content-Length, or None
        when httpx must answer (401, other statuses, chunked bodies). 404 and 429 raise."""
        until = _BACKOFF.get(self._host)
        if until is not None and until > time.monotonic():
            raise UpstreamError("too_many", f"backing off {self._host} after a 429", status=429)
        for _hop in range(4):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                return None
            # credentials never go to another host
            headers = {"authorization": auth} if auth and parts.netloc == self._host else {}
            try:
                body = await RawResponse.open(url, headers, self._timeout, _ssl_context)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UpstreamError(
                    "unavailable", f"upstream {parts.netloc} unreachable: {type(exc).__name__}"
                ) from None
            if body.status in (301, 302, 303, 307, 308) and body.headers.get("location"):
                body.close()
                url = urljoin(url, body.headers["location"])
                continue
            if body.status == 404:
                body.close()
                raise UpstreamError("not_found", "not found upstream", status=404)
            if body.status == 429:
                body.close()
                _BACKOFF[self._host] = time.monotonic() + _retry_after(body.headers.get("retry-after"))
                raise UpstreamError("too_many", "the upstream registry answered 429 Too Many Requests", status=429)
            if body.status == 200 and body.sized:
                return body
            body.close()
            return None
        return None

    def _scope(self, repository: str) -> str:
        return f"repository:{self._repo(repository)}:pull"

    async def get_manifest(
        self,
        repository: str,
        reference: str,
        *,
        accept: tuple[str, ...] = MANIFEST_ACCEPT,
        timeout: float | None = None,
    ) -> UpstreamManifest:

        path = f"/v2/{self._repo(repository)}/manifests/{reference}"
        async with self._send(
            "GET", path, self._scope(repository), {"accept": ", ".join(accept)}, timeout=timeout
        ) as r:
            body = await r.aread()
            media_type = r.headers.get("content-type", "").split(";", 1)[0].strip()
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        if reference.startswith("sha256:") and reference != digest:
            raise UpstreamError("unavailable", f"the upstream manifest does not match its digest {reference}")
        return UpstreamManifest(digest, media_type, body)

    async def head_manifest(
        self,
        repository: str,
        reference: str,
        *,
        accept: tuple[str, ...] = MANIFEST_ACCEPT,
        timeout: float | None = None,
    ) -> str | None:
        """The digest the upstream gives for a tag (Docker-Content-Digest), None when it says none."""
        path = f"/v2/{self._repo(repository)}/manifests/{reference}"
        async with self._send(
            "HEAD", path, self._scope(repository), {"accept": ", ".join(accept)}, timeout=timeout
        ) as r:
            digest: str | None = r.headers.get("docker-content-digest")
            return digest

    @asynccontextmanager
    async def blob(self, repository: str, digest: str) -> AsyncIterator[UpstreamBlob]:
        """The blob's bytes as a stream (never read whole).

        The body is read by `rawhttp.RawResponse` when it can be (a plain `200` with a
        Content-Length, after at most three redirects): httpx's streaming costs ~7 CPU-s per GiB
        here, the raw reader ~1.3. Anything else (a challenge, an error, a chunked body) goes
        through httpx."""
        path = f"/v2/{self._repo(repository)}/blobs/{digest}"
        scope = self._scope(repository)
        raw = await self._raw_get(self._origin + path, self._auth_header(scope))
        if raw is not None:
            try:
                yield UpstreamBlob(raw.length, _raw_chunks(raw, self._timeout))
            finally:
                raw.close()
            return
        async with self._send("GET", path, scope) as r:
            length = r.headers.get("content-length")

            async def chunks() -> AsyncIterator[bytes]:
                try:
                    async for chunk in r.aiter_bytes(1 << 20):
                        yield chunk
                except httpx.HTTPError as exc:
                    raise UpstreamError("unavailable", f"upstream blob read failed: {type(exc).__name__}") from None

            yield UpstreamBlob(int(length) if length and length.isdigit() else None, chunks())


async def _raw_chunks(raw: RawResponse, timeout: float) -> AsyncIterator[bytes]:
    try:
        async for chunk in raw.chunks(timeout):
            yield chunk
    except RawBodyError as exc:
        raise UpstreamError("unavailable", f"upstream blob read failed: {exc}") from None


_SSL: list[ssl.SSLContext] = []


def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (the same trust store as the httpx requests), made once."""
    if not _SSL:
        _SSL.append(httpx.create_ssl_context())
    return _SSL[0]
