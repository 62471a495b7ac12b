"""Image operations through boto3: PutImage, BatchGetImage, BatchDeleteImage, DescribeImages,
ListImages, ListImageReferrers (and their paginators)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.support.ecr import (
    ACCOUNT,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Blob,
    digest_of,
    docker_manifest,
    expect_error,
    image_config,
    oci_index,
    oci_manifest,
    push_image,
    random_blob,
    upload_blob,
)

NOT_FOUND = "Requested image not found"
BAD_DIGEST = "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'"
NO_ID = "Invalid request parameters: both tag and digest cannot be null"
MISSING = "sha256:" + "0" * 64
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


def put(ecr: Any, repository: str, manifest: Blob, tag: str | None = None, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"repositoryName": repository, "imageManifest": manifest.text, **extra}
    if tag is not None:
        params["imageTag"] = tag
    image: dict[str, Any] = ecr.put_image(**params)["image"]
    return image


def details(ecr: Any, repository: str, **params: Any) -> dict[str, dict[str, Any]]:
    return {d["imageDigest"]: d for d in ecr.describe_images(repositoryName=repository, **params)["imageDetails"]}


def tags_of(ecr: Any, repository: str, digest: str) -> list[str]:
    detail = ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])["imageDetails"][0]
    return sorted(detail.get("imageTags", []))


def image_missing(repository: str, digest: str | None, tag: str | None) -> str:
    return (
        f"The image with imageId {{imageDigest:'{digest if digest is not None else 'null'}', "
        f"imageTag:'{tag if tag is not None else 'null'}'}} does not exist "
        f"within the repository with name '{repository}' in the registry with id '{ACCOUNT}'"
    )


# --- PutImage ------------------------------------------------------------------------------------


def test_put_image_and_describe_shape(ecr: Any, repo: str) -> None:
    before = datetime.now(UTC)
    image = push_image(ecr, repo, layer_sizes=(123, 4567, 89))
    tagged = put(ecr, repo, image.manifest, "v1")
    assert tagged == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "imageId": {"imageDigest": image.manifest.digest, "imageTag": "v1"},
        "imageManifest": image.manifest.text,
        "imageManifestMediaType": DOCKER_MANIFEST,
    }
    detail = details(ecr, repo)[image.manifest.digest]
    pushed = detail.pop("imagePushedAt")
    assert isinstance(pushed, datetime)
    assert before - timedelta(seconds=5) <= pushed <= datetime.now(UTC) + timedelta(seconds=5)
    assert detail == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "imageDigest": image.manifest.digest,
        "imageTags": ["v1"],
        "imageSizeInBytes": 123 + 4567 + 89,
        "imageManifestMediaType": DOCKER_MANIFEST,
        "artifactMediaType": image.config.media_type,
        "imageStatus": "ACTIVE",
    }


def test_put_image_untagged_and_media_type_parameter(ecr: Any, repo: str) -> None:
    config = image_config(OCI_CONFIG)
    layer = random_blob(64)
    for item in (config, layer):
        upload_blob(ecr, repo, item.data)
    document = {"schemaVersion": 2, "config": _desc(config), "layers": [_desc(layer)]}  # no mediaType member
    text = json.dumps(document)
    expect_error(
        ecr.put_image,
        "InvalidParameterException",
        "image manifest mediatype not provided in manifest or parameter",
        repositoryName=repo,
        imageManifest=text,
    )
    answer = ecr.put_image(repositoryName=repo, imageManifest=text, imageManifestMediaType=OCI_MANIFEST)["image"]
    assert answer["imageId"] == {"imageDigest": digest_of(text.encode())}
    assert answer["imageManifestMediaType"] == OCI_MANIFEST
    detail = details(ecr, repo)[digest_of(text.encode())]
    assert "imageTags" not in detail
    assert detail["imageSizeInBytes"] == 64
    assert detail["artifactMediaType"] == OCI_CONFIG


def _desc(blob: Blob) -> dict[str, Any]:
    return {"mediaType": blob.media_type, "digest": blob.digest, "size": blob.size}


def test_put_image_errors(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    image = push_image(ecr, repo, "v1")
    missing = new_name()
    expect_error(
        ecr.put_image,
        "RepositoryNotFoundException",
        f"The repository with name '{missing}' does not exist in the registry with id '{ACCOUNT}'",
        repositoryName=missing,
        imageManifest=image.manifest.text,
    )
    expect_error(
        ecr.put_image,
        "InvalidParameterException",
        "Invalid parameter at 'ImageManifest' failed to satisfy constraint: 'Invalid JSON syntax'",
        repositoryName=repo,
        imageManifest="{not json",
    )
    other = "sha256:" + "ab" * 32
    response = expect_error(
        ecr.put_image,
        "ImageDigestDoesNotMatchException",
        repositoryName=repo,
        imageManifest=image.manifest.text,
        imageTag="v2",
        imageDigest=other,
    )
    assert other in response["Error"]["Message"]
    assert image.manifest.digest in response["Error"]["Message"]
    # The right digest is accepted.
    put(ecr, repo, image.manifest, "v2", imageDigest=image.manifest.digest)
    assert tags_of(ecr, repo, image.manifest.digest) == ["v1", "v2"]


def test_put_image_invalid_tag(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo)
    for bad in ("has space", ".leading-dot", "a/b"):
        expect_error(
            ecr.put_image,
            "InvalidParameterException",
            repositoryName=repo,
            imageManifest=image.manifest.text,
            imageTag=bad,
        )
    assert "imageTags" not in details(ecr, repo)[image.manifest.digest]


def test_image_already_exists(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1")
    expect_error(
        ecr.put_image,
        "ImageAlreadyExistsException",
        f"Image with digest '{image.manifest.digest}' and tag 'v1' already exists in the repository with name "
        f"'{repo}' in registry with id '{ACCOUNT}'",
        repositoryName=repo,
        imageManifest=image.manifest.text,
        imageTag="v1",
    )
    # Without a tag the message says null, as ECR prints an absent value (never Python's None).
    expect_error(
        ecr.put_image,
        "ImageAlreadyExistsException",
        f"Image with digest '{image.manifest.digest}' and tag 'null' already exists in the repository with name "
        f"'{repo}' in registry with id '{ACCOUNT}'",
        repositoryName=repo,
        imageManifest=image.manifest.text,
    )
    # A new tag on the same manifest is a change, not a duplicate.
    put(ecr, repo, image.manifest, "v2")
    assert tags_of(ecr, repo, image.manifest.digest) == ["v1", "v2"]


def test_image_not_found_names_a_tag_called_none_as_given(ecr: Any, repo: str) -> None:
    """A tag spelled None is a tag like any other: the message quotes it, and null only for an absent value."""
    push_image(ecr, repo, "v1")
    expect_error(
        ecr.describe_images,
        "ImageNotFoundException",
        image_missing(repo, None, "None"),
        repositoryName=repo,
        imageIds=[{"imageTag": "None"}],
    )
    expect_error(
        ecr.update_image_storage_class,
        "ImageNotFoundException",
        image_missing(repo, None, "None"),
        repositoryName=repo,
        imageId={"imageTag": "None"},
        targetStorageClass="ARCHIVE",
    )


def test_mutable_tag_moves_and_leaves_old_image_untagged(ecr: Any, repo: str) -> None:
    first = push_image(ecr, repo, "latest")
    second = push_image(ecr, repo, "latest")
    found = details(ecr, repo)
    assert found[second.manifest.digest]["imageTags"] == ["latest"]
    assert "imageTags" not in found[first.manifest.digest]


def test_layers_not_found(ecr: Any, repo: str) -> None:
    config = image_config()
    present, absent = random_blob(100, DOCKER_LAYER), random_blob(100, DOCKER_LAYER)
    for item in (config, present):
        upload_blob(ecr, repo, item.data)
    manifest = docker_manifest(config, [present, absent])
    response = expect_error(
        ecr.put_image, "LayersNotFoundException", repositoryName=repo, imageManifest=manifest.text, imageTag="x"
    )
    assert response["Error"]["Message"] == (
        f"Layers with digests [{absent.digest}] required for pushing image into repository with name '{repo}' "
        f"in the registry with id '{ACCOUNT}' do not exist"
    )
    assert ecr.list_images(repositoryName=repo)["imageIds"] == []


def test_referenced_images_not_found(ecr: Any, repo: str) -> None:
    child = push_image(ecr, repo, oci=True)
    stranger = push_image(ecr, repo, oci=True)
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": stranger.manifest.digest}])
    index = oci_index([child.manifest, stranger.manifest])
    response = expect_error(
        ecr.put_image, "ReferencedImagesNotFoundException", repositoryName=repo, imageManifest=index.text
    )
    assert response["Error"]["Message"] == (
        f"Images with digests [{stranger.manifest.digest}] required for pushing image into repository with name "
        f"'{repo}' in the registry with id '{ACCOUNT}' do not exist"
    )


def test_index_size_is_largest_child(ecr: Any, repo: str) -> None:
    small = push_image(ecr, repo, oci=True, layer_sizes=(100,))
    large = push_image(ecr, repo, oci=True, layer_sizes=(900, 100))
    index = oci_index([small.manifest, large.manifest])
    answer = put(ecr, repo, index, "multi")
    assert answer["imageManifestMediaType"] == OCI_INDEX
    detail = details(ecr, repo)[index.digest]
    assert detail["imageSizeInBytes"] == 1000
    assert detail["imageTags"] == ["multi"]
    assert "artifactMediaType" not in detail


# --- tag mutability ------------------------------------------------------------------------------


def test_immutable_repository_refuses_moving_and_reasserting_a_tag(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    ecr.create_repository(repositoryName=name, imageTagMutability="IMMUTABLE")
    first = push_image(ecr, name, "v1")
    second = push_image(ecr, name)
    response = expect_error(
        ecr.put_image,
        "ImageTagAlreadyExistsException",
        repositoryName=name,
        imageManifest=second.manifest.text,
        imageTag="v1",
    )
    assert response["Error"]["Message"].startswith(
        f"The image tag 'v1' already exists in the '{name}' repository and cannot be overwritten because the "
    )
    # Re-asserting the same tag on the same image is refused too (checked before "nothing changed").
    expect_error(
        ecr.put_image,
        "ImageTagAlreadyExistsException",
        repositoryName=name,
        imageManifest=first.manifest.text,
        imageTag="v1",
    )
    # New tags are fine, and removing a tag is always allowed.
    put(ecr, name, second.manifest, "v2")
    deleted = ecr.batch_delete_image(repositoryName=name, imageIds=[{"imageTag": "v1"}])
    assert deleted["imageIds"] == [{"imageDigest": first.manifest.digest, "imageTag": "v1"}]
    put(ecr, name, second.manifest, "v1")
    assert tags_of(ecr, name, second.manifest.digest) == ["v1", "v2"]


def test_immutable_with_exclusion_lets_excluded_tags_move(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    ecr.create_repository(
        repositoryName=name,
        imageTagMutability="IMMUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[
            {"filterType": "WILDCARD", "filter": "latest"},
            {"filterType": "WILDCARD", "filter": "dev-*"},
        ],
    )
    first = push_image(ecr, name, "latest")
    put(ecr, name, first.manifest, "dev-1")
    put(ecr, name, first.manifest, "v1")
    second = push_image(ecr, name)
    put(ecr, name, second.manifest, "latest")
    put(ecr, name, second.manifest, "dev-1")
    expect_error(
        ecr.put_image,
        "ImageTagAlreadyExistsException",
        repositoryName=name,
        imageManifest=second.manifest.text,
        imageTag="v1",
    )
    assert tags_of(ecr, name, first.manifest.digest) == ["v1"]
    assert tags_of(ecr, name, second.manifest.digest) == ["dev-1", "latest"]


def test_mutable_with_exclusion_freezes_matching_tags(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    ecr.create_repository(
        repositoryName=name,
        imageTagMutability="MUTABLE_WITH_EXCLUSION",
        imageTagMutabilityExclusionFilters=[{"filterType": "WILDCARD", "filter": "release-*"}],
    )
    first = push_image(ecr, name, "release-1")
    put(ecr, name, first.manifest, "latest")
    second = push_image(ecr, name, "latest")
    expect_error(
        ecr.put_image,
        "ImageTagAlreadyExistsException",
        repositoryName=name,
        imageManifest=second.manifest.text,
        imageTag="release-1",
    )
    assert tags_of(ecr, name, first.manifest.digest) == ["release-1"]
    assert tags_of(ecr, name, second.manifest.digest) == ["latest"]


# --- BatchGetImage -------------------------------------------------------------------------------


def test_batch_get_image(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1")
    digest = image.manifest.digest
    got = ecr.batch_get_image(
        repositoryName=repo,
        imageIds=[{"imageTag": "v1"}, {"imageDigest": digest}, {"imageDigest": digest, "imageTag": "v1"}],
    )
    assert got["failures"] == []
    assert [i["imageId"] for i in got["images"]] == [
        {"imageDigest": digest, "imageTag": "v1"},
        {"imageDigest": digest},
        {"imageDigest": digest, "imageTag": "v1"},
    ]
    for item in got["images"]:
        assert item["registryId"] == ACCOUNT
        assert item["repositoryName"] == repo
        assert item["imageManifest"] == image.manifest.text
        assert item["imageManifestMediaType"] == DOCKER_MANIFEST


def test_batch_get_image_failures(ecr: Any, unchecked_ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    image = push_image(ecr, repo, "v1")
    other = push_image(ecr, repo, "v2")
    got = unchecked_ecr.batch_get_image(
        repositoryName=repo,
        imageIds=[
            {},
            {"imageDigest": "not-a-digest"},
            {"imageTag": "nope"},
            {"imageDigest": MISSING},
            {"imageDigest": other.manifest.digest, "imageTag": "v1"},
            {"imageTag": "v1"},
        ],
    )
    assert [i["imageId"] for i in got["images"]] == [{"imageDigest": image.manifest.digest, "imageTag": "v1"}]
    assert got["failures"] == [
        {"imageId": {}, "failureCode": "MissingDigestAndTag", "failureReason": NO_ID},
        {"imageId": {"imageDigest": "not-a-digest"}, "failureCode": "InvalidImageDigest", "failureReason": BAD_DIGEST},
        {"imageId": {"imageTag": "nope"}, "failureCode": "ImageNotFound", "failureReason": NOT_FOUND},
        {"imageId": {"imageDigest": MISSING}, "failureCode": "ImageNotFound", "failureReason": NOT_FOUND},
        {
            "imageId": {"imageDigest": other.manifest.digest, "imageTag": "v1"},
            "failureCode": "ImageTagDoesNotMatchDigest",
            "failureReason": "Invalid request parameters: image tag does not match digest",
        },
    ]
    missing = new_name()
    expect_error(
        ecr.batch_get_image,
        "RepositoryNotFoundException",
        f"The repository with name '{missing}' does not exist in the registry with id '{ACCOUNT}'",
        repositoryName=missing,
        imageIds=[{"imageTag": "v1"}],
    )


def test_batch_get_image_converts_docker_to_oci_by_tag_only(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1")
    got = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[OCI_MANIFEST])
    assert got["failures"] == []
    (item,) = got["images"]
    assert item["imageManifestMediaType"] == OCI_MANIFEST
    body = item["imageManifest"].encode()
    assert body != image.manifest.data
    converted = json.loads(body)
    assert converted["mediaType"] == OCI_MANIFEST
    assert converted["config"]["mediaType"] == OCI_CONFIG
    assert converted["config"]["digest"] == image.config.digest
    assert [(d["mediaType"], d["digest"], d["size"]) for d in converted["layers"]] == [
        (OCI_LAYER, layer.digest, layer.size) for layer in image.layers
    ]
    assert item["imageId"]["imageDigest"] == digest_of(body) != image.manifest.digest
    assert item["imageId"]["imageTag"] == "v1"
    # By digest a manifest is never converted: a client that cannot take the stored type gets nothing.
    by_digest = ecr.batch_get_image(
        repositoryName=repo, imageIds=[{"imageDigest": image.manifest.digest}], acceptedMediaTypes=[OCI_MANIFEST]
    )
    assert by_digest["images"] == []
    assert [f["failureCode"] for f in by_digest["failures"]] == ["ImageNotFound"]
    # Accepting the stored type gets the stored bytes.
    stored = ecr.batch_get_image(
        repositoryName=repo, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[DOCKER_MANIFEST, OCI_MANIFEST]
    )
    assert stored["images"][0]["imageManifest"] == image.manifest.text
    assert stored["images"][0]["imageId"]["imageDigest"] == image.manifest.digest


def test_batch_get_image_converts_oci_to_docker(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1", oci=True)
    got = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}], acceptedMediaTypes=[DOCKER_MANIFEST])
    (item,) = got["images"]
    assert item["imageManifestMediaType"] == DOCKER_MANIFEST
    converted = json.loads(item["imageManifest"])
    assert converted["mediaType"] == DOCKER_MANIFEST
    assert [d["digest"] for d in converted["layers"]] == [layer.digest for layer in image.layers]
    assert {d["mediaType"] for d in converted["layers"]} == {DOCKER_LAYER}
    assert item["imageId"]["imageDigest"] == digest_of(item["imageManifest"].encode())


# --- BatchDeleteImage ----------------------------------------------------------------------------


def test_batch_delete_by_tag_removes_the_tag_then_the_image(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "a")
    digest = image.manifest.digest
    put(ecr, repo, image.manifest, "b")
    first = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "a"}])
    assert first["imageIds"] == [{"imageDigest": digest, "imageTag": "a"}]
    assert first["failures"] == []
    assert tags_of(ecr, repo, digest) == ["b"]
    last = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "b"}])
    assert last["imageIds"] == [{"imageDigest": digest, "imageTag": "b"}]
    expect_error(
        ecr.describe_images,
        "ImageNotFoundException",
        image_missing(repo, digest, None),
        repositoryName=repo,
        imageIds=[{"imageDigest": digest}],
    )
    assert ecr.list_images(repositoryName=repo)["imageIds"] == []


def test_batch_delete_by_digest_removes_all_tags(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "a")
    digest = image.manifest.digest
    put(ecr, repo, image.manifest, "b")
    untagged = push_image(ecr, repo)
    deleted = ecr.batch_delete_image(
        repositoryName=repo, imageIds=[{"imageDigest": digest}, {"imageDigest": untagged.manifest.digest}]
    )
    assert sorted(deleted["imageIds"], key=lambda i: (i["imageDigest"], i.get("imageTag", ""))) == sorted(
        [
            {"imageDigest": digest, "imageTag": "a"},
            {"imageDigest": digest, "imageTag": "b"},
            {"imageDigest": untagged.manifest.digest},
        ],
        key=lambda i: (i["imageDigest"], i.get("imageTag", "")),
    )
    assert ecr.describe_images(repositoryName=repo)["imageDetails"] == []


def test_batch_delete_by_tag_and_digest(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "a")
    other = push_image(ecr, repo, "z")
    put(ecr, repo, image.manifest, "b")
    mismatch = ecr.batch_delete_image(
        repositoryName=repo, imageIds=[{"imageDigest": other.manifest.digest, "imageTag": "a"}]
    )
    assert mismatch["imageIds"] == []
    assert [f["failureCode"] for f in mismatch["failures"]] == ["ImageTagDoesNotMatchDigest"]
    deleted = ecr.batch_delete_image(
        repositoryName=repo, imageIds=[{"imageDigest": image.manifest.digest, "imageTag": "a"}]
    )
    assert deleted["failures"] == []
    assert {"imageDigest": image.manifest.digest, "imageTag": "a"} in deleted["imageIds"]
    assert list(details(ecr, repo)) == [other.manifest.digest]


def test_batch_delete_failures(ecr: Any, unchecked_ecr: Any, repo: str) -> None:
    child = push_image(ecr, repo, "child", oci=True)
    index = oci_index([child.manifest])
    put(ecr, repo, index, "multi")
    got = unchecked_ecr.batch_delete_image(
        repositoryName=repo,
        imageIds=[
            {},
            {"imageDigest": "sha256:xyz"},
            {"imageTag": "nope"},
            {"imageDigest": MISSING},
            {"imageDigest": child.manifest.digest},
        ],
    )
    assert got["imageIds"] == []
    failures = got["failures"]
    assert failures[:4] == [
        {"imageId": {}, "failureCode": "MissingDigestAndTag", "failureReason": NO_ID},
        {"imageId": {"imageDigest": "sha256:xyz"}, "failureCode": "InvalidImageDigest", "failureReason": BAD_DIGEST},
        {"imageId": {"imageTag": "nope"}, "failureCode": "ImageNotFound", "failureReason": NOT_FOUND},
        {"imageId": {"imageDigest": MISSING}, "failureCode": "ImageNotFound", "failureReason": NOT_FOUND},
    ]
    assert failures[4]["imageId"] == {"imageDigest": child.manifest.digest}
    assert failures[4]["failureCode"] == "ImageReferencedByManifestList"
    assert index.digest in failures[4]["failureReason"]
    # The only tag of the child goes with the child: refused too while the index lists it.
    by_tag = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageTag": "child"}])
    assert [f["failureCode"] for f in by_tag["failures"]] == ["ImageReferencedByManifestList"]
    # Index first, then the child.
    ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": index.digest}])
    done = ecr.batch_delete_image(repositoryName=repo, imageIds=[{"imageDigest": child.manifest.digest}])
    assert done["failures"] == []
    assert done["imageIds"] == [{"imageDigest": child.manifest.digest, "imageTag": "child"}]


# --- DescribeImages / ListImages -----------------------------------------------------------------


def test_describe_images_by_id_and_filters(ecr: Any, repo: str) -> None:
    tagged = push_image(ecr, repo, "t1")
    untagged = push_image(ecr, repo)
    by_id = ecr.describe_images(
        repositoryName=repo, imageIds=[{"imageTag": "t1"}, {"imageDigest": untagged.manifest.digest}]
    )["imageDetails"]
    assert [d["imageDigest"] for d in by_id] == [tagged.manifest.digest, untagged.manifest.digest]
    assert list(details(ecr, repo, filter={"tagStatus": "TAGGED"})) == [tagged.manifest.digest]
    assert list(details(ecr, repo, filter={"tagStatus": "UNTAGGED"})) == [untagged.manifest.digest]
    assert set(details(ecr, repo, filter={"tagStatus": "ANY"})) == {tagged.manifest.digest, untagged.manifest.digest}
    expect_error(
        ecr.describe_images,
        "ImageNotFoundException",
        image_missing(repo, None, "missing"),
        repositoryName=repo,
        imageIds=[{"imageTag": "t1"}, {"imageTag": "missing"}],
    )
    expect_error(
        ecr.describe_images,
        "ImageNotFoundException",
        image_missing(repo, MISSING, None),
        repositoryName=repo,
        imageIds=[{"imageDigest": MISSING}],
    )
    expect_error(
        ecr.describe_images,
        "InvalidParameterException",
        repositoryName=repo,
        imageIds=[{"imageTag": "t1"}],
        maxResults=5,
    )


def test_list_images_one_entry_per_tag(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "a")
    put(ecr, repo, image.manifest, "b")
    untagged = push_image(ecr, repo)
    ids = ecr.list_images(repositoryName=repo)["imageIds"]
    digest = image.manifest.digest
    assert sorted(ids, key=lambda i: (i["imageDigest"], i.get("imageTag", ""))) == sorted(
        [
            {"imageDigest": digest, "imageTag": "a"},
            {"imageDigest": digest, "imageTag": "b"},
            {"imageDigest": untagged.manifest.digest},
        ],
        key=lambda i: (i["imageDigest"], i.get("imageTag", "")),
    )
    assert ecr.list_images(repositoryName=repo, filter={"tagStatus": "UNTAGGED"})["imageIds"] == [
        {"imageDigest": untagged.manifest.digest}
    ]
    tagged = ecr.list_images(repositoryName=repo, filter={"tagStatus": "TAGGED"})["imageIds"]
    assert sorted(i["imageTag"] for i in tagged) == ["a", "b"]


def _seven_images(ecr: Any, repository: str) -> None:
    """Seven images: five tagged (one of them three times), two untagged: nine ListImages entries."""
    for i in range(7):
        image = push_image(ecr, repository, f"t{i}" if i < 5 else None, layer_sizes=(16,))
        if i == 2:  # three tags: a page boundary of size 2 must fall between two of them
            put(ecr, repository, image.manifest, "t2-extra")
            put(ecr, repository, image.manifest, "t2-more")


def test_describe_and_list_images_paginators(ecr: Any, repo: str) -> None:
    _seven_images(ecr, repo)
    full = [d["imageDigest"] for d in ecr.describe_images(repositoryName=repo)["imageDetails"]]
    assert len(full) == len(set(full)) == 7
    pages = list(ecr.get_paginator("describe_images").paginate(repositoryName=repo, PaginationConfig={"PageSize": 2}))
    assert [len(p["imageDetails"]) for p in pages] == [2, 2, 2, 1]
    assert [d["imageDigest"] for p in pages for d in p["imageDetails"]] == full

    all_ids = ecr.list_images(repositoryName=repo)["imageIds"]
    assert len(all_ids) == 9  # one entry per tag, one per untagged image
    assert len({(i["imageDigest"], i.get("imageTag")) for i in all_ids}) == 9
    pages = list(ecr.get_paginator("list_images").paginate(repositoryName=repo, PaginationConfig={"PageSize": 2}))
    assert [len(p["imageIds"]) for p in pages] == [2, 2, 2, 2, 1]
    assert [i for p in pages for i in p["imageIds"]] == all_ids

    tagged = list(
        ecr.get_paginator("list_images").paginate(
            repositoryName=repo, filter={"tagStatus": "TAGGED"}, PaginationConfig={"PageSize": 3}
        )
    )
    assert [i for p in tagged for i in p["imageIds"]] == [i for i in all_ids if "imageTag" in i]


def test_image_page_tokens_are_tamper_proof_and_scoped(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    other = new_name()
    ecr.create_repository(repositoryName=other)
    for name in (repo, other):
        push_image(ecr, name, "a", layer_sizes=(8,))
        push_image(ecr, name, "b", layer_sizes=(8,))
    message = "Invalid parameter at 'nextToken' failed to satisfy constraint: 'Invalid token'"
    for operation in (ecr.describe_images, ecr.list_images):
        token = operation(repositoryName=repo, maxResults=1)["nextToken"]
        middle = len(token) // 2
        tampered = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
        expect_error(operation, "InvalidParameterException", message, repositoryName=repo, nextToken=tampered)
        expect_error(operation, "InvalidParameterException", message, repositoryName=other, nextToken=token)
        # The genuine token, in its own repository, works.
        assert operation(repositoryName=repo, nextToken=token)
    listed = ecr.list_images(repositoryName=repo, maxResults=1)["nextToken"]
    expect_error(ecr.describe_images, "InvalidParameterException", message, repositoryName=repo, nextToken=listed)


def test_image_operations_on_missing_repository(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    message = f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'"
    expect_error(ecr.describe_images, "RepositoryNotFoundException", message, repositoryName=name)
    expect_error(ecr.list_images, "RepositoryNotFoundException", message, repositoryName=name)
    expect_error(
        ecr.batch_delete_image,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        imageIds=[{"imageTag": "x"}],
    )
    expect_error(
        ecr.list_image_referrers,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        subjectId={"imageDigest": MISSING},
    )


# --- ListImageReferrers --------------------------------------------------------------------------


def test_list_image_referrers(ecr: Any, repo: str) -> None:
    subject = push_image(ecr, repo, "app", oci=True)
    empty = Blob(b"{}", digest_of(b"{}"), OCI_EMPTY)
    upload_blob(ecr, repo, empty.data)
    payload = random_blob(40, "application/vnd.example.signature")
    upload_blob(ecr, repo, payload.data)
    sbom = oci_manifest(
        empty,
        [payload],
        subject=subject.manifest,
        artifact_type="application/vnd.example.sbom",
        annotations={"org.example.kind": "sbom"},
    )
    signature = oci_manifest(empty, [], subject=subject.manifest, artifact_type="application/vnd.example.sig")
    put(ecr, repo, sbom)
    put(ecr, repo, signature, "sig")
    found = ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": subject.manifest.digest})
    referrers = sorted(found["referrers"], key=lambda r: r["digest"])
    expected = sorted(
        [
            {
                "digest": sbom.digest,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sbom",
                "size": sbom.size,
                "annotations": {"org.example.kind": "sbom"},
                "artifactStatus": "ACTIVE",
            },
            {
                "digest": signature.digest,
                "mediaType": OCI_MANIFEST,
                "artifactType": "application/vnd.example.sig",
                "size": signature.size,
                "artifactStatus": "ACTIVE",
            },
        ],
        key=lambda r: str(r["digest"]),
    )
    assert referrers == expected
    filtered = ecr.list_image_referrers(
        repositoryName=repo,
        subjectId={"imageDigest": subject.manifest.digest},
        filter={"artifactTypes": ["application/vnd.example.sig"]},
    )["referrers"]
    assert [r["digest"] for r in filtered] == [signature.digest]
    # No botocore paginator for this one: page by hand with maxResults 1.
    first = ecr.list_image_referrers(
        repositoryName=repo, subjectId={"imageDigest": subject.manifest.digest}, maxResults=1
    )
    second = ecr.list_image_referrers(
        repositoryName=repo,
        subjectId={"imageDigest": subject.manifest.digest},
        maxResults=1,
        nextToken=first["nextToken"],
    )
    assert "nextToken" not in second
    assert [r["digest"] for r in first["referrers"] + second["referrers"]] == [r["digest"] for r in expected]
    # The referrer's own image detail names its subject and its config type.
    detail = details(ecr, repo)[sbom.digest]
    assert detail["subjectManifestDigest"] == subject.manifest.digest
    assert detail["artifactMediaType"] == OCI_EMPTY
    assert detail["imageSizeInBytes"] == 40
    assert "subjectManifestDigest" not in details(ecr, repo)[subject.manifest.digest]
    # Nothing refers to the referrer itself.
    assert ecr.list_image_referrers(repositoryName=repo, subjectId={"imageDigest": sbom.digest})["referrers"] == []


@pytest.mark.parametrize("media_type", [OCI_MANIFEST, DOCKER_MANIFEST])
def test_describe_images_media_types(ecr: Any, repo: str, media_type: str) -> None:
    image = push_image(ecr, repo, "v", oci=media_type == OCI_MANIFEST)
    assert details(ecr, repo)[image.manifest.digest]["imageManifestMediaType"] == media_type
