"""Replica B runs with `storage.s3.redirect`: blob downloads through it answer 307 with a pre-signed
SeaweedFS URL (the bytes never pass through B), while replica A of the same deployment streams them.
Registry clients (skopeo) follow the redirect."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import Layout, pull, push, sha256_hex
from tests.scale.conftest import ClusterFactory

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.s3]

REPO = "scale/redirect"


def test_blob_download_through_b_redirects_to_presigned_s3(
    make_cluster: ClusterFactory, small_image: Layout, tmp_path: Path
) -> None:
    cluster = make_cluster(b_env={"MOORAGE_STORAGE__S3__REDIRECT": "true"})
    a, b = cluster.replicas
    a.ecr().create_repository(repositoryName=REPO)
    digest = small_image.digest_of("v1")
    push(f"oci:{small_image.root}:v1", a, f"{REPO}:v1")
    blobs = small_image.closure(digest)[1:]  # the config and the layers
    assert len(blobs) == 4

    with httpx.Client(timeout=30) as client:
        for blob in blobs:
            url = f"{b.url}/v2/{REPO}/blobs/{blob}"
            assert client.get(url).status_code == 401, "no redirect without registry credentials"
            answer = client.get(url, auth=b.auth)
            assert answer.status_code == 307, f"GET {blob} through B: {answer.status_code} {answer.text}"
            assert answer.headers["docker-content-digest"] == blob
            location = httpx.URL(answer.headers["location"])
            assert str(location).startswith(cluster.s3.endpoint_url + "/"), location
            assert location.path == f"/{cluster.bucket}/{cluster.prefix}/blobs/sha256/{blob.split(':', 1)[1]}"
            assert "X-Amz-Signature" in location.params, location
            assert "X-Amz-Expires" in location.params, location

            followed = client.get(location)  # no credentials: the pre-signed URL is the grant
            assert followed.status_code == 200, followed.text
            assert "sha256:" + sha256_hex(followed.content) == blob
            assert followed.content == small_image.blob(blob)

            tampered = location.copy_set_param("X-Amz-Signature", "0" * 64)
            assert client.get(tampered).status_code == 403, "S3 must check the signature of the URL"

            direct = client.get(f"{a.url}/v2/{REPO}/blobs/{blob}", auth=a.auth)  # A does not redirect
            assert direct.status_code == 200, direct.text
            assert direct.content == followed.content

    back = Layout(tmp_path / "back")
    pull(b, f"{REPO}:v1", f"oci:{back.root}:v1")
    assert back.digest_of("v1") == digest
    assert back.verify(digest) == small_image.closure(digest)
    for blob in blobs:
        assert back.blob(blob) == small_image.blob(blob)
