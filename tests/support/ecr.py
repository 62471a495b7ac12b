"""Helpers for the ECR API tests: real clients (boto3, botocore's signer, the AWS CLI) against a live server.

Content is built in memory (`Blob`), uploaded through the ECR layer API and registered with
PutImage, byte for byte, so the digest a test expects is the digest of exactly the bytes sent.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import boto3
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError

from tests.support.images import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_MANIFEST,
    Content,
    blob,
    config,
    descriptor,
    digest_of,
    docker_manifest,
    layer,
    oci_index,
    oci_manifest,
)

__all__ = [
    "ACCOUNT",
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "OCI_CONFIG",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "REGION",
    "REGISTRY_DOMAIN",
    "ROOT_KEY_ID",
    "ROOT_SECRET",
    "TARGET_PREFIX",
    "Blob",
    "Image",
    "aws_cli",
    "basic_auth",
    "descriptor",
    "digest_of",
    "docker_manifest",
    "ecr_client",
    "expect_error",
    "image_config",
    "oci_index",
    "oci_manifest",
    "push_built",
    "push_image",
    "random_blob",
    "registry_password",
    "runnable_docker_image",
    "send",
    "signed_request",
    "tar_gz_layer",
    "upload_blob",
]

ACCOUNT = "123456789012"
REGION = "us-east-1"
REGISTRY_DOMAIN = "ecr.moorage.test"
ROOT_KEY_ID = "AKIAMOORAGEECRTEST01"
ROOT_SECRET = "ecr/TestSecretKey+0123456789abcdefghijklmno"
TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."


# --- clients -------------------------------------------------------------------------------------


def ecr_client(
    endpoint: str,
    *,
    region: str = REGION,
    key_id: str = ROOT_KEY_ID,
    secret: str = ROOT_SECRET,
    validate: bool = True,
) -> Any:
    """A boto3 ECR client for the server (no retries: every answer is the server's first).
    `validate=False` turns botocore's client-side parameter validation off, so the server's
    own validation answers."""
    session = boto3.session.Session(aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=region)
    return session.client(
        "ecr",
        endpoint_url=endpoint,
        config=Config(
            retries={"total_max_attempts": 1},
            connect_timeout=10,
            read_timeout=60,
            parameter_validation=validate,
        ),
    )


def expect_error(call: Callable[..., Any], code: str, message: str | None = None, **params: Any) -> dict[str, Any]:
    """Call a boto3 operation that must fail with `code` (and exactly `message`, when given);
    returns the parsed error response."""
    with pytest.raises(ClientError) as info:
        call(**params)
    response: dict[str, Any] = info.value.response
    assert response["Error"]["Code"] == code, response
    if message is not None:
        assert response["Error"]["Message"] == message, response
    return response


def signed_request(
    endpoint: str,
    operation: str,
    params: Mapping[str, Any] | None = None,
    *,
    region: str = REGION,
    key_id: str = ROOT_KEY_ID,
    secret: str = ROOT_SECRET,
    service: str = "ecr",
    session_token: str | None = None,
) -> AWSRequest:
    """An ECR API request signed by botocore's own SigV4 signer (Authorization header form)."""
    request = AWSRequest(
        method="POST",
        url=endpoint.rstrip("/") + "/",
        data=json.dumps(dict(params or {})).encode(),
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": TARGET_PREFIX + operation,
        },
    )
    SigV4Auth(Credentials(key_id, secret, session_token), service, region).add_auth(request)
    return request


def send(request: AWSRequest, *, body: bytes | None = None) -> httpx.Response:
    """Send a (signed) botocore request with plain httpx, optionally with a different body."""
    prepared = request.prepare()
    content = prepared.body if body is None else body
    if isinstance(content, str):
        content = content.encode()
    headers = {k: v for k, v in prepared.headers.items() if k.lower() != "content-length"}
    return httpx.request(prepared.method, prepared.url, headers=headers, content=content or b"", timeout=30.0)


def aws_cli(
    endpoint: str,
    *args: str,
    region: str = REGION,
    key_id: str = ROOT_KEY_ID,
    secret: str = ROOT_SECRET,
    check: bool = True,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`aws --endpoint-url E --output json ARGS...` with the given credentials and nothing else
    from the environment's AWS configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID=key_id,
        AWS_SECRET_ACCESS_KEY=secret,
        AWS_DEFAULT_REGION=region,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_MAX_ATTEMPTS="1",
    )
    command = ["aws", "--endpoint-url", endpoint, "--output", "json", *args]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if check:
        assert done.returncode == 0, f"{' '.join(command)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


# --- content -------------------------------------------------------------------------------------
# The builders are the registry tests' own (tests/support/images.py); a Blob is their Content.

Blob = Content


def random_blob(size: int, media_type: str = OCI_LAYER) -> Blob:
    return layer(size, media_type)


def image_config(media_type: str = DOCKER_CONFIG) -> Blob:
    """An image config; a random label makes every config (and so every manifest) unique."""
    return config(media_type)


# --- pushing through the ECR API -----------------------------------------------------------------


def upload_blob(ecr: Any, repository: str, data: bytes) -> str:
    """Initiate → one UploadLayerPart → CompleteLayerUpload; returns the digest."""
    upload_id = ecr.initiate_layer_upload(repositoryName=repository)["uploadId"]
    ecr.upload_layer_part(
        repositoryName=repository,
        uploadId=upload_id,
        partFirstByte=0,
        partLastByte=len(data) - 1,
        layerPartBlob=data,
    )
    digest = digest_of(data)
    done = ecr.complete_layer_upload(repositoryName=repository, uploadId=upload_id, layerDigests=[digest])
    assert done["layerDigest"] == digest
    return digest


class Image(NamedTuple):
    manifest: Blob
    config: Blob
    layers: list[Blob]

    @property
    def layer_size(self) -> int:
        return sum(item.size for item in self.layers)


def push_image(
    ecr: Any,
    repository: str,
    tag: str | None = None,
    *,
    oci: bool = False,
    layer_sizes: Sequence[int] = (300, 700),
) -> Image:
    """Upload a config and random layers with the layer API, then PutImage a manifest over them."""
    config = image_config(OCI_CONFIG if oci else DOCKER_CONFIG)
    layers = [random_blob(size, OCI_LAYER if oci else DOCKER_LAYER) for size in layer_sizes]
    manifest = (oci_manifest if oci else docker_manifest)(config, layers)
    return push_built(ecr, repository, Image(manifest, config, layers), tag)


def push_built(ecr: Any, repository: str, image: Image, tag: str | None = None) -> Image:
    """Upload an image's config and layers with the layer API, then PutImage its manifest."""
    for item in (image.config, *image.layers):
        upload_blob(ecr, repository, item.data)
    params: dict[str, Any] = {"repositoryName": repository, "imageManifest": image.manifest.text}
    if tag is not None:
        params["imageTag"] = tag
    put = ecr.put_image(**params)
    assert put["image"]["imageId"]["imageDigest"] == image.manifest.digest
    return image


def tar_gz_layer(files: Mapping[str, bytes]) -> tuple[Blob, str]:
    """A real gzip-compressed tar layer holding `files`; returns it and its diff id (the sha256 of
    the uncompressed tar)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return blob(gzip.compress(raw.getvalue(), mtime=0), DOCKER_LAYER), digest_of(raw.getvalue())


def runnable_docker_image(layers: int = 2) -> Image:
    """A Docker schema 2 image an engine can pull and unpack: real tar.gz layers, a config with
    their diff ids (and a nonce, so every image is new)."""
    built = [
        tar_gz_layer({f"layer{i}/data.bin": os.urandom(2048), f"layer{i}/id": str(i).encode()}) for i in range(layers)
    ]
    document = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"nonce": os.urandom(8).hex()}, "Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in built]},
        "history": [{"created_by": f"layer {i}"} for i in range(layers)],
    }
    config_blob = blob(json.dumps(document).encode(), DOCKER_CONFIG)
    layers_built = [item for item, _ in built]
    return Image(docker_manifest(config_blob, layers_built), config_blob, layers_built)


def basic_auth(password: str) -> str:
    return "Basic " + base64.b64encode(f"AWS:{password}".encode()).decode()


def registry_password(ecr: Any) -> str:
    """The password half of GetAuthorizationToken's `AWS:<password>`."""
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    assert user == "AWS"
    return password
