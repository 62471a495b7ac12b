"""podman and buildah against the live registry, each with a private vfs store."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from tests.e2e.conftest import Engine, Layout, inspect, pull, push, skopeo
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e


def _config(layout: Layout, manifest_digest: str) -> dict[str, object]:
    return layout.json_blob(layout.json_blob(manifest_digest)["config"]["digest"])


def test_podman_pull_tag_push(registry: LiveServer, small_image: Layout, podman: Engine, tmp_path: Path) -> None:
    source_digest = small_image.digest_of("v1")
    source_config = _config(small_image, source_digest)
    push(f"oci:{small_image.root}:v1", registry, "e2e/podman-src:v1")

    original = f"{registry.address}/e2e/podman-src:v1"
    copy = f"{registry.address}/e2e/podman-dst/nested:v2"
    podman("pull", "--quiet", "--tls-verify=false", original)
    image_id = podman("image", "inspect", "--format", "{{.Id}}", original).stdout.strip()
    config_digest = small_image.json_blob(source_digest)["config"]["digest"]
    assert "sha256:" + image_id == config_digest, "podman's image id is the config digest"
    digests = json.loads(podman("image", "inspect", "--format", "{{json .RepoDigests}}", original).stdout)
    assert f"{registry.address}/e2e/podman-src@{source_digest}" in digests

    podman("tag", original, copy)
    podman("push", "--quiet", "--tls-verify=false", copy)

    info = inspect(registry, "e2e/podman-dst/nested:v2")
    assert info["Architecture"] == "amd64"
    assert info["Labels"] == {"lab.generator": "make_oci_image.py"}
    back = Layout(tmp_path / "back")
    pull(registry, "e2e/podman-dst/nested:v2", f"oci:{back.root}:v2")
    pushed = back.digest_of("v2")
    back.verify(pushed)
    # podman may recompress layers, but the image content (config, diff ids) is the same image.
    assert _config(back, pushed)["rootfs"] == source_config["rootfs"]
    assert _config(back, pushed)["config"] == source_config["config"]
    tags = json.loads(
        skopeo("list-tags", "--tls-verify=false", f"docker://{registry.address}/e2e/podman-dst/nested").stdout
    )
    assert tags["Tags"] == ["v2"]


def test_buildah_from_scratch_commit_push(registry: LiveServer, buildah: Engine, tmp_path: Path) -> None:
    payload = tmp_path / "hello.txt"
    payload.write_bytes(b"moorage e2e payload\n" * 100)
    container = buildah("from", "scratch").stdout.strip()
    assert container, "buildah from printed no container name"
    buildah("copy", container, str(payload), "/hello.txt")
    buildah("config", "--label", "org.example.e2e=buildah", "--label", "purpose=test", container)
    buildah("commit", "--quiet", container, "localhost/e2e-built:latest")
    target = f"{registry.address}/e2e/buildah:1.0"
    buildah("push", "--quiet", "--tls-verify=false", "localhost/e2e-built:latest", f"docker://{target}")

    info = inspect(registry, "e2e/buildah:1.0")
    assert info["Labels"]["org.example.e2e"] == "buildah"
    assert info["Labels"]["purpose"] == "test"
    assert len(info["Layers"]) == 1

    back = Layout(tmp_path / "back")
    pull(registry, "e2e/buildah:1.0", f"oci:{back.root}:1.0")
    digest = back.digest_of("1.0")
    assert digest == info["Digest"]
    back.verify(digest)
    layer = back.json_blob(digest)["layers"][0]
    with tarfile.open(fileobj=io.BytesIO(back.blob(layer["digest"]))) as tar:
        member = tar.extractfile("hello.txt")
        assert member is not None, f"hello.txt not in the pushed layer: {tar.getnames()}"
        assert member.read() == payload.read_bytes()
