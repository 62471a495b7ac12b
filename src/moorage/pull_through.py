"""The pull-through cache: rules (ECR's Create/Describe/Update/Delete/ValidatePullThroughCacheRule)
and, for a rule, the upstream client that reads its registry.

Rules follow semantics.md §11.1: the ECR prefix is stored without its implied trailing `/`;
`upstreamRegistry` is inferred from the URL's host when it is one of ECR's known upstreams and
left out otherwise (any OCI registry by `https://host[:port][/path]`; `http://` only with
`[pull_through_cache] allow_http_upstreams`); at most 50 rules per registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import NoReturn, Protocol
from urllib.parse import urlsplit

from moorage import manifests as mf
from moorage.clock import Clock
from moorage.config import PullThroughCacheSettings
from moorage.errors import (
    BlobUnknownError,
    DigestMismatchError,
    InvalidRequestError,
    LimitExceededError,
    ManifestUnknownError,
    MoorageError,
    PullThroughRuleExistsError,
    PullThroughRuleNotFoundError,
    RepositoryAlreadyExistsError,
    RepositoryNotFoundError,
    SecretNotFoundError,
    UnsupportedUpstreamError,
    UpstreamAccessDeniedError,
    UpstreamTooManyRequestsError,
    UpstreamUnavailableError,
)
from moorage.events import Event, pull_through_cache_action
from moorage.metadata import MetadataStore, PullThroughRule
from moorage.model import Digest, RegistryRef, Repository, RepositoryName, UploadSession
from moorage.registry import READ_CACHE_SECONDS, ReadCache, Registry
from moorage.uploads import Uploads
from moorage.upstream import CredentialProvider, Credentials, UpstreamClient, UpstreamError, UpstreamManifest

__all__ = [
    "MAX_RULES",
    "CachePulls",
    "CachedBlob",
    "PullThroughCache",
    "cached_repository",
    "known_upstream",
    "match_rule",
]

MAX_RULES = 50

_KNOWN_HOSTS = {
    "public.ecr.aws": "ecr-public",
    "registry.k8s.io": "k8s",
    "quay.io": "quay",
    "registry-1.docker.io": "docker-hub",
    "ghcr.io": "github-container-registry",
    "registry.gitlab.com": "gitlab-container-registry",
    "cgr.dev": "chainguard",
}
_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com$")
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:\d{1,5})?$")


def known_upstream(host: str) -> str | None:
    """ECR's `upstreamRegistry` name for a host, None for any other registry."""
    if host in _KNOWN_HOSTS:
        return _KNOWN_HOSTS[host]
    if host.endswith(".azurecr.io"):
        return "azure-container-registry"
    if _ECR_HOST.match(host):
        return "ecr"
    return None


class RuleCredentials(Protocol):
    """What a rule's `credentialArn` holds: `username` and `accessToken` (and, for `ecr`
    upstreams, `access_key_id` / `secret_access_key`, carried but not used: no SigV4 upstream yet)."""

    @property
    def username(self) -> str | None: ...
    @property
    def access_token(self) -> str | None: ...
    @property
    def access_key_id(self) -> str | None: ...
    @property
    def secret_access_key(self) -> str | None: ...


class CredentialSource(Protocol):
    """Where rules' credentials are read (`secrets.Secrets`: the Secrets Manager face's store)."""

    async def exists(self, registry: RegistryRef, arn: str) -> bool: ...

    async def pull_through_credentials(self, registry: RegistryRef, arn: str) -> RuleCredentials:
        """Raises MoorageError when the secret is missing or holds no credentials."""
        ...


class PullThroughCache:
    def __init__(
        self,
        metadata: MetadataStore,
        clock: Clock,
        settings: PullThroughCacheSettings,
        *,
        credentials: CredentialSource | None = None,
    ) -> None:
        self._credentials = credentials
        self._metadata = metadata
        self._clock = clock
        self._settings = settings
        # The rules every /v2/ manifest read consults; see Registry's read cache for the bound.
        self._rules: ReadCache[RegistryRef, Sequence[PullThroughRule]] = ReadCache(READ_CACHE_SECONDS)
        metadata.on_writes_committed(self._rules.forget)

    @property
    def settings(self) -> PullThroughCacheSettings:
        return self._settings

    # -- credentials (credentialArn → the secret's username / accessToken) -------------------

    async def _check_secret(self, registry: RegistryRef, arn: str) -> None:
        if self._credentials is not None and not await self._credentials.exists(registry, arn):
            raise SecretNotFoundError(f"The secret '{arn}' in credentialArn does not exist")

    def _credential_provider(self, rule: PullThroughRule) -> CredentialProvider | None:
        if self._credentials is None or rule.credential_arn is None:
            return None
        return _SecretCredentials(self._credentials, rule.registry, rule.credential_arn)

    def base_url(self, url: str) -> str:
        """`scheme://host[:port][/path]` for an upstreamRegistryUrl, or UnsupportedUpstreamError."""
        full = url if "://" in url else f"https://{url}"
        parts = urlsplit(full)
        if parts.scheme not in ("https", "http") or not parts.netloc or not _HOST.match(parts.netloc):
            raise UnsupportedUpstreamError(f"The upstream registry URL '{url}' is not supported")
        if parts.query or parts.fragment or "@" in parts.netloc:
            raise UnsupportedUpstreamError(f"The upstream registry URL '{url}' is not supported")
        if parts.scheme == "http" and not self._settings.allow_http_upstreams:
            raise UnsupportedUpstreamError(
                f"The upstream registry URL '{url}' uses http, "
                "which [pull_through_cache] allow_http_upstreams does not allow"
            )
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"

    async def create(
        self,
        registry: RegistryRef,
        prefix: str,
        upstream_url: str,
        *,
        upstream_registry: str | None = None,
        upstream_prefix: str | None = None,
        credential_arn: str | None = None,
        custom_role_arn: str | None = None,
    ) -> PullThroughRule:
        prefix = _normal(prefix)
        host = urlsplit(self.base_url(upstream_url)).netloc
        inferred = known_upstream(host)
        if upstream_registry is not None and inferred is not None and upstream_registry != inferred:
            raise UnsupportedUpstreamError(
                f"The upstream registry URL '{upstream_url}' is not the URL of upstream registry '{upstream_registry}'"
            )
        if upstream_prefix is not None and _normal(upstream_prefix) != "ROOT" and prefix == "ROOT":
            raise InvalidRequestError(
                "Invalid parameter at 'upstreamRepositoryPrefix': "
                "it can only be set when ecrRepositoryPrefix is not ROOT"
            )
        if credential_arn is not None:
            _check_secret_region(credential_arn, registry)
            await self._check_secret(registry, credential_arn)
        rule = PullThroughRule(
            registry,
            prefix,
            upstream_url,
            upstream_registry or inferred,
            _normal(upstream_prefix) if upstream_prefix else "ROOT",
            credential_arn,
            custom_role_arn,
            self._clock.now(),
        )
        async with self._metadata.transaction(write=True) as tx:
            existing = await tx.pull_through.list(registry)
            if any(r.prefix == prefix for r in existing):
                raise PullThroughRuleExistsError(prefix, registry.account_id)
            if len(existing) >= MAX_RULES:
                raise LimitExceededError(
                    f"The maximum number of pull through cache rules ({MAX_RULES}) for the registry has been reached"
                )
            if not await tx.pull_through.insert(rule):
                raise PullThroughRuleExistsError(prefix, registry.account_id)
        return rule

    async def rules(self, registry: RegistryRef) -> Sequence[PullThroughRule]:
        async with self._metadata.transaction() as tx:
            return await tx.pull_through.list(registry)

    async def rules_for_pull(self, registry: RegistryRef) -> Sequence[PullThroughRule]:
        """`rules`, from the read cache: a rule made or deleted through another process applies
        to this one's pulls within READ_CACHE_SECONDS (through this process: at once)."""
        cached = self._rules.get(registry)
        if cached is not None:
            return cached
        started = self._rules.begin()
        found = tuple(await self.rules(registry))
        self._rules.put(registry, found, started)
        return found

    async def describe(self, registry: RegistryRef, prefixes: Sequence[str] | None) -> Sequence[PullThroughRule]:
        rules = await self.rules(registry)
        if not prefixes:
            return rules
        by_prefix = {r.prefix: r for r in rules}
        found = []
        for given in prefixes:
            rule = by_prefix.get(_normal(given))
            if rule is None:
                raise PullThroughRuleNotFoundError(given, registry.account_id)
            if rule not in found:
                found.append(rule)
        return found

    async def get(self, registry: RegistryRef, prefix: str) -> PullThroughRule:
        return (await self.describe(registry, [prefix]))[0]

    async def update(
        self, registry: RegistryRef, prefix: str, credential_arn: str | None, custom_role_arn: str | None
    ) -> PullThroughRule:
        if credential_arn is not None:
            _check_secret_region(credential_arn, registry)
            await self._check_secret(registry, credential_arn)
        async with self._metadata.transaction(write=True) as tx:
            current = next((r for r in await tx.pull_through.list(registry) if r.prefix == _normal(prefix)), None)
            if current is None:
                raise PullThroughRuleNotFoundError(prefix, registry.account_id)
            rule = await tx.pull_through.update(
                registry,
                current.prefix,
                credential_arn if credential_arn is not None else current.credential_arn,
                custom_role_arn if custom_role_arn is not None else current.custom_role_arn,
                self._clock.now(),
            )
        assert rule is not None
        return rule

    async def delete(self, registry: RegistryRef, prefix: str) -> PullThroughRule:
        async with self._metadata.transaction(write=True) as tx:
            rule = await tx.pull_through.delete(registry, _normal(prefix))
        if rule is None:
            raise PullThroughRuleNotFoundError(prefix, registry.account_id)
        return rule

    async def record(self, event: Event, *, checked: tuple[str, str] | None = None) -> None:
        """Store the event (and, in the same transaction, the `checked` kv pair when given)."""
        async with self._metadata.transaction(write=True) as tx:
            await tx.events.add([event])
            if checked is not None:
                await tx.kv.put(*checked)

    async def kv_get(self, key: str) -> str | None:
        async with self._metadata.transaction() as tx:
            return await tx.kv.get(key)

    async def kv_put(self, key: str, value: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(key, value)

    def endpoint(self, base_url: str) -> str:
        """The address to contact for an upstream base URL: `[pull_through_cache.upstream_endpoints]`
        maps a host to another `scheme://host[:port][/path]` (the URL's own path is kept after it)."""
        parts = urlsplit(base_url)
        mapped = self._settings.upstream_endpoints.get(parts.netloc)
        if mapped is None:
            return base_url
        return mapped.rstrip("/") + parts.path

    def client(self, rule: PullThroughRule) -> UpstreamClient:
        """A client of the rule's upstream (at its `upstream_endpoints` address, if mapped); the
        rule's secret is read when the upstream first asks for credentials, and again when the
        upstream refuses them (a rotated secret)."""
        return UpstreamClient(
            self.endpoint(self.base_url(rule.upstream_url)),
            self._credential_provider(rule),
            timeout=self._settings.upstream_timeout.total_seconds(),
        )

    async def validate(self, registry: RegistryRef, prefix: str) -> tuple[PullThroughRule, str | None]:
        """Reach the rule's upstream and authenticate: (rule, None) when that works, else the
        failure reason. Never raises for the upstream's answer."""
        rule = await self.get(registry, prefix)
        client = self.client(rule)
        try:
            await client.check()
        except UpstreamError as exc:
            return rule, _failure(exc)
        finally:
            await client.aclose()
        return replace(rule), None


class _SecretCredentials(CredentialProvider):
    """A rule's `credentialArn`, read when the upstream asks (and again when it refuses)."""

    def __init__(self, source: CredentialSource, registry: RegistryRef, arn: str) -> None:
        self._source, self._registry, self._arn = source, registry, arn

    async def get(self) -> Credentials | None:
        try:
            found = await self._source.pull_through_credentials(self._registry, self._arn)
        except MoorageError as exc:
            raise UpstreamError("denied", f"the credentials of the rule cannot be read: {exc.message}") from None
        if found.username is None or found.access_token is None:
            if found.access_key_id is not None:
                return None  # an access key (ecr upstreams) is no Basic credential
            raise UpstreamError("denied", "the rule's secret has no username and accessToken")
        return Credentials(found.username, found.access_token)


def _failure(exc: UpstreamError) -> str:
    if exc.kind == "denied":
        return (
            "The authentication to the upstream registry failed. Verify that the credentials provided in the pull "
            "through cache rule are correct, and try again."
        )
    if exc.kind == "too_many":
        return "The upstream registry answered too many requests (429)."
    return f"The upstream registry could not be reached: {exc.message}"


def _normal(prefix: str) -> str:
    return prefix if prefix == "ROOT" else prefix.rstrip("/")


def _check_secret_region(arn: str, registry: RegistryRef) -> None:
    parts = arn.split(":")
    if len(parts) < 7 or parts[3] != registry.region or parts[4] != registry.account_id:
        raise InvalidRequestError(
            "The secret in credentialArn must be in the same account and region as the pull through cache rule"
        )


# -- pulls ------------------------------------------------------------------------------------------


def cached_repository(registry: RegistryRef, name: RepositoryName, now: datetime) -> Repository:
    """The repository a pull-through import creates: ECR's defaults (MUTABLE, AES256, no
    policies). Repository creation templates (PULL_THROUGH_CACHE) plug in here."""
    return Repository(registry, name, now)


def match_rule(rules: Sequence[PullThroughRule], name: str) -> tuple[PullThroughRule, str] | None:
    """The rule for a repository name (longest `/`-boundary prefix, else ROOT) and the upstream
    repository path it maps to. For a Docker Hub rule, a single path component (`hub/alpine`)
    maps to the official image `library/alpine`, as Docker Hub's own clients do; the cached
    repository keeps the name the client asked for. ECR only accepts `hub/library/alpine`,
    which maps unchanged."""
    best: PullThroughRule | None = None
    for rule in rules:
        if rule.prefix != "ROOT" and name.startswith(rule.prefix + "/"):
            if best is None or best.prefix == "ROOT" or len(rule.prefix) > len(best.prefix):
                best = rule
        elif rule.prefix == "ROOT" and best is None:
            best = rule
    if best is None:
        return None
    rest = name if best.prefix == "ROOT" else name[len(best.prefix) + 1 :]
    if best.upstream_prefix != "ROOT":
        rest = f"{best.upstream_prefix}/{rest}"
    elif best.upstream_registry == "docker-hub" and "/" not in rest:
        rest = f"library/{rest}"
    return best, rest


_FAILURE_CODES = {
    "too_many": "UpstreamTooManyRequests",
    "denied": "UpstreamAccessDenied",
    "unavailable": "UpstreamUnavailable",
    "not_found": "ImageNotFound",
}


def _raise_for(exc: UpstreamError, reference: str) -> NoReturn:
    if exc.kind == "not_found":
        raise ManifestUnknownError("Requested image not found", reference)
    if exc.kind == "too_many":
        raise UpstreamTooManyRequestsError("too_many", "The upstream registry answered too many requests")
    if exc.kind == "denied":
        raise UpstreamAccessDeniedError("denied", _failure(exc))
    raise UpstreamUnavailableError("unavailable", f"The upstream registry is unavailable: {exc.message}")


class CachePulls:
    """What a pull of `<prefix>/<path>` does: import what is not cached, refresh tags checked
    longer than `refresh_interval` ago, serve stale when the upstream fails.

    A manifest import stores the manifest (and an index's children) at once, verified by digest;
    its blobs are fetched when first pulled (`blob`): one upstream fetch per blob and repository
    at a time in this process (`_BlobFlight`), written through the upload path (live sha256,
    staged, published by rename only when the digest matches, so a failed or killed fetch leaves
    nothing visible). The request that started the fetch is answered with the bytes as they
    arrive (its last 64 KiB are held back until the digest is verified, so a client never receives
    a whole wrong blob); requests that come while it runs wait for the commit and are then
    served from the store. Nothing is buffered beyond a few chunks."""

    def __init__(self, cache: PullThroughCache, registry: Registry, uploads: Uploads, clock: Clock) -> None:
        self._cache = cache
        self._registry = registry
        self._uploads = uploads
        self._clock = clock
        self._flights: dict[tuple[str, ...], asyncio.Future[None]] = {}
        self._blob_flights: dict[tuple[str, ...], _BlobFlight] = {}
        self._clients: dict[tuple[object, ...], UpstreamClient] = {}
        self.metrics: dict[str, int] = {"hit": 0, "miss": 0, "stale": 0}
        # (kind "manifest" | "blob", result "hit" | "miss" | "stale"): the Prometheus counter
        self.observe: Callable[[str, str], None] = lambda kind, result: None

    def _client(self, rule: PullThroughRule) -> UpstreamClient:
        """One upstream client per rule version, kept: its connections and tokens serve every
        manifest and blob fetch of the rule (a blob GET reuses the manifest's bearer token)."""
        key = (rule.registry, rule.prefix, rule.upstream_url, rule.credential_arn, rule.updated_at or rule.created_at)
        client = self._clients.get(key)
        if client is None:
            if len(self._clients) >= _MAX_CLIENTS:  # forget the oldest (in-flight users keep theirs)
                self._clients.pop(next(iter(self._clients)))
            client = self._clients[key] = self._cache.client(rule)
        return client

    def _count(self, result: str, kind: str = "manifest") -> None:
        if kind == "manifest":
            self.metrics[result] += 1
        self.observe(kind, result)

    async def _once(self, key: tuple[str, ...], work: Callable[[], Awaitable[None]]) -> None:
        flight = self._flights.get(key)
        if flight is not None:
            await asyncio.shield(flight)
            return
        flight = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            await work()
            flight.set_result(None)
        except BaseException as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: waiters re-raise it
            raise
        finally:
            del self._flights[key]

    async def prepare(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        reference: str,
        allow: Callable[[str], Awaitable[bool]] | None = None,
    ) -> str | None:
        """Make `name:reference` pullable when a rule covers `name`: None (no rule), "hit",
        "miss" (imported now) or "stale" (the upstream failed; the cached image is served).
        `allow(action)` says whether the caller may `ecr:CreateRepository` (needed when the
        repository is missing; else NAME_UNKNOWN) and `ecr:BatchImportUpstreamImage` (needed to
        import; else "Requested image not found"), as ECR requires (§11.2)."""
        matched = match_rule(await self._cache.rules_for_pull(registry), str(name))
        if matched is None:
            return None
        rule, upstream_name = matched
        try:
            image = await self._registry.get_manifest(registry, name, reference, with_body=False)
        except (RepositoryNotFoundError, ManifestUnknownError):
            image = None
        is_digest = Digest.looks_like(reference)
        checked_key = f"ptc/checked/{registry.account_id}/{registry.region}/{name}:{reference}"
        if image is None and allow is not None:
            try:
                await self._registry.get_repository(registry, name)
            except RepositoryNotFoundError:
                if not await allow("ecr:CreateRepository"):
                    raise
            if not await allow("ecr:BatchImportUpstreamImage"):
                raise ManifestUnknownError("Requested image not found", reference)
        client = self._client(rule)
        if image is not None:
            if is_digest:
                state = "hit"
            else:
                checked = await self._cache.kv_get(checked_key)
                interval = self._cache.settings.refresh_interval.total_seconds()
                if checked is not None and self._clock.now().timestamp() - float(checked) < interval:
                    state = "hit"
                else:
                    try:
                        digest = await client.head_manifest(upstream_name, reference)
                    except UpstreamError:
                        self._count("stale")
                        return "stale"
                    if digest == str(image.digest):
                        await self._cache.kv_put(checked_key, str(self._clock.now().timestamp()))
                        state = "hit"
                    else:
                        state = "miss"
            if state == "hit":
                self._count("hit")
                return state
        imported: list[str] = []
        try:
            await self._once(
                ("m", registry.account_id, registry.region, str(name), reference),
                lambda: self._import(registry, name, client, upstream_name, reference, imported),
            )
        except UpstreamError as exc:
            if image is not None:
                self._count("stale")
                return "stale"
            await self._cache.record(
                pull_through_cache_action(
                    registry,
                    str(name),
                    rule.prefix,
                    rule.upstream_url,
                    self._clock.now(),
                    tag=None if is_digest else reference,
                    digest=reference if is_digest else None,
                    failure=(_FAILURE_CODES.get(exc.kind, "UpstreamUnavailable"), exc.message),
                )
            )
            _raise_for(exc, reference)
        if not imported:  # a concurrent pull imported it
            imported.append(str((await self._registry.get_manifest(registry, name, reference, with_body=False)).digest))
        now = self._clock.now()
        await self._cache.record(
            pull_through_cache_action(
                registry,
                str(name),
                rule.prefix,
                rule.upstream_url,
                now,
                tag=None if is_digest else reference,
                digest=imported[0],
            ),
            checked=None if is_digest else (checked_key, str(now.timestamp())),
        )
        self._count("miss")
        return "miss"

    async def _import(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        client: UpstreamClient,
        upstream_name: str,
        reference: str,
        imported: list[str],
    ) -> None:
        """Store `upstream_name:reference` (an index with its children) and append its digest
        to `imported`. The repository is created while the upstream answers."""
        fetching = asyncio.ensure_future(client.get_manifest(upstream_name, reference))
        try:
            try:
                await self._registry.get_repository(registry, name)
            except RepositoryNotFoundError:
                with contextlib.suppress(RepositoryAlreadyExistsError):
                    await self._registry.create_repository(cached_repository(registry, name, self._clock.now()))
        except BaseException:
            fetching.cancel()
            with contextlib.suppress(BaseException):
                await fetching
            raise
        manifest = await fetching
        parsed = mf.parse(manifest.body, manifest.media_type or None)
        for child in parsed.manifests:
            child_manifest = await client.get_manifest(upstream_name, str(child.digest))
            await self._store(registry, name, client, upstream_name, child_manifest, None)
        await self._store(
            registry, name, client, upstream_name, manifest, None if Digest.looks_like(reference) else reference
        )
        imported.append(manifest.digest)

    async def _store(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        client: UpstreamClient,
        upstream_name: str,
        manifest: UpstreamManifest,
        tag: str | None,
    ) -> None:
        await self._registry.put_manifest(
            registry,
            name,
            manifest.body,
            manifest.media_type or None,
            tag=tag,
            digest=Digest.parse(manifest.digest),
            require_blobs=False,
        )

    # -- blobs ---------------------------------------------------------------------------------

    async def blob(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        *,
        stream: bool = True,
        on_bytes: Callable[[int], None] | None = None,
    ) -> CachedBlob | None:
        """A blob pull in a repository a rule covers: None when no rule covers it (or the blob is
        neither linked nor referenced by one of its manifests: the caller answers as usual);
        else `CachedBlob("hit")` when it is linked, or the blob fetched from the upstream now:
        with `stream` and when this call starts the fetch, `chunks` are its bytes as they arrive;
        otherwise this waits until the blob is published (`chunks` None: read it from the store).
        Raises BlobUnknownError (not upstream) or the Upstream*Error of the failure."""
        matched = match_rule(await self._cache.rules_for_pull(registry), str(name))
        if matched is None:
            return None
        try:
            await self._registry.stat_blob(registry, name, digest)
            self._count("hit", "blob")
            return CachedBlob("hit", None, None)
        except RepositoryNotFoundError:
            return None
        except BlobUnknownError:
            pass
        if not await self._registry.blob_referenced(registry, name, digest):
            return None
        rule, upstream_name = matched
        key = (registry.account_id, registry.region, str(name), str(digest))
        flight = self._blob_flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _BlobFlight(stream, on_bytes)
            self._blob_flights[key] = flight
            flight.started(
                asyncio.create_task(self._fetch_blob(key, flight, rule, registry, name, upstream_name, digest))
            )
        self._count("miss", "blob")
        if leader and stream:
            await flight.ready.wait()
            if flight.error is not None:
                _raise_blob(flight.error, digest)
            return CachedBlob("miss", flight.size, flight.follow(digest))
        try:
            await asyncio.shield(flight.task)
        except Exception as exc:
            _raise_blob(exc, digest)
        return CachedBlob("miss", None, None)

    async def _fetch_blob(
        self,
        key: tuple[str, ...],
        flight: _BlobFlight,
        rule: PullThroughRule,
        registry: RegistryRef,
        name: RepositoryName,
        upstream_name: str,
        digest: Digest,
    ) -> None:
        client = self._client(rule)
        # The upload session (a database write, a staging file) is opened while the upstream
        # answers, not after: both are on the way to the client's first byte.
        opening = asyncio.ensure_future(self._uploads.start(registry, name))
        session: UploadSession | None = None
        try:
            async with client.blob(upstream_name, str(digest)) as blob:
                session = await opening
                flight.size = blob.size
                flight.ready.set()
                await self._uploads.complete(
                    registry, name, session.upload_id, digest, flight.tee(blob.chunks), on_verified=flight.matched
                )
        except BaseException as exc:
            flight.error = exc
            if session is None:
                with contextlib.suppress(Exception):
                    session = await opening
            if session is not None:  # nothing staged stays behind
                await self._uploads.cancel(registry, name, session.upload_id, missing_ok=True)
            raise
        finally:
            flight.ready.set()
            if self._blob_flights.get(key) is flight:
                del self._blob_flights[key]

    async def warm(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        reference: str,
        *,
        on_total: Callable[[int], None] | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> str:
        """Pre-fetch an image: its manifest (an index with its children) and every blob, as
        pulls would. `on_total` is told the bytes the image's blobs add up to, `on_bytes` how
        many arrive. The manifest's cache result ("hit", "miss", "stale"); raises
        ManifestUnknownError when no rule covers the repository."""
        state = await self.prepare(registry, name, reference)
        if state is None:
            raise ManifestUnknownError(f"no pull through cache rule covers repository '{name}'", reference)
        image = await self._registry.get_manifest(registry, name, reference)
        parsed = mf.parse(image.body or b"", image.media_type)
        documents = [parsed]
        for child in parsed.manifests:
            found = await self._registry.get_manifest(registry, name, str(child.digest))
            documents.append(mf.parse(found.body or b"", found.media_type))
        descriptors = {d.digest: d for doc in documents for d in (doc.config, *doc.layers) if d is not None}
        if on_total is not None:
            on_total(sum(d.size for d in descriptors.values()))
        for descriptor in descriptors.values():
            cached = await self.blob(registry, name, descriptor.digest, stream=False, on_bytes=on_bytes)
            if on_bytes is not None and cached is not None and cached.state == "hit":
                on_bytes(descriptor.size)
        return state


@dataclass(frozen=True, slots=True)
class CachedBlob:
    """A blob pull the cache answered: `state` "hit" (linked) or "miss" (fetched now); with
    `chunks`, the bytes to send (`size` from the upstream's Content-Length, None when it gave
    none); without, the blob is in the store."""

    state: str
    size: int | None
    chunks: AsyncGenerator[bytes, None] | None


_MAX_CLIENTS = 64
_LAG_CHUNKS = 4  # chunks (1 MiB each) the streaming client may lag behind the upstream
_HELD_TAIL = 64 * 1024  # the blob's last bytes, sent to the streaming client once the digest matched


class _BlobFlight:
    """One upstream fetch of one blob in this process, and the client it streams to.

    The fetch hands each chunk to the client before it hashes and writes it (and lets the
    client's task send it first), so the client's receiving overlaps the server's hashing and
    writing; the client's first byte goes out with the upstream's first chunk."""

    def __init__(self, stream: bool, on_bytes: Callable[[int], None] | None) -> None:
        self.ready = asyncio.Event()  # the upstream answered (size known) or the fetch failed
        self.verified = asyncio.Event()  # every byte arrived and matched the digest (publishing now)
        self.size: int | None = None
        self.error: BaseException | None = None
        self.listening = stream  # a streaming client takes the chunks (until it is gone)
        self._chunks: deque[bytes] = deque()
        self._client_waits: asyncio.Future[None] | None = None  # for a chunk or the fetch's end
        self._fetch_waits: asyncio.Future[None] | None = None  # for the client to take a chunk
        self.on_bytes = on_bytes
        self.task: asyncio.Task[None]

    def started(self, task: asyncio.Task[None]) -> None:
        self.task = task
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        _retrieve(task)
        _wake(self._client_waits)

    def matched(self) -> None:
        """Every byte arrived and matched the digest (the upload publishes the blob now)."""
        self.verified.set()
        _wake(self._client_waits)

    async def tee(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """The upstream's chunks on their way to the upload, handed to the streaming client
        while it listens (a slow client slows the fetch down; a gone one no longer does)."""
        loop = asyncio.get_running_loop()
        async for chunk in chunks:
            if self.listening:
                self._chunks.append(chunk)
                _wake(self._client_waits)
                if len(self._chunks) >= _LAG_CHUNKS:
                    self._fetch_waits = loop.create_future()
                    await self._fetch_waits
                else:
                    await asyncio.sleep(0)  # the client's task sends it first
            if self.on_bytes is not None:
                self.on_bytes(len(chunk))
            yield chunk

    async def follow(self, digest: Digest) -> AsyncGenerator[bytes, None]:
        """The streaming client's body: the chunks as the fetch reads them, the blob's last
        bytes only once every byte matched the digest (a failure cuts the body short instead).
        With no size from the upstream, the last chunk is known only at the end: each chunk is
        held until the next one comes."""
        loop = asyncio.get_running_loop()
        held: bytes | None = None
        taken = 0
        try:
            while True:
                if self._chunks:
                    chunk = self._chunks.popleft()
                    _wake(self._fetch_waits)
                    taken += len(chunk)
                    if self.size is None:
                        chunk, held = held or b"", chunk
                    elif taken >= self.size:  # the last bytes: now the digest check
                        cut = max(len(chunk) - _HELD_TAIL, 0)
                        chunk, held = chunk[:cut], chunk[cut:]
                    if chunk:
                        yield chunk
                    if held is not None and self.size is not None:
                        break
                    continue
                if self.task.done() or self.verified.is_set():
                    break
                self._client_waits = loop.create_future()
                await self._client_waits
            if not self.verified.is_set():
                verified = asyncio.ensure_future(self.verified.wait())
                await asyncio.wait({verified, self.task}, return_when=asyncio.FIRST_COMPLETED)
                verified.cancel()
            if not self.verified.is_set():
                try:
                    self.task.result()
                except BaseException as exc:  # the fetch's failure: the response ends short (or, when
                    _raise_blob(exc, digest)  # nothing was sent yet, is answered as that failure)
                _raise_blob(UpstreamError("unavailable", "the upstream blob could not be verified"), digest)
            if held:
                yield held
        finally:
            self.listening = False
            self._chunks.clear()
            _wake(self._fetch_waits)  # a fetch waiting to hand us a chunk goes on without us


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()  # waiters re-raise it; never "exception was never retrieved"


def _raise_blob(exc: BaseException, digest: Digest) -> NoReturn:
    if isinstance(exc, UpstreamError):
        if exc.kind == "not_found":
            raise BlobUnknownError(str(digest)) from None
        _raise_for(exc, str(digest))
    if isinstance(exc, DigestMismatchError):
        raise UpstreamUnavailableError(
            "unavailable", f"the upstream registry sent a blob that does not match its digest {digest}"
        ) from None
    if isinstance(exc, asyncio.CancelledError):
        raise UpstreamUnavailableError("unavailable", "the upstream fetch was cancelled") from None
    raise exc
