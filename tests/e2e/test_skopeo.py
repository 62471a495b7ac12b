"""skopeo against the live registry: copy round trips, multi-arch, format conversion, inspect,
list-tags and delete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    fetch_verified_blob,
    get_manifest,
    inspect,
    inspect_raw,
    make_image,
    pull,
    push,
    sha256_hex,
    skopeo,
)
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e


def test_copy_round_trip_keeps_every_digest(registry: LiveServer, small_image: Layout, tmp_path: Path) -> None:
    source_digest = small_image.digest_of("v1")
    source_blobs = small_image.verify(source_digest)
    assert len(source_blobs) == 5  # manifest, config, 3 layers

    push(f"oci:{small_image.root}:v1", registry, "e2e/roundtrip:v1")

    raw = inspect_raw(registry, "e2e/roundtrip:v1")
    assert "sha256:" + sha256_hex(raw) == source_digest
    assert raw == small_image.blob(source_digest)
    response = get_manifest(registry, "e2e/roundtrip", "v1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == OCI_MANIFEST
    assert response.headers["docker-content-digest"] == source_digest

    back = Layout(tmp_path / "back")
    pull(registry, "e2e/roundtrip:v1", f"oci:{back.root}:copied")
    assert back.digest_of("copied") == source_digest
    assert back.verify(source_digest) == source_blobs
    for digest in source_blobs:
        assert back.blob(digest) == small_image.blob(digest), f"blob {digest} differs after the round trip"
    # The registry serves every blob byte-identically by digest as well.
    for digest in source_blobs[1:]:
        assert fetch_verified_blob(registry, "e2e/roundtrip", digest) == small_image.blob(digest)


def test_copy_all_multi_arch_index(registry: LiveServer, tmp_path: Path) -> None:
    source = Layout(tmp_path / "multi")
    index_digest = make_image(
        source.root, "multi", layers=1, layer_size_mb=0.25, seed=21, platforms="linux/amd64,linux/arm64"
    )
    index = source.json_blob(index_digest)
    children = {m["platform"]["architecture"]: m["digest"] for m in index["manifests"]}
    assert set(children) == {"amd64", "arm64"}

    push(f"oci:{source.root}:multi", registry, "e2e/multi:latest", "--all")

    raw = inspect_raw(registry, "e2e/multi:latest")
    assert "sha256:" + sha256_hex(raw) == index_digest
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    response = get_manifest(registry, "e2e/multi", "latest")
    assert response.headers["content-type"] == OCI_INDEX
    for arch, child in children.items():
        child_raw = inspect_raw(registry, f"e2e/multi@{child}")
        assert child_raw == source.blob(child), f"{arch} child manifest differs"
        config = inspect(registry, f"e2e/multi@{child}")
        assert config["Architecture"] == arch
        assert config["Digest"] == child
        resolved = inspect(registry, "e2e/multi:latest", "--override-arch", arch, "--override-os", "linux")
        # skopeo reports the index digest for the tag but resolves config and layers per platform.
        assert resolved["Digest"] == index_digest
        assert resolved["Architecture"] == arch
        assert resolved["Layers"] == [layer["digest"] for layer in source.json_blob(child)["layers"]]

    back = Layout(tmp_path / "back")
    pull(registry, "e2e/multi:latest", f"oci:{back.root}:multi", "--all")
    assert back.digest_of("multi") == index_digest
    assert sorted(back.verify(index_digest)) == sorted(source.closure(index_digest))


def test_copy_format_v2s2_stores_a_docker_manifest(registry: LiveServer, small_image: Layout, tmp_path: Path) -> None:
    push(f"oci:{small_image.root}:v1", registry, "e2e/docker:v1", "--format", "v2s2")

    response = get_manifest(registry, "e2e/docker", "v1")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == DOCKER_MANIFEST
    digest = "sha256:" + sha256_hex(response.content)
    assert response.headers["docker-content-digest"] == digest
    manifest = json.loads(response.content)
    assert manifest["mediaType"] == DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    # Conversion rewrites the manifest and config, never the layer bytes.
    source_manifest = small_image.json_blob(small_image.digest_of("v1"))
    assert [layer["digest"] for layer in manifest["layers"]] == [layer["digest"] for layer in source_manifest["layers"]]
    by_digest = get_manifest(registry, "e2e/docker", digest)
    assert by_digest.status_code == 200
    assert by_digest.headers["content-type"] == DOCKER_MANIFEST
    assert by_digest.content == response.content

    back = Layout(tmp_path / "back")
    pull(registry, "e2e/docker:v1", f"oci:{back.root}:v1", "--preserve-digests")
    assert back.digest_of("v1") == digest
    back.verify(digest)


def test_inspect_list_tags_and_delete(registry: LiveServer, tmp_path: Path) -> None:
    source = Layout(tmp_path / "tags")
    tags = ["v2", "alpha", "v10"]
    digests = {
        tag: make_image(source.root, tag, layers=1, layer_size_mb=0.1, seed=30 + i) for i, tag in enumerate(tags)
    }
    assert len(set(digests.values())) == 3
    for tag in tags:
        push(f"oci:{source.root}:{tag}", registry, f"e2e/tags:{tag}")

    info = inspect(registry, "e2e/tags:alpha")
    manifest = source.json_blob(digests["alpha"])
    config = source.json_blob(manifest["config"]["digest"])
    assert info["Name"] == f"{registry.address}/e2e/tags"
    assert info["Digest"] == digests["alpha"]
    assert info["Architecture"] == "amd64"
    assert info["Os"] == "linux"
    assert info["Created"].startswith("2024-01-01T00:00:00")
    assert info["Labels"] == {"lab.generator": "make_oci_image.py"}
    assert info["Env"] == config["config"]["Env"]
    assert info["Layers"] == [layer["digest"] for layer in manifest["layers"]]
    assert sorted(info["RepoTags"]) == sorted(tags)
    raw_config = skopeo(
        "inspect", "--config", "--raw", "--tls-verify=false", f"docker://{registry.address}/e2e/tags:alpha"
    )
    assert raw_config.stdout.encode() == source.blob(manifest["config"]["digest"])

    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.address}/e2e/tags").stdout)
    assert listed["Repository"] == f"{registry.address}/e2e/tags"
    assert listed["Tags"] == sorted(tags)

    skopeo("delete", "--tls-verify=false", f"docker://{registry.address}/e2e/tags:v2")
    gone = skopeo("inspect", "--tls-verify=false", f"docker://{registry.address}/e2e/tags:v2", check=False)
    assert gone.returncode != 0, f"inspect of a deleted tag succeeded:\n{gone.stdout}"
    assert "manifest unknown" in gone.stderr.lower(), gone.stderr
    response = get_manifest(registry, "e2e/tags", digests["v2"])
    assert response.status_code == 404
    assert response.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"

    listed = json.loads(skopeo("list-tags", "--tls-verify=false", f"docker://{registry.address}/e2e/tags").stdout)
    assert listed["Tags"] == ["alpha", "v10"]
    assert inspect(registry, "e2e/tags:v10")["Digest"] == digests["v10"]
