"""Mixed clients end to end: what the ECR API pushes, skopeo and podman pull through `/v2/`; what
skopeo pushes through `/v2/`, the ECR API describes, byte for byte."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import make_oci_tool
from tests.support.ecr import (
    ROOT_KEY_ID,
    ROOT_SECRET,
    push_built,
    registry_password,
    runnable_docker_image,
)
from tests.support.live import LiveServer

pytestmark = pytest.mark.e2e

OCI_REF_NAME = "org.opencontainers.image.ref.name"


def need(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"not installed (bin/test installs it): {', '.join(missing)}")


def run(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, check: bool = True, timeout: float = 120.0
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    if check:
        assert done.returncode == 0, f"{' '.join(command)} -> {done.returncode}\n{done.stdout}\n{done.stderr}"
    return done


def sha256_file(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def layout_manifest(layout: Path, tag: str) -> tuple[str, bytes]:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get(OCI_REF_NAME) == tag:
            digest: str = entry["digest"]
            return digest, (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    raise AssertionError(f"no tag {tag} in {layout}")


def make_layout(out: Path, tag: str, *, seed: int) -> str:
    done = run(
        [
            sys.executable,
            str(make_oci_tool()),
            "--out",
            str(out),
            "--tag",
            tag,
            "--layers",
            "2",
            "--layer-size-mb",
            "0.25",
            "--seed",
            str(seed),
        ],
    )
    digest: str = json.loads(done.stdout)["digest"]
    return digest


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """podman with a private vfs store (its runroot must be a short path)."""
    need("podman")
    runroot = Path(tempfile.mkdtemp(prefix="ecr-podman-"))
    scratch = tmp_path / "podman-tmp"
    scratch.mkdir()

    def call(*args: str) -> subprocess.CompletedProcess[str]:
        flags = ["--root", str(tmp_path / "podman-root"), "--runroot", str(runroot), "--storage-driver", "vfs"]
        flags += ["--tmpdir", str(scratch), "--events-backend", "none"]
        return run(["podman", *flags, *args], env={"TMPDIR": str(scratch)})

    try:
        yield call
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def test_api_push_then_skopeo_and_podman_pull(
    server: LiveServer, ecr: Any, repo: str, tmp_path: Path, podman: Callable[..., subprocess.CompletedProcess[str]]
) -> None:
    need("skopeo")
    image = push_built(ecr, repo, runnable_docker_image(), "v1")
    password = registry_password(ecr)
    source = f"docker://{server.address}/{repo}:v1"

    raw = run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", f"AWS:{password}", source])
    assert raw.stdout.encode() == image.manifest.data

    out = tmp_path / "oci"
    run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--src-creds",
            f"AWS:{password}",
            "--src-tls-verify=false",
            source,
            f"oci:{out}:v1",
        ]
    )
    _, copied = layout_manifest(out, "v1")
    document = json.loads(copied)
    # skopeo converted the manifest to OCI (and re-serialized the config); the layers are the very
    # blobs pushed through the API, intact, and the config says the same.
    assert [layer["digest"] for layer in document["layers"]] == [layer.digest for layer in image.layers]
    for layer in image.layers:
        path = out / "blobs" / "sha256" / layer.digest.removeprefix("sha256:")
        assert sha256_file(path) == layer.digest
    config_path = out / "blobs" / "sha256" / document["config"]["digest"].removeprefix("sha256:")
    assert json.loads(config_path.read_bytes()) == json.loads(image.config.data)

    podman("pull", "--quiet", "--tls-verify=false", "--creds", f"AWS:{password}", f"{server.address}/{repo}:v1")
    inspected = json.loads(podman("image", "inspect", f"{server.address}/{repo}:v1").stdout)
    assert inspected[0]["Digest"] == image.manifest.digest
    assert inspected[0]["RootFS"]["Layers"] == json.loads(image.config.data)["rootfs"]["diff_ids"]


def test_skopeo_push_then_api_describe(server: LiveServer, ecr: Any, repo: str, tmp_path: Path) -> None:
    need("skopeo", "aws")
    layout = tmp_path / "layout"
    digest = make_layout(layout, "v1", seed=101)
    _, manifest = layout_manifest(layout, "v1")
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == digest
    password = registry_password(ecr)
    destination = f"docker://{server.address}/{repo}:v1"
    run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--dest-creds",
            f"AWS:{password}",
            "--dest-tls-verify=false",
            f"oci:{layout}:v1",
            destination,
        ]
    )

    got = ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "v1"}])
    assert got["failures"] == []
    stored = got["images"][0]["imageManifest"].encode()
    assert stored == manifest
    assert "sha256:" + hashlib.sha256(stored).hexdigest() == digest
    detail = ecr.describe_images(repositoryName=repo)["imageDetails"]
    assert [d["imageDigest"] for d in detail] == [digest]
    assert detail[0]["imageTags"] == ["v1"]
    assert detail[0]["imageSizeInBytes"] == sum(layer["size"] for layer in json.loads(manifest)["layers"])
    assert detail[0]["imageManifestMediaType"] == "application/vnd.oci.image.manifest.v1+json"

    # aws ecr get-login-password | skopeo login --password-stdin, into a private auth file.
    auth_file = tmp_path / "auth.json"
    env = {
        "AWS_ACCESS_KEY_ID": ROOT_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": ROOT_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "REGISTRY_AUTH_FILE": str(auth_file),
    }
    pipeline = (
        f"aws ecr get-login-password --endpoint-url {server.url} "
        f"| skopeo login --password-stdin -u AWS --tls-verify=false {server.address}"
    )
    run(["bash", "-o", "pipefail", "-c", pipeline], env=env)
    assert server.address in json.loads(auth_file.read_text())["auths"]
    inspected = run(["skopeo", "inspect", "--raw", "--tls-verify=false", "--authfile", str(auth_file), destination])
    assert inspected.stdout.encode() == manifest

    # Tag mutability holds on /v2/ too: an IMMUTABLE repository refuses to move v1.
    ecr.put_image_tag_mutability(repositoryName=repo, imageTagMutability="IMMUTABLE")
    make_layout(layout, "v2", seed=202)
    refused = run(
        [
            "skopeo",
            "copy",
            "--quiet",
            "--authfile",
            str(auth_file),
            "--dest-tls-verify=false",
            "--retry-times",
            "0",
            f"oci:{layout}:v2",
            destination,
        ],
        check=False,
    )
    assert refused.returncode != 0
    assert "tag invalid" in refused.stderr.lower() or "TAG_INVALID" in refused.stderr, refused.stderr
    assert f"The image tag 'v1' already exists in the '{repo}' repository and cannot be overwritten" in refused.stderr
    detail = ecr.describe_images(repositoryName=repo, imageIds=[{"imageTag": "v1"}])["imageDetails"]
    assert detail[0]["imageDigest"] == digest
