"""Repository and registry policies through the ECR API (boto3): storage, errors, validation,
the REGISTRY_POLICY_SCOPE setting and SetRepositoryPolicy's lock-out guard."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from moorage.authz import POLICY_CACHE_SECONDS
from tests.authz.conftest import ACCOUNT_A, ACCOUNT_B, World, denied, eventually, grant, policy, user_arn
from tests.support.ecr import expect_error

PULL = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]


def test_repository_policy_set_get_delete(root: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    missing = (
        f"Repository policy does not exist for the repository with name '{name}' in the registry with id '{ACCOUNT_A}'"
    )
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", missing, repositoryName=name)
    expect_error(root.delete_repository_policy, "RepositoryPolicyNotFoundException", missing, repositoryName=name)
    text = json.dumps(
        {"Version": "2008-10-17", "Statement": [{"Sid": "pull", "Effect": "Allow", "Principal": "*", "Action": PULL}]},
        indent=2,
    )
    answer = root.set_repository_policy(repositoryName=name, policyText=text)
    assert (answer["registryId"], answer["repositoryName"], answer["policyText"]) == (ACCOUNT_A, name, text)
    got = root.get_repository_policy(repositoryName=name)
    assert (got["registryId"], got["repositoryName"], got["policyText"]) == (ACCOUNT_A, name, text)
    assert root.delete_repository_policy(repositoryName=name)["policyText"] == text
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", missing, repositoryName=name)


def test_repository_policy_of_a_missing_repository(root: Any) -> None:
    message = f"The repository with name 'authz/nope' does not exist in the registry with id '{ACCOUNT_A}'"
    expect_error(root.get_repository_policy, "RepositoryNotFoundException", message, repositoryName="authz/nope")
    expect_error(
        root.set_repository_policy,
        "RepositoryNotFoundException",
        message,
        repositoryName="authz/nope",
        policyText=policy(grant("*", "ecr:*")),
    )


def test_repository_policy_goes_with_the_repository(root: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    root.set_repository_policy(repositoryName=name, policyText=policy(grant("*", PULL)))
    root.delete_repository(repositoryName=name)
    root.create_repository(repositoryName=name)
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", repositoryName=name)


INVALID_REPOSITORY_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid repository policy provided'"
)
INVALID_REGISTRY_POLICY = (
    "Invalid parameter at 'PolicyText' failed to satisfy constraint: 'Invalid registry policy provided'"
)


def test_invalid_documents_answer_ecrs_text_and_log_the_reason(
    world: World, root: Any, new_name: Callable[[], str]
) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    cases = {
        "{not json": "not valid JSON",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "ecr:*"}]}): "Principal",
        policy(grant("*", "ecr:*", effect="Maybe")): "Effect must be 'Allow' or 'Deny'",
        policy(grant({"AWS": "arn:aws:iam::1234:user/x"}, "ecr:*")): "invalid principal",
        policy(grant("*", "ecr:*", Condition={"StringEqualz": {"aws:username": "x"}})): "unknown condition operator",
        policy(grant("*", "s3:GetObject")): "'s3:GetObject' is not an ECR action",
        policy(grant("*", ["ecr:BatchGetImage", "s3:*"])): "'s3:*' is not an ECR action",
    }
    for text, fragment in cases.items():
        expect_error(
            root.set_repository_policy,
            "InvalidParameterException",
            INVALID_REPOSITORY_POLICY,
            repositoryName=name,
            policyText=text,
        )
        expect_error(root.put_registry_policy, "InvalidParameterException", INVALID_REGISTRY_POLICY, policyText=text)
        log = world.server.log()
        assert f"SetRepositoryPolicy {name} in {ACCOUNT_A} refused: " in log
        assert fragment in log, fragment
    # The model's length limit answers as any member constraint does.
    too_long = (
        "Invalid parameter at 'policyText' failed to satisfy constraint: "
        "'Member must have length less than or equal to 10240'"
    )
    text = policy(grant("*", "ecr:*")) + " " * 10_240
    expect_error(
        root.set_repository_policy, "InvalidParameterException", too_long, repositoryName=name, policyText=text
    )
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", repositoryName=name)
    expect_error(root.get_registry_policy, "RegistryPolicyNotFoundException")
    # ECR's own actions, wildcards included, are fine.
    root.set_repository_policy(repositoryName=name, policyText=policy(grant("*", ["ecr:Batch*", "ecr:*", "*"])))


def test_registry_policy_put_get_delete(world: World) -> None:
    ecr = world.ecr("root", "eu-central-1")
    missing = f"Registry policy does not exist in the registry with id '{ACCOUNT_A}'"
    expect_error(ecr.get_registry_policy, "RegistryPolicyNotFoundException", missing)
    expect_error(ecr.delete_registry_policy, "RegistryPolicyNotFoundException", missing)
    text = policy(grant({"AWS": f"arn:aws:iam::{ACCOUNT_B}:root"}, ["ecr:CreateRepository"]))
    answer = ecr.put_registry_policy(policyText=text)
    assert (answer["registryId"], answer["policyText"]) == (ACCOUNT_A, text)
    assert ecr.get_registry_policy()["policyText"] == text
    # Registry policies are regional: us-east-1's registry has none.
    expect_error(world.ecr("root").get_registry_policy, "RegistryPolicyNotFoundException")
    assert ecr.delete_registry_policy()["policyText"] == text
    expect_error(ecr.get_registry_policy, "RegistryPolicyNotFoundException", missing)


def _set_scope(world: World, region: str, value: str) -> None:
    """A V1 registry cannot be made through the API (V2 is the only settable value): write the
    stored setting directly, as a registry from before V2 would have it."""
    with sqlite3.connect(world.server.data_dir / "metadata.db") as db:
        db.execute(
            "INSERT INTO kv (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
            (f"setting/{ACCOUNT_A}/{region}/REGISTRY_POLICY_SCOPE", value),
        )


def test_registry_policy_scope(world: World, new_name: Callable[[], str]) -> None:
    region = "eu-north-1"
    ecr = world.ecr("root", region)
    assert ecr.get_account_setting(name="REGISTRY_POLICY_SCOPE")["value"] == "V2"
    expect_error(ecr.put_account_setting, "InvalidParameterException", name="REGISTRY_POLICY_SCOPE", value="V1")
    assert ecr.put_account_setting(name="REGISTRY_POLICY_SCOPE", value="V2")["value"] == "V2"
    name = new_name()
    ecr.create_repository(repositoryName=name)
    deny_pull = policy(grant("*", ["ecr:BatchGetImage", "ecr:CreateRepository"], effect="Deny"))
    # V2: the registry policy governs every action, the root's own included.
    ecr.put_registry_policy(policyText=deny_pull)
    denied(ecr.batch_get_image, repositoryName=name, imageIds=[{"imageTag": "v1"}])
    ecr.delete_registry_policy()
    _set_scope(world, region, "V1")
    eventually(lambda: expect_error(ecr.put_registry_policy, "InvalidParameterException", policyText=deny_pull))
    expect_error(ecr.put_registry_policy, "InvalidParameterException", INVALID_REGISTRY_POLICY, policyText=deny_pull)
    assert "ecr:BatchGetImage is not allowed in Statement[0] when REGISTRY_POLICY_SCOPE is V1" in world.server.log()
    ecr.put_registry_policy(policyText=policy(grant("*", "ecr:CreateRepository", effect="Deny")))
    assert ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["failures"]
    denied(ecr.create_repository, repositoryName=new_name())
    # A V2-era policy kept by a V1 registry governs only the V1 actions.
    with sqlite3.connect(world.server.data_dir / "metadata.db") as db:
        db.execute(
            "UPDATE registry_policies SET document = ? WHERE account_id = ? AND region = ?",
            (deny_pull, ACCOUNT_A, region),
        )
    time.sleep(POLICY_CACHE_SECONDS + 0.3)  # the server re-reads what was written behind its back
    assert ecr.batch_get_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])["failures"]
    denied(ecr.create_repository, repositoryName=new_name())
    ecr.delete_registry_policy()
    _set_scope(world, region, "V2")


def test_lock_out_guard_for_the_root(root: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    lock_out = policy(grant("*", "ecr:SetRepositoryPolicy", effect="Deny"))
    response = expect_error(
        root.set_repository_policy, "InvalidParameterException", repositoryName=name, policyText=lock_out
    )
    message = response["Error"]["Message"]
    assert f"would prevent arn:aws:iam::{ACCOUNT_A}:root from setting the repository policy again" in message
    assert "set force to true" in message
    expect_error(root.get_repository_policy, "RepositoryPolicyNotFoundException", repositoryName=name)
    # A policy that denies others only is fine.
    others = policy(grant({"AWS": user_arn(ACCOUNT_A, "bob")}, "ecr:SetRepositoryPolicy", effect="Deny"))
    root.set_repository_policy(repositoryName=name, policyText=others)
    root.set_repository_policy(repositoryName=name, policyText=lock_out, force=True)
    message = denied(root.set_repository_policy, repositoryName=name, policyText=others)
    assert message == (
        f"User: arn:aws:iam::{ACCOUNT_A}:root is not authorized to perform: ecr:SetRepositoryPolicy on resource: "
        f"arn:aws:ecr:us-east-1:{ACCOUNT_A}:repository/{name} with an explicit deny in a resource-based policy"
    )
    root.delete_repository_policy(repositoryName=name)
    root.set_repository_policy(repositoryName=name, policyText=others)


def test_lock_out_guard_for_a_user_allowed_by_the_policy_itself(
    world: World, root: Any, new_name: Callable[[], str]
) -> None:
    name = new_name()
    root.create_repository(repositoryName=name)
    alice = world.ecr("alice")
    mine = policy(grant({"AWS": user_arn(ACCOUNT_A, "alice")}, "ecr:*"))
    root.set_repository_policy(repositoryName=name, policyText=mine)
    # Alice's only Allow is this policy: replacing it with one that does not name her locks her out.
    pull_only = policy(grant({"AWS": user_arn(ACCOUNT_A, "alice")}, PULL))
    response = expect_error(
        alice.set_repository_policy, "InvalidParameterException", repositoryName=name, policyText=pull_only
    )
    assert "no identity-based policy allows the ecr:SetRepositoryPolicy action" in response["Error"]["Message"]
    both = policy(grant({"AWS": user_arn(ACCOUNT_A, "alice")}, [*PULL, "ecr:SetRepositoryPolicy"]))
    alice.set_repository_policy(repositoryName=name, policyText=both)
    alice.set_repository_policy(repositoryName=name, policyText=pull_only, force=True)
    denied(alice.set_repository_policy, repositoryName=name, policyText=both)
    assert root.get_repository_policy(repositoryName=name)["policyText"] == pull_only
