"""Blobs through the pull-through cache against the real server: streamed to the client while the
upstream still sends them, single-flight for concurrent clients, GetDownloadUrlForLayer imports,
`moorage cache warm`, `[pull_through_cache.upstream_endpoints]` and the cache metrics.

One upstream (Debian docker-registry behind a Docker Hub-like token front end) and one server
for the module; each test uses its own rule prefix and upstream repository."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from botocore.exceptions import ClientError

from tests.pull_through.test_pulls import _skopeo_pull
from tests.support import images
from tests.support.live import LiveServer
from tests.support.upstream import Distribution, TokenFront, push

HTTP_ENV = {"MOORAGE_PULL_THROUGH_CACHE__ALLOW_HTTP_UPSTREAMS": "true"}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Distribution, TokenFront]]:
    registry = Distribution(tmp_path_factory.mktemp("upstream")).start()
    front = TokenFront(registry).start()
    yield registry, front
    front.stop()
    registry.stop()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: tuple[Distribution, TokenFront]) -> Iterator[LiveServer]:
    _, front = upstream
    endpoints = json.dumps({"registry-1.docker.io": front.url})
    live = LiveServer(
        tmp_path_factory.mktemp("moorage") / "data",
        env={**HTTP_ENV, "MOORAGE_PULL_THROUGH_CACHE__UPSTREAM_ENDPOINTS": endpoints},
    ).start()
    yield live
    live.stop()


@pytest.fixture(autouse=True)
def _fresh_front(upstream: tuple[Distribution, TokenFront]) -> Iterator[None]:
    yield
    front = upstream[1]
    front.fail_with, front.delay, front.chunk_delay = None, 0.0, 0.0


def _manifest(server: LiveServer, name: str, ref: str) -> httpx.Response:
    return httpx.get(
        f"{server.url}/v2/{name}/manifests/{ref}", auth=server.auth, headers={"accept": images.OCI_MANIFEST}, timeout=60
    )


def _blob(server: LiveServer, name: str, digest: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v2/{name}/blobs/{digest}", auth=server.auth, timeout=60)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _digests(manifest_data: bytes) -> list[str]:
    document = json.loads(manifest_data)
    return [document["config"]["digest"], *(layer["digest"] for layer in document["layers"])]


def test_a_blob_is_streamed_to_the_client_while_the_upstream_still_sends_it(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "stream/app", "1", layers=1, size=3_000_000)
    layer = _digests(manifest.data)[1]
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="st", upstreamRegistryUrl=front.url)
    assert _manifest(server, "st/stream/app", "1").status_code == 200
    front.chunk_delay = 0.03  # ~46 x 64 KiB: about 1.4 s for the layer
    first_byte: float | None = None
    body = bytearray()
    late: list[httpx.Response] = []
    with httpx.stream("GET", f"{server.url}/v2/st/stream/app/blobs/{layer}", auth=server.auth, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["x-moorage-cache"] == "miss"
        assert r.headers["content-length"] == "3000000"
        for chunk in r.iter_bytes():
            if first_byte is None:
                first_byte = time.monotonic()
                # a second client while the fetch runs: served by the same fetch, once published
                second = threading.Thread(target=lambda: late.append(_blob(server, "st/stream/app", layer)))
                second.start()
            body.extend(chunk)
    second.join()
    deadline = time.monotonic() + 10  # the front's thread notes the end once its last pause is over
    while (finished := front.blob_finished(layer)) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert first_byte is not None
    assert finished is not None
    assert first_byte < finished  # the first bytes arrived before the upstream had sent the last
    assert _sha(bytes(body)) == layer
    assert late[0].status_code == 200
    assert _sha(late[0].content) == layer
    assert front.blob_fetches(layer) == 1
    again = _blob(server, "st/stream/app", layer)
    assert again.headers["x-moorage-cache"] == "hit"
    assert front.blob_fetches(layer) == 1


def test_get_download_url_for_layer_imports_the_layer(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "layers/app", "1", layers=2, size=200_000)
    config, first, second = _digests(manifest.data)
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="gl", upstreamRegistryUrl=front.url)
    got = ecr.batch_get_image(repositoryName="gl/layers/app", imageIds=[{"imageTag": "1"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [manifest.digest]
    assert front.blob_fetches(first) == 0  # the manifest is imported; its layers when first pulled

    url = ecr.get_download_url_for_layer(repositoryName="gl/layers/app", layerDigest=first)["downloadUrl"]
    assert front.blob_fetches(first) == 1
    download = httpx.get(url, timeout=30, follow_redirects=True)
    assert download.status_code == 200
    assert _sha(download.content) == first
    ecr.get_download_url_for_layer(repositoryName="gl/layers/app", layerDigest=first)
    assert front.blob_fetches(first) == 1

    unknown = "sha256:" + "0" * 64
    with pytest.raises(ClientError) as refused:
        ecr.get_download_url_for_layer(repositoryName="gl/layers/app", layerDigest=unknown)
    assert refused.value.response["Error"]["Code"] == "LayersNotFoundException"
    front.fail_with = 503
    with pytest.raises(ClientError) as failed:
        ecr.get_download_url_for_layer(repositoryName="gl/layers/app", layerDigest=second)
    assert failed.value.response["Error"]["Code"] == "UnableToGetUpstreamLayerException"
    assert front.blob_fetches(config) == 0


def test_cache_warm_prefetches_every_blob(server: LiveServer, upstream: tuple[Distribution, TokenFront]) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "warm/app", "1", layers=2, size=300_000)
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="wm", upstreamRegistryUrl=front.url)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "moorage",
            "cache",
            "warm",
            "wm",
            "warm/app:1",
            "warm/missing:1",
            "--data-dir",
            str(server.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **HTTP_ENV},
        check=False,
    )
    assert done.returncode == 1, done.stdout + done.stderr  # one of the two images does not exist
    assert "warmed 1 of 2 image(s)" in done.stdout
    assert "warm/missing:1" in done.stdout
    front.fail_with = 503  # everything is cached: nothing needs the upstream
    assert _manifest(server, "wm/warm/app", "1").status_code == 200
    for digest in _digests(manifest.data):
        blob = _blob(server, "wm/warm/app", digest)
        assert blob.status_code == 200
        assert blob.headers["x-moorage-cache"] == "hit"
        assert _sha(blob.content) == digest
        assert front.blob_fetches(digest) == 1


def test_upstream_endpoints_send_a_known_upstream_host_elsewhere(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, _ = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "library/alpine", "3")
    ecr = server.ecr()
    rule = ecr.create_pull_through_cache_rule(
        ecrRepositoryPrefix="docker-hub", upstreamRegistryUrl="registry-1.docker.io"
    )
    assert rule["upstreamRegistry"] == "docker-hub"
    assert rule["upstreamRegistryUrl"] == "registry-1.docker.io"
    got = _manifest(server, "docker-hub/library/alpine", "3")  # fetched from the mapped address
    assert got.status_code == 200, got.text
    assert got.headers["docker-content-digest"] == manifest.digest
    layer = _digests(manifest.data)[1]
    assert _sha(_blob(server, "docker-hub/library/alpine", layer).content) == layer


def _counter(text: str, kind: str, result: str) -> float:
    pattern = rf'^moorage_pull_through_requests_total\{{kind="{kind}",result="{result}"\}} (\S+)$'
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_metrics_count_hits_misses_and_stale(server: LiveServer, upstream: tuple[Distribution, TokenFront]) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "metered/app", "1")
    server.ecr().create_pull_through_cache_rule(ecrRepositoryPrefix="mt", upstreamRegistryUrl=front.url)

    def scrape() -> str:
        return httpx.get(f"{server.url}/metrics", timeout=30).text

    before = scrape()
    assert _manifest(server, "mt/metered/app", "1").headers["x-moorage-cache"] == "miss"
    layer = _digests(manifest.data)[1]
    assert _blob(server, "mt/metered/app", layer).headers["x-moorage-cache"] == "miss"
    assert _blob(server, "mt/metered/app", layer).headers["x-moorage-cache"] == "hit"
    assert _manifest(server, "mt/metered/app", manifest.digest).headers["x-moorage-cache"] == "hit"
    after = scrape()
    for kind, result in (("manifest", "miss"), ("manifest", "hit"), ("blob", "miss"), ("blob", "hit")):
        assert _counter(after, kind, result) - _counter(before, kind, result) == 1, (kind, result)


def test_a_blob_that_does_not_match_its_digest_is_never_published(
    server: LiveServer, upstream: tuple[Distribution, TokenFront]
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:
        manifest = push(c, "corrupt/app", "1", layers=1, size=2_500_000)
    layer = _digests(manifest.data)[1]
    stored = registry.workdir / "data/docker/registry/v2/blobs/sha256" / layer[7:9] / layer[7:] / "data"
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0xFF  # the upstream now serves other bytes of the same length under the digest
    stored.write_bytes(bytes(data))
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="bad", upstreamRegistryUrl=front.url)
    assert _manifest(server, "bad/corrupt/app", "1").status_code == 200
    received = bytearray()
    url = f"{server.url}/v2/bad/corrupt/app/blobs/{layer}"

    def read() -> int | None:
        """The answer's status; None when a 200's body was cut short."""
        with httpx.stream("GET", url, auth=server.auth, timeout=60) as r:
            if r.status_code != 200:
                r.read()
                return r.status_code
            try:
                for chunk in r.iter_bytes():
                    received.extend(chunk)
            except httpx.HTTPError:
                return None
            return 200

    # The fetch is checked as it streams: the client gets either a cut-short body (the fetch was
    # still running when it asked) or 503 (it had already failed), never the whole wrong blob.
    assert read() in (None, 503), server.log()[-3000:]
    assert len(received) < len(data)
    head = httpx.head(f"{server.url}/v2/bad/corrupt/app/blobs/{layer}", auth=server.auth, timeout=60)
    assert head.status_code == 503  # fetched again, mismatching again: still nothing published
    checked = ecr.batch_check_layer_availability(repositoryName="bad/corrupt/app", layerDigests=[layer])
    assert [f["failureCode"] for f in checked["failures"]] == ["MissingLayerDigest"]
    assert front.blob_fetches(layer) == 2


def test_docker_hub_official_images_pull_with_and_without_library(
    server: LiveServer, upstream: tuple[Distribution, TokenFront], tmp_path: Path
) -> None:
    registry, front = upstream
    with httpx.Client(base_url=registry.url) as c:  # upstream holds only library/<name>, as Docker Hub
        alpine = push(c, "library/alpine", "edge", layers=2, size=100_000)
        busybox = push(c, "library/busybox", "1")
        redis = push(c, "library/redis", "7", layers=2)
    ecr = server.ecr()
    ecr.create_pull_through_cache_rule(ecrRepositoryPrefix="dh", upstreamRegistryUrl="registry-1.docker.io")

    for ref, dest in (("dh/alpine:edge", "short"), ("dh/library/alpine:edge", "long")):
        done = _skopeo_pull(server, ref, tmp_path / dest)
        assert done.returncode == 0, ref + ": " + done.stderr
        index = json.loads((tmp_path / dest / "index.json").read_text())
        assert index["manifests"][0]["digest"] == alpine.digest, ref
    names = sorted(r["repositoryName"] for r in ecr.describe_repositories()["repositories"])
    assert [n for n in names if n.startswith("dh/")] == ["dh/alpine", "dh/library/alpine"]

    got = ecr.batch_get_image(repositoryName="dh/busybox", imageIds=[{"imageTag": "1"}])
    assert [i["imageId"]["imageDigest"] for i in got["images"]] == [busybox.digest]
    layer = _digests(busybox.data)[1]
    url = ecr.get_download_url_for_layer(repositoryName="dh/busybox", layerDigest=layer)["downloadUrl"]
    assert _sha(httpx.get(url, timeout=30, follow_redirects=True).content) == layer

    endpoints = json.dumps({"registry-1.docker.io": front.url})
    done = subprocess.run(
        [sys.executable, "-m", "moorage", "cache", "warm", "dh", "redis:7", "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **HTTP_ENV, "MOORAGE_PULL_THROUGH_CACHE__UPSTREAM_ENDPOINTS": endpoints},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    front.fail_with = 503  # warmed: the upstream is no longer needed
    warmed = _manifest(server, "dh/redis", "7")
    assert warmed.status_code == 200, warmed.text
    assert warmed.headers["docker-content-digest"] == redis.digest
    for digest in _digests(redis.data):
        assert _blob(server, "dh/redis", digest).headers["x-moorage-cache"] == "hit"
