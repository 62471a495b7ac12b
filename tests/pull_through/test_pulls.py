"""Pulls through the cache against the real server: skopeo from a Docker Hub-like token front end
over the Debian docker-registry on loopback; a multi-arch index; the upstream down, answering
429, the tag moved after the refresh interval (clock control); concurrent cold pulls."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import _engine, login, make_image, run
from tests.support import images
from tests.support.live import LiveServer
from tests.support.upstream import Distribution, TokenFront, push, put_manifest


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[tuple[Distribution, TokenFront]]:
    registry = Distribution(tmp_path / "upstream").start()
    front = TokenFront(registry).start()
    yield registry, front
    front.stop()
    registry.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(
        tmp_path / "data",
        args=["--allow-clock-control"],
        env={"MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "true"},
    ).start()
    yield live
    live.stop()


def _get(server: LiveServer, name: str, ref: str) -> httpx.Response:
    accept = ", ".join((images.OCI_MANIFEST, images.OCI_INDEX))
    return httpx.get(
        f"{server.url}/v2/{name}/manifests/{ref}", auth=server.auth, headers={"accept": accept}, timeout=60
    )


def _skopeo_pull(server: LiveServer, ref: str, dest: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "skopeo",
            "copy",
            "--src-tls-verify=false",
            "--preserve-digests",
            "--src-creds",
            server.creds,
            f"docker://{server.address}/{ref}",
            f"oci:{dest}:x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_skopeo_pull_through_cache_then_upstream_down(
    server: LiveServer, upstream: tuple[Distribution, TokenFront], tmp_path: Path
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "library/alpine", "3", layers=2, size=300_000)
        push(c, "library/busybox", "1")
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="hub", upstreamRegistryUrl=front.url)

    done = _skopeo_pull(server, "hub/library/alpine:3", tmp_path / "a")
    assert done.returncode == 0, done.stderr
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert index["manifests"][0]["digest"] == manifest.digest
    repos = ecr.describe_repositories()["repositories"]
    assert [r["repositoryName"] for r in repos] == ["hub/library/alpine"]
    assert repos[0]["imageTagMutability"] == "MUTABLE"
    assert _get(server, "hub/library/alpine", "3").headers["x-moorage-cache"] == "hit"

    front.stop()  # the upstream is gone: the cached tag still pulls, an uncached one fails
    done = _skopeo_pull(server, "hub/library/alpine:3", tmp_path / "b")
    assert done.returncode == 0, done.stderr
    missing = _get(server, "hub/library/busybox", "1")
    assert missing.status_code == 503
    assert images.error_codes(missing) == ["UNAVAILABLE"]


def test_429_serves_stale_and_tag_moves_after_refresh_interval(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        first = push(c, "team/app", "v1")
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="up", upstreamRegistryUrl=front.url)
    cold = _get(server, "up/team/app", "v1")
    assert cold.status_code == 200, cold.text
    assert cold.headers["x-moorage-cache"] == "miss"
    assert cold.headers["docker-content-digest"] == first.digest

    with httpx.Client(base_url=registry.url) as c:
        moved = push(c, "team/app", "v1")
    assert _get(server, "up/team/app", "v1").headers["docker-content-digest"] == first.digest  # within 24h
    httpx.post(f"{server.url}/_moorage/clock", json={"advance_seconds": 25 * 3600}, timeout=10).raise_for_status()
    front.fail_with = 429
    stale = _get(server, "up/team/app", "v1")
    assert stale.status_code == 200
    assert stale.headers["x-moorage-cache"] == "stale"
    assert stale.headers["docker-content-digest"] == first.digest
    uncached = _get(server, "up/team/other", "v1")
    assert uncached.status_code == 429
    assert images.error_codes(uncached) == ["TOOMANYREQUESTS"]
    front.fail_with = None
    time.sleep(1.1)  # the 429's back-off (Retry-After absent: 1 s)
    refreshed = _get(server, "up/team/app", "v1")
    assert refreshed.headers["x-moorage-cache"] == "miss"
    assert refreshed.headers["docker-content-digest"] == moved.digest
    listed = subprocess.run(
        [sys.executable, "-m", "moorage", "events", "list", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    actions = [line for line in listed.splitlines() if "ECR Pull Through Cache Action" in line]
    assert sum("up/team/app" in line for line in actions) == 2  # the first import and the refresh
    assert sum("up/team/other" in line for line in actions) == 1  # the failed sync


def test_multi_arch_index_imports_children(server: LiveServer, upstream: tuple[Distribution, TokenFront]) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        children = [push(c, "multi/arch", f"c{i}") for i in range(2)]
        index = images.oci_index(children)
        put_manifest(c, "multi/arch", "latest", index)
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="mm", upstreamRegistryUrl=front.url)
    got = _get(server, "mm/multi/arch", "latest")
    assert got.status_code == 200, got.text
    assert got.headers["docker-content-digest"] == index.digest
    front.stop()
    for child in children:  # children are cached with the index
        assert _get(server, "mm/multi/arch", child.digest).status_code == 200


def _blob(server: LiveServer, name: str, digest: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/{name}/blobs/{digest}", auth=server.auth, timeout=60)


def _blob_digests(manifest_data: bytes) -> list[str]:
    document = json.loads(manifest_data)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


def test_concurrent_cold_pulls_fetch_each_blob_once(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "big/image", "1", layers=3, size=2_000_000)
    front.delay = 0.3  # every puller asks for every blob while its first fetch still runs
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="cc", upstreamRegistryUrl=front.url)
    results: list[tuple[str, int, str, str]] = []
    lock = threading.Lock()

    def pull() -> None:
        got = _get(server, "cc/big/image", "1")
        with lock:
            results.append(("manifest", got.status_code, got.headers.get("docker-content-digest", ""), ""))
        for digest in _blob_digests(manifest.data):
            blob = _blob(server, "cc/big/image", digest)
            actual = "sha256:" + hashlib.sha256(blob.content).hexdigest()
            with lock:
                results.append((digest, blob.status_code, actual, blob.headers.get("x-moorage-cache", "")))

    threads = [threading.Thread(target=pull) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r[1] for r in results] == [200] * 4 * 5
    assert {r[2] for r in results if r[0] == "manifest"} == {manifest.digest}
    for digest in _blob_digests(manifest.data):
        assert front.blob_fetches(digest) == 1  # one upstream fetch served all four clients
        answers = [r for r in results if r[0] == digest]
        assert [r[2] for r in answers] == [digest] * 4  # every client got the verified bytes
        assert {r[3] for r in answers} <= {"miss", "hit"}


def _admin(server: LiveServer, *args: str, stdin: str | None = None) -> str:
    command = [sys.executable, "-m", "moorage", "admin", *args, "--data-dir", str(server.data_dir)]
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def _user_password(server: LiveServer, name: str, actions: list[str]) -> tuple[str, str]:
    _admin(server, "create-user", name)
    out = _admin(server, "create-access-key", "--user", name)
    values = dict(line.split("=", 1) for line in out.strip().splitlines() if "=" in line)
    key_id, secret = values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]
    document = json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
    )
    _admin(server, "attach-user-policy", name, "--name", "p", "--document", "-", stdin=document)
    ecr = server.ecr(access_key_id=key_id, secret_access_key=secret)
    token = ecr.get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return user, password


def test_import_needs_create_repository_and_batch_import(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        push(c, "team/app", "v1")
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="up", upstreamRegistryUrl=front.url)
    pull_only = ["ecr:GetAuthorizationToken", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
    reader = _user_password(server, "reader", pull_only)
    importer = _user_password(server, "importer", [*pull_only, "ecr:CreateRepository", "ecr:BatchImportUpstreamImage"])
    url = f"{server.url}/v2/up/team/app/manifests/v1"
    accept = {"accept": images.OCI_MANIFEST}
    refused = httpx.get(url, auth=reader, headers=accept, timeout=30)
    assert refused.status_code == 404
    assert images.error_codes(refused) == ["NAME_UNKNOWN"]
    assert server.ecr().describe_repositories()["repositories"] == []
    imported = httpx.get(url, auth=importer, headers=accept, timeout=30)
    assert imported.status_code == 200, imported.text
    assert httpx.get(url, auth=reader, headers=accept, timeout=30).status_code == 200  # cached now


def test_podman_pulls_a_multi_arch_image_through_the_cache(
    server: LiveServer, upstream: tuple[Distribution, TokenFront], tmp_path: Path
) -> None:
    registry, front = upstream
    digest = make_image(tmp_path / "layout", "1", layers=2, layer_size_mb=0.2, platforms="linux/amd64,linux/arm64")
    run(
        [
            "skopeo",
            "copy",
            "--all",
            "--preserve-digests",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'layout'}:1",
            f"docker://{registry.host}/library/tool:1",
        ]
    )
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="hub", upstreamRegistryUrl=front.url)
    login(server)
    with _engine("podman", tmp_path / "podman") as podman:
        podman("pull", "--tls-verify=false", "--arch", "arm64", f"{server.address}/hub/library/tool:1")
        shown = podman("images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert f"{server.address}/hub/library/tool:1" in shown
    assert _get(server, "hub/library/tool", "1").headers["docker-content-digest"] == digest
    assert _get(server, "hub/library/tool", "1").headers["x-moorage-cache"] == "hit"


def test_batch_get_image_imports_and_reports_upstream_failures(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "team/api", "2")
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="bg", upstreamRegistryUrl=front.url)
    got = ecr.batch_get_image(repositoryName="bg/team/api", imageIds=[{"imageTag": "2"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [manifest.digest]
    assert got["failures"] == []
    front.fail_with = 503
    failed = ecr.batch_get_image(repositoryName="bg/team/api", imageIds=[{"imageTag": "3"}, {"imageTag": "2"}])
    assert [f["failureCode"] for f in failed["failures"]] == ["UpstreamUnavailable"]
    assert [i["imageId"]["imageTag"] for i in failed["images"]] == ["2"]  # cached: served


def test_kill_9_mid_import_then_the_next_pull_completes(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "slow/image", "1", layers=1, size=3_000_000)
    layer = _blob_digests(manifest.data)[1]
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="kk", upstreamRegistryUrl=front.url)
    assert _get(server, "kk/slow/image", "1").headers["x-moorage-cache"] == "miss"
    front.chunk_delay = 0.05  # ~2.5 s for the layer: the kill lands mid-import
    received = 0

    def pull() -> None:
        nonlocal received
        with contextlib.suppress(httpx.HTTPError):
            url = f"{server.url}/v2/kk/slow/image/blobs/{layer}"
            with httpx.stream("GET", url, auth=server.auth, timeout=60) as response:
                for chunk in response.iter_bytes():
                    received += len(chunk)

    worker = threading.Thread(target=pull)
    worker.start()
    deadline = time.monotonic() + 20
    while received < 200_000 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert 0 < received < 3_000_000, received
    server.kill()
    worker.join()
    assert received < 3_000_000  # the client saw a cut-short body, never a whole wrong blob
    front.chunk_delay = 0.0
    server.start()
    # nothing half-written is visible: the layer is not available until a fetch completes
    checked = ecr.batch_check_layer_availability(repositoryName="kk/slow/image", layerDigests=[layer])
    assert checked["layers"] == []
    assert [f["failureCode"] for f in checked["failures"]] == ["MissingLayerDigest"]
    front.fail_with = 503  # and with the upstream failing, a pull fails instead of serving a fragment
    failed = _blob(server, "kk/slow/image", layer)
    assert failed.status_code == 503
    assert images.error_codes(failed) == ["UNAVAILABLE"]
    front.fail_with = None
    again = _blob(server, "kk/slow/image", layer)
    assert again.status_code == 200, again.text
    assert "sha256:" + hashlib.sha256(again.content).hexdigest() == layer
    assert again.headers["x-moorage-cache"] == "miss"
    assert _blob(server, "kk/slow/image", layer).headers["x-moorage-cache"] == "hit"
