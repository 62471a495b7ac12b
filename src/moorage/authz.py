"""Authorization: every ECR API operation and every `/v2/` request is checked here, in one place,
before anything happens.

    EcrApi  ─► ecr_needs(operation, params)            ┐
    OciApi  ─► oci_needs(route, method, query, body)    ┴─► Authorizer.check(principal, origin, needs)
                                                              │  PolicyStore (per-process cache)
                                                              ▼
        moorage.policy.decide(identity = the user's policies,
                              resource = [the repository's policy, the registry's policy])

A `Need` is one IAM action on one resource, with the registry whose policies apply. ECR's
mapping (semantics §7.1, SAR): repository operations act on the repository ARN
`arn:aws:ecr:<region>:<account>:repository/<name>`; DescribeRepositories without names (and the
`/v2/_catalog` listing) on `…:repository/*`; registry-level operations (DescribeRegistry, account
settings, registry policy, replication, pull-through cache, templates, …) have no resource type in
IAM and act on `*`; ListImageReferrers is `ecr:BatchGetImage`; CreateRepository with tags also
needs `ecr:TagResource`; GetAuthorizationToken acts on `*` and only identity policies count.

Who may do what:
- The account root has full rights in its own account unless a resource policy explicitly denies
  it. A user has only what policies grant: its identity policies (`moorage admin
  attach-user-policy`) or, within its own account, a repository / registry policy naming it.
- Another account's principal needs an Allow from the resource side (repository or registry
  policy) AND from its own identity side (its root has that implicitly).
- The registry policy applies to every ECR action when the registry's REGISTRY_POLICY_SCOPE is V2
  (the default); a V1 registry applies it only to ecr:CreateRepository, ecr:ReplicateImage and
  ecr:BatchImportUpstreamImage.

Caching: parsed policies, the registry's scope and the repository's resource tags are cached per
process for POLICY_CACHE_SECONDS (1 s). Changes made through this process (Set/Delete repository
policy, Put/Delete registry policy, PutAccountSetting, Create/DeleteRepository, Tag/UntagResource)
drop the affected entries at once; changes made by another worker, replica or `moorage admin`
(identity policies) take effect within that TTL. The account root acting in its own registry
costs one dictionary look-up when the registry has no registry policy and no repository policy.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

from moorage.auth import Principal
from moorage.clock import Clock
from moorage.errors import AccessDeniedError, RepositoryNotFoundError
from moorage.metadata import MetadataStore
from moorage.model import RegistryRef, RepositoryName, parse_repository_name
from moorage.policy import (
    ContextValue,
    Decision,
    PolicyDocument,
    PolicyKind,
    RequestContext,
    access_denied_message,
    decide,
    parse_policy,
)
from moorage.registry import Registry
from moorage.templates import Templates

__all__ = [
    "ECR_RULES",
    "INVALIDATING_OPERATIONS",
    "OCI_ACTIONS",
    "POLICY_CACHE_SECONDS",
    "REGISTRY_POLICY_V1_APPLIES",
    "REPOSITORY_ONLY_INVALIDATIONS",
    "Authorizer",
    "Need",
    "Origin",
    "Outcome",
    "PolicyStore",
    "RegistryPolicies",
    "RepositoryFacts",
    "Rule",
    "ecr_needs",
    "oci_needs",
    "on_registry",
    "on_repository",
    "repository_arn",
]

log = logging.getLogger("moorage.authz")

POLICY_CACHE_SECONDS = 1.0
"""How long a process trusts what it read about policies, scopes and resource tags."""

REGISTRY_POLICY_V1_APPLIES = frozenset({"ecr:createrepository", "ecr:replicateimage", "ecr:batchimportupstreamimage"})
"""The only actions a registry policy governs in a registry whose REGISTRY_POLICY_SCOPE is V1."""

_ARN_RE = re.compile(r"arn:aws[a-z-]*:ecr:([a-z0-9-]+):([0-9]{12}):repository/(.+)")


# --------------------------------------------------------------------------------------------
# What a request needs.


@dataclass(frozen=True, slots=True)
class Origin:
    """Facts about the connection a request came on (condition keys aws:SourceIp, aws:SecureTransport)."""

    source_ip: str | None = None
    secure: bool = False

    @classmethod
    def of(cls, scope: Mapping[str, Any]) -> Origin:
        client = scope.get("client")
        return cls(str(client[0]) if client else None, scope.get("scheme") == "https")


@dataclass(frozen=True, slots=True)
class Need:
    """One IAM action on one resource. `registry` is whose policies apply; `repository` (when the
    resource is one repository) selects its policy and resource tags. `identity_only`: resource
    policies neither allow nor deny it (GetAuthorizationToken)."""

    action: str
    registry: RegistryRef
    resource: str
    repository: RepositoryName | None = None
    identity_only: bool = False
    request_tags: tuple[tuple[str, str], ...] = ()
    tag_keys: tuple[str, ...] | None = None


def repository_arn(registry: RegistryRef, name: str) -> str:
    return f"arn:aws:ecr:{registry.region}:{registry.account_id}:repository/{name}"


def on_repository(action: str, registry: RegistryRef, name: RepositoryName, **extra: Any) -> Need:
    return Need(action, registry, repository_arn(registry, name), name, **extra)


def on_registry(action: str, registry: RegistryRef) -> Need:
    return Need(action, registry, "*")


Scope: TypeAlias = Literal["repository", "repositories", "resource-arn", "registry", "account"]


@dataclass(frozen=True, slots=True)
class Rule:
    """How an ECR operation is authorized.

    scope        repository    `repositoryName` (+ `registryId`) → the repository ARN
                 repositories  each of `repositoryNames`, or `…:repository/*` when absent
                 resource-arn  `resourceArn`
                 registry      `*` in the registry addressed (caller's unless `registryId`)
                 account       `*`, identity policies only
    actions      every one must be allowed
    when_tagged  further actions when the request carries `tags`
    """

    scope: Scope
    actions: tuple[str, ...]
    when_tagged: tuple[str, ...] = ()


def _repo(*actions: str, when_tagged: tuple[str, ...] = ()) -> Rule:
    return Rule("repository", actions, when_tagged)


def _registry(action: str) -> Rule:
    return Rule("registry", (action,))


# Every operation of botocore's ECR model (a test keeps this table equal to the model), pending
# ones included: an operation is authorized before Moorage says it does not implement it.
ECR_RULES: Final[Mapping[str, Rule]] = {
    # repositories
    "CreateRepository": _repo("ecr:CreateRepository", when_tagged=("ecr:TagResource",)),
    "DescribeRepositories": Rule("repositories", ("ecr:DescribeRepositories",)),
    "DeleteRepository": _repo("ecr:DeleteRepository"),
    "PutImageTagMutability": _repo("ecr:PutImageTagMutability"),
    "PutImageScanningConfiguration": _repo("ecr:PutImageScanningConfiguration"),
    "TagResource": Rule("resource-arn", ("ecr:TagResource",)),
    "UntagResource": Rule("resource-arn", ("ecr:UntagResource",)),
    "ListTagsForResource": Rule("resource-arn", ("ecr:ListTagsForResource",)),
    # images
    "PutImage": _repo("ecr:PutImage"),
    "BatchGetImage": _repo("ecr:BatchGetImage"),
    "BatchDeleteImage": _repo("ecr:BatchDeleteImage"),
    "DescribeImages": _repo("ecr:DescribeImages"),
    "ListImages": _repo("ecr:ListImages"),
    "ListImageReferrers": _repo("ecr:BatchGetImage"),
    "UpdateImageStorageClass": _repo("ecr:UpdateImageStorageClass"),
    # layers
    "BatchCheckLayerAvailability": _repo("ecr:BatchCheckLayerAvailability"),
    "InitiateLayerUpload": _repo("ecr:InitiateLayerUpload"),
    "UploadLayerPart": _repo("ecr:UploadLayerPart"),
    "CompleteLayerUpload": _repo("ecr:CompleteLayerUpload"),
    "GetDownloadUrlForLayer": _repo("ecr:GetDownloadUrlForLayer"),
    # repository policies
    "SetRepositoryPolicy": _repo("ecr:SetRepositoryPolicy"),
    "GetRepositoryPolicy": _repo("ecr:GetRepositoryPolicy"),
    "DeleteRepositoryPolicy": _repo("ecr:DeleteRepositoryPolicy"),
    # lifecycle policies
    "PutLifecyclePolicy": _repo("ecr:PutLifecyclePolicy"),
    "GetLifecyclePolicy": _repo("ecr:GetLifecyclePolicy"),
    "DeleteLifecyclePolicy": _repo("ecr:DeleteLifecyclePolicy"),
    "StartLifecyclePolicyPreview": _repo("ecr:StartLifecyclePolicyPreview"),
    "GetLifecyclePolicyPreview": _repo("ecr:GetLifecyclePolicyPreview"),
    # scanning, replication status, signing status
    "StartImageScan": _repo("ecr:StartImageScan"),
    "DescribeImageScanFindings": _repo("ecr:DescribeImageScanFindings"),
    "DescribeImageReplicationStatus": _repo("ecr:DescribeImageReplicationStatus"),
    "DescribeImageSigningStatus": _repo("ecr:DescribeImageSigningStatus"),
    "BatchGetRepositoryScanningConfiguration": Rule("repositories", ("ecr:BatchGetRepositoryScanningConfiguration",)),
    # the registry
    "GetAuthorizationToken": Rule("account", ("ecr:GetAuthorizationToken",)),
    "DescribeRegistry": _registry("ecr:DescribeRegistry"),
    "GetAccountSetting": _registry("ecr:GetAccountSetting"),
    "PutAccountSetting": _registry("ecr:PutAccountSetting"),
    "PutRegistryPolicy": _registry("ecr:PutRegistryPolicy"),
    "GetRegistryPolicy": _registry("ecr:GetRegistryPolicy"),
    "DeleteRegistryPolicy": _registry("ecr:DeleteRegistryPolicy"),
    "PutReplicationConfiguration": _registry("ecr:PutReplicationConfiguration"),
    "StartReplicationBackfill": _registry("ecr:StartReplicationBackfill"),
    "StopReplicationBackfill": _registry("ecr:StopReplicationBackfill"),
    "ListReplicationBackfills": _registry("ecr:ListReplicationBackfills"),
    "DescribeReplicationBackfillResults": _registry("ecr:DescribeReplicationBackfillResults"),
    "GetRegistryScanningConfiguration": _registry("ecr:GetRegistryScanningConfiguration"),
    "PutRegistryScanningConfiguration": _registry("ecr:PutRegistryScanningConfiguration"),
    "CreatePullThroughCacheRule": _registry("ecr:CreatePullThroughCacheRule"),
    "DescribePullThroughCacheRules": _registry("ecr:DescribePullThroughCacheRules"),
    "UpdatePullThroughCacheRule": _registry("ecr:UpdatePullThroughCacheRule"),
    "DeletePullThroughCacheRule": _registry("ecr:DeletePullThroughCacheRule"),
    "ValidatePullThroughCacheRule": _registry("ecr:ValidatePullThroughCacheRule"),
    "CreateRepositoryCreationTemplate": _registry("ecr:CreateRepositoryCreationTemplate"),
    "DescribeRepositoryCreationTemplates": _registry("ecr:DescribeRepositoryCreationTemplates"),
    "UpdateRepositoryCreationTemplate": _registry("ecr:UpdateRepositoryCreationTemplate"),
    "DeleteRepositoryCreationTemplate": _registry("ecr:DeleteRepositoryCreationTemplate"),
    "PutSigningConfiguration": _registry("ecr:PutSigningConfiguration"),
    "GetSigningConfiguration": _registry("ecr:GetSigningConfiguration"),
    "DeleteSigningConfiguration": _registry("ecr:DeleteSigningConfiguration"),
    "RegisterPullTimeUpdateExclusion": _registry("ecr:RegisterPullTimeUpdateExclusion"),
    "DeregisterPullTimeUpdateExclusion": _registry("ecr:DeregisterPullTimeUpdateExclusion"),
    "ListPullTimeUpdateExclusions": _registry("ecr:ListPullTimeUpdateExclusions"),
}

INVALIDATING_OPERATIONS: Final = frozenset(
    {
        "CreateRepository",
        "DeleteRepository",
        "TagResource",
        "UntagResource",
        "PutAccountSetting",
        "SetRepositoryPolicy",
        "DeleteRepositoryPolicy",
        "PutRegistryPolicy",
        "DeleteRegistryPolicy",
    }
)
"""Operations after whose success this process forgets what it cached about their targets."""

REPOSITORY_ONLY_INVALIDATIONS: Final = frozenset({"CreateRepository", "TagResource", "UntagResource"})
"""Of those, the ones that change only the repository (its existence, its resource tags), not the
registry-level facts (registry policy, policy scope, whether any repository policy exists)."""


def _tag_pairs(raw: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(raw, list):
        return ()
    return tuple(
        (str(t["Key"]), str(t["Value"]))
        for t in raw
        if isinstance(t, dict) and "Key" in t and t.get("Value") is not None
    )


def ecr_needs(operation: str, params: Mapping[str, Any], *, account: str, region: str) -> list[Need]:
    """What an ECR API call (already validated against the model) must be allowed to do."""
    rule = ECR_RULES.get(operation)
    if rule is None:  # fail closed: an operation nobody mapped is refused to everyone
        raise AccessDeniedError(f"Moorage has no authorization rule for {operation}")
    own = RegistryRef(account, region)
    registry = RegistryRef(str(params.get("registryId") or account), region)
    if rule.scope == "account":
        return [Need(action, own, "*", identity_only=True) for action in rule.actions]
    if rule.scope == "registry":
        return [on_registry(action, registry) for action in rule.actions]
    if rule.scope == "repositories":
        names = params.get("repositoryNames")
        if names is None:
            return [Need(action, registry, repository_arn(registry, "*")) for action in rule.actions]
        return [
            on_repository(action, registry, RepositoryName(name))
            for name in dict.fromkeys(names)
            for action in rule.actions
        ]
    if rule.scope == "resource-arn":
        arn = str(params["resourceArn"])
        match = _ARN_RE.fullmatch(arn)
        target, name = own, None
        if match is not None:
            target = RegistryRef(match[2], region)
            name = RepositoryName(match[3]) if match[1] == region else None
        tags = _tag_pairs(params.get("tags"))
        keys: tuple[str, ...] | None = None
        if "tags" in params:
            keys = tuple(k for k, _ in tags)
        elif "tagKeys" in params:
            keys = tuple(str(k) for k in params["tagKeys"])
        return [Need(action, target, arn, name, request_tags=tags, tag_keys=keys) for action in rule.actions]
    name = RepositoryName(str(params["repositoryName"]))
    tags = _tag_pairs(params.get("tags"))
    extra: dict[str, Any] = {}
    actions = rule.actions
    if "tags" in params and rule.when_tagged:
        extra = {"request_tags": tags, "tag_keys": tuple(k for k, _ in tags)}
        if tags:
            actions = (*actions, *rule.when_tagged)
    return [on_repository(action, registry, name, **extra) for action in actions]


# The registry API's routes (oci/__init__.py) and the ECR actions ECR authorizes them with. Extra
# needs by request: POST …/blobs/uploads/?digest= (a one-request upload) also uploads and
# completes; ?mount=&from=<source> also reads the source (ecr:GetDownloadUrlForLayer on it, as ECR
# documents for blob mounting); a PUT completing an upload with a final chunk also uploads. An
# upload session's status (GET) and cancellation (DELETE) act on the session: ecr:UploadLayerPart.
OCI_ACTIONS: Final[Mapping[tuple[str, str], tuple[str, ...]]] = {
    ("manifest", "GET"): ("ecr:BatchGetImage",),
    ("manifest", "HEAD"): ("ecr:BatchGetImage",),
    ("manifest", "PUT"): ("ecr:PutImage",),
    ("manifest", "DELETE"): ("ecr:BatchDeleteImage",),
    ("referrers", "GET"): ("ecr:BatchGetImage",),
    ("tags", "GET"): ("ecr:ListImages",),
    ("catalog", "GET"): ("ecr:DescribeRepositories",),
    ("blob", "GET"): ("ecr:GetDownloadUrlForLayer",),
    ("blob", "HEAD"): ("ecr:BatchCheckLayerAvailability",),
    ("blob", "DELETE"): ("ecr:BatchDeleteImage",),
    ("uploads", "POST"): ("ecr:InitiateLayerUpload",),
    ("upload", "GET"): ("ecr:UploadLayerPart",),
    ("upload", "PATCH"): ("ecr:UploadLayerPart",),
    ("upload", "PUT"): ("ecr:CompleteLayerUpload",),
    ("upload", "DELETE"): ("ecr:UploadLayerPart",),
}

PUSH_ROUTES: Final = frozenset({("uploads", "POST"), ("manifest", "PUT")})
"""Routes that create the repository on a push when `create_on_push` is on (then ecr:CreateRepository is needed too)."""


def oci_needs(
    kind: str,
    method: str,
    registry: RegistryRef,
    name: RepositoryName | None,
    *,
    param: Callable[[str], str | None] = lambda _: None,
    has_body: bool = False,
) -> list[Need]:
    """What a `/v2/` request must be allowed to do (the base route `/v2/` needs nothing).
    Raises NameInvalidError for an invalid `from` repository of a mount."""
    if kind == "base":
        return []
    actions = OCI_ACTIONS.get((kind, method))
    if actions is None:  # fail closed
        raise AccessDeniedError(f"Moorage has no authorization rule for {method} {kind}")
    if name is None:  # the catalog: every repository of the registry
        return [Need(action, registry, repository_arn(registry, "*")) for action in actions]
    needs = [on_repository(action, registry, name) for action in actions]
    if (kind, method) == ("uploads", "POST"):
        if param("digest") is not None:
            needs += [on_repository(a, registry, name) for a in ("ecr:UploadLayerPart", "ecr:CompleteLayerUpload")]
        source = param("from")
        if param("mount") is not None and source:
            needs.append(on_repository("ecr:GetDownloadUrlForLayer", registry, parse_repository_name(source)))
    elif (kind, method) == ("upload", "PUT") and has_body:
        needs.insert(0, on_repository("ecr:UploadLayerPart", registry, name))
    return needs


# --------------------------------------------------------------------------------------------
# Stored policies, cached.

_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class _TtlCache(Generic[_K, _V]):
    """A dictionary whose entries expire after `ttl` seconds (monotonic clock)."""

    __slots__ = ("_entries", "_max", "_ttl")

    def __init__(self, ttl: float, max_entries: int = 20_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[_K, tuple[float, _V]] = {}

    def get(self, key: _K) -> _V | None:
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] >= self._ttl:
            return None
        return entry[1]

    def put(self, key: _K, value: _V) -> None:
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), value)

    def drop(self, key: _K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()


@dataclass(frozen=True, slots=True)
class RegistryPolicies:
    policy: PolicyDocument | None
    scope: str
    any_repository_policy: bool


@dataclass(frozen=True, slots=True)
class RepositoryFacts:
    exists: bool
    policy: PolicyDocument | None
    tags: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class _UserPolicies:
    policies: tuple[PolicyDocument, ...] | None


_NO_REPOSITORY = RepositoryFacts(False, None, {})
_DENY_ALL: Final[Mapping[PolicyKind, str]] = {
    "resource": '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Principal":"*","Action":"*"}]}',
    "identity": '{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}',
}


@lru_cache(maxsize=4096)
def _parse_stored(text: str, kind: PolicyKind, name: str) -> PolicyDocument:
    """A stored document, parsed once per process. One that no longer parses (it was accepted by
    an older version) denies everything rather than being ignored: fail closed."""
    try:
        return parse_policy(text, kind=kind, name=name, max_length=max(len(text), 1))
    except Exception:
        log.exception("stored %s does not parse; treating it as denying everything", name)
        return parse_policy(_DENY_ALL[kind], kind=kind, name=name)


class PolicyStore:
    """Repository and registry policies (read, write) and every policy the Authorizer needs, cached
    for `ttl` seconds per process; writes through this object drop the affected entries at once."""

    def __init__(self, metadata: MetadataStore, registry: Registry, *, clock: Clock, ttl: float = POLICY_CACHE_SECONDS):
        self._metadata = metadata
        self._registry = registry
        self._clock = clock
        self._registries: _TtlCache[RegistryRef, RegistryPolicies] = _TtlCache(ttl)
        self._repositories: _TtlCache[tuple[RegistryRef, str], RepositoryFacts] = _TtlCache(ttl)
        self._users: _TtlCache[tuple[str, str], _UserPolicies] = _TtlCache(ttl)

    # -- what the Authorizer reads --------------------------------------------------------------

    async def registry_policies(self, registry: RegistryRef) -> RegistryPolicies:
        cached = self._registries.get(registry)
        if cached is not None:
            return cached
        scope = await self._registry.account_setting(registry, "REGISTRY_POLICY_SCOPE")
        async with self._metadata.transaction() as tx:
            text = await tx.policies.registry_policy(registry)
            any_repository = await tx.policies.any_repository_policy(registry)
        policy = None if text is None else _parse_stored(text, "resource", "registry policy")
        found = RegistryPolicies(policy, scope, any_repository)
        self._registries.put(registry, found)
        return found

    async def repository_facts(self, registry: RegistryRef, name: str, *, fresh: bool = False) -> RepositoryFacts:
        key = (registry, name)
        cached = None if fresh else self._repositories.get(key)
        if cached is not None:
            return cached
        async with self._metadata.transaction() as tx:
            repo = await tx.repositories.get(registry, RepositoryName(name))
            if repo is None:
                found = _NO_REPOSITORY
            else:
                text = await tx.policies.repository_policy(repo.id)
                tags = await tx.resource_tags.get(repo.id)
                policy = None if text is None else _parse_stored(text, "resource", f"repository policy of '{name}'")
                found = RepositoryFacts(True, policy, tags)
        self._repositories.put(key, found)
        return found

    async def identity_policies(self, account_id: str, user_name: str) -> tuple[PolicyDocument, ...] | None:
        """The user's identity policies; None when the user no longer exists (a registry password
        outlives its user: nothing may allow such a caller anything)."""
        key = (account_id, user_name)
        cached = self._users.get(key)
        if cached is not None:
            return cached.policies
        async with self._metadata.transaction() as tx:
            exists = await tx.identities.user_exists(account_id, user_name)
            rows = await tx.policies.user_policies(account_id, user_name) if exists else []
        found = tuple(_parse_stored(text, "identity", f"identity policy '{name}'") for name, text in rows)
        entry = _UserPolicies(found if exists else None)
        self._users.put(key, entry)
        return entry.policies

    def clear(self) -> None:
        """Forget everything cached (after a reset of the whole store)."""
        self._registries.clear()
        self._repositories.clear()
        self._users.clear()

    def invalidate(self, registry: RegistryRef, name: str | None = None, *, registry_wide: bool = True) -> None:
        """Forget what is cached about the repository, when named, and (unless `registry_wide`
        is false) about the registry."""
        if registry_wide:
            self._registries.drop(registry)
        if name is not None:
            self._repositories.drop((registry, name))

    # -- repository policies --------------------------------------------------------------------

    async def repository_policy(self, registry: RegistryRef, name: RepositoryName) -> str | None:
        """The policy text, or None. Raises RepositoryNotFoundError."""
        async with self._metadata.transaction() as tx:
            repo = await tx.repositories.get(registry, name)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            return await tx.policies.repository_policy(repo.id)

    async def set_repository_policy(self, registry: RegistryRef, name: RepositoryName, text: str) -> None:
        """Store an already validated policy text. Raises RepositoryNotFoundError."""
        try:
            async with self._metadata.transaction(write=True) as tx:
                repo = await tx.repositories.get(registry, name, for_update=True)
                if repo is None:
                    raise RepositoryNotFoundError(name, registry.account_id)
                await tx.policies.put_repository_policy(repo.id, text, self._clock.now())
        finally:
            self.invalidate(registry, name)

    async def delete_repository_policy(self, registry: RegistryRef, name: RepositoryName) -> str | None:
        """Remove the policy; return its text, or None when there was none. Raises RepositoryNotFoundError."""
        try:
            async with self._metadata.transaction(write=True) as tx:
                repo = await tx.repositories.get(registry, name, for_update=True)
                if repo is None:
                    raise RepositoryNotFoundError(name, registry.account_id)
                text = await tx.policies.repository_policy(repo.id)
                if text is not None:
                    await tx.policies.delete_repository_policy(repo.id)
                return text
        finally:
            self.invalidate(registry, name)

    # -- registry policies ----------------------------------------------------------------------

    async def registry_policy(self, registry: RegistryRef) -> str | None:
        async with self._metadata.transaction() as tx:
            return await tx.policies.registry_policy(registry)

    async def put_registry_policy(self, registry: RegistryRef, text: str) -> None:
        try:
            async with self._metadata.transaction(write=True) as tx:
                await tx.policies.put_registry_policy(registry, text, self._clock.now())
        finally:
            self.invalidate(registry)

    async def delete_registry_policy(self, registry: RegistryRef) -> str | None:
        """Remove the registry policy; return its text, or None when there was none."""
        try:
            async with self._metadata.transaction(write=True) as tx:
                text = await tx.policies.registry_policy(registry)
                if text is not None:
                    await tx.policies.delete_registry_policy(registry)
                return text
        finally:
            self.invalidate(registry)


# --------------------------------------------------------------------------------------------
# Deciding.


@dataclass(frozen=True, slots=True)
class Outcome:
    """A decision for one Need; `context` is None when the decision needed no evaluation."""

    decision: Decision
    context: RequestContext | None

    @property
    def allowed(self) -> bool:
        return self.decision.allowed

    def message(self) -> str:
        """AccessDeniedException text as ECR words it."""
        assert self.context is not None
        return access_denied_message(self.context, self.decision)


_ROOT_ALLOWED = Outcome(Decision(True, "the account root has full access to its own account's resources"), None)


class _Unset:
    pass


_UNSET: Final = _Unset()


class Authorizer:
    """Decides every request; see the module documentation for the rules."""

    def __init__(
        self, store: PolicyStore, *, clock: Clock, create_on_push: bool = False, templates: Templates | None = None
    ) -> None:
        self.store = store
        self._clock = clock
        self._create_on_push = create_on_push
        self._templates = templates

    async def check(self, principal: Principal, origin: Origin, needs: Sequence[Need]) -> None:
        """Raise AccessDeniedError (ECR's message) for the first need that is not allowed."""
        for need in needs:
            outcome = await self.evaluate(principal, origin, need)
            if not outcome.allowed:
                raise AccessDeniedError(outcome.message())

    async def check_ecr(
        self, principal: Principal, origin: Origin, operation: str, params: Mapping[str, Any], region: str
    ) -> list[Need]:
        """Authorize an ECR API call; returns its needs (their targets, for cache invalidation)."""
        needs = ecr_needs(operation, params, account=principal.account_id, region=region)
        await self.check(principal, origin, needs)
        return needs

    async def check_registry_api(
        self,
        principal: Principal,
        origin: Origin,
        kind: str,
        method: str,
        registry: RegistryRef,
        name: RepositoryName | None,
        *,
        param: Callable[[str], str | None],
        has_body: bool,
    ) -> None:
        """Authorize a `/v2/` request."""
        needs = oci_needs(kind, method, registry, name, param=param, has_body=has_body)
        if (self._create_on_push or self._templates is not None) and name is not None and (kind, method) in PUSH_ROUTES:
            facts = await self.store.repository_facts(registry, name)
            if not facts.exists:  # a stale "missing" must not ask for more than needed
                facts = await self.store.repository_facts(registry, name, fresh=True)
            if not facts.exists and (
                self._create_on_push
                or (self._templates is not None and await self._templates.matches(registry, name, "CREATE_ON_PUSH"))
            ):
                needs.append(on_repository("ecr:CreateRepository", registry, name))
        await self.check(principal, origin, needs)

    async def evaluate(
        self,
        principal: Principal,
        origin: Origin,
        need: Need,
        *,
        repository_policy: PolicyDocument | _Unset | None = _UNSET,
    ) -> Outcome:
        """The decision for one need. `repository_policy` replaces the stored repository policy
        (SetRepositoryPolicy's lock-out check asks "what if this policy were in place?")."""
        is_root = principal.user_name is None
        same_account = principal.account_id == need.registry.account_id
        facts = _NO_REPOSITORY
        resource: list[PolicyDocument] = []
        if need.identity_only:
            if is_root and same_account:
                return _ROOT_ALLOWED
        else:
            registry = await self.store.registry_policies(need.registry)
            override = not isinstance(repository_policy, _Unset)
            if (
                is_root
                and same_account
                and not override
                and registry.policy is None
                and not registry.any_repository_policy
            ):
                return _ROOT_ALLOWED
            if need.repository is not None:
                facts = await self.store.repository_facts(need.registry, need.repository)
            repo_policy = facts.policy if isinstance(repository_policy, _Unset) else repository_policy
            if repo_policy is not None:
                resource.append(repo_policy)
            if registry.policy is not None and (
                registry.scope != "V1" or need.action.lower() in REGISTRY_POLICY_V1_APPLIES
            ):
                resource.append(registry.policy)
            if is_root and same_account and not resource:
                return _ROOT_ALLOWED
        identity: tuple[PolicyDocument, ...] = ()
        if not is_root:
            assert principal.user_name is not None
            policies = await self.store.identity_policies(principal.account_id, principal.user_name)
            if policies is None:  # a deleted user's token: no policy may allow it anything
                resource = []
            identity = policies or ()
        ctx = RequestContext(
            principal_arn=principal.arn,
            principal_account=principal.account_id,
            principal_type="root" if is_root else "user",
            username=principal.user_name,
            action=need.action,
            resource=need.resource,
            context=self._context(origin, need, facts.tags),
        )
        decision = decide(
            identity=identity,
            resource=resource,
            ctx=ctx,
            resource_account=need.registry.account_id,
            is_root=is_root,
        )
        return Outcome(decision, ctx)

    def _context(self, origin: Origin, need: Need, tags: Mapping[str, str]) -> dict[str, ContextValue]:
        now = self._clock.now()
        keys: dict[str, ContextValue] = {
            "aws:CurrentTime": now,
            "aws:EpochTime": int(now.timestamp()),
            "aws:SecureTransport": origin.secure,
            "aws:RequestedRegion": need.registry.region,
            "aws:ResourceAccount": need.registry.account_id,
        }
        if origin.source_ip:
            keys["aws:SourceIp"] = origin.source_ip
        for key, value in tags.items():
            keys[f"aws:ResourceTag/{key}"] = value
            keys[f"ecr:ResourceTag/{key}"] = value
        for key, value in need.request_tags:
            keys[f"aws:RequestTag/{key}"] = value
        if need.tag_keys is not None:
            keys["aws:TagKeys"] = list(need.tag_keys)
        return keys
