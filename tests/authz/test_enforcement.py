"""Enforcement in one account: denied by default, allowed by an identity policy (the CLI) or a
repository policy, denied again by an explicit Deny in the registry policy; condition keys; the
same rules on `/v2/`; open mode still applies resource policies."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.authz.conftest import (
    ACCOUNT_A,
    ACCOUNT_B,
    World,
    allow,
    denied,
    eventually,
    grant,
    policy,
    repo_arn,
    user_arn,
)
from tests.support.ecr import DOCKER_MANIFEST, basic_auth, ecr_client, expect_error, push_image

PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def v2(world: World, path: str, password: str | None, region: str = "us-east-1", **kwargs: Any) -> httpx.Response:
    headers = {"Accept": DOCKER_MANIFEST, **kwargs.pop("headers", {})}
    if password is not None:
        headers["Authorization"] = basic_auth(password)
    return httpx.get(f"{world.server.url}/v2/{path}", headers=headers, timeout=30, **kwargs)


def codes(response: httpx.Response) -> list[str]:
    return [e["code"] for e in response.json()["errors"]]


def test_a_new_user_may_do_nothing(world: World, root: Any, new_name: Callable[[], str]) -> None:
    bob = world.ecr("bob")
    name = new_name()
    root.create_repository(repositoryName=name)
    assert denied(bob.describe_repositories) == (
        f"User: {user_arn(ACCOUNT_A, 'bob')} is not authorized to perform: ecr:DescribeRepositories on resource: "
        f"{repo_arn('*')} because no identity-based policy allows the ecr:DescribeRepositories action"
    )
    assert denied(bob.get_authorization_token) == (
        f"User: {user_arn(ACCOUNT_A, 'bob')} is not authorized to perform: ecr:GetAuthorizationToken on resource: * "
        "because no identity-based policy allows the ecr:GetAuthorizationToken action"
    )
    assert denied(bob.list_images, repositoryName=name).endswith(
        f"ecr:ListImages on resource: {repo_arn(name)} "
        "because no identity-based policy allows the ecr:ListImages action"
    )
    denied(bob.create_repository, repositoryName=new_name())
    denied(bob.describe_registry)
    assert v2(world, f"{name}/tags/list", None).status_code == 401


def test_identity_policies_from_the_cli(
    world: World, root: Any, new_name: Callable[[], str], policy_file: Callable[[str], str]
) -> None:
    bob = world.ecr("bob")
    name = new_name()
    root.create_repository(repositoryName=name)
    document = policy(allow(["ecr:DescribeRepositories", "ecr:ListImages"], repo_arn("authz/*")))
    out = world.admin(
        "attach-user-policy", "--account", ACCOUNT_A, "bob", "--name", "read", "--document", policy_file(document)
    )
    assert "attached" in out
    eventually(lambda: bob.list_images(repositoryName=name))
    assert name in [r["repositoryName"] for r in bob.describe_repositories(repositoryNames=[name])["repositories"]]
    denied(bob.describe_repositories)  # repository/* is not matched by authz/*
    denied(bob.batch_get_image, repositoryName=name, imageIds=[{"imageTag": "v1"}])
    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent CLI processes at once
        listed = pool.submit(world.admin, "list-user-policies", "bob")
        refused = pool.submit(
            world.admin, "attach-user-policy", "bob", "--name", "bad", "--document", "-", stdin="{}", check=False
        )
        assert listed.result().split() == ["read"]
        assert "Invalid policy document: the policy has no Statement" in refused.result()
    world.admin("detach-user-policy", "bob", "--name", "read")
    eventually(lambda: denied(bob.list_images, repositoryName=name))


def test_repository_policy_allows_then_registry_policy_denies(world: World, new_name: Callable[[], str]) -> None:
    region = "ap-northeast-1"
    root, alice = world.ecr("root", region), world.ecr("alice", region)
    name, other = new_name(), new_name()
    for repo in (name, other):
        root.create_repository(repositoryName=repo)
    image = push_image(root, name, "v1")
    password = world.password("alice", region)
    ids = [{"imageTag": "v1"}]
    denied(alice.batch_get_image, repositoryName=name, imageIds=ids)
    assert v2(world, f"{name}/manifests/v1", password).status_code == 403
    # Allowed by the repository policy (same account: one side suffices); at once in this process.
    root.set_repository_policy(
        repositoryName=name, policyText=policy(grant({"AWS": user_arn(ACCOUNT_A, "alice")}, PULL))
    )
    assert alice.batch_get_image(repositoryName=name, imageIds=ids)["images"][0]["imageManifest"] == image.manifest.text
    got = v2(world, f"{name}/manifests/v1", password)
    assert got.status_code == 200
    assert got.content == image.manifest.data
    assert v2(world, f"{name}/blobs/{image.layers[0].digest}", password).content == image.layers[0].data
    denied(alice.batch_get_image, repositoryName=other, imageIds=ids)
    denied(alice.put_image, repositoryName=name, imageManifest=image.manifest.text, imageTag="v2")
    refused = v2(world, f"{name}/tags/list", password)
    assert (refused.status_code, codes(refused)) == (403, ["DENIED"])
    assert refused.json()["errors"][0]["message"] == (
        f"User: {user_arn(ACCOUNT_A, 'alice')} is not authorized to perform: ecr:ListImages on resource: "
        f"{repo_arn(name, region=region)} because no identity-based policy allows the ecr:ListImages action"
    )
    # Denied again by an explicit Deny in the registry policy.
    root.put_registry_policy(
        policyText=policy(
            grant(
                {"AWS": user_arn(ACCOUNT_A, "alice")},
                "ecr:BatchGetImage",
                effect="Deny",
                Resource=repo_arn("*", region=region),
            )
        )
    )
    assert denied(alice.batch_get_image, repositoryName=name, imageIds=ids).endswith(
        "with an explicit deny in a resource-based policy"
    )
    refused = v2(world, f"{name}/manifests/v1", password)
    assert (refused.status_code, codes(refused)) == (403, ["DENIED"])
    assert alice.get_download_url_for_layer(repositoryName=name, layerDigest=image.layers[0].digest)["downloadUrl"]
    assert root.batch_get_image(repositoryName=name, imageIds=ids)["images"]
    root.delete_registry_policy()
    assert alice.batch_get_image(repositoryName=name, imageIds=ids)["images"]


def test_the_root_can_be_denied_by_a_resource_policy(world: World, new_name: Callable[[], str]) -> None:
    region = "ap-southeast-1"
    root = world.ecr("root", region)
    name = new_name()
    root.create_repository(repositoryName=name)
    root.put_registry_policy(policyText=policy(grant("*", "ecr:DeleteRepository", effect="Deny")))
    denied(root.delete_repository, repositoryName=name)
    root.set_repository_policy(repositoryName=name, policyText=policy(grant("*", "ecr:ListImages", effect="Deny")))
    denied(root.list_images, repositoryName=name)
    assert v2(world, f"{name}/tags/list", world.password("root", region)).status_code == 403
    root.delete_registry_policy()
    root.delete_repository(repositoryName=name, force=True)


def test_condition_keys_end_to_end(world: World, root: Any, new_name: Callable[[], str]) -> None:
    alice = world.ecr("alice")
    name = new_name()
    root.create_repository(repositoryName=name, tags=[{"Key": "team", "Value": "blue"}])
    conditions = {
        "StringEquals": {"ecr:ResourceTag/team": "blue", "aws:PrincipalAccount": ACCOUNT_A},
        "IpAddress": {"aws:SourceIp": "127.0.0.0/8"},
        "Bool": {"aws:SecureTransport": "false"},
    }
    root.set_repository_policy(
        repositoryName=name, policyText=policy(grant({"AWS": ACCOUNT_A}, "ecr:ListImages", Condition=conditions))
    )
    assert alice.list_images(repositoryName=name)["imageIds"] == []
    arn = repo_arn(name)
    root.tag_resource(resourceArn=arn, tags=[{"Key": "team", "Value": "red"}])
    denied(alice.list_images, repositoryName=name)
    root.tag_resource(resourceArn=arn, tags=[{"Key": "team", "Value": "blue"}])
    assert alice.list_images(repositoryName=name)["imageIds"] == []
    elsewhere = {**conditions, "IpAddress": {"aws:SourceIp": "10.0.0.0/8"}}
    root.set_repository_policy(
        repositoryName=name, policyText=policy(grant({"AWS": ACCOUNT_A}, "ecr:ListImages", Condition=elsewhere))
    )
    denied(alice.list_images, repositoryName=name)


def test_tagging_needs_tag_resource_with_request_tags(world: World, new_name: Callable[[], str]) -> None:
    """CreateRepository with tags also needs ecr:TagResource; aws:RequestTag and aws:TagKeys apply."""
    region = "sa-east-1"
    root = world.ecr("root", region)
    alice = world.ecr("alice", region)
    create_only = policy(
        grant({"AWS": user_arn(ACCOUNT_A, "alice")}, "ecr:CreateRepository", Resource=repo_arn("*", region=region))
    )
    root.put_registry_policy(policyText=create_only)
    alice.create_repository(repositoryName=new_name())
    message = denied(alice.create_repository, repositoryName=new_name(), tags=[{"Key": "team", "Value": "blue"}])
    assert "ecr:TagResource" in message
    tagged = policy(
        grant(
            {"AWS": user_arn(ACCOUNT_A, "alice")},
            ["ecr:CreateRepository", "ecr:TagResource"],
            Resource=repo_arn("*", region=region),
            Condition={"StringEquals": {"aws:RequestTag/team": "blue"}},
        )
    )
    root.put_registry_policy(policyText=tagged)
    alice.create_repository(repositoryName=new_name(), tags=[{"Key": "team", "Value": "blue"}])
    denied(alice.create_repository, repositoryName=new_name(), tags=[{"Key": "team", "Value": "red"}])
    root.delete_registry_policy()


@pytest.fixture
def open_ecr(world: World) -> Callable[[str], Any]:
    def client(account: str) -> Any:
        return ecr_client(world.open_server.url, key_id=account, secret="irrelevant", validate=False)

    return client


def test_open_mode_still_applies_resource_policies(
    world: World, open_ecr: Callable[[str], Any], new_name: Callable[[], str]
) -> None:
    a, b = open_ecr(ACCOUNT_A), open_ecr(ACCOUNT_B)
    name = new_name()
    a.create_repository(repositoryName=name)
    image = push_image(a, name, "v1")
    url = f"{world.open_server.url}/v2/{name}/manifests/v1"
    assert httpx.get(url, headers={"Accept": DOCKER_MANIFEST}).status_code == 200
    # Another account's root (as claimed by its key id) needs A's resource policy.
    denied(b.batch_get_image, registryId=ACCOUNT_A, repositoryName=name, imageIds=[{"imageTag": "v1"}])
    a.set_repository_policy(repositoryName=name, policyText=policy(grant({"AWS": ACCOUNT_B}, PULL)))
    got = b.batch_get_image(registryId=ACCOUNT_A, repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert got["images"][0]["imageManifest"] == image.manifest.text
    # An explicit Deny applies to the root too, on both APIs.
    a.set_repository_policy(
        repositoryName=name, policyText=policy(grant("*", "ecr:BatchGetImage", effect="Deny")), force=True
    )
    denied(a.batch_get_image, repositoryName=name, imageIds=[{"imageTag": "v1"}])
    refused = httpx.get(url, headers={"Accept": DOCKER_MANIFEST})
    assert (refused.status_code, codes(refused)) == (403, ["DENIED"])
    a.delete_repository_policy(repositoryName=name)
    assert httpx.get(url, headers={"Accept": DOCKER_MANIFEST}).status_code == 200


def test_policy_changes_through_the_api_apply_at_once(world: World, root: Any, new_name: Callable[[], str]) -> None:
    """Within the serving process a policy change never waits for the cache TTL."""
    alice = world.ecr("alice")
    name = new_name()
    root.create_repository(repositoryName=name)
    grant_alice = policy(grant({"AWS": user_arn(ACCOUNT_A, "alice")}, "ecr:ListImages"))
    for _ in range(3):
        started = time.monotonic()
        root.set_repository_policy(repositoryName=name, policyText=grant_alice)
        alice.list_images(repositoryName=name)
        root.delete_repository_policy(repositoryName=name)
        denied(alice.list_images, repositoryName=name)
        assert time.monotonic() - started < 5
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", repositoryName=name)
