"""Blob HEAD / GET (whole and ranged) / DELETE."""

from __future__ import annotations

import os
from collections.abc import Callable

import httpx
import pytest

from tests.support.images import digest_of, error_codes, push_blob

API_VERSION = "registry/2.0"


def test_head_blob(client: httpx.Client, repo: str) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, repo, data)

    response = client.head(f"/v2/{repo}/blobs/{digest}")

    assert response.status_code == 200
    assert response.headers["content-length"] == "1000"
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["docker-distribution-api-version"] == API_VERSION
    assert response.content == b""


def test_get_blob(client: httpx.Client, repo: str) -> None:
    data = os.urandom(1000)
    digest = push_blob(client, repo, data)

    response = client.get(f"/v2/{repo}/blobs/{digest}")

    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-length"] == "1000"
    assert response.headers["docker-content-digest"] == digest


def test_get_large_blob_intact(client: httpx.Client, repo: str) -> None:
    """Bigger than the server's file chunk, so it is sent in several pieces."""
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = push_blob(client, repo, data)

    response = client.get(f"/v2/{repo}/blobs/{digest}")

    assert response.status_code == 200
    assert response.headers["content-length"] == str(len(data))
    assert digest_of(response.content) == digest


def test_get_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"")

    response = client.get(f"/v2/{repo}/blobs/{digest}")

    assert response.status_code == 200
    assert response.headers["content-length"] == "0"
    assert response.content == b""


def test_unknown_blob(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"something else")
    missing = digest_of(os.urandom(16))

    got = client.get(f"/v2/{repo}/blobs/{missing}")
    head = client.head(f"/v2/{repo}/blobs/{missing}")

    assert got.status_code == 404
    assert error_codes(got) == ["BLOB_UNKNOWN"]
    assert head.status_code == 404
    assert head.content == b""


def test_blob_of_another_repository_is_not_visible(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    owner, other = new_repo(), new_repo()
    digest = push_blob(client, owner, os.urandom(64))
    push_blob(client, other, os.urandom(64))

    response = client.get(f"/v2/{other}/blobs/{digest}")

    assert response.status_code == 404
    assert error_codes(response) == ["BLOB_UNKNOWN"]


SIZE = 100


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [
        pytest.param("bytes=0-9", 0, 9, id="first-ten"),
        pytest.param("bytes=5-", 5, SIZE - 1, id="open-ended"),
        pytest.param("bytes=-3", SIZE - 3, SIZE - 1, id="suffix"),
        pytest.param(f"bytes={SIZE - 1}-{SIZE - 1}", SIZE - 1, SIZE - 1, id="last-byte"),
        pytest.param("bytes=-1", SIZE - 1, SIZE - 1, id="suffix-last-byte"),
        pytest.param(f"bytes=90-{SIZE + 50}", 90, SIZE - 1, id="end-clipped"),
        pytest.param(f"bytes=-{SIZE * 3}", 0, SIZE - 1, id="suffix-longer-than-blob"),
        pytest.param("bytes=0-0", 0, 0, id="first-byte"),
    ],
)
def test_range_get(client: httpx.Client, repo: str, header: str, start: int, end: int) -> None:
    data = os.urandom(SIZE)
    digest = push_blob(client, repo, data)

    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"range": header})

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["docker-content-digest"] == digest
    assert response.content == data[start : end + 1]


def test_range_get_across_file_chunks(client: httpx.Client, repo: str) -> None:
    data = os.urandom(2 * 1024 * 1024 + 10)
    digest = push_blob(client, repo, data)
    start, end = 1024 * 1024 - 5, 2 * 1024 * 1024 + 4

    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"range": f"bytes={start}-{end}"})

    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{len(data)}"
    assert response.content == data[start : end + 1]


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(f"bytes={SIZE}-", id="open-ended-at-size"),
        pytest.param(f"bytes={SIZE}-{SIZE + 10}", id="starts-at-size"),
        pytest.param("bytes=500-600", id="far-past-end"),
        pytest.param("bytes=-0", id="zero-length-suffix"),
    ],
)
def test_range_not_satisfiable(client: httpx.Client, repo: str, header: str) -> None:
    digest = push_blob(client, repo, os.urandom(SIZE))

    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"range": header})

    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"


def test_range_on_empty_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, b"")

    response = client.get(f"/v2/{repo}/blobs/{digest}", headers={"range": "bytes=0-9"})

    assert response.status_code == 416
    assert response.headers["content-range"] == "bytes */0"


def test_delete_blob(client: httpx.Client, repo: str) -> None:
    digest = push_blob(client, repo, os.urandom(64))

    deleted = client.delete(f"/v2/{repo}/blobs/{digest}")

    assert deleted.status_code == 202
    assert client.head(f"/v2/{repo}/blobs/{digest}").status_code == 404
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 404
    assert error_codes(got) == ["BLOB_UNKNOWN"]
    again = client.delete(f"/v2/{repo}/blobs/{digest}")
    assert again.status_code == 404
    assert error_codes(again) == ["BLOB_UNKNOWN"]


def test_push_same_blob_twice_and_again_after_delete(client: httpx.Client, repo: str) -> None:
    data = os.urandom(64)
    digest = push_blob(client, repo, data)
    assert push_blob(client, repo, data) == digest
    assert client.delete(f"/v2/{repo}/blobs/{digest}").status_code == 202

    assert push_blob(client, repo, data) == digest

    assert client.get(f"/v2/{repo}/blobs/{digest}").content == data


def test_delete_blob_only_unlinks_it_from_that_repository(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    first, second = new_repo(), new_repo()
    data = os.urandom(64)
    digest = push_blob(client, first, data)
    push_blob(client, second, data)

    assert client.delete(f"/v2/{first}/blobs/{digest}").status_code == 202

    assert client.head(f"/v2/{first}/blobs/{digest}").status_code == 404
    kept = client.get(f"/v2/{second}/blobs/{digest}")
    assert kept.status_code == 200
    assert kept.content == data
