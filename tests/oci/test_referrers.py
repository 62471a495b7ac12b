"""The referrers API: `GET /v2/<name>/referrers/<digest>[?artifactType=]`."""

from __future__ import annotations

import os
from typing import Any

import httpx

from tests.support import images as im
from tests.support.images import Content, error_codes, push_blob, push_image, push_manifest

SBOM = "application/vnd.example.sbom.v1"
SIGNATURE = "application/vnd.example.signature.v1"


def referrers(client: httpx.Client, name: str, subject: str, **params: str) -> httpx.Response:
    response = client.get(f"/v2/{name}/referrers/{subject}", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == im.OCI_INDEX
    return response


def manifests_of(response: httpx.Response) -> list[dict[str, Any]]:
    document = response.json()
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == im.OCI_INDEX
    found: list[dict[str, Any]] = document["manifests"]
    return found


def push_artifact(
    client: httpx.Client,
    name: str,
    subject: Content,
    artifact_type: str,
    annotations: dict[str, str] | None = None,
) -> Content:
    payload = im.blob(os.urandom(64), "application/vnd.example.data")
    push_blob(client, name, payload.data)
    push_blob(client, name, im.empty_config().data)
    manifest = im.artifact(subject, artifact_type, blobs=[payload], annotations=annotations)
    response = push_manifest(client, name, manifest.digest, manifest)
    assert response.headers["oci-subject"] == subject.digest
    return manifest


def by_digest(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["digest"]: entry for entry in found}


def test_unknown_subject_gives_an_empty_index(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")

    response = referrers(client, repo, im.digest_of(b"no such manifest"))

    assert manifests_of(response) == []
    assert "oci-filters-applied" not in response.headers


def test_subject_without_referrers(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")

    assert manifests_of(referrers(client, repo, subject.digest)) == []


def test_lists_artifacts_with_type_and_annotations(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    sbom = push_artifact(client, repo, subject, SBOM, {"org.example.sbom.format": "spdx", "created": "now"})
    signature = push_artifact(client, repo, subject, SIGNATURE)
    unrelated_subject = push_image(client, repo, "v2")
    push_artifact(client, repo, unrelated_subject, SBOM)

    response = referrers(client, repo, subject.digest)

    found = by_digest(manifests_of(response))
    assert set(found) == {sbom.digest, signature.digest}
    assert found[sbom.digest] == {
        "mediaType": im.OCI_MANIFEST,
        "digest": sbom.digest,
        "size": sbom.size,
        "artifactType": SBOM,
        "annotations": {"org.example.sbom.format": "spdx", "created": "now"},
    }
    assert found[signature.digest]["artifactType"] == SIGNATURE
    assert found[signature.digest]["size"] == signature.size
    assert "annotations" not in found[signature.digest]
    assert "oci-filters-applied" not in response.headers


def test_artifact_type_filter(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    sbom = push_artifact(client, repo, subject, SBOM)
    push_artifact(client, repo, subject, SIGNATURE)

    filtered = referrers(client, repo, subject.digest, artifactType=SBOM)
    nothing = referrers(client, repo, subject.digest, artifactType="application/vnd.example.none")

    assert [entry["digest"] for entry in manifests_of(filtered)] == [sbom.digest]
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert manifests_of(nothing) == []
    assert nothing.headers["oci-filters-applied"] == "artifactType"


def test_artifact_type_from_config_media_type(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    config = im.blob(b'{"kind":"legacy-artifact"}', "application/vnd.example.legacy.config.v1+json")
    push_blob(client, repo, config.data)
    manifest = im.oci_manifest(config, [], subject=subject)
    push_manifest(client, repo, manifest.digest, manifest)

    found = manifests_of(referrers(client, repo, subject.digest))

    assert found == [
        {
            "mediaType": im.OCI_MANIFEST,
            "digest": manifest.digest,
            "size": manifest.size,
            "artifactType": config.media_type,
        }
    ]


def test_index_as_referrer(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    child = push_image(client, repo)
    index = im.oci_index([child], subject=subject, artifact_type=SBOM, annotations={"k": "v"})

    push_manifest(client, repo, index.digest, index)
    found = manifests_of(referrers(client, repo, subject.digest))

    assert found == [
        {
            "mediaType": im.OCI_INDEX,
            "digest": index.digest,
            "size": index.size,
            "artifactType": SBOM,
            "annotations": {"k": "v"},
        }
    ]


def test_referrers_pushed_before_their_subject(client: httpx.Client, repo: str) -> None:
    config, layer = im.config(), im.layer()
    subject = im.oci_manifest(config, [layer])
    early = push_artifact(client, repo, subject, SBOM)
    for item in (config, layer):
        push_blob(client, repo, item.data)

    before = manifests_of(referrers(client, repo, subject.digest))
    push_manifest(client, repo, "v1", subject)
    after = manifests_of(referrers(client, repo, subject.digest))

    assert [entry["digest"] for entry in before] == [early.digest]
    assert [entry["digest"] for entry in after] == [early.digest]


def test_deleted_referrer_disappears(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    kept = push_artifact(client, repo, subject, SBOM)
    dropped = push_artifact(client, repo, subject, SIGNATURE)

    assert client.delete(f"/v2/{repo}/manifests/{dropped.digest}").status_code == 202

    assert [e["digest"] for e in manifests_of(referrers(client, repo, subject.digest))] == [kept.digest]


def test_referrers_of_another_repository_are_not_listed(client: httpx.Client, repo: str) -> None:
    subject = push_image(client, repo, "v1")
    other = repo + "/other"
    push_image(client, other, "v1")
    push_artifact(client, other, subject, SBOM)

    assert manifests_of(referrers(client, repo, subject.digest)) == []


def test_malformed_subject_digest(client: httpx.Client, repo: str) -> None:
    push_image(client, repo, "v1")

    for reference in ("latest", "sha256:zz", "md5:" + "a" * 32):
        response = client.get(f"/v2/{repo}/referrers/{reference}")
        assert response.status_code == 400
        assert error_codes(response) == ["DIGEST_INVALID"]
