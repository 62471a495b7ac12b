"""Two replicas on one PostgreSQL database, both configured with the same webhook: pushes through
either replica, concurrently, reach the webhook once each (one replica holds the delivery lease)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.scale.conftest import ClusterFactory
from tests.scale.test_replicas import OCI_CONFIG, OCI_LAYER, sha256_digest, upload_blob
from tests.support.live import LiveServer
from tests.support.receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.s3]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _push(server: LiveServer, name: str, n: int) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
    layer = f"layer {n}".encode() * 100
    for blob in (config, layer):
        upload_blob(server, name, blob)
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": OCI_LAYER, "digest": sha256_digest(layer), "size": len(layer)}],
        }
    ).encode()
    response = httpx.put(
        f"{server.url}/v2/{name}/manifests/t{n}",
        content=body,
        headers={"content-type": OCI_MANIFEST},
        auth=server.auth,
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return sha256_digest(body)


def test_two_replicas_deliver_each_event_once(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    with WebhookReceiver() as receiver:
        env = {"MOORAGE_EVENTS__WEBHOOK_URL": receiver.url, "MOORAGE_CREATE_ON_PUSH": "true"}
        cluster = make_cluster(a_env=env, b_env=env)
        count = 24
        with ThreadPoolExecutor(4) as pool:
            digests = list(pool.map(lambda n: _push(cluster.replicas[n % 2], "events/replicated", n), range(count)))
        # the repository created on the first push, then one event per manifest PUT
        receiver.wait_for(count + 1, timeout=60)
        time.sleep(1.5)  # both replicas poll: nothing more may arrive
        requests = receiver.requests
    ids = [r.headers["x-moorage-event-id"] for r in requests]
    assert len(ids) == len(set(ids)) == count + 1
    pushed = {r.event["detail"]["image-digest"] for r in requests if r.event["detail-type"] == "ECR Image Action"}
    assert pushed == set(digests)
