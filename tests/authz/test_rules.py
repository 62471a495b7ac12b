"""The Authorizer's tables and decisions, without a server: which IAM actions and resources every
ECR operation and every `/v2/` route needs, and how the policies of both sides combine."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import botocore.session
import pytest

from moorage.auth import Principal
from moorage.authz import (
    ECR_RULES,
    OCI_ACTIONS,
    Authorizer,
    Need,
    Origin,
    PolicyStore,
    RegistryPolicies,
    RepositoryFacts,
    ecr_needs,
    oci_needs,
    on_registry,
    on_repository,
)
from moorage.clock import FixedClock
from moorage.ecr import all_handlers
from moorage.errors import AccessDeniedError, NameInvalidError
from moorage.model import RegistryRef, RepositoryName
from moorage.oci import blobs, manifests
from moorage.policy import PolicyDocument, parse_policy
from tests.authz.conftest import ACCOUNT_A, ACCOUNT_B, grant, policy, repo_arn

A = RegistryRef(ACCOUNT_A, "us-east-1")
B = RegistryRef(ACCOUNT_B, "us-east-1")
ALL_A = repo_arn("*")


def model_operations() -> set[str]:
    return set(botocore.session.get_session().get_service_model("ecr").operation_names)


def test_every_rule_is_for_a_model_operation() -> None:
    # Operations not implemented yet may have a rule or not: they answer UnsupportedOperationException
    # before authorization. Every implemented one has a rule (below).
    assert set(ECR_RULES) <= model_operations()


def test_every_dispatched_operation_has_a_rule() -> None:
    assert set(all_handlers()) <= set(ECR_RULES)


def test_every_registry_route_has_actions() -> None:
    routes = set(manifests.HANDLERS) | set(blobs.HANDLERS)
    assert routes == set(OCI_ACTIONS)


def _needs(operation: str, params: Mapping[str, Any], account: str = ACCOUNT_A) -> list[tuple[str, str, str]]:
    return [
        (n.action, n.resource, n.registry.account_id)
        for n in ecr_needs(operation, params, account=account, region="us-east-1")
    ]


ECR_CASES: list[tuple[str, dict[str, Any], list[tuple[str, str, str]]]] = [
    ("BatchGetImage", {"repositoryName": "app"}, [("ecr:BatchGetImage", repo_arn("app"), ACCOUNT_A)]),
    (
        "BatchGetImage",
        {"repositoryName": "team/app", "registryId": ACCOUNT_B},
        [("ecr:BatchGetImage", repo_arn("team/app", ACCOUNT_B), ACCOUNT_B)],
    ),
    ("ListImageReferrers", {"repositoryName": "app"}, [("ecr:BatchGetImage", repo_arn("app"), ACCOUNT_A)]),
    ("PutImage", {"repositoryName": "app"}, [("ecr:PutImage", repo_arn("app"), ACCOUNT_A)]),
    ("CreateRepository", {"repositoryName": "app"}, [("ecr:CreateRepository", repo_arn("app"), ACCOUNT_A)]),
    (
        "CreateRepository",
        {"repositoryName": "app", "tags": [{"Key": "team", "Value": "a"}]},
        [("ecr:CreateRepository", repo_arn("app"), ACCOUNT_A), ("ecr:TagResource", repo_arn("app"), ACCOUNT_A)],
    ),
    ("DescribeRepositories", {}, [("ecr:DescribeRepositories", ALL_A, ACCOUNT_A)]),
    (
        "DescribeRepositories",
        {"repositoryNames": ["a1", "b1", "a1"]},
        [
            ("ecr:DescribeRepositories", repo_arn("a1"), ACCOUNT_A),
            ("ecr:DescribeRepositories", repo_arn("b1"), ACCOUNT_A),
        ],
    ),
    (
        "DescribeRepositories",
        {"registryId": ACCOUNT_B},
        [("ecr:DescribeRepositories", repo_arn("*", ACCOUNT_B), ACCOUNT_B)],
    ),
    (
        "TagResource",
        {"resourceArn": repo_arn("app", ACCOUNT_B), "tags": [{"Key": "k", "Value": "v"}]},
        [("ecr:TagResource", repo_arn("app", ACCOUNT_B), ACCOUNT_B)],
    ),
    (
        "UntagResource",
        {"resourceArn": "not-an-arn", "tagKeys": ["k"]},
        [("ecr:UntagResource", "not-an-arn", ACCOUNT_A)],
    ),
    (
        "ListTagsForResource",
        {"resourceArn": repo_arn("app")},
        [("ecr:ListTagsForResource", repo_arn("app"), ACCOUNT_A)],
    ),
    ("GetAuthorizationToken", {"registryIds": [ACCOUNT_B]}, [("ecr:GetAuthorizationToken", "*", ACCOUNT_A)]),
    ("DescribeRegistry", {}, [("ecr:DescribeRegistry", "*", ACCOUNT_A)]),
    ("PutRegistryPolicy", {"policyText": "{}"}, [("ecr:PutRegistryPolicy", "*", ACCOUNT_A)]),
    ("GetAccountSetting", {"name": "BLOB_MOUNTING"}, [("ecr:GetAccountSetting", "*", ACCOUNT_A)]),
    ("SetRepositoryPolicy", {"repositoryName": "app"}, [("ecr:SetRepositoryPolicy", repo_arn("app"), ACCOUNT_A)]),
    ("GetLifecyclePolicy", {"repositoryName": "app"}, [("ecr:GetLifecyclePolicy", repo_arn("app"), ACCOUNT_A)]),
    (
        "BatchCheckLayerAvailability",
        {"repositoryName": "app"},
        [("ecr:BatchCheckLayerAvailability", repo_arn("app"), ACCOUNT_A)],
    ),
    (
        "DescribePullThroughCacheRules",
        {"registryId": ACCOUNT_B},
        [("ecr:DescribePullThroughCacheRules", "*", ACCOUNT_B)],
    ),
]


@pytest.mark.parametrize(("operation", "params", "expected"), ECR_CASES, ids=[c[0] for c in ECR_CASES])
def test_ecr_operation_needs(operation: str, params: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    assert _needs(operation, params) == expected


def test_tagging_needs_carry_request_tags_and_keys() -> None:
    (create, tag) = ecr_needs(
        "CreateRepository",
        {"repositoryName": "app", "tags": [{"Key": "team", "Value": "a"}]},
        account=ACCOUNT_A,
        region="us-east-1",
    )
    assert create.request_tags == tag.request_tags == (("team", "a"),)
    assert create.tag_keys == ("team",)
    (untag,) = ecr_needs(
        "UntagResource", {"resourceArn": repo_arn("app"), "tagKeys": ["x", "y"]}, account=ACCOUNT_A, region="us-east-1"
    )
    assert untag.tag_keys == ("x", "y")
    assert untag.repository == "app"


def test_resource_arn_of_another_region_names_no_repository_here() -> None:
    (need,) = ecr_needs(
        "ListTagsForResource",
        {"resourceArn": repo_arn("app", region="eu-west-1")},
        account=ACCOUNT_A,
        region="us-east-1",
    )
    assert need.repository is None
    assert need.resource == repo_arn("app", region="eu-west-1")


def test_unknown_operation_fails_closed() -> None:
    with pytest.raises(AccessDeniedError):
        ecr_needs("MakeCoffee", {}, account=ACCOUNT_A, region="us-east-1")


def _oci(kind: str, method: str, name: str | None = "app", **query: str) -> list[tuple[str, str]]:
    needs = oci_needs(
        kind,
        method,
        A,
        RepositoryName(name) if name else None,
        param=query.get,
        has_body=query.pop("body", "") == "yes",
    )
    return [(n.action, n.resource) for n in needs]


OCI_CASES: list[tuple[str, str, dict[str, str], list[tuple[str, str]]]] = [
    ("manifest", "GET", {}, [("ecr:BatchGetImage", repo_arn("app"))]),
    ("manifest", "HEAD", {}, [("ecr:BatchGetImage", repo_arn("app"))]),
    ("manifest", "PUT", {}, [("ecr:PutImage", repo_arn("app"))]),
    ("manifest", "DELETE", {}, [("ecr:BatchDeleteImage", repo_arn("app"))]),
    ("referrers", "GET", {}, [("ecr:BatchGetImage", repo_arn("app"))]),
    ("tags", "GET", {}, [("ecr:ListImages", repo_arn("app"))]),
    ("blob", "GET", {}, [("ecr:GetDownloadUrlForLayer", repo_arn("app"))]),
    ("blob", "HEAD", {}, [("ecr:BatchCheckLayerAvailability", repo_arn("app"))]),
    ("blob", "DELETE", {}, [("ecr:BatchDeleteImage", repo_arn("app"))]),
    ("uploads", "POST", {}, [("ecr:InitiateLayerUpload", repo_arn("app"))]),
    (
        "uploads",
        "POST",
        {"digest": "sha256:00"},
        [
            ("ecr:InitiateLayerUpload", repo_arn("app")),
            ("ecr:UploadLayerPart", repo_arn("app")),
            ("ecr:CompleteLayerUpload", repo_arn("app")),
        ],
    ),
    (
        "uploads",
        "POST",
        {"mount": "sha256:00", "from": "other/repo"},
        [("ecr:InitiateLayerUpload", repo_arn("app")), ("ecr:GetDownloadUrlForLayer", repo_arn("other/repo"))],
    ),
    ("upload", "GET", {}, [("ecr:UploadLayerPart", repo_arn("app"))]),
    ("upload", "PATCH", {}, [("ecr:UploadLayerPart", repo_arn("app"))]),
    ("upload", "PUT", {}, [("ecr:CompleteLayerUpload", repo_arn("app"))]),
    (
        "upload",
        "PUT",
        {"body": "yes"},
        [("ecr:UploadLayerPart", repo_arn("app")), ("ecr:CompleteLayerUpload", repo_arn("app"))],
    ),
    ("upload", "DELETE", {}, [("ecr:UploadLayerPart", repo_arn("app"))]),
]


@pytest.mark.parametrize(("kind", "method", "query", "expected"), OCI_CASES, ids=[f"{c[1]}-{c[0]}" for c in OCI_CASES])
def test_registry_route_needs(kind: str, method: str, query: dict[str, str], expected: list[tuple[str, str]]) -> None:
    assert _oci(kind, method, **query) == expected


def test_catalog_and_base_routes() -> None:
    assert _oci("catalog", "GET", None) == [("ecr:DescribeRepositories", ALL_A)]
    assert _oci("base", "GET", None) == []


def test_mount_from_an_invalid_name_is_name_invalid() -> None:
    with pytest.raises(NameInvalidError):
        _oci("uploads", "POST", mount="sha256:00", **{"from": "Bad..Name"})


# --- decisions, with policies held in memory --------------------------------------------------


class MemoryStore(PolicyStore):
    """The Authorizer's view of stored policies, without a database."""

    def __init__(self) -> None:
        self.registry: dict[RegistryRef, RegistryPolicies] = {}
        self.repositories: dict[tuple[RegistryRef, str], RepositoryFacts] = {}
        self.users: dict[tuple[str, str], tuple[PolicyDocument, ...]] = {}
        self.loads = 0

    async def registry_policies(self, registry: RegistryRef) -> RegistryPolicies:
        return self.registry.get(registry, RegistryPolicies(None, "V2", False))

    async def repository_facts(self, registry: RegistryRef, name: str, *, fresh: bool = False) -> RepositoryFacts:
        self.loads += 1
        return self.repositories.get((registry, name), RepositoryFacts(True, None, {}))

    async def identity_policies(self, account_id: str, user_name: str) -> tuple[PolicyDocument, ...] | None:
        if user_name == "deleted":
            return None
        return self.users.get((account_id, user_name), ())

    def set_repository(
        self, registry: RegistryRef, name: str, text: str | None, tags: dict[str, str] | None = None
    ) -> None:
        doc = parse_policy(text, kind="resource") if text else None
        self.repositories[(registry, name)] = RepositoryFacts(True, doc, tags or {})
        current = self.registry.get(registry, RegistryPolicies(None, "V2", False))
        self.registry[registry] = RegistryPolicies(current.policy, current.scope, True)

    def set_registry(self, registry: RegistryRef, text: str, scope: str = "V2") -> None:
        self.registry[registry] = RegistryPolicies(parse_policy(text, kind="resource"), scope, False)

    def set_user(self, account: str, name: str, text: str) -> None:
        self.users[(account, name)] = (parse_policy(text, kind="identity"),)


ROOT_A = Principal.root(ACCOUNT_A)
ROOT_B = Principal.root(ACCOUNT_B)
ALICE = Principal.of(ACCOUNT_A, "alice")
CAROL = Principal.of(ACCOUNT_B, "carol")
HERE = Origin("10.1.2.3", secure=True)
PULL = on_repository("ecr:BatchGetImage", A, RepositoryName("app"))


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def authz(store: MemoryStore) -> Authorizer:
    return Authorizer(store, clock=FixedClock(datetime(2030, 1, 1, 12, tzinfo=UTC)))


async def _allowed(authz: Authorizer, who: Principal, need: Need, origin: Origin = HERE) -> bool:
    return (await authz.evaluate(who, origin, need)).allowed


@pytest.mark.anyio
async def test_root_in_its_own_registry_without_policies_reads_no_repository(
    authz: Authorizer, store: MemoryStore
) -> None:
    assert await _allowed(authz, ROOT_A, PULL)
    assert store.loads == 0


@pytest.mark.anyio
async def test_a_new_user_may_do_nothing(authz: Authorizer) -> None:
    outcome = await authz.evaluate(ALICE, HERE, PULL)
    assert not outcome.allowed
    assert outcome.message() == (
        f"User: arn:aws:iam::{ACCOUNT_A}:user/alice is not authorized to perform: ecr:BatchGetImage on resource: "
        f"{repo_arn('app')} because no identity-based policy allows the ecr:BatchGetImage action"
    )


@pytest.mark.anyio
async def test_same_account_either_side_allows(authz: Authorizer, store: MemoryStore) -> None:
    store.set_repository(A, "app", policy(grant({"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/alice"}, "ecr:BatchGetImage")))
    assert await _allowed(authz, ALICE, PULL)
    assert not await _allowed(authz, ALICE, on_repository("ecr:PutImage", A, RepositoryName("app")))
    store.set_user(ACCOUNT_A, "alice", policy({"Effect": "Allow", "Action": "ecr:*", "Resource": repo_arn("*")}))
    assert await _allowed(authz, ALICE, on_repository("ecr:PutImage", A, RepositoryName("app")))


@pytest.mark.anyio
async def test_explicit_deny_in_the_registry_policy_wins_even_over_root(authz: Authorizer, store: MemoryStore) -> None:
    store.set_registry(A, policy(grant("*", "ecr:BatchGetImage", effect="Deny")))
    outcome = await authz.evaluate(ROOT_A, HERE, PULL)
    assert not outcome.allowed
    assert outcome.message().endswith("with an explicit deny in a resource-based policy")
    assert await _allowed(authz, ROOT_A, on_repository("ecr:PutImage", A, RepositoryName("app")))


@pytest.mark.anyio
async def test_registry_policy_scope_v1_governs_only_its_actions(authz: Authorizer, store: MemoryStore) -> None:
    store.set_registry(A, policy(grant("*", "ecr:*", effect="Deny")), scope="V1")
    assert await _allowed(authz, ROOT_A, PULL)
    assert not await _allowed(authz, ROOT_A, on_repository("ecr:CreateRepository", A, RepositoryName("new")))


@pytest.mark.anyio
async def test_cross_account_needs_both_sides(authz: Authorizer, store: MemoryStore) -> None:
    carol_pull = f"arn:aws:iam::{ACCOUNT_B}:user/carol"
    outcome = await authz.evaluate(ROOT_B, HERE, PULL)
    assert not outcome.allowed
    assert "because no resource-based policy allows the ecr:BatchGetImage action" in outcome.message()
    store.set_repository(A, "app", policy(grant({"AWS": ACCOUNT_B}, "ecr:BatchGetImage")))
    assert await _allowed(authz, ROOT_B, PULL)  # B's root: implicit identity-side Allow
    outcome = await authz.evaluate(CAROL, HERE, PULL)
    assert "because no identity-based policy allows" in outcome.message()
    store.set_user(ACCOUNT_B, "carol", policy({"Effect": "Allow", "Action": "ecr:BatchGetImage", "Resource": "*"}))
    assert await _allowed(authz, CAROL, PULL)
    assert carol_pull.endswith("carol")


@pytest.mark.anyio
async def test_get_authorization_token_counts_only_identity_policies(authz: Authorizer, store: MemoryStore) -> None:
    token = Need("ecr:GetAuthorizationToken", A, "*", identity_only=True)
    store.set_registry(A, policy(grant("*", "ecr:*")))
    assert not await _allowed(authz, ALICE, token)
    store.set_registry(A, policy(grant("*", "ecr:*", effect="Deny")))
    assert await _allowed(authz, ROOT_A, token)


@pytest.mark.anyio
async def test_registry_level_actions_act_on_star(authz: Authorizer, store: MemoryStore) -> None:
    store.set_user(ACCOUNT_A, "alice", policy({"Effect": "Allow", "Action": "ecr:*", "Resource": repo_arn("*")}))
    assert not await _allowed(authz, ALICE, on_registry("ecr:DescribeRegistry", A))
    store.set_user(ACCOUNT_A, "alice", policy({"Effect": "Allow", "Action": "ecr:DescribeRegistry", "Resource": "*"}))
    assert await _allowed(authz, ALICE, on_registry("ecr:DescribeRegistry", A))


@pytest.mark.anyio
async def test_condition_keys(authz: Authorizer, store: MemoryStore) -> None:
    store.set_repository(A, "app", None, tags={"team": "blue"})
    statement = {
        "Effect": "Allow",
        "Action": "ecr:BatchGetImage",
        "Resource": "*",
        "Condition": {
            "StringEquals": {
                "ecr:ResourceTag/team": "blue",
                "aws:PrincipalAccount": ACCOUNT_A,
                "aws:username": "alice",
            },
            "IpAddress": {"aws:SourceIp": "10.0.0.0/8"},
            "Bool": {"aws:SecureTransport": "true"},
            "DateGreaterThan": {"aws:CurrentTime": "2029-01-01T00:00:00Z"},
        },
    }
    store.set_user(ACCOUNT_A, "alice", policy(statement))
    assert await _allowed(authz, ALICE, PULL)
    assert not await _allowed(authz, ALICE, PULL, Origin("192.168.0.1", secure=True))
    assert not await _allowed(authz, ALICE, PULL, Origin("10.0.0.1", secure=False))
    store.set_repository(A, "app", None, tags={"team": "red"})
    assert not await _allowed(authz, ALICE, PULL)


@pytest.mark.anyio
async def test_request_tags_and_tag_keys(authz: Authorizer, store: MemoryStore) -> None:
    statement = {
        "Effect": "Allow",
        "Action": ["ecr:CreateRepository", "ecr:TagResource"],
        "Resource": "*",
        "Condition": {
            "StringEquals": {"aws:RequestTag/team": "blue"},
            "ForAllValues:StringEquals": {"aws:TagKeys": ["team"]},
        },
    }
    store.set_user(ACCOUNT_A, "alice", policy(statement))

    def create(tags: list[dict[str, str]]) -> list[Need]:
        return ecr_needs(
            "CreateRepository", {"repositoryName": "new", "tags": tags}, account=ACCOUNT_A, region="us-east-1"
        )

    for need in create([{"Key": "team", "Value": "blue"}]):
        assert await _allowed(authz, ALICE, need)
    assert not await _allowed(authz, ALICE, create([{"Key": "team", "Value": "red"}])[0])
    assert not await _allowed(authz, ALICE, create([{"Key": "team", "Value": "blue"}, {"Key": "x", "Value": "y"}])[0])


@pytest.mark.anyio
async def test_what_if_a_repository_policy_were_in_place(authz: Authorizer, store: MemoryStore) -> None:
    set_policy = on_repository("ecr:SetRepositoryPolicy", A, RepositoryName("app"))
    deny_all = parse_policy(policy(grant("*", "ecr:SetRepositoryPolicy", effect="Deny")), kind="resource")
    assert await _allowed(authz, ROOT_A, set_policy)
    assert not (await authz.evaluate(ROOT_A, HERE, set_policy, repository_policy=deny_all)).allowed
    store.set_repository(A, "app", policy(grant({"AWS": f"arn:aws:iam::{ACCOUNT_A}:user/alice"}, "ecr:*")))
    assert await _allowed(authz, ALICE, set_policy)
    assert not (await authz.evaluate(ALICE, HERE, set_policy, repository_policy=None)).allowed


@pytest.mark.anyio
async def test_a_deleted_user_is_allowed_nothing(authz: Authorizer, store: MemoryStore) -> None:
    store.set_repository(A, "app", policy(grant("*", "ecr:BatchGetImage")))
    assert await _allowed(authz, ALICE, PULL)
    assert not await _allowed(authz, Principal.of(ACCOUNT_A, "deleted"), PULL)


@pytest.mark.anyio
async def test_create_on_push_also_needs_create_repository(store: MemoryStore) -> None:
    authz = Authorizer(store, clock=FixedClock(datetime(2030, 1, 1, tzinfo=UTC)), create_on_push=True)
    store.repositories[(A, "new")] = RepositoryFacts(False, None, {})
    store.set_user(
        ACCOUNT_A, "alice", policy({"Effect": "Allow", "Action": "ecr:InitiateLayerUpload", "Resource": "*"})
    )

    async def push(name: str) -> None:
        await authz.check_registry_api(
            ALICE, HERE, "uploads", "POST", A, RepositoryName(name), param=lambda _: None, has_body=False
        )

    await push("app")
    with pytest.raises(AccessDeniedError, match="ecr:CreateRepository"):
        await push("new")
