"""Test content built in memory: blobs, configs, manifests, indexes and artifacts, plus push helpers.

Every builder returns a `Content` (bytes, digest, media type) so tests can unpack it as a tuple or
use the named fields. Manifests are serialized once here and pushed byte for byte, so the digest a
test expects is the digest of exactly the bytes the registry received.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import httpx

__all__ = [
    "DOCKER_CONFIG",
    "DOCKER_LAYER",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_MANIFEST",
    "Content",
    "artifact",
    "blob",
    "config",
    "descriptor",
    "digest_of",
    "docker_manifest",
    "docker_manifest_list",
    "empty_config",
    "error_codes",
    "layer",
    "oci_index",
    "oci_manifest",
    "push_blob",
    "push_image",
    "push_manifest",
]

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Content(NamedTuple):
    """A blob or manifest: its exact bytes, their sha256 digest, and its media type."""

    data: bytes
    digest: str
    media_type: str

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def text(self) -> str:
        return self.data.decode()


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def blob(data: bytes, media_type: str = "application/octet-stream") -> Content:
    return Content(data, digest_of(data), media_type)


def layer(size: int = 1024, media_type: str = OCI_LAYER) -> Content:
    """Random bytes standing in for a compressed layer (the registry does not look inside)."""
    return blob(os.urandom(size), media_type)


def config(media_type: str = OCI_CONFIG, *, architecture: str = "amd64", os_name: str = "linux") -> Content:
    """An image config; a random label makes every config (and so every manifest) unique."""
    document = {
        "architecture": architecture,
        "os": os_name,
        "config": {"Labels": {"nonce": os.urandom(8).hex()}},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    return blob(_dump(document), media_type)


def empty_config() -> Content:
    """The OCI empty descriptor's content, `{}`, used as the config of artifacts."""
    return blob(b"{}", OCI_EMPTY)


def descriptor(content: Content, **extra: Any) -> dict[str, Any]:
    return {"mediaType": content.media_type, "digest": content.digest, "size": content.size, **extra}


def _dump(document: Mapping[str, Any]) -> bytes:
    # Indented on purpose: the registry must keep the bytes, not a re-serialization of them.
    return json.dumps(document, indent=3).encode()


def docker_manifest(config_blob: Content, layers: Sequence[Content]) -> Content:
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": descriptor(config_blob),
        "layers": [descriptor(item) for item in layers],
    }
    return blob(_dump(document), DOCKER_MANIFEST)


def oci_manifest(
    config_blob: Content,
    layers: Sequence[Content],
    *,
    subject: Content | None = None,
    artifact_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Content:
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_MANIFEST}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["config"] = descriptor(config_blob)
    document["layers"] = [descriptor(item) for item in layers]
    if subject is not None:
        document["subject"] = descriptor(subject)
    if annotations:
        document["annotations"] = dict(annotations)
    return blob(_dump(document), OCI_MANIFEST)


def _platform(index: int) -> dict[str, str]:
    return {"architecture": ("amd64", "arm64", "s390x", "ppc64le")[index % 4], "os": "linux"}


def oci_index(
    manifests: Sequence[Content],
    *,
    subject: Content | None = None,
    artifact_type: str | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Content:
    document: dict[str, Any] = {"schemaVersion": 2, "mediaType": OCI_INDEX}
    if artifact_type is not None:
        document["artifactType"] = artifact_type
    document["manifests"] = [descriptor(m, platform=_platform(i)) for i, m in enumerate(manifests)]
    if subject is not None:
        document["subject"] = descriptor(subject)
    if annotations:
        document["annotations"] = dict(annotations)
    return blob(_dump(document), OCI_INDEX)


def docker_manifest_list(manifests: Sequence[Content]) -> Content:
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [descriptor(m, platform=_platform(i)) for i, m in enumerate(manifests)],
    }
    return blob(_dump(document), DOCKER_MANIFEST_LIST)


def artifact(
    subject: Content,
    artifact_type: str,
    *,
    blobs: Sequence[Content] = (),
    annotations: Mapping[str, str] | None = None,
) -> Content:
    """An OCI 1.1 artifact: an image manifest with `artifactType`, the empty config and a `subject`.
    Its blobs and the empty config must be pushed before it."""
    return oci_manifest(empty_config(), blobs, subject=subject, artifact_type=artifact_type, annotations=annotations)


# --- push helpers --------------------------------------------------------------------------------


def push_blob(client: httpx.Client, name: str, data: bytes) -> str:
    """Push a blob with a monolithic `POST ?digest=`; returns its digest."""
    digest = digest_of(data)
    response = client.post(f"/v2/{name}/blobs/uploads/", params={"digest": digest}, content=data)
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == digest
    return digest


def push_manifest(
    client: httpx.Client, name: str, reference: str, manifest: Content, *, media_type: str | None = None
) -> httpx.Response:
    """PUT a manifest by tag or digest, asserting 201 and the digest the registry computed."""
    response = client.put(
        f"/v2/{name}/manifests/{reference}",
        content=manifest.data,
        headers={"content-type": media_type or manifest.media_type},
    )
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == manifest.digest
    return response


def push_image(
    client: httpx.Client,
    name: str,
    tag: str | None = None,
    *,
    docker: bool = False,
    layers: int = 1,
) -> Content:
    """Push a config, random layers and a manifest over them (tagged when `tag` is given).
    Returns the manifest."""
    config_blob = config(DOCKER_CONFIG if docker else OCI_CONFIG)
    layer_blobs = [layer(512, DOCKER_LAYER if docker else OCI_LAYER) for _ in range(layers)]
    for item in (config_blob, *layer_blobs):
        push_blob(client, name, item.data)
    manifest = (docker_manifest if docker else oci_manifest)(config_blob, layer_blobs)
    push_manifest(client, name, tag or manifest.digest, manifest)
    return manifest


def error_codes(response: httpx.Response) -> list[str]:
    """The `code` of every error in an OCI error body."""
    document = response.json()
    return [str(entry["code"]) for entry in document["errors"]]
