"""The API root, route parsing, repository-name validation and the error body format."""

from __future__ import annotations

import json
import os

import httpx
import pytest

from tests.support import images as im
from tests.support.images import digest_of, error_codes, push_blob, push_image, push_manifest


@pytest.mark.parametrize("path", ["/v2/", "/v2"])
def test_api_root(client: httpx.Client, path: str) -> None:
    got = client.get(path)
    head = client.head(path)

    assert got.status_code == 200
    assert got.headers["docker-distribution-api-version"] == "registry/2.0"
    assert got.json() == {}
    assert head.status_code == 200
    assert head.headers["docker-distribution-api-version"] == "registry/2.0"


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    """An OCI error: the status, a JSON body `{"errors": [{code, message, ...}]}` and the API header."""
    assert response.status_code == status, response.text
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    if response.request.method == "HEAD":
        assert response.content == b""
        return
    assert response.headers["content-type"].startswith("application/json")
    document = response.json()
    assert isinstance(document["errors"], list)
    for entry in document["errors"]:
        assert set(entry) <= {"code", "message", "detail"}
        assert isinstance(entry["message"], str)
    assert error_codes(response) == [code]


def endpoint_requests(name: str) -> list[tuple[str, str]]:
    """One request per route that takes a repository name."""
    digest = digest_of(b"x")
    return [
        ("GET", f"/v2/{name}/manifests/latest"),
        ("HEAD", f"/v2/{name}/manifests/latest"),
        ("PUT", f"/v2/{name}/manifests/latest"),
        ("DELETE", f"/v2/{name}/manifests/{digest}"),
        ("GET", f"/v2/{name}/tags/list"),
        ("GET", f"/v2/{name}/referrers/{digest}"),
        ("GET", f"/v2/{name}/blobs/{digest}"),
        ("HEAD", f"/v2/{name}/blobs/{digest}"),
        ("DELETE", f"/v2/{name}/blobs/{digest}"),
        ("POST", f"/v2/{name}/blobs/uploads/"),
        ("GET", f"/v2/{name}/blobs/uploads/some-id"),
        ("PATCH", f"/v2/{name}/blobs/uploads/some-id"),
        ("PUT", f"/v2/{name}/blobs/uploads/some-id?digest={digest}"),
        ("DELETE", f"/v2/{name}/blobs/uploads/some-id"),
    ]


INVALID_NAMES = [
    pytest.param("Upper/case", id="uppercase"),
    pytest.param("a", id="one-char"),
    pytest.param("a//b", id="empty-component"),
    pytest.param("ab/", id="trailing-slash"),
    pytest.param("ab/" + "c" * 254, id="257-chars"),
    pytest.param("-ab", id="leading-dash"),
    pytest.param("ab-", id="trailing-dash"),
    pytest.param("a..b", id="double-dot"),
    pytest.param("a___b", id="triple-underscore"),
    pytest.param("a%20b", id="space"),
]


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_repository_name(client: httpx.Client, name: str) -> None:
    for method, path in endpoint_requests(name):
        response = client.request(method, path, content=b"{}" if method in ("PUT", "PATCH") else None)
        assert_error(response, 400, "NAME_INVALID")


def test_name_of_256_chars_is_valid(client: httpx.Client) -> None:
    name = "ab/" + os.urandom(8).hex() + "c" * 237
    assert len(name) == 256

    digest = push_blob(client, name, b"data")

    assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 200


def test_unknown_repository(client: httpx.Client, repo: str) -> None:
    digest = digest_of(b"x")
    for method, path in [
        ("GET", f"/v2/{repo}/manifests/latest"),
        ("GET", f"/v2/{repo}/manifests/{digest}"),
        ("HEAD", f"/v2/{repo}/manifests/latest"),
        ("GET", f"/v2/{repo}/tags/list"),
        ("GET", f"/v2/{repo}/blobs/{digest}"),
        ("HEAD", f"/v2/{repo}/blobs/{digest}"),
        ("DELETE", f"/v2/{repo}/blobs/{digest}"),
        ("DELETE", f"/v2/{repo}/manifests/latest"),
    ]:
        assert_error(client.request(method, path), 404, "NAME_UNKNOWN")


@pytest.mark.parametrize(
    "suffix", ["blobs/uploads", "blobs", "manifests/latest", "manifests", "tags/list", "referrers", "v2/catalog"]
)
def test_repository_name_with_route_words(client: httpx.Client, repo: str, suffix: str) -> None:
    name = f"{repo}/{suffix}"
    data = os.urandom(500)
    digest = digest_of(data)

    started = client.post(f"/v2/{name}/blobs/uploads/")
    assert started.status_code == 202
    location = started.headers["location"]
    assert location.startswith(f"/v2/{name}/blobs/uploads/")
    patched = client.patch(location, content=data, headers={"content-range": f"0-{len(data) - 1}"})
    assert patched.status_code == 202
    assert client.get(patched.headers["location"]).status_code == 204
    completed = client.put(patched.headers["location"], params={"digest": digest})
    assert completed.status_code == 201
    assert completed.headers["location"] == f"/v2/{name}/blobs/{digest}"
    assert client.head(f"/v2/{name}/blobs/{digest}").status_code == 200
    assert client.get(f"/v2/{name}/blobs/{digest}").content == data

    manifest = push_image(client, name, "latest")
    assert client.get(f"/v2/{name}/manifests/latest").content == manifest.data
    assert client.get(f"/v2/{name}/manifests/{manifest.digest}").content == manifest.data
    assert client.get(f"/v2/{name}/tags/list").json() == {"name": name, "tags": ["latest"]}
    push_blob(client, name, im.empty_config().data)
    referrer = im.artifact(manifest, "application/vnd.example.x")
    push_manifest(client, name, referrer.digest, referrer)
    found = client.get(f"/v2/{name}/referrers/{manifest.digest}").json()["manifests"]
    assert [entry["digest"] for entry in found] == [referrer.digest]
    assert client.delete(f"/v2/{name}/manifests/latest").status_code == 202
    assert client.delete(f"/v2/{name}/blobs/{digest}").status_code == 202
    # The shorter repository the name starts with is a different, still unknown, repository.
    assert_error(client.get(f"/v2/{repo}/tags/list"), 404, "NAME_UNKNOWN")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v2/{name}/manifests/latest"),
        ("PATCH", "/v2/{name}/manifests/latest"),
        ("PUT", "/v2/{name}/blobs/{digest}"),
        ("POST", "/v2/{name}/blobs/{digest}"),
        ("PUT", "/v2/{name}/blobs/uploads/"),
        ("DELETE", "/v2/{name}/tags/list"),
        ("POST", "/v2/_catalog"),
        ("DELETE", "/v2/"),
    ],
)
def test_unsupported_method(client: httpx.Client, repo: str, method: str, path: str) -> None:
    response = client.request(method, path.format(name=repo, digest=digest_of(b"x")))

    assert_error(response, 405, "UNSUPPORTED")


@pytest.mark.parametrize("path", ["/v2/{name}", "/v2/{name}/tags", "/v2/{name}/unknown/route", "/v2/_catalog/x"])
def test_unknown_route(client: httpx.Client, repo: str, path: str) -> None:
    response = client.get(path.format(name=repo))

    assert response.status_code == 404
    assert response.headers["docker-distribution-api-version"] == "registry/2.0"
    assert isinstance(response.json()["errors"], list)


@pytest.mark.parametrize(
    "digest", ["notadigest", "sha256:xyz", "sha256:" + "a" * 63, "sha512:" + "a" * 64, "SHA256:" + "a" * 64]
)
def test_malformed_blob_digest(client: httpx.Client, repo: str, digest: str) -> None:
    push_blob(client, repo, b"make the repository exist")

    for method in ("GET", "HEAD", "DELETE"):
        assert_error(client.request(method, f"/v2/{repo}/blobs/{digest}"), 400, "DIGEST_INVALID")


def test_error_body_is_json(client: httpx.Client, repo: str) -> None:
    manifest = push_image(client, repo, "v1")

    response = client.get(f"/v2/{repo}/manifests/nope")

    assert_error(response, 404, "MANIFEST_UNKNOWN")
    assert json.loads(response.content)["errors"][0]["message"]
    assert client.get(f"/v2/{repo}/manifests/v1").content == manifest.data
