"""Blob uploads: monolithic, streamed, chunked, status, cancel, errors, cross-repository mount,
and sessions that outlive a server restart."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.images import digest_of, error_codes, push_blob
from tests.support.live import LiveServer


def start_upload(client: httpx.Client, name: str) -> str:
    """POST a new session; returns its Location."""
    response = client.post(f"/v2/{name}/blobs/uploads/")
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    assert f"/v2/{name}/blobs/uploads/" in location
    assert response.headers["docker-upload-uuid"] in location
    return location


def patch_chunk(client: httpx.Client, location: str, chunk: bytes, start: int) -> httpx.Response:
    return client.patch(
        location,
        content=chunk,
        headers={"content-range": f"{start}-{start + len(chunk) - 1}", "content-type": "application/octet-stream"},
    )


def assert_blob(client: httpx.Client, name: str, data: bytes) -> None:
    digest = digest_of(data)
    head = client.head(f"/v2/{name}/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["content-length"] == str(len(data))
    got = client.get(f"/v2/{name}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data


def assert_blob_created(response: httpx.Response, name: str, digest: str) -> None:
    assert response.status_code == 201, response.text
    assert response.headers["docker-content-digest"] == digest
    assert response.headers["location"].endswith(f"/v2/{name}/blobs/{digest}")


def assert_upload_unknown(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    assert error_codes(response) == ["BLOB_UPLOAD_UNKNOWN"]


# --- completing uploads ------------------------------------------------------------------------


def test_post_then_monolithic_put(client: httpx.Client, repo: str) -> None:
    data = os.urandom(4096)
    digest = digest_of(data)
    location = start_upload(client, repo)

    response = client.put(
        location,
        params={"digest": digest},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )

    assert_blob_created(response, repo, digest)
    assert_blob(client, repo, data)
    assert_upload_unknown(client.get(location))


def test_post_with_digest_is_monolithic(client: httpx.Client, repo: str) -> None:
    data = os.urandom(4096)
    digest = digest_of(data)

    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)

    assert_blob_created(response, repo, digest)
    assert_blob(client, repo, data)


def test_post_with_sha512_digest(client: httpx.Client, repo: str) -> None:
    data = os.urandom(2048)
    digest = f"sha512:{hashlib.sha512(data).hexdigest()}"

    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)

    assert_blob_created(response, repo, digest)
    got = client.get(f"/v2/{repo}/blobs/{digest}")
    assert got.status_code == 200
    assert got.content == data


def test_post_with_wrong_digest(client: httpx.Client, repo: str) -> None:
    data = os.urandom(256)
    claimed = digest_of(b"not these bytes")

    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": claimed}, content=data)

    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/{repo}/blobs/{claimed}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


def test_single_patch_then_put(client: httpx.Client, repo: str) -> None:
    data = os.urandom(5000)
    location = start_upload(client, repo)

    patched = client.patch(location, content=data, headers={"content-type": "application/octet-stream"})

    assert patched.status_code == 202
    assert patched.headers["range"] == f"0-{len(data) - 1}"
    assert patched.headers["docker-upload-uuid"] in patched.headers["location"]
    completed = client.put(patched.headers["location"], params={"digest": digest_of(data)})
    assert_blob_created(completed, repo, digest_of(data))
    assert_blob(client, repo, data)


def test_chunked_patches_then_put(client: httpx.Client, repo: str) -> None:
    chunks = [os.urandom(1000), os.urandom(1), os.urandom(2500), os.urandom(700)]
    location = start_upload(client, repo)
    offset = 0
    for chunk in chunks:
        response = patch_chunk(client, location, chunk, offset)
        offset += len(chunk)
        assert response.status_code == 202, response.text
        assert response.headers["range"] == f"0-{offset - 1}"
        location = response.headers["location"]

    data = b"".join(chunks)
    completed = client.put(location, params={"digest": digest_of(data)})

    assert_blob_created(completed, repo, digest_of(data))
    assert_blob(client, repo, data)


def test_patch_with_transfer_encoding_chunked(client: httpx.Client, repo: str) -> None:
    pieces = [os.urandom(3000) for _ in range(5)]
    location = start_upload(client, repo)

    def body() -> Iterator[bytes]:
        yield from pieces

    request = client.build_request(
        "PATCH", location, content=body(), headers={"content-type": "application/octet-stream"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    response = client.send(request)

    data = b"".join(pieces)
    assert response.status_code == 202, response.text
    assert response.headers["range"] == f"0-{len(data) - 1}"
    completed = client.put(response.headers["location"], params={"digest": digest_of(data)})
    assert_blob_created(completed, repo, digest_of(data))
    assert_blob(client, repo, data)


def test_put_with_final_chunk(client: httpx.Client, repo: str) -> None:
    first, last = os.urandom(1500), os.urandom(900)
    data = first + last
    location = start_upload(client, repo)
    location = patch_chunk(client, location, first, 0).headers["location"]

    completed = client.put(
        location,
        params={"digest": digest_of(data)},
        content=last,
        headers={"content-range": f"{len(first)}-{len(data) - 1}", "content-type": "application/octet-stream"},
    )

    assert_blob_created(completed, repo, digest_of(data))
    assert_blob(client, repo, data)


def test_out_of_order_chunk(client: httpx.Client, repo: str) -> None:
    first, second = os.urandom(10), os.urandom(10)
    location = start_upload(client, repo)
    location = patch_chunk(client, location, first, 0).headers["location"]

    skipped = patch_chunk(client, location, second, 20)
    repeated = patch_chunk(client, location, second, 0)

    for response in (skipped, repeated):
        assert response.status_code == 416, response.text
        assert response.headers["range"] == "0-9"
        assert error_codes(response) == ["BLOB_UPLOAD_INVALID"]
    # The session is intact: the right chunk still goes on.
    resumed = patch_chunk(client, location, second, 10)
    assert resumed.status_code == 202
    assert resumed.headers["range"] == "0-19"
    completed = client.put(resumed.headers["location"], params={"digest": digest_of(first + second)})
    assert_blob_created(completed, repo, digest_of(first + second))
    assert_blob(client, repo, first + second)


def test_final_chunk_at_wrong_offset(client: httpx.Client, repo: str) -> None:
    first, last = os.urandom(10), os.urandom(10)
    location = start_upload(client, repo)
    location = patch_chunk(client, location, first, 0).headers["location"]

    response = client.put(
        location,
        params={"digest": digest_of(first + last)},
        content=last,
        headers={"content-range": "15-24"},
    )

    assert response.status_code == 416
    assert response.headers["range"] == "0-9"
    assert client.get(location).headers["range"] == "0-9"


def test_content_range_not_matching_body_length(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)

    response = client.patch(location, content=os.urandom(10), headers={"content-range": "0-99"})

    assert response.status_code == 400
    assert error_codes(response) == ["BLOB_UPLOAD_INVALID"]


# --- session status, cancel, unknown sessions --------------------------------------------------


def test_upload_status(client: httpx.Client, repo: str) -> None:
    location = start_upload(client, repo)
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]

    empty = client.get(location)
    location = patch_chunk(client, location, os.urandom(10), 0).headers["location"]
    after_chunk = client.get(location)

    assert empty.status_code == 204
    assert empty.headers["range"] == "0-0"
    assert after_chunk.status_code == 204
    assert after_chunk.headers["range"] == "0-9"
    assert after_chunk.headers["docker-upload-uuid"] == upload_id
    assert after_chunk.headers["location"].endswith(f"/v2/{repo}/blobs/uploads/{upload_id}")
    assert after_chunk.content == b""


def test_cancel_upload(client: httpx.Client, repo: str) -> None:
    data = os.urandom(10)
    location = start_upload(client, repo)
    location = patch_chunk(client, location, data, 0).headers["location"]

    cancelled = client.delete(location)

    assert cancelled.status_code == 204
    assert_upload_unknown(client.get(location))
    assert_upload_unknown(patch_chunk(client, location, data, 10))
    assert_upload_unknown(client.put(location, params={"digest": digest_of(data)}))
    assert_upload_unknown(client.delete(location))
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404


def test_unknown_upload_id(client: httpx.Client, repo: str) -> None:
    push_blob(client, repo, b"make the repository exist")
    location = f"/v2/{repo}/blobs/uploads/{uuid.uuid4()}"
    digest = digest_of(b"x")

    assert_upload_unknown(client.get(location))
    assert_upload_unknown(client.patch(location, content=b"x"))
    assert_upload_unknown(client.put(location, params={"digest": digest}, content=b"x"))
    assert_upload_unknown(client.delete(location))


def test_upload_id_is_bound_to_its_repository(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    owner, other = new_repo(), new_repo()
    push_blob(client, other, b"make the repository exist")
    location = start_upload(client, owner)
    upload_id = location.rstrip("/").rsplit("/", 1)[-1]
    foreign = f"/v2/{other}/blobs/uploads/{upload_id}"

    assert_upload_unknown(client.get(foreign))
    assert_upload_unknown(client.patch(foreign, content=b"x"))
    assert_upload_unknown(client.delete(foreign))
    assert client.get(location).status_code == 204


def test_wrong_digest_on_put_discards_the_upload(client: httpx.Client, repo: str) -> None:
    data = os.urandom(300)
    claimed = digest_of(b"something else")
    location = start_upload(client, repo)
    location = patch_chunk(client, location, data, 0).headers["location"]

    response = client.put(location, params={"digest": claimed})

    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]
    assert client.head(f"/v2/{repo}/blobs/{claimed}").status_code == 404
    assert client.head(f"/v2/{repo}/blobs/{digest_of(data)}").status_code == 404
    assert_upload_unknown(client.get(location))


def test_put_without_digest(client: httpx.Client, repo: str) -> None:
    data = os.urandom(100)
    location = start_upload(client, repo)
    location = patch_chunk(client, location, data, 0).headers["location"]

    missing = client.put(location)
    empty = client.put(location, params={"digest": ""})

    for response in (missing, empty):
        assert response.status_code == 400
        assert error_codes(response) == ["DIGEST_INVALID"]
    # Nothing was consumed: the session completes normally afterwards.
    assert client.get(location).headers["range"] == "0-99"
    assert_blob_created(client.put(location, params={"digest": digest_of(data)}), repo, digest_of(data))


MALFORMED_DIGESTS = [
    "nonsense",
    "sha256:",
    "sha256:xyz",
    "sha256:" + "a" * 63,
    "sha256:" + "A" * 64,
    "md5:" + "a" * 32,
    ":" + "a" * 64,
]


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
def test_malformed_digest_on_put(client: httpx.Client, repo: str, digest: str) -> None:
    location = start_upload(client, repo)

    response = client.put(location, params={"digest": digest}, content=b"data")

    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


@pytest.mark.parametrize("digest", MALFORMED_DIGESTS)
def test_malformed_digest_on_post(client: httpx.Client, repo: str, digest: str) -> None:
    response = client.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=b"data")

    assert response.status_code == 400
    assert error_codes(response) == ["DIGEST_INVALID"]


# --- cross-repository mount --------------------------------------------------------------------


@pytest.fixture
def blob_mounting(server: LiveServer) -> None:
    """Mounting is an ECR account setting (BLOB_MOUNTING, off by default); turn it on through the
    ECR API of the same server. Without it a mount request starts a plain upload session (202)."""
    answer = server.ecr().put_account_setting(name="BLOB_MOUNTING", value="ENABLED")
    assert answer["value"] == "ENABLED"


@pytest.mark.usefixtures("blob_mounting")
def test_mount_from_repository_that_has_the_blob(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    source, target = new_repo(), new_repo()
    data = os.urandom(777)
    digest = push_blob(client, source, data)

    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})

    assert_blob_created(response, target, digest)
    assert_blob(client, target, data)


@pytest.mark.usefixtures("blob_mounting")
def test_mount_from_repository_without_the_blob_starts_a_session(
    client: httpx.Client, new_repo: Callable[[], str]
) -> None:
    source, target = new_repo(), new_repo()
    push_blob(client, source, b"some other blob")
    data = os.urandom(100)
    digest = digest_of(data)

    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": source})

    assert response.status_code == 202
    location = response.headers["location"]
    assert f"/v2/{target}/blobs/uploads/" in location
    assert response.headers["docker-upload-uuid"] in location
    assert client.head(f"/v2/{target}/blobs/{digest}").status_code == 404
    completed = client.put(location, params={"digest": digest}, content=data)
    assert_blob_created(completed, target, digest)
    assert_blob(client, target, data)


@pytest.mark.usefixtures("blob_mounting")
def test_mount_from_unknown_repository_starts_a_session(client: httpx.Client, new_repo: Callable[[], str]) -> None:
    target = new_repo()
    digest = digest_of(b"anything")

    response = client.post(f"/v2/{target}/blobs/uploads/", params={"mount": digest, "from": new_repo()})

    assert response.status_code == 202
    assert f"/v2/{target}/blobs/uploads/" in response.headers["location"]


# --- sessions survive a restart ----------------------------------------------------------------


def test_upload_session_survives_restart(
    tmp_path: Path,
    server_for: Callable[[Path], LiveServer],
    client_for: Callable[[LiveServer], httpx.Client],
) -> None:
    first, second = os.urandom(64 * 1024), os.urandom(10 * 1024)
    data = first + second
    name = "restart/app"
    live = server_for(tmp_path / "data").start()
    try:
        with client_for(live) as client:
            location = start_upload(client, name)
            patched = patch_chunk(client, location, first, 0)
            assert patched.status_code == 202
            location = patched.headers["location"]

        live.stop()
        live.start()

        with client_for(live) as client:
            status = client.get(location)
            assert status.status_code == 204
            assert status.headers["range"] == f"0-{len(first) - 1}"
            resumed = patch_chunk(client, location, second, len(first))
            assert resumed.status_code == 202, resumed.text
            assert resumed.headers["range"] == f"0-{len(data) - 1}"
            completed = client.put(resumed.headers["location"], params={"digest": digest_of(data)})
            assert_blob_created(completed, name, digest_of(data))
            assert_blob(client, name, data)
    finally:
        live.stop()


def test_blob_size_limit_holds_while_streaming(
    tmp_path: Path, client_for: Callable[[LiveServer], httpx.Client]
) -> None:
    """limits.max_blob_bytes, against bodies that declare no length (chunked transfer): a
    monolithic PUT and PATCHes that pass the limit only together both get 413 SIZE_INVALID, and
    nothing of them is published; a blob of exactly the limit is taken."""
    limit = 256 * 1024
    live = LiveServer(
        tmp_path / "data", args=("--create-on-push",), env={"MOORAGE_LIMITS__MAX_BLOB_BYTES": str(limit)}
    ).start()

    def streamed(data: bytes) -> Iterator[bytes]:
        for at in range(0, len(data), 32 * 1024):
            yield data[at : at + 32 * 1024]

    name = "limits/app"
    try:
        with client_for(live) as client:
            whole = os.urandom(limit + 1)
            put = client.put(start_upload(client, name), params={"digest": digest_of(whole)}, content=streamed(whole))
            assert put.status_code == 413, put.text
            assert error_codes(put) == ["SIZE_INVALID"]
            assert client.head(f"/v2/{name}/blobs/{digest_of(whole)}").status_code == 404

            half = os.urandom(limit // 2 + 1)
            first = client.patch(start_upload(client, name), content=streamed(half))
            assert first.status_code == 202, first.text
            second = client.patch(first.headers["location"], content=streamed(half))
            assert second.status_code == 413, second.text
            assert error_codes(second) == ["SIZE_INVALID"]
            assert client.head(f"/v2/{name}/blobs/{digest_of(half + half)}").status_code == 404

            exact = os.urandom(limit)
            taken = client.put(start_upload(client, name), params={"digest": digest_of(exact)}, content=streamed(exact))
            assert_blob_created(taken, name, digest_of(exact))
            assert_blob(client, name, exact)
    finally:
        live.stop()
