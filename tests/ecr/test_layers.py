"""Layer operations through boto3: BatchCheckLayerAvailability, InitiateLayerUpload, UploadLayerPart,
CompleteLayerUpload, GetDownloadUrlForLayer (and fetching its URL with plain httpx)."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from tests.support.ecr import ACCOUNT, DOCKER_LAYER, digest_of, expect_error, push_image, upload_blob

MIB = 1024 * 1024
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def part(ecr: Any, repository: str, upload_id: str, first: int, data: bytes) -> dict[str, Any]:
    answer: dict[str, Any] = ecr.upload_layer_part(
        repositoryName=repository,
        uploadId=upload_id,
        partFirstByte=first,
        partLastByte=first + len(data) - 1,
        layerPartBlob=data,
    )
    return answer


def test_multipart_upload(ecr: Any, repo: str) -> None:
    started = ecr.initiate_layer_upload(repositoryName=repo)
    upload_id = started["uploadId"]
    assert UUID_RE.fullmatch(upload_id)
    assert started["partSize"] == 10 * MIB
    first, second = os.urandom(5 * MIB), os.urandom(1000)
    answer = part(ecr, repo, upload_id, 0, first)
    assert answer == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "uploadId": upload_id,
        "lastByteReceived": 5 * MIB - 1,
        "ResponseMetadata": answer["ResponseMetadata"],
    }
    assert part(ecr, repo, upload_id, 5 * MIB, second)["lastByteReceived"] == 5 * MIB + 999
    digest = digest_of(first + second)
    done = ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id, layerDigests=[digest])
    assert {k: v for k, v in done.items() if k != "ResponseMetadata"} == {
        "registryId": ACCOUNT,
        "repositoryName": repo,
        "uploadId": upload_id,
        "layerDigest": digest,
    }
    # An uploaded layer is available (that is how pushers skip re-uploads), before any image uses it.
    check = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[digest])
    assert check["failures"] == []
    (layer,) = check["layers"]
    assert layer["layerDigest"] == digest
    assert layer["layerAvailability"] == "AVAILABLE"
    assert layer["layerSize"] == 5 * MIB + 1000
    # The session is gone once completed.
    expect_error(
        ecr.complete_layer_upload,
        "UploadNotFoundException",
        repositoryName=repo,
        uploadId=upload_id,
        layerDigests=[digest],
    )


def test_batch_check_layer_availability(ecr: Any, unchecked_ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    image = push_image(ecr, repo, "v1", layer_sizes=(321,))
    layer = image.layers[0]
    missing = "sha256:" + "1" * 64
    check = unchecked_ecr.batch_check_layer_availability(
        repositoryName=repo, layerDigests=[layer.digest, missing, "not-a-digest"]
    )
    assert check["layers"] == [
        {"layerDigest": layer.digest, "layerAvailability": "AVAILABLE", "layerSize": 321, "mediaType": DOCKER_LAYER}
    ]
    assert [(f["layerDigest"], f["failureCode"]) for f in check["failures"]] == [
        (missing, "MissingLayerDigest"),
        ("not-a-digest", "InvalidLayerDigest"),
    ]
    # Layers are per repository.
    other = new_name()
    ecr.create_repository(repositoryName=other)
    elsewhere = ecr.batch_check_layer_availability(repositoryName=other, layerDigests=[layer.digest])
    assert elsewhere["layers"] == []
    assert [f["failureCode"] for f in elsewhere["failures"]] == ["MissingLayerDigest"]


def test_part_out_of_order(ecr: Any, repo: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    response = expect_error(
        ecr.upload_layer_part,
        "InvalidLayerPartException",
        repositoryName=repo,
        uploadId=upload_id,
        partFirstByte=10,
        partLastByte=19,
        layerPartBlob=b"x" * 10,
    )
    assert response["lastValidByteReceived"] == -1
    part(ecr, repo, upload_id, 0, b"a" * 100)
    for first in (50, 101):
        response = expect_error(
            ecr.upload_layer_part,
            "InvalidLayerPartException",
            repositoryName=repo,
            uploadId=upload_id,
            partFirstByte=first,
            partLastByte=first + 9,
            layerPartBlob=b"b" * 10,
        )
        assert response["lastValidByteReceived"] == 99
        assert response["registryId"] == ACCOUNT
        assert response["repositoryName"] == repo
        assert response["uploadId"] == upload_id
    # A range that does not match the part's length.
    response = expect_error(
        ecr.upload_layer_part,
        "InvalidLayerPartException",
        repositoryName=repo,
        uploadId=upload_id,
        partFirstByte=100,
        partLastByte=200,
        layerPartBlob=b"b" * 10,
    )
    assert response["lastValidByteReceived"] == 99
    # The session is intact: the bytes accepted so far complete the layer.
    digest = digest_of(b"a" * 100)
    done = ecr.complete_layer_upload(repositoryName=repo, uploadId=upload_id, layerDigests=[digest])
    assert done["layerDigest"] == digest


def test_layer_part_too_small(ecr: Any, repo: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    part(ecr, repo, upload_id, 0, b"a" * 1000)
    part(ecr, repo, upload_id, 1000, b"b" * 1000)
    expect_error(
        ecr.complete_layer_upload,
        "LayerPartTooSmallException",
        "All layer parts except the last part should be at least 5MB",
        repositoryName=repo,
        uploadId=upload_id,
        layerDigests=[digest_of(b"a" * 1000 + b"b" * 1000)],
    )


def test_empty_upload(ecr: Any, repo: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    expect_error(
        ecr.complete_layer_upload,
        "EmptyUploadException",
        f"The upload with id '{upload_id}' in the repository with name '{repo}' in registry with id '{ACCOUNT}' "
        "cannot be completed because it does not have any parts",
        repositoryName=repo,
        uploadId=upload_id,
        layerDigests=[digest_of(b"")],
    )


def test_invalid_layer_digest_mismatch(ecr: Any, repo: str) -> None:
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    part(ecr, repo, upload_id, 0, b"content")
    wrong = digest_of(b"other content")
    response = expect_error(
        ecr.complete_layer_upload,
        "InvalidLayerException",
        repositoryName=repo,
        uploadId=upload_id,
        layerDigests=[wrong],
    )
    assert wrong in response["Error"]["Message"]
    check = ecr.batch_check_layer_availability(repositoryName=repo, layerDigests=[wrong, digest_of(b"content")])
    assert check["layers"] == []


def test_layer_already_exists(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    data = os.urandom(256)
    digest = upload_blob(ecr, repo, data)
    upload_id = ecr.initiate_layer_upload(repositoryName=repo)["uploadId"]
    part(ecr, repo, upload_id, 0, data)
    response = expect_error(
        ecr.complete_layer_upload,
        "LayerAlreadyExistsException",
        repositoryName=repo,
        uploadId=upload_id,
        layerDigests=[digest],
    )
    assert digest in response["Error"]["Message"]
    # Layers are per repository: the same bytes upload fine into another one.
    other = new_name()
    ecr.create_repository(repositoryName=other)
    assert upload_blob(ecr, other, data) == digest


def test_upload_not_found(ecr: Any, repo: str, new_name: Callable[[], str]) -> None:
    bogus = str(uuid.uuid4())
    expect_error(
        ecr.upload_layer_part,
        "UploadNotFoundException",
        repositoryName=repo,
        uploadId=bogus,
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )
    expect_error(
        ecr.complete_layer_upload,
        "UploadNotFoundException",
        repositoryName=repo,
        uploadId=bogus,
        layerDigests=[digest_of(b"x")],
    )
    # An upload belongs to the repository it was started in.
    other = new_name()
    ecr.create_repository(repositoryName=other)
    upload_id = ecr.initiate_layer_upload(repositoryName=other)["uploadId"]
    expect_error(
        ecr.upload_layer_part,
        "UploadNotFoundException",
        repositoryName=repo,
        uploadId=upload_id,
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )
    part(ecr, other, upload_id, 0, b"x")


def test_layer_operations_on_missing_repository(ecr: Any, new_name: Callable[[], str]) -> None:
    name = new_name()
    message = f"The repository with name '{name}' does not exist in the registry with id '{ACCOUNT}'"
    digest = digest_of(b"x")
    expect_error(ecr.initiate_layer_upload, "RepositoryNotFoundException", message, repositoryName=name)
    expect_error(
        ecr.batch_check_layer_availability,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        layerDigests=[digest],
    )
    expect_error(
        ecr.get_download_url_for_layer, "RepositoryNotFoundException", message, repositoryName=name, layerDigest=digest
    )
    expect_error(
        ecr.upload_layer_part,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        uploadId=str(uuid.uuid4()),
        partFirstByte=0,
        partLastByte=0,
        layerPartBlob=b"x",
    )
    expect_error(
        ecr.complete_layer_upload,
        "RepositoryNotFoundException",
        message,
        repositoryName=name,
        uploadId=str(uuid.uuid4()),
        layerDigests=[digest],
    )


def test_get_download_url_for_layer(ecr: Any, repo: str) -> None:
    image = push_image(ecr, repo, "v1", layer_sizes=(4096,))
    layer = image.layers[0]
    answer = ecr.get_download_url_for_layer(repositoryName=repo, layerDigest=layer.digest)
    assert answer["layerDigest"] == layer.digest
    url = answer["downloadUrl"]
    assert url.startswith("http://")
    fetched = httpx.get(url, timeout=30.0)  # no credentials: the URL itself is the grant
    assert fetched.status_code == 200
    assert fetched.content == layer.data
    # The config is a blob the image references, too.
    config_url = ecr.get_download_url_for_layer(repositoryName=repo, layerDigest=image.config.digest)["downloadUrl"]
    assert httpx.get(config_url, timeout=30.0).content == image.config.data
    # Any change to the URL's token is refused.
    head, _, token = url.rpartition("/")
    for position in (5, len(token) // 2, len(token) - 2):
        changed = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]
        refused = httpx.get(f"{head}/{changed}", timeout=30.0)
        assert refused.status_code == 403, changed
        assert layer.data not in refused.content


def test_download_url_errors(ecr: Any, repo: str) -> None:
    missing = "sha256:" + "2" * 64
    expect_error(
        ecr.get_download_url_for_layer,
        "LayersNotFoundException",
        f"The layer with digest {missing} does not exist within the repository with name '{repo}' in the registry "
        f"with id '{ACCOUNT}'",
        repositoryName=repo,
        layerDigest=missing,
    )
    unreferenced = upload_blob(ecr, repo, os.urandom(100))
    expect_error(
        ecr.get_download_url_for_layer, "LayerInaccessibleException", repositoryName=repo, layerDigest=unreferenced
    )
