"""Repository operations through boto3: CreateRepository, DescribeRepositories, DeleteRepository,
PutImageTagMutability, PutImageScanningConfiguration, TagResource, UntagResource, ListTagsForResource."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.ecr import ACCOUNT, REGION, ecr_client, expect_error, oci_index, push_image
from tests.support.live import LiveServer

NAME_PATTERN = r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"
INVALID_NAME = "Invalid parameter at 'repositoryName' failed to satisfy constraint: "


def not_found(name: str, account: str = ACCOUNT) -> str:
    return f"The repository with name '{name}' does not exist in the registry with id '{account}'"


def arn(name: str, region: str = REGION, account: str = ACCOUNT) -> str:
    return f"arn:aws:ecr:{region}:{account}:repository/{name}"


def test_create_repository_returns_the_full_record_with_defaults(
    ecr: Any, server: LiveServer, new_name: Callable[[], str]
) -> None:
    name = new_name()
    before = datetime.now(UTC)
    record = ecr.create_repository(repositoryName=name)["repository"]
    assert record["repositoryArn"] == arn(name)
    assert record["registryId"] == ACCOUNT
    assert record["repositoryName"] == name
    assert record["repositoryUri"] == f"{server.address}/{name}"
    created = record["createdAt"]
    assert isinstance(created, datetime)
    assert created.tzinfo is not None
    assert before - timedelta(seconds=5) <= created <= datetime.now(UTC) + timedelta(seconds=5)
    assert record["imageTagMutability"] == "MUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in record
    assert record["imageScanningConfiguration"] == {"scanOnPush": False}
    assert record["encryptionConfiguration"] == {"encryptionType": "AES256"}
    described = ecr.describe_repositories(repositoryNames=[name])["repositories"]
    assert described == [record]


def test_create_repository_with_settings_and_tags(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    record = ecr.create_repository(
        repositoryName=name,
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "dev-*"}],
        imageScanningConfiguration={"scanOnPush": True},
        encryptionConfiguration={"encryptionType": "KMS"},
        tags=[{"Key": "team", "Value": "infra"}, {"Key": "empty", "Value": ""}],
    )["repository"]
    assert record["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert record["imageTagMutabilityExclusionFilters"] == [{"filterType": "WILDCARD", "filter": "dev-*"}]
    assert record["imageScanningConfiguration"] == {"scanOnPush": True}
    assert record["encryptionConfiguration"]["encryptionType"] == "KMS"
    assert MANAGED_KEY_ARN.fullmatch(record["encryptionConfiguration"]["kmsKey"])
    tags = ecr.list_tags_for_resource(resourceArn=record["repositoryArn"])["tags"]
    assert sorted(tags, key=lambda t: t["Key"]) == [{"Key": "empty", "Value": ""}, {"Key": "team", "Value": "infra"}]


MANAGED_KEY_ARN = re.compile(
    rf"arn:aws:kms:{REGION}:{ACCOUNT}:key/[0-9a-f]{{8}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{4}}-[0-9a-f]{{12}}"
)


def test_managed_kms_key_is_a_key_arn_stable_per_account_and_region(
    server: LiveServer, ecr: Any, new_name: Callable[[], str]
) -> None:
    """KMS / KMS_DSSE without kmsKey: the AWS-managed key's key ARN (never the alias ARN), the same
    in every answer and for every repository of the account and region; another region has its own."""
    first, second = new_name(), new_name()
    kms = ecr.create_repository(repositoryName=first, encryptionConfiguration={"encryptionType": "KMS"})
    dsse = ecr.create_repository(repositoryName=second, encryptionConfiguration={"encryptionType": "KMS_DSSE"})
    key = kms["repository"]["encryptionConfiguration"]["kmsKey"]
    assert MANAGED_KEY_ARN.fullmatch(key), key
    assert dsse["repository"]["encryptionConfiguration"] == {"encryptionType": "KMS_DSSE", "kmsKey": key}
    described = ecr.describe_repositories(repositoryNames=[first, second])["repositories"]
    assert [r["encryptionConfiguration"]["kmsKey"] for r in described] == [key, key]
    deleted = ecr.delete_repository(repositoryName=first)["repository"]
    assert deleted["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": key}
    west = ecr_client(server.url, region="us-west-2")
    other = west.create_repository(repositoryName=first, encryptionConfiguration={"encryptionType": "KMS"})
    west_key = other["repository"]["encryptionConfiguration"]["kmsKey"]
    assert west_key.startswith(f"arn:aws:kms:us-west-2:{ACCOUNT}:key/")
    assert west_key.split("/")[-1] != key.split("/")[-1]
    west.delete_repository(repositoryName=first)  # leave us-west-2's registry as other tests expect it: empty
    # A key of the caller's is echoed as given.
    mine = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"
    own = ecr.create_repository(
        repositoryName=new_name(), encryptionConfiguration={"encryptionType": "KMS", "kmsKey": mine}
    )
    assert own["repository"]["encryptionConfiguration"] == {"encryptionType": "KMS", "kmsKey": mine}


def test_kms_key_with_aes256_is_invalid(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    expect_error(
        ecr.create_repository,
        "InvalidParameterException",
        repositoryName=name,
        encryptionConfiguration={"encryptionType": "AES256", "kmsKey": "alias/mine"},
    )
    expect_error(ecr.describe_repositories, "RepositoryNotFoundException", not_found(name), repositoryNames=[name])


def test_create_duplicate_repository(ecr: Any, repo: str) -> None:
    expect_error(
        ecr.create_repository,
        "RepositoryAlreadyExistsException",
        f"The repository with name '{repo}' already exists in the registry with id '{ACCOUNT}'",
        repositoryName=repo,
    )


@pytest.mark.parametrize("bad", ["Upper", "-abc", "abc/", "ab//c", "ab..c", "ab___c", "ab_-c", "ab c", "ab:c"])
def test_invalid_repository_name_pattern(ecr: Any, bad: str) -> None:
    expect_error(
        ecr.create_repository,
        "InvalidParameterException",
        f"{INVALID_NAME}'must satisfy regular expression '{NAME_PATTERN}''",
        repositoryName=bad,
    )


def test_invalid_repository_name_length(unchecked_ecr: Any) -> None:
    expect_error(
        unchecked_ecr.create_repository,
        "InvalidParameterException",
        f"{INVALID_NAME}'Member must have length greater than or equal to 2'",
        repositoryName="a",
    )
    expect_error(
        unchecked_ecr.create_repository,
        "InvalidParameterException",
        f"{INVALID_NAME}'Member must have length less than or equal to 256'",
        repositoryName="a" * 257,
    )


@pytest.mark.parametrize("suffix", ["a--b", "a__b", "team/sub/app.v2", "0lead/digit"])
def test_valid_unusual_repository_names(ecr: Any, new_name: Callable[[], str], suffix: str) -> None:
    name = f"{new_name()}/{suffix}"
    assert ecr.create_repository(repositoryName=name)["repository"]["repositoryName"] == name


def test_describe_repositories_by_name(ecr: Any, new_name: Callable[[], str]) -> None:
    first, second = new_name(), new_name()
    for name in (first, second):
        ecr.create_repository(repositoryName=name)
    found = ecr.describe_repositories(repositoryNames=[second, first])["repositories"]
    assert sorted(r["repositoryName"] for r in found) == sorted([first, second])
    missing = new_name()
    expect_error(
        ecr.describe_repositories,
        "RepositoryNotFoundException",
        not_found(missing),
        repositoryNames=[first, missing],
    )
    expect_error(ecr.describe_repositories, "InvalidParameterException", repositoryNames=[first], maxResults=5)


def test_nonexistent_repository_everywhere(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    message = not_found(name)
    expect_error(ecr.delete_repository, "RepositoryNotFoundException", message, repositoryName=name)
    expect_error(
        ecr.put_image_tag_mutability,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        imageTagMutability="IMMUTABLE",
    )
    expect_error(
        ecr.put_image_scanning_configuration,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        imageScanningConfiguration={"scanOnPush": True},
    )
    expect_error(ecr.list_tags_for_resource, "RepositoryNotFoundException", message, resourceArn=arn(name))
    expect_error(
        ecr.tag_resource,
        "RepositoryNotFoundException",
        message,
        resourceArn=arn(name),
        tags=[{"Key": "k", "Value": "v"}],
    )
    expect_error(ecr.untag_resource, "RepositoryNotFoundException", message, resourceArn=arn(name), tagKeys=["k"])


def test_delete_repository(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    created = ecr.create_repository(repositoryName=name)["repository"]
    deleted = ecr.delete_repository(repositoryName=name)["repository"]
    assert deleted == created
    expect_error(ecr.describe_repositories, "RepositoryNotFoundException", not_found(name), repositoryNames=[name])


def test_delete_non_empty_repository_needs_force(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    ecr.create_repository(repositoryName=name, tags=[{"Key": "k", "Value": "v"}])
    image = push_image(ecr, name, "v1", oci=True)
    index = oci_index([image.manifest])
    ecr.put_image(repositoryName=name, imageManifest=index.text, imageTag="multi")
    ecr.initiate_layer_upload(repositoryName=name)
    expect_error(
        ecr.delete_repository,
        "RepositoryNotEmptyException",
        f"The repository with name '{name}' in registry with id '{ACCOUNT}' cannot be deleted because it still "
        "contains images",
        repositoryName=name,
    )
    assert len(ecr.describe_images(repositoryName=name)["imageDetails"]) == 2
    assert ecr.delete_repository(repositoryName=name, force=True)["repository"]["repositoryName"] == name
    expect_error(ecr.describe_images, "RepositoryNotFoundException", not_found(name), repositoryName=name)
    # Recreated under the same name, nothing of the old repository is left.
    ecr.create_repository(repositoryName=name)
    assert ecr.describe_images(repositoryName=name)["imageDetails"] == []
    assert ecr.list_images(repositoryName=name)["imageIds"] == []
    assert ecr.list_tags_for_resource(resourceArn=arn(name))["tags"] == []


def test_put_image_tag_mutability(ecr: Any, repo: str) -> None:
    answer = ecr.put_image_tag_mutability(
        repositoryName=repo,
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[
            {"filterType": "WILDCARD", "filter": "release-*"},
            {"filterType": "WILDCARD", "filter": "stable"},
        ],
    )
    assert answer["registryId"] == ACCOUNT
    assert answer["repositoryName"] == repo
    assert answer["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
    assert answer["imageTagMutabilityExclusionFilters"] == [
        {"filterType": "WILDCARD", "filter": "release-*"},
        {"filterType": "WILDCARD", "filter": "stable"},
    ]
    record = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert record["imageTagMutability"] == "MUTABLE_WITH_EXCLUSION"
    assert len(record["imageTagMutabilityExclusionFilters"]) == 2
    answer = ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="IMMUTABLE")
    assert answer["imageTagMutability"] == "IMMUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in answer
    record = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert record["imageTagMutability"] == "IMMUTABLE"
    assert "imageTagMutabilityExclusionFilters" not in record


@pytest.mark.parametrize("mode", ["IMMUTABLE_WITH_EXCLUSION", "MUTABLE_WITH_EXCLUSION"])
def test_exclusion_filters_required_with_exclusion_modes(ecr: Any, repo: str, mode: str) -> None:
    message = (
        "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
        f"'ImageTagMutabilityExclusionFilters can't be null when imageTagMutability is set as {mode}'"
    )
    expect_error(
        ecr.put_image_tag_mutability, "InvalidParameterException", message, repositoryName=repo, imageTagMutability=mode
    )
    expect_error(
        ecr.create_repository, "InvalidParameterException", message, repositoryName=repo + "-x", imageTagMutability=mode
    )


@pytest.mark.parametrize("mode", ["MUTABLE", "IMMUTABLE"])
def test_exclusion_filters_forbidden_without_exclusion_modes(ecr: Any, repo: str, mode: str) -> None:
    filters = [{"filterType": "WILDCARD", "filter": "latest"}]
    message = (
        "Invalid parameter at 'imageTagMutabilityExclusionFilters' failed to satisfy constraint: "
        f"'ImageTagMutabilityExclusionFilters should be null when imageTagMutability is set as {mode}'"
    )
    expect_error(
        ecr.put_image_tag_mutability,
        "InvalidParameterException",
        message,
        repositoryName=repo,
        imageTagMutability=mode,
        imageTagMutabilityExclusionFilters=filters,
    )
    expect_error(
        ecr.create_repository,
        "InvalidParameterException",
        message,
        repositoryName=repo + "-x",
        imageTagMutability=mode,
        imageTagMutabilityExclusionFilters=filters,
    )


def test_invalid_mutability_value_and_filter(ecr: Any, repo: str) -> None:
    response = expect_error(
        ecr.put_image_tag_mutability, "InvalidParameterException", repositoryName=repo, imageTagMutability="SOMETIMES"
    )
    assert response["Error"]["Message"].startswith(
        "Invalid parameter at 'imageTagMutability' failed to satisfy constraint: 'Member must satisfy enum value set:"
    )
    expect_error(
        ecr.put_image_tag_mutability,
        "InvalidParameterException",
        repositoryName=repo,
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "bad/filter"}],
    )


def test_put_image_scanning_configuration(ecr: Any, repo: str) -> None:
    answer = ecr.put_image_scanning_configuration(repositoryName=repo, imageScanningConfiguration={"scanOnPush": True})
    assert answer["registryId"] == ACCOUNT
    assert answer["repositoryName"] == repo
    assert answer["imageScanningConfiguration"] == {"scanOnPush": True}
    record = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert record["imageScanningConfiguration"] == {"scanOnPush": True}
    ecr.put_image_scanning_configuration(repositoryName=repo, imageScanningConfiguration={"scanOnPush": False})
    record = ecr.describe_repositories(repositoryNames=[repo])["repositories"][0]
    assert record["imageScanningConfiguration"] == {"scanOnPush": False}


# --- resource tags -------------------------------------------------------------------------------


def _tags(ecr: Any, resource: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in ecr.list_tags_for_resource(resourceArn=resource)["tags"]}


def test_tag_untag_list(ecr: Any, repo: str) -> None:
    resource = arn(repo)
    assert _tags(ecr, resource) == {}
    assert set(
        ecr.tag_resource(resourceArn=resource, tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}])
    ) == {"ResponseMetadata"}
    ecr.tag_resource(resourceArn=resource, tags=[{"Key": "b", "Value": "two"}, {"Key": "C", "Value": "3"}])
    assert _tags(ecr, resource) == {"a": "1", "b": "two", "C": "3"}
    ecr.untag_resource(resourceArn=resource, tagKeys=["a", "c", "unknown"])
    assert _tags(ecr, resource) == {"b": "two", "C": "3"}


def test_too_many_tags(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    resource = arn(repo)
    fifty = [{"Key": f"k{i:02}", "Value": "v"} for i in range(50)]
    ecr.tag_resource(resourceArn=resource, tags=fifty)
    assert len(_tags(ecr, resource)) == 50
    ecr.tag_resource(resourceArn=resource, tags=[{"Key": "k00", "Value": "again"}])  # overwriting is no new tag
    expect_error(
        ecr.tag_resource, "TooManyTagsException", resourceArn=resource, tags=[{"Key": "one-more", "Value": ""}]
    )
    assert len(_tags(ecr, resource)) == 50
    name = new_name()
    fifty_one = [{"Key": f"k{i:02}", "Value": "v"} for i in range(51)]
    expect_error(ecr.create_repository, "TooManyTagsException", repositoryName=name, tags=fifty_one)
    expect_error(ecr.describe_repositories, "RepositoryNotFoundException", not_found(name), repositoryNames=[name])


def test_reserved_and_invalid_tag_keys(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    resource = arn(repo)
    expect_error(
        ecr.tag_resource,
        "InvalidTagParameterException",
        resourceArn=resource,
        tags=[{"Key": "aws:owner", "Value": "x"}],
    )
    expect_error(ecr.untag_resource, "InvalidTagParameterException", resourceArn=resource, tagKeys=["aws:owner"])
    expect_error(
        ecr.tag_resource, "InvalidTagParameterException", resourceArn=resource, tags=[{"Key": "k" * 129, "Value": "x"}]
    )
    expect_error(
        ecr.tag_resource, "InvalidTagParameterException", resourceArn=resource, tags=[{"Key": "k", "Value": "v" * 257}]
    )
    name = new_name()
    expect_error(
        ecr.create_repository,
        "InvalidTagParameterException",
        repositoryName=name,
        tags=[{"Key": "AWS:x", "Value": "y"}],
    )
    expect_error(ecr.describe_repositories, "RepositoryNotFoundException", not_found(name), repositoryNames=[name])
    assert _tags(ecr, resource) == {}


@pytest.mark.parametrize(
    "resource",
    [
        "not-an-arn",
        "arn:aws:s3:::bucket",
        f"arn:aws:ecr:{REGION}:{ACCOUNT}:registry/x",
        f"arn:aws:ecr:{REGION}:12345:repository/x",
    ],
)
def test_malformed_resource_arn(ecr: Any, resource: str) -> None:
    message = "Invalid parameter at 'resourceArn' failed to satisfy constraint: 'Invalid ARN'"
    expect_error(ecr.list_tags_for_resource, "InvalidParameterException", message, resourceArn=resource)
    expect_error(
        ecr.tag_resource, "InvalidParameterException", message, resourceArn=resource, tags=[{"Key": "k", "Value": "v"}]
    )
    expect_error(ecr.untag_resource, "InvalidParameterException", message, resourceArn=resource, tagKeys=["k"])


def test_resource_arn_of_another_region_or_account(ecr: Any, repo: str) -> None:
    # The repository exists in us-east-1 only: the same name in another region is another repository.
    expect_error(
        ecr.list_tags_for_resource, "RepositoryNotFoundException", not_found(repo), resourceArn=arn(repo, "eu-west-3")
    )
    expect_error(ecr.list_tags_for_resource, "AccessDeniedException", resourceArn=arn(repo, account="210987654321"))


# --- pagination ----------------------------------------------------------------------------------


def test_describe_repositories_paginator(server: LiveServer, new_name: Callable[[], str]) -> None:
    # A region of its own: the registry there holds exactly these repositories.
    ecr = ecr_client(server.url, region="eu-west-1")
    stem = new_name()
    names = [f"{stem}/r{i}" for i in range(7)]
    for name in reversed(names):
        ecr.create_repository(repositoryName=name)
    pages = list(ecr.get_paginator("describe_repositories").paginate(PaginationConfig={"PageSize": 2}))
    assert [len(p["repositories"]) for p in pages] == [2, 2, 2, 1]
    seen = [r["repositoryName"] for p in pages for r in p["repositories"]]
    assert seen == sorted(names)
    assert all(r["repositoryArn"] == arn(r["repositoryName"], "eu-west-1") for p in pages for r in p["repositories"])
    single = ecr.describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in single] == seen
    assert "nextToken" not in ecr.describe_repositories()


def test_describe_repositories_tampered_token(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    ecr.create_repository(repositoryName=new_name())
    token = ecr.describe_repositories(maxResults=1)["nextToken"]
    tampered = token[:-3] + ("AAA" if token[-3:] != "AAA" else "BBB")
    message = "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'"
    expect_error(ecr.describe_repositories, "InvalidParameterException", message, nextToken=tampered)
    expect_error(ecr.describe_repositories, "InvalidParameterException", message, nextToken="garbage")
    # A token for another operation is no DescribeRepositories token.
    push_image(ecr, repo, "a", layer_sizes=(10,))
    push_image(ecr, repo, "b", layer_sizes=(10,))
    images_token = ecr.list_images(repositoryName=repo, maxResults=1)["nextToken"]
    expect_error(ecr.describe_repositories, "InvalidParameterException", message, nextToken=images_token)
