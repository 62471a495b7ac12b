"""The pull-through cache: rules (ECR's Create/Describe/Update/Delete/ValidatePullThroughCacheRule)
and, for a rule, the upstream client that reads its registry.

Rules follow semantics.md §11.1: the ECR prefix is stored without its implied trailing `/`;
`upstreamRegistry` is inferred from the URL's host when it is one of ECR's known upstreams and
left out otherwise (any OCI registry by `https://host[:port][/path]`; `http://` only with
`[pull_through_cache] allow_http_upstreams`); at most 50 rules per registry.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace
from urllib.parse import urlsplit

from moorage.clock import Clock
from moorage.config import PullThroughCacheSettings
from moorage.errors import (
    InvalidRequestError,
    LimitExceededError,
    PullThroughRuleExistsError,
    PullThroughRuleNotFoundError,
    UnsupportedUpstreamError,
)
from moorage.metadata import MetadataStore, PullThroughRule
from moorage.model import RegistryRef
from moorage.upstream import UpstreamClient, UpstreamError

__all__ = ["MAX_RULES", "PullThroughCache", "known_upstream"]

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


class PullThroughCache:
    def __init__(self, metadata: MetadataStore, clock: Clock, settings: PullThroughCacheSettings) -> None:
        self._metadata = metadata
        self._clock = clock
        self._settings = settings

    @property
    def settings(self) -> PullThroughCacheSettings:
        return self._settings

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

    def client(self, rule: PullThroughRule) -> UpstreamClient:
        return UpstreamClient(self.base_url(rule.upstream_url), timeout=self._settings.upstream_timeout.total_seconds())

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
