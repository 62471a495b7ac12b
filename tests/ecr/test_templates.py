"""Repository creation templates over boto3, and CREATE_ON_PUSH over `/v2/` (httpx), against a
real server of their own (templates are registry-wide: a ROOT template would change every other
test's pushes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ecr import expect_error
from tests.support.images import error_codes, push_image
from tests.support.live import LiveServer

ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/ecr-templates"
KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
REPO_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "pull",
                "Effect": "Allow",
                "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
                "Action": ["ecr:BatchGetImage"],
            }
        ],
    }
)
LIFECYCLE = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 7,
                },
                "action": {"type": "expire"},
            }
        ]
    }
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with LiveServer(tmp_path_factory.mktemp("templates") / "data") as server:
        yield server


@pytest.fixture(scope="module")
def ecr(live: LiveServer) -> Any:
    return live.ecr()


@pytest.fixture
def v2(live: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, auth=live.auth, timeout=30) as client:
        yield client


def _cleanup(ecr: Any) -> None:
    for template in ecr.describe_repository_creation_templates()["repositoryCreationTemplates"]:
        ecr.delete_repository_creation_template(prefix=template["prefix"])


def test_create_describe_update_delete(ecr: Any) -> None:
    created = ecr.create_repository_creation_template(
        prefix="crud/",
        description="team templates",
        appliedFor=["REPLICATION", "CREATE_ON_PUSH"],
        imageTagMutability="IMMUTABLE",
    )
    assert created["registryId"] == ACCOUNT
    template = created["repositoryCreationTemplate"]
    assert template["prefix"] == "crud"  # the trailing '/' is implied
    assert template["appliedFor"] == ["REPLICATION", "CREATE_ON_PUSH"]
    assert template["imageTagMutability"] == "IMMUTABLE"
    assert template["encryptionConfiguration"] == {"encryptionType": "AES256"}
    assert template["description"] == "team templates"
    assert template["createdAt"] == template["updatedAt"]

    expect_error(
        ecr.create_repository_creation_template,
        "TemplateAlreadyExistsException",
        prefix="crud",
        appliedFor=["REPLICATION"],
    )
    # Update changes only what it is given.
    updated = ecr.update_repository_creation_template(prefix="crud", appliedFor=["PULL_THROUGH_CACHE"])
    again = updated["repositoryCreationTemplate"]
    assert again["appliedFor"] == ["PULL_THROUGH_CACHE"]
    assert again["imageTagMutability"] == "IMMUTABLE"
    assert again["description"] == "team templates"
    assert again["updatedAt"] >= again["createdAt"]

    found = ecr.describe_repository_creation_templates(prefixes=["crud", "nothing-here"])
    assert [t["prefix"] for t in found["repositoryCreationTemplates"]] == ["crud"]

    deleted = ecr.delete_repository_creation_template(prefix="crud")
    assert deleted["repositoryCreationTemplate"]["prefix"] == "crud"
    expect_error(ecr.delete_repository_creation_template, "TemplateNotFoundException", prefix="crud")
    expect_error(ecr.update_repository_creation_template, "TemplateNotFoundException", prefix="crud", description="x")


def test_describe_pages_in_prefix_order(ecr: Any) -> None:
    prefixes = ["page-c", "page-a", "ROOT", "page-b"]
    for prefix in prefixes:
        ecr.create_repository_creation_template(prefix=prefix, appliedFor=["REPLICATION"])
    try:
        first = ecr.describe_repository_creation_templates(maxResults=2)
        assert [t["prefix"] for t in first["repositoryCreationTemplates"]] == ["ROOT", "page-a"]
        second = ecr.describe_repository_creation_templates(maxResults=2, nextToken=first["nextToken"])
        assert [t["prefix"] for t in second["repositoryCreationTemplates"]] == ["page-b", "page-c"]
        assert "nextToken" not in second
        pages = ecr.get_paginator("describe_repository_creation_templates").paginate(PaginationConfig={"PageSize": 1})
        assert [t["prefix"] for p in pages for t in p["repositoryCreationTemplates"]] == sorted(prefixes)
    finally:
        _cleanup(ecr)


def test_fields_are_validated_like_the_put_apis(ecr: Any) -> None:
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        repositoryPolicy='{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject"}]}',
    )
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        lifecyclePolicy='{"rules": []}',
    )
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
    )
    # Tags and a KMS key need a role of the registry's own account.
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        resourceTags=[{"Key": "team", "Value": "a"}],
    )
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        resourceTags=[{"Key": "team", "Value": "a"}],
        customRoleArn="arn:aws:iam::210987654321:role/other",
    )
    expect_error(
        ecr.create_repository_creation_template,
        "InvalidParameterException",
        prefix="bad",
        appliedFor=["CREATE_ON_PUSH"],
        encryptionConfiguration={"encryptionType": "AES256", "kmsKey": KMS_KEY},
        customRoleArn=ROLE,
    )
    assert ecr.describe_repository_creation_templates()["repositoryCreationTemplates"] == []


def test_create_on_push_applies_every_field(ecr: Any, v2: httpx.Client) -> None:
    # Without a template a push to a missing repository is NAME_UNKNOWN, as before.
    response = v2.post("/v2/cop/app/blobs/uploads/")
    assert response.status_code == 404
    assert error_codes(response) == ["NAME_UNKNOWN"]
    ecr.create_repository_creation_template(
        prefix="cop",
        appliedFor=["CREATE_ON_PUSH"],
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "latest*"}],
        encryptionConfiguration={"encryptionType": "KMS", "kmsKey": KMS_KEY},
        resourceTags=[{"Key": "team", "Value": "platform"}, {"Key": "tier", "Value": "gold"}],
        repositoryPolicy=REPO_POLICY,
        lifecyclePolicy=LIFECYCLE,
        customRoleArn=ROLE,
    )
    try:
        push_image(v2, "cop/app", "v1")
        repo = ecr.describe_repositories(repositoryNames=["cop/app"])["repositories"][0]
        assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
        assert repo["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "latest*"}]
        assert repo["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": KMS_KEY}
        tags = ecr.list_tags_for_resource(resourceArn=repo["repositoryArn"])["tags"]
        assert sorted((t["Key"], t["Value"]) for t in tags) == [("team", "platform"), ("tier", "gold")]
        assert ecr.get_repository_policy(repositoryName="cop/app")["policyText"] == REPO_POLICY
        assert ecr.get_lifecycle_policy(repositoryName="cop/app")["lifecyclePolicyText"] == LIFECYCLE
        # ... and the mutability applies: v1 cannot move, latest-* can.
        response = v2.put(
            "/v2/cop/app/manifests/v1",
            content=push_image(v2, "cop/app").data,
            headers={"content-type": "application/vnd.oci.image.manifest.v1+json"},
        )
        assert response.status_code == 400
        assert error_codes(response) == ["TAG_INVALID"]
        push_image(v2, "cop/app", "latest-1")
        push_image(v2, "cop/app", "latest-1")
        # A prefix matches on a '/' boundary only; ECR's explicit CreateRepository never uses templates.
        response = v2.post("/v2/copper/app/blobs/uploads/")
        assert response.status_code == 404
        assert error_codes(response) == ["NAME_UNKNOWN"]
        made = ecr.create_repository(repositoryName="cop/explicit")["repository"]
        assert made["imageTagMutability"] == "MUTABLE"
    finally:
        _cleanup(ecr)
        for name in ("cop/app", "cop/explicit"):
            ecr.delete_repository(repositoryName=name, force=True)


def test_longest_prefix_wins_then_root_and_only_for_its_scenario(ecr: Any, v2: httpx.Client) -> None:
    ecr.create_repository_creation_template(
        prefix="ROOT", appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE"
    )
    ecr.create_repository_creation_template(
        prefix="prec",
        appliedFor=["CREATE_ON_PUSH"],
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "rel-*"}],
    )
    ecr.create_repository_creation_template(
        prefix="prec/team",
        appliedFor=["CREATE_ON_PUSH", "REPLICATION"],
        encryptionConfiguration={"encryptionType": "KMS_DSSE"},
    )
    # A longer prefix for another scenario only does not take part.
    ecr.create_repository_creation_template(
        prefix="prec/team/svc", appliedFor=["REPLICATION"], imageTagMutability="IMMUTABLE"
    )
    names = ["prec/team/svc/api", "prec/team2/api", "other/api"]
    try:
        for name in names:
            push_image(v2, name, "v1")
        repos = {r["repositoryName"]: r for r in ecr.describe_repositories(repositoryNames=names)["repositories"]}
        svc = repos["prec/team/svc/api"]
        assert svc["imageTagMutability"] == "MUTABLE"
        assert svc["encryptionConfiguration"]["encryptionType"] == "KMS_DSSE"
        assert repos["prec/team2/api"]["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
        assert repos["other/api"]["imageTagMutability"] == "IMMUTABLE"
    finally:
        _cleanup(ecr)
        for name in names:
            ecr.delete_repository(repositoryName=name, force=True)


def test_a_template_wins_over_the_create_on_push_setting(tmp_path: Path) -> None:
    with LiveServer(tmp_path / "data", env={"MOORAGE_CREATE_ON_PUSH": "true"}) as live:
        ecr = live.ecr()
        ecr.create_repository_creation_template(
            prefix="fixed", appliedFor=["CREATE_ON_PUSH"], imageTagMutability="IMMUTABLE"
        )
        with httpx.Client(base_url=live.url, auth=live.auth, timeout=30) as v2:
            push_image(v2, "fixed/app", "v1")
            push_image(v2, "loose/app", "v1")  # no template matches: the setting's ECR defaults
        repos = {r["repositoryName"]: r for r in ecr.describe_repositories()["repositories"]}
        assert repos["fixed/app"]["imageTagMutability"] == "IMMUTABLE"
        assert repos["loose/app"]["imageTagMutability"] == "MUTABLE"
