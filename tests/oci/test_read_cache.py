"""Manifest and blob reads answered from a worker's read cache (registry.ReadCache) stay within
their bound on a server with two workers: a tag moved or deleted through one worker is seen by
every worker within READ_CACHE_SECONDS, an image pushed through one is pullable at once through
all of them (misses are never cached), and a worker sees its own writes at once."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from moorage.registry import READ_CACHE_SECONDS
from tests.support.images import push_image
from tests.support.live import LiveServer

ACCEPT = {"accept": "application/vnd.oci.image.manifest.v1+json"}
# Fresh connections land on either worker; this many requests reach both with certainty
# for any practical purpose (granian hands each accepted connection to one worker).
PROBES = 24


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data = tmp_path_factory.mktemp("read-cache") / "data"
    with LiveServer(data, args=["--workers", "2", "--auth", "open", "--create-on-push"]) as server:
        yield server


def _digests(live: LiveServer, path: str, method: str = "GET") -> list[tuple[int, str | None]]:
    seen = []
    for _ in range(PROBES):
        with httpx.Client(base_url=live.url, timeout=10) as fresh:  # a new connection each time
            response = fresh.request(method, path, headers=ACCEPT)
            seen.append((response.status_code, response.headers.get("docker-content-digest")))
    return seen


def test_a_pushed_image_is_pullable_at_once_through_every_worker(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        assert client.get("/v2/cache/new/manifests/v1", headers=ACCEPT).status_code == 404
        manifest = push_image(client, "cache/new", "v1")
    assert set(_digests(live, "/v2/cache/new/manifests/v1")) == {(200, manifest.digest)}


def test_a_moved_tag_is_seen_by_every_worker_within_the_bound(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        first = push_image(client, "cache/moved", "latest")
        assert set(_digests(live, "/v2/cache/moved/manifests/latest")) == {(200, first.digest)}  # now cached
        second = push_image(client, "cache/moved", "latest")
        # The worker that took the push answers with the new digest at once, on the same connection.
        got = client.get("/v2/cache/moved/manifests/latest", headers=ACCEPT)
        assert got.headers["docker-content-digest"] == second.digest
    time.sleep(READ_CACHE_SECONDS + 0.1)
    assert set(_digests(live, "/v2/cache/moved/manifests/latest")) == {(200, second.digest)}
    assert set(_digests(live, "/v2/cache/moved/manifests/latest", "HEAD")) == {(200, second.digest)}


def test_a_deleted_manifest_and_blob_are_gone_from_every_worker_within_the_bound(live: LiveServer) -> None:
    with httpx.Client(base_url=live.url, timeout=10) as client:
        manifest = push_image(client, "cache/deleted", "v1")
        layer_digest = json.loads(manifest.data)["layers"][0]["digest"]
        assert set(_digests(live, f"/v2/cache/deleted/manifests/{manifest.digest}")) == {(200, manifest.digest)}
        assert {s for s, _ in _digests(live, f"/v2/cache/deleted/blobs/{layer_digest}", "HEAD")} == {200}
        assert client.delete(f"/v2/cache/deleted/manifests/{manifest.digest}").status_code == 202
        assert client.delete(f"/v2/cache/deleted/blobs/{layer_digest}").status_code == 202
        assert client.get(f"/v2/cache/deleted/manifests/{manifest.digest}", headers=ACCEPT).status_code == 404
    time.sleep(READ_CACHE_SECONDS + 0.1)
    assert {s for s, _ in _digests(live, f"/v2/cache/deleted/manifests/{manifest.digest}")} == {404}
    assert {s for s, _ in _digests(live, "/v2/cache/deleted/manifests/v1")} == {404}
    assert {s for s, _ in _digests(live, f"/v2/cache/deleted/blobs/{layer_digest}", "HEAD")} == {404}
