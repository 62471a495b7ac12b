"""Manifest PUT / GET / HEAD / DELETE for every supported format, and the manifest error paths."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.support import images as im
from tests.support.images import Content, error_codes, push_blob, push_image, push_manifest
from tests.support.live import LiveServer

Builder = Callable[[httpx.Client, str], Content]


def build_docker_v2(client: httpx.Client, name: str) -> Content:
    config = im.config(im.DOCKER_CONFIG)
    layers = [im.layer(300, im.DOCKER_LAYER), im.layer(200, im.DOCKER_LAYER)]
    for item in (config, *layers):
        push_blob(client, name, item.data)
    return im.docker_manifest(config, layers)


def build_oci_manifest(client: httpx.Client, name: str) -> Content:
    config = im.config()
    layers = [im.layer(300), im.layer(200)]
    for item in (config, *layers):
        push_blob(client, name, item.data)
    return im.oci_manifest(config, layers, annotations={"org.opencontainers.image.title": "t"})


def build_docker_list(client: httpx.Client, name: str) -> Content:
    children = [push_image(client, name, docker=True) for _ in range(2)]
    return im.docker_manifest_list(children)


def build_oci_index(client: httpx.Client, name: str) -> Content:
    children = [push_image(client, name) for _ in range(3)]
    return im.oci_index(children, annotations={"purpose": "test"})


def build_artifact(client: httpx.Client, name: str) -> Content:
    subject = push_image(client, name)
    payload = im.blob(os.urandom(100), "application/vnd.example.payload")
    push_blob(client, name, payload.data)
    push_blob(client, name, im.empty_config().data)
    return im.artifact(subject, "application/vnd.example.sbom", blobs=[payload], annotations={"a": "b"})


BUILDERS = [
    pytest.param(build_docker_v2, id="docker-v2"),
    pytest.param(build_docker_list, id="docker-list"),
    pytest.param(build_oci_manifest, id="oci-manifest"),
    pytest.param(build_oci_index, id="oci-index"),
    pytest.param(build_artifact, id="oci-artifact"),
]


def assert_manifest_response(response: httpx.Response, manifest: Content, *, head: bool = False) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == manifest.media_type
    assert response.headers["docker-content-digest"] == manifest.digest
    assert response.headers["content-length"] == str(manifest.size)
    if head:
        assert response.content == b""
    else:
        assert response.content == manifest.data
        assert f"sha256:{hashlib.sha256(response.content).hexdigest()}" == manifest.digest


@pytest.mark.parametrize("build", BUILDERS)
def test_put_and_get_by_tag_and_digest(client: httpx.Client, repo: str, build: Builder) -> None:
    manifest = build(client, repo)

    put = client.put(f"/v2/{repo}/manifests/v1", content=manifest.data, headers={"content-type": manifest.media_type})

    assert put.status_code == 201, put.text
    assert put.headers["docker-content-digest"] == manifest.digest
    assert put.headers["location"].endswith(f"/v2/{repo}/manifests/{manifest.digest}")
    for reference in ("v1", manifest.digest):
        assert_manifest_response(client.get(f"/v2/{repo}/manifests/{reference}"), manifest)
        assert_manifest_response(client.head(f"/v2/{repo}/manifests/{reference}"), manifest, head=True)


@pytest.mark.parametrize("build", BUILDERS)
def test_put_by_digest(client: httpx.Client, repo: str, build: Builder) -> None:
    manifest = build(client, repo)

    push_manifest(client, repo, manifest.digest, manifest)

    assert_manifest_response(client.get(f"/v2/{repo}/manifests/{manifest.digest}"), manifest)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == []


@pytest.mark.parametrize("build", BUILDERS)
def test_accept_header_does_not_change_stored_bytes(client: httpx.Client, repo: str, build: Builder) -> None:
    manifest = build(client, repo)
    push_manifest(client, repo, "v1", manifest)
    accept = ", ".join([im.OCI_MANIFEST, im.OCI_INDEX, im.DOCKER_MANIFEST, im.DOCKER_MANIFEST_LIST, "*/*;q=0.1"])

    response = client.get(f"/v2/{repo}/manifests/v1", headers={"accept": accept})

    assert_manifest_response(response, manifest)


def test_put_same_manifest_again_is_idempotent(client: httpx.Client, repo: str) -> None:
    manifest = push_image(client, repo, "v1")

    again = push_manifest(client, repo, "v1", manifest)
    other_tag = push_manifest(client, repo, "v2", manifest)

    assert again.headers["docker-content-digest"] == other_tag.headers["docker-content-digest"]
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1", "v2"]


def test_media_type_from_content_type_when_body_has_none(client: httpx.Client, repo: str) -> None:
    config, layer = im.config(), im.layer()
    for item in (config, layer):
        push_blob(client, repo, item.data)
    document = {"schemaVersion": 2, "config": im.descriptor(config), "layers": [im.descriptor(layer)]}
    manifest = im.blob(json.dumps(document).encode(), im.OCI_MANIFEST)

    push_manifest(client, repo, "v1", manifest)

    assert_manifest_response(client.get(f"/v2/{repo}/manifests/v1"), manifest)


def test_moving_a_tag(client: httpx.Client, repo: str) -> None:
    first = push_image(client, repo, "latest")
    second = push_image(client, repo, "latest")

    assert_manifest_response(client.get(f"/v2/{repo}/manifests/latest"), second)
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/{first.digest}"), first)


# --- PUT errors --------------------------------------------------------------------------------


def put(client: httpx.Client, name: str, reference: str, manifest: Content) -> httpx.Response:
    return client.put(
        f"/v2/{name}/manifests/{reference}", content=manifest.data, headers={"content-type": manifest.media_type}
    )


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert error_codes(response) == [code]


def assert_not_stored(client: httpx.Client, name: str, manifest: Content, tag: str = "v1") -> None:
    for reference in (tag, manifest.digest):
        response = client.get(f"/v2/{name}/manifests/{reference}")
        assert response.status_code == 404
        assert error_codes(response)[0] in ("MANIFEST_UNKNOWN", "NAME_UNKNOWN")


def test_put_by_wrong_digest(client: httpx.Client, repo: str) -> None:
    manifest = build_oci_manifest(client, repo)
    wrong = im.digest_of(b"other bytes")

    response = put(client, repo, wrong, manifest)

    assert_error(response, 400, "DIGEST_INVALID")
    assert_not_stored(client, repo, manifest)
    assert client.get(f"/v2/{repo}/manifests/{wrong}").status_code == 404


@pytest.mark.parametrize("missing", ["config", "layer"])
def test_manifest_referencing_missing_blob(client: httpx.Client, repo: str, missing: str) -> None:
    config, layer = im.config(), im.layer()
    push_blob(client, repo, (layer if missing == "config" else config).data)
    manifest = im.oci_manifest(config, [layer])

    response = put(client, repo, "v1", manifest)

    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_not_stored(client, repo, manifest)


def test_docker_manifest_referencing_missing_blob(client: httpx.Client, repo: str) -> None:
    config = im.config(im.DOCKER_CONFIG)
    push_blob(client, repo, config.data)
    manifest = im.docker_manifest(config, [im.layer(100, im.DOCKER_LAYER)])

    assert_error(put(client, repo, "v1", manifest), 400, "MANIFEST_BLOB_UNKNOWN")


def test_blob_of_another_repository_does_not_count(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    owner, other = new_repo(), new_repo()
    config, layer = im.config(), im.layer()
    for item in (config, layer):
        push_blob(client, owner, item.data)
    push_blob(client, other, config.data)

    response = put(client, other, "v1", im.oci_manifest(config, [layer]))

    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")


@pytest.mark.parametrize("docker", [False, True], ids=["oci-index", "docker-list"])
def test_index_referencing_missing_child(client: httpx.Client, repo: str, docker: bool) -> None:
    present = push_image(client, repo, docker=docker)
    absent = im.docker_manifest(im.config(), []) if docker else im.oci_manifest(im.config(), [])
    index = (im.docker_manifest_list if docker else im.oci_index)([present, absent])

    response = put(client, repo, "v1", index)

    assert_error(response, 400, "MANIFEST_BLOB_UNKNOWN")
    assert_not_stored(client, repo, index)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="not-json"),
        pytest.param(b"", id="empty"),
        pytest.param(b"[]", id="array"),
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(json.dumps({"schemaVersion": 2, "mediaType": im.OCI_MANIFEST}).encode(), id="no-config"),
        pytest.param(
            json.dumps({"schemaVersion": 3, "mediaType": im.OCI_MANIFEST, "config": {}, "layers": []}).encode(),
            id="schema-version",
        ),
        pytest.param(
            json.dumps(
                {
                    "schemaVersion": 2,
                    "mediaType": im.OCI_MANIFEST,
                    "config": {"mediaType": im.OCI_CONFIG, "digest": "sha256:nope", "size": 1},
                    "layers": [],
                }
            ).encode(),
            id="bad-descriptor-digest",
        ),
    ],
)
def test_invalid_manifest(client: httpx.Client, repo: str, body: bytes) -> None:
    response = client.put(f"/v2/{repo}/manifests/v1", content=body, headers={"content-type": im.OCI_MANIFEST})

    assert_error(response, 400, "MANIFEST_INVALID")


def test_media_type_not_matching_content_type(client: httpx.Client, repo: str) -> None:
    manifest = build_oci_manifest(client, repo)

    response = client.put(
        f"/v2/{repo}/manifests/v1", content=manifest.data, headers={"content-type": im.DOCKER_MANIFEST}
    )

    assert_error(response, 400, "MANIFEST_INVALID")
    assert_not_stored(client, repo, manifest)


def test_schema1_manifest_is_unsupported(client: httpx.Client, repo: str) -> None:
    body = json.dumps({"schemaVersion": 1, "name": repo, "tag": "v1", "fsLayers": [], "history": []}).encode()

    response = client.put(
        f"/v2/{repo}/manifests/v1",
        content=body,
        headers={"content-type": "application/vnd.docker.distribution.manifest.v1+prettyjws"},
    )

    assert_error(response, 415, "UNSUPPORTED")


MIB = 1024 * 1024


def _padded_manifest(size: int) -> bytes:
    """An OCI manifest over the empty config of exactly `size` bytes (padded in an annotation)."""
    document = {
        "schemaVersion": 2,
        "mediaType": im.OCI_MANIFEST,
        "config": im.descriptor(im.empty_config()),
        "layers": [],
        "annotations": {"padding": ""},
    }
    padding = size - len(json.dumps(document).encode())
    document["annotations"] = {"padding": "x" * padding}
    body = json.dumps(document).encode()
    assert len(body) == size
    return body


def test_manifest_of_4_mib_is_accepted(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, im.empty_config().data)
    manifest = im.blob(_padded_manifest(4 * MIB), im.OCI_MANIFEST)

    push_manifest(client, repo, "v1", manifest)

    assert_manifest_response(client.get(f"/v2/{repo}/manifests/v1"), manifest)


def test_manifest_too_large(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, im.empty_config().data)
    body = _padded_manifest(4 * MIB + 1)

    response = client.put(f"/v2/{repo}/manifests/v1", content=body, headers={"content-type": im.OCI_MANIFEST})

    assert response.status_code == 413
    assert_not_stored(client, repo, im.blob(body, im.OCI_MANIFEST))


def test_manifest_too_large_streamed_without_length(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, im.empty_config().data)
    body = _padded_manifest(5 * MIB)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 256 * 1024):
            yield body[start : start + 256 * 1024]

    response = client.put(f"/v2/{repo}/manifests/v1", content=chunks(), headers={"content-type": im.OCI_MANIFEST})

    assert response.status_code == 413
    assert_not_stored(client, repo, im.blob(body, im.OCI_MANIFEST))


def test_manifest_too_large_is_answered_after_the_body_so_the_client_reads_the_413(
    client: httpx.Client, server: LiveServer, repo: str
) -> None:
    # Sent slowly over a raw socket: a server answering right after the headers and closing would
    # make the later sends fail (reset / broken pipe) instead of the 413 being read. Five times.
    push_blob(client, repo, im.empty_config().data)
    body = _padded_manifest(4 * MIB + 1)
    authorization = base64.b64encode(f"AWS:{server.password()}".encode()).decode()
    host, port = server.url.removeprefix("http://").split(":")
    for attempt in range(5):
        head = (
            f"PUT /v2/{repo}/manifests/big{attempt} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Basic {authorization}\r\nContent-Type: {im.OCI_MANIFEST}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(head.encode())
            for start in range(0, len(body), 512 * 1024):
                time.sleep(0.02)
                sock.sendall(body[start : start + 512 * 1024])
            answer = b""
            while b"\r\n\r\n" not in answer:
                received = sock.recv(65536)
                assert received, f"connection closed before the answer (attempt {attempt})"
                answer += received
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert_not_stored(client, repo, im.blob(body, im.OCI_MANIFEST))


def test_manifest_too_large_repeated_with_httpx_reads_the_413(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, im.empty_config().data)
    body = _padded_manifest(4 * MIB + 1)
    for _ in range(5):
        response = client.put(f"/v2/{repo}/manifests/v1", content=body, headers={"content-type": im.OCI_MANIFEST})
        assert response.status_code == 413
        # The connection is still usable afterwards.
        assert client.get("/v2/").status_code == 200


@pytest.mark.parametrize("tag", ["-leading-dash", ".leading-dot", "x" * 129, "with!bang", "a+b"])
def test_invalid_tag(client: httpx.Client, repo: str, tag: str) -> None:
    manifest = build_oci_manifest(client, repo)

    put_response = put(client, repo, tag, manifest)
    get_response = client.get(f"/v2/{repo}/manifests/{tag}")

    assert_error(put_response, 400, "TAG_INVALID")
    # Neither a tag nor a digest names no manifest: GET and HEAD answer the spec's 404.
    assert_error(get_response, 404, "MANIFEST_UNKNOWN")
    assert client.head(f"/v2/{repo}/manifests/{tag}").status_code == 404
    assert client.get(f"/v2/{repo}/manifests/{manifest.digest}").status_code == 404


def test_get_and_head_of_an_invalid_reference_is_manifest_unknown(client: httpx.Client, repo: str) -> None:
    """The distribution spec's conformance check: `.INVALID_MANIFEST_NAME` is no manifest (404
    MANIFEST_UNKNOWN, "Requested image not found" as ECR says); a PUT with it stays TAG_INVALID."""
    manifest = push_image(client, repo, "v1")
    url = f"/v2/{repo}/manifests/.INVALID_MANIFEST_NAME"

    got = client.get(url)
    assert_error(got, 404, "MANIFEST_UNKNOWN")
    assert got.json()["errors"][0]["message"] == "Requested image not found"
    headed = client.head(url)
    assert headed.status_code == 404
    assert headed.content == b""
    assert_error(put(client, repo, ".INVALID_MANIFEST_NAME", manifest), 400, "TAG_INVALID")
    # A repository that does not exist is still NAME_UNKNOWN.
    assert_error(client.get("/v2/no/such-repo/manifests/.INVALID_MANIFEST_NAME"), 404, "NAME_UNKNOWN")


def test_longest_valid_tag(client: httpx.Client, repo: str) -> None:
    tag = "_" + "x" * 127
    manifest = push_image(client, repo, tag)

    assert_manifest_response(client.get(f"/v2/{repo}/manifests/{tag}"), manifest)


def test_subject_header_on_put(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    push_blob(client, repo, im.empty_config().data)
    referrer = im.artifact(subject, "application/vnd.example.sig")

    response = push_manifest(client, repo, referrer.digest, referrer)

    assert response.headers["oci-subject"] == subject.digest


def test_subject_need_not_exist(client: httpx.Client, repo: str) -> None:
    absent = im.oci_manifest(im.config(), [])
    push_blob(client, repo, im.empty_config().data)
    referrer = im.artifact(absent, "application/vnd.example.sig")

    response = push_manifest(client, repo, referrer.digest, referrer)

    assert response.headers["oci-subject"] == absent.digest


def test_no_subject_header_without_subject(client: httpx.Client, repo: str) -> None:
    manifest = build_oci_manifest(client, repo)

    response = push_manifest(client, repo, "v1", manifest)

    assert "oci-subject" not in response.headers


# --- GET errors --------------------------------------------------------------------------------


def test_unknown_manifest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")
    unknown_digest = im.digest_of(b"unknown")

    for reference in ("nosuchtag", unknown_digest):
        assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
        head = client.head(f"/v2/{repo}/manifests/{reference}")
        assert head.status_code == 404
        assert head.content == b""


def test_manifest_of_another_repository_is_not_visible(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    owner, other = new_repo(), new_repo()
    manifest = push_image(client, owner, "v1")
    push_image(client, other, "v2")

    assert_error(client.get(f"/v2/{other}/manifests/{manifest.digest}"), 404, "MANIFEST_UNKNOWN")
    assert_error(client.get(f"/v2/{other}/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_malformed_digest_reference(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")

    for reference in ("sha256:zz", "md5:" + "a" * 32, "sha256:" + "a" * 10):
        assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")


# --- DELETE ------------------------------------------------------------------------------------


def test_delete_by_digest(client: httpx.Client, repo: str) -> None:
    manifest = push_image(client, repo, "v1")
    push_manifest(client, repo, "v2", manifest)
    kept = push_image(client, repo, "other")

    response = client.delete(f"/v2/{repo}/manifests/{manifest.digest}")

    assert response.status_code == 202
    for reference in (manifest.digest, "v1", "v2"):
        assert_error(client.get(f"/v2/{repo}/manifests/{reference}"), 404, "MANIFEST_UNKNOWN")
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["other"]
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/other"), kept)
    assert_error(client.delete(f"/v2/{repo}/manifests/{manifest.digest}"), 404, "MANIFEST_UNKNOWN")


def test_delete_by_tag_removes_only_the_tag(client: httpx.Client, repo: str) -> None:
    manifest = push_image(client, repo, "v1")
    push_manifest(client, repo, "v2", manifest)

    response = client.delete(f"/v2/{repo}/manifests/v1")

    assert response.status_code == 202
    assert_error(client.get(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/v2"), manifest)
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/{manifest.digest}"), manifest)
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v2"]
    assert_error(client.delete(f"/v2/{repo}/manifests/v1"), 404, "MANIFEST_UNKNOWN")


def test_delete_child_still_referenced_by_an_index_is_refused(client: httpx.Client, repo: str) -> None:
    child, sibling = push_image(client, repo), push_image(client, repo)
    index = im.oci_index([child, sibling])
    push_manifest(client, repo, "multi", index)

    refused = client.delete(f"/v2/{repo}/manifests/{child.digest}")

    assert refused.status_code == 400, refused.text
    assert error_codes(refused) == ["MANIFEST_INVALID"]
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/{child.digest}"), child)
    assert_manifest_response(client.get(f"/v2/{repo}/manifests/multi"), index)
    # Once the index is gone, the child can go too.
    assert client.delete(f"/v2/{repo}/manifests/{index.digest}").status_code == 202
    assert client.delete(f"/v2/{repo}/manifests/{child.digest}").status_code == 202


def test_delete_in_unknown_repository(client: httpx.Client, repo: str) -> None:
    for reference in ("v1", im.digest_of(b"x")):
        assert_error(client.delete(f"/v2/{repo}/manifests/{reference}"), 404, "NAME_UNKNOWN")
