"""The AWS CLI (`aws ecr ...`, `--endpoint-url`, `--output json`) against the live server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.ecr import (
    ACCOUNT,
    DOCKER_LAYER,
    aws_cli,
    basic_auth,
    docker_manifest,
    image_config,
    random_blob,
    upload_blob,
)
from tests.support.live import LiveServer


def cli_json(server: LiveServer, *args: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(aws_cli(server.url, "ecr", *args).stdout)
    return document


def test_cli_repository_and_image_lifecycle(
    server: LiveServer, ecr: Any, new_name: Callable[[], str], tmp_path: Path
) -> None:
    name = new_name()
    created = cli_json(server, "create-repository", "--repository-name", name, "--image-tag-mutability", "IMMUTABLE")
    repository = created["repository"]
    assert repository["repositoryArn"] == f"arn:aws:ecr:us-east-1:{ACCOUNT}:repository/{name}"
    assert repository["repositoryUri"] == f"{server.address}/{name}"
    assert repository["imageTagMutability"] == "IMMUTABLE"
    assert isinstance(repository["createdAt"], float)  # the CLI prints the wire value: epoch seconds

    described = cli_json(server, "describe-repositories", "--repository-names", name)
    assert [r["repositoryName"] for r in described["repositories"]] == [name]

    # Layers through the API, the manifest from a file through the CLI.
    config = image_config()
    layers = [random_blob(1111, DOCKER_LAYER), random_blob(2222, DOCKER_LAYER)]
    for item in (config, *layers):
        upload_blob(ecr, name, item.data)
    manifest = docker_manifest(config, layers)
    path = tmp_path / "manifest.json"
    path.write_bytes(manifest.data)
    put = cli_json(
        server, "put-image", "--repository-name", name, "--image-tag", "v1", "--image-manifest", f"file://{path}"
    )
    assert put["image"]["imageId"] == {"imageDigest": manifest.digest, "imageTag": "v1"}
    assert put["image"]["imageManifest"] == manifest.text

    images = cli_json(server, "describe-images", "--repository-name", name)["imageDetails"]
    assert len(images) == 1
    assert images[0]["imageDigest"] == manifest.digest
    assert images[0]["imageTags"] == ["v1"]
    assert images[0]["imageSizeInBytes"] == 3333

    deleted = cli_json(server, "batch-delete-image", "--repository-name", name, "--image-ids", "imageTag=v1")
    assert deleted["imageIds"] == [{"imageDigest": manifest.digest, "imageTag": "v1"}]
    assert deleted["failures"] == []
    assert ecr.describe_images(repositoryName=name)["imageDetails"] == []


def test_cli_get_login_password(server: LiveServer) -> None:
    password = aws_cli(server.url, "ecr", "get-login-password").stdout.strip()
    assert password
    response = httpx.get(f"{server.url}/v2/", headers={"Authorization": basic_auth(password)})
    assert response.status_code == 200


def test_cli_error_path(server: LiveServer, new_name: Callable[[], str]) -> None:
    missing = new_name()
    done = aws_cli(server.url, "ecr", "describe-repositories", "--repository-names", missing, check=False)
    assert done.returncode != 0
    assert "RepositoryNotFoundException" in done.stderr
    assert f"The repository with name '{missing}' does not exist in the registry with id '{ACCOUNT}'" in done.stderr
    bad_key = aws_cli(server.url, "ecr", "describe-registry", secret="not-the-secret", check=False)
    assert bad_key.returncode != 0
    assert "InvalidSignatureException" in bad_key.stderr
