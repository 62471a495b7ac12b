"""The push side of the OCI client: replication to a registry of another deployment.

`RemoteRegistry` extends the pull-through cache's `UpstreamClient` (same authentication: an
anonymous first try, then the `Basic` or `Bearer realm=...` challenge answered with the
credentials, tokens kept per scope) with the Distribution API's push calls:

    blob      HEAD /v2/<name>/blobs/<digest>            200: there already, nothing sent
              POST /v2/<name>/blobs/uploads/?mount=<digest>&from=<repo>   201: mounted
              POST /v2/<name>/blobs/uploads/ ─► 202 Location; PUT <Location>?digest=<digest>
                   with the bytes streamed from the blob store (Content-Length known, never
                   read whole)
    manifest  PUT /v2/<name>/manifests/<digest or tag>

`EcrApi` signs AWS JSON 1.1 calls with botocore's SigV4 signer, for GetAuthorizationToken (the
registry password of another Moorage or of ECR: `AWS:<token>` sent as HTTP Basic) and
CreateRepository (a repository missing there).

Failures raise `RemoteError` whose `kind` says what the caller does with them: `unavailable`
(connection errors, timeouts, 5xx, 429: try again later), `denied` (401/403), `not_found` (404:
the repository is unknown there, `code` NAME_UNKNOWN) and `rejected` (another 4xx; `code` is the
registry's error code, TAG_INVALID for an immutable tag, say).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterable, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as AwsCredentials

from moorage.upstream import Credentials, UpstreamClient, UpstreamError

__all__ = ["EcrApi", "RemoteError", "RemoteRegistry"]


class RemoteError(Exception):
    """A remote registry did not take what was pushed. `kind`: `unavailable`, `denied`,
    `not_found`, `rejected`; `code` the registry's error code when it gave one."""

    def __init__(self, kind: str, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.status = status
        self.code = code


def _error_code(response: httpx.Response) -> str | None:
    try:
        body = response.json()
    except ValueError:
        return None
    if isinstance(body, dict):
        errors = body.get("errors")
        if isinstance(errors, list) and errors and isinstance(errors[0], dict):
            return str(errors[0].get("code") or "") or None
        kind = body.get("__type")
        if isinstance(kind, str):
            return kind.rpartition("#")[2]
    return None


def _raise_for(response: httpx.Response, what: str) -> None:
    status = response.status_code
    if status < 400:
        return
    code = _error_code(response)
    if status == 429 or status >= 500:
        raise RemoteError("unavailable", f"{what}: the remote registry answered {status}", status=status, code=code)
    if status in (401, 403):
        raise RemoteError("denied", f"{what}: the remote registry refused access ({status})", status=status, code=code)
    if status == 404:
        raise RemoteError("not_found", f"{what}: not found ({code or status})", status=status, code=code)
    raise RemoteError(
        "rejected", f"{what}: the remote registry refused it ({code or status})", status=status, code=code
    )


class RemoteRegistry(UpstreamClient):
    """A registry pushed to. `preemptive_basic` sends the credentials with the first request (a
    registry password from GetAuthorizationToken: no challenge round trip needed)."""

    def __init__(
        self,
        base_url: str,
        credentials: Credentials | None = None,
        *,
        timeout: float = 60.0,
        client: httpx.AsyncClient | None = None,
        preemptive_basic: bool = False,
    ) -> None:
        super().__init__(base_url, credentials, timeout=timeout, client=client)
        self._basic = preemptive_basic and credentials is not None

    def set_credentials(self, credentials: Credentials, *, preemptive: bool = False) -> None:
        """New credentials (a fresh registry password); cached tokens are dropped. `preemptive`
        sends them as HTTP Basic from the first request on."""
        self._credentials = credentials
        self._tokens.clear()
        self._basic = preemptive

    def _push_scope(self, repository: str) -> str:
        return f"repository:{self._repo(repository)}:pull,push"

    @asynccontextmanager
    async def _exchange(
        self,
        method: str,
        url: str,
        scope: str,
        what: str,
        *,
        headers: dict[str, str] | None = None,
        content: bytes | AsyncIterable[bytes] | None = None,
        params: dict[str, str] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """One request, answering an authentication challenge (at most twice). A streamed body
        cannot be sent twice: callers make a bodiless request to the same scope first."""
        replayable = content is None or isinstance(content, bytes)
        for _attempt in range(3):
            request_headers = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                request_headers["authorization"] = auth
            try:
                request = self._client.build_request(
                    method, url, headers=request_headers, content=content, params=params, timeout=self._timeout
                )
                response = await self._client.send(request)
            except httpx.HTTPError as exc:
                raise RemoteError("unavailable", f"{what}: {self._host} unreachable: {type(exc).__name__}") from None
            if response.status_code == 401 and replayable:
                challenge = response.headers.get("www-authenticate", "")
                self._tokens.pop(scope, None)
                try:
                    answered = bool(challenge) and await self._answer_challenge(challenge, scope, sent=auth)
                except UpstreamError as exc:
                    kind = "denied" if exc.kind == "denied" else "unavailable"
                    raise RemoteError(kind, f"{what}: {exc.message}", status=exc.status) from None
                if answered:
                    continue
            _raise_for(response, what)
            yield response
            return
        raise RemoteError("denied", f"{what}: the remote registry refused the credentials", status=401)

    def _url(self, path: str) -> str:
        return self._origin + path

    async def check(self, repository: str | None = None) -> None:
        """Reach the registry and authenticate (GET /v2/)."""
        async with self._exchange("GET", self._url("/v2/"), "", "GET /v2/"):
            return

    async def has_blob(self, repository: str, digest: str) -> bool:
        url = self._url(f"/v2/{self._repo(repository)}/blobs/{digest}")
        try:
            async with self._exchange("HEAD", url, self._push_scope(repository), f"HEAD blob {digest}"):
                return True
        except RemoteError as exc:
            if exc.kind == "not_found" and exc.code != "NAME_UNKNOWN":
                return False
            raise

    async def _start_upload(self, repository: str, params: dict[str, str] | None = None) -> httpx.Response:
        url = self._url(f"/v2/{self._repo(repository)}/blobs/uploads/")
        async with self._exchange(
            "POST", url, self._push_scope(repository), "start an upload", params=params, content=b""
        ) as response:
            return response

    async def mount_blob(self, repository: str, digest: str, source_repository: str) -> str | None:
        """Cross-repository mount: None when the registry mounted it (201), else the Location of
        the upload it opened instead (202), for `push_blob`."""
        response = await self._start_upload(repository, {"mount": digest, "from": self._repo(source_repository)})
        if response.status_code == 201:
            return None
        return response.headers.get("location") or ""

    async def push_blob(
        self, repository: str, digest: str, size: int, chunks: AsyncIterable[bytes], *, location: str | None = None
    ) -> None:
        """Upload a blob: open an upload (or use the one at `location`), then one PUT streaming
        `chunks` (`size` bytes)."""
        if not location:
            response = await self._start_upload(repository)
            location = response.headers.get("location")
            if response.status_code == 201:
                return  # the registry already had it
        if not location:
            raise RemoteError("rejected", "the remote registry opened an upload without a Location")
        url = urljoin(self._url(f"/v2/{self._repo(repository)}/blobs/uploads/"), location)
        if urlsplit(url).netloc != self._host:
            raise RemoteError("rejected", "the remote registry sent the upload to another host")
        separator = "&" if "?" in url else "?"
        async with self._exchange(
            "PUT",
            f"{url}{separator}digest={digest}",
            self._push_scope(repository),
            f"upload blob {digest}",
            headers={"content-type": "application/octet-stream", "content-length": str(size)},
            content=chunks,
        ):
            return

    async def has_manifest(self, repository: str, digest: str) -> bool:
        url = self._url(f"/v2/{self._repo(repository)}/manifests/{digest}")
        try:
            async with self._exchange(
                "HEAD", url, self._push_scope(repository), f"HEAD manifest {digest}", headers={"accept": "*/*"}
            ):
                return True
        except RemoteError as exc:
            if exc.kind == "not_found" and exc.code != "NAME_UNKNOWN":
                return False
            raise

    async def put_manifest(self, repository: str, reference: str, media_type: str, body: bytes) -> None:
        url = self._url(f"/v2/{self._repo(repository)}/manifests/{reference}")
        async with self._exchange(
            "PUT",
            url,
            self._push_scope(repository),
            f"put manifest {reference}",
            headers={"content-type": media_type},
            content=body,
        ):
            return


class EcrApi:
    """AWS JSON 1.1 calls to an ECR API endpoint (another Moorage, or ECR), signed with SigV4."""

    TARGET = "AmazonEC2ContainerRegistry_V20150921"

    def __init__(
        self,
        url: str,
        region: str,
        access_key_id: str,
        secret_access_key: str,
        *,
        timeout: float = 30.0,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._url = url.rstrip("/") + "/"
        self._region = region
        self._credentials = AwsCredentials(access_key_id, secret_access_key)
        self._client = client or httpx.AsyncClient(timeout=timeout)
        self._owns_client = client is None
        self._password: tuple[str, float] | None = None  # (registry password, expiry)

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        body = json.dumps(params).encode()
        request = AWSRequest(
            method="POST",
            url=self._url,
            data=body,
            headers={
                "content-type": "application/x-amz-json-1.1",
                "x-amz-target": f"{self.TARGET}.{operation}",
            },
        )
        SigV4Auth(self._credentials, "ecr", self._region).add_auth(request)
        try:
            response = await self._client.post(self._url, content=body, headers=dict(request.headers.items()))
        except httpx.HTTPError as exc:
            raise RemoteError("unavailable", f"{operation}: {self._url} unreachable: {type(exc).__name__}") from None
        if response.status_code >= 400:
            code = _error_code(response)
            if response.status_code == 400 and code in ("AccessDeniedException", "UnrecognizedClientException"):
                raise RemoteError("denied", f"{operation}: {code}", status=400, code=code)
            _raise_for(response, operation)
        result: dict[str, Any] = response.json()
        return result

    async def registry_password(self) -> str:
        """A registry password from GetAuthorizationToken, kept until shortly before it expires."""
        if self._password is not None and self._password[1] > time.time():
            return self._password[0]
        answer = await self.call("GetAuthorizationToken", {})
        data = answer["authorizationData"][0]
        user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
        if user != "AWS" or not password:
            raise RemoteError("rejected", "GetAuthorizationToken answered an unexpected token")
        expires = float(data.get("expiresAt") or time.time() + 3600)
        self._password = (password, min(expires - 300, time.time() + 6 * 3600))
        return password

    def forget_password(self) -> None:
        self._password = None

    async def create_repository(self, name: str) -> bool:
        """CreateRepository; False when it exists already."""
        try:
            await self.call("CreateRepository", {"repositoryName": name})
        except RemoteError as exc:
            if exc.code == "RepositoryAlreadyExistsException":
                return False
            raise
        return True
