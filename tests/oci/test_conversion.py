"""ECR's manifest format conversion on pull by tag (Docker schema 2 <-> OCI), never by digest."""

from __future__ import annotations

import hashlib
import json

import httpx

from moorage import manifests as mf
from tests.support.images import push_image


def test_docker_manifest_served_as_oci_when_only_oci_is_accepted(client: httpx.Client, repo: str) -> None:
    pushed = push_image(client, repo, "v1", docker=True)
    response = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": mf.OCI_MANIFEST})
    assert response.status_code == 200
    assert response.headers["content-type"] == mf.OCI_MANIFEST
    body = response.content
    assert response.headers["docker-content-digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    assert response.headers["docker-content-digest"] != pushed.digest
    document = json.loads(body)
    assert document["mediaType"] == mf.OCI_MANIFEST
    assert document["config"]["mediaType"] == mf.OCI_CONFIG
    assert {layer["mediaType"] for layer in document["layers"]} == {mf.OCI_LAYER_GZIP}
    head = client.head(f"/v2/{repo}/manifests/v1", headers={"Accept": mf.OCI_MANIFEST})
    assert head.headers["docker-content-digest"] == response.headers["docker-content-digest"]
    assert int(head.headers["content-length"]) == len(body)


def test_stored_form_when_accepted_and_never_converted_by_digest(client: httpx.Client, repo: str) -> None:
    pushed = push_image(client, repo, "v1", docker=True)
    both = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": f"{mf.OCI_MANIFEST}, {mf.DOCKER_MANIFEST_V2}"})
    assert both.headers["docker-content-digest"] == pushed.digest
    by_digest = client.get(f"/v2/{repo}/manifests/{pushed.digest}", headers={"Accept": mf.OCI_MANIFEST})
    assert by_digest.status_code == 200
    assert by_digest.headers["docker-content-digest"] == pushed.digest
    assert by_digest.headers["content-type"] == mf.DOCKER_MANIFEST_V2
