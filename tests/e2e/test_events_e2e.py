"""Events end to end: a real server, real clients (skopeo, boto3), a real webhook receiver and the
audit log; a SIGKILL between commit and delivery loses nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moorage.delivery import signature
from tests.e2e.conftest import SERVER_ENV, Layout, login, make_image, need, push
from tests.support.live import LiveServer
from tests.support.receiver import WebhookReceiver
from tests.support.services import free_port

pytestmark = pytest.mark.e2e

SECRET = "hook-secret-1"


@pytest.fixture(scope="module")
def two_tags(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    root = tmp_path_factory.mktemp("events-image") / "layout"
    make_image(root, "v1", layers=1, layer_size_mb=0.1, seed=31)
    make_image(root, "multi", layers=1, layer_size_mb=0.1, seed=32, platforms="linux/amd64,linux/arm64")
    return Layout(root)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def _server(tmp_path: Path, receiver_url: str, name: str = "data") -> LiveServer:
    env = {
        **SERVER_ENV,
        "MOORAGE_EVENTS__WEBHOOK_URL": receiver_url,
        "MOORAGE_EVENTS__WEBHOOK_SECRET": SECRET,
        "MOORAGE_EVENTS__AUDIT_LOG": str(tmp_path / "audit.jsonl"),
    }
    return LiveServer(tmp_path / name, env=env)


def _details(events: list[dict[str, Any]], detail_type: str) -> list[dict[str, Any]]:
    return [e["detail"] for e in events if e["detail-type"] == detail_type]


def test_pushes_tags_and_deletes_arrive_as_ecr_events(
    tmp_path: Path, receiver: WebhookReceiver, two_tags: Layout
) -> None:
    need("skopeo")
    with _server(tmp_path, receiver.url) as server:
        login(server)
        ecr = server.ecr()
        ecr.create_repository(repositoryName="team/api")
        push(f"oci:{two_tags.root}:v1", server, "team/api:v1")
        digest = two_tags.digest_of("v1")
        manifest = two_tags.blob(digest).decode()
        ecr.put_image(repositoryName="team/api", imageManifest=manifest, imageTag="stable")
        push(f"oci:{two_tags.root}:multi", server, "team/app:multi", "--all")  # created on push
        ecr.batch_delete_image(repositoryName="team/api", imageIds=[{"imageTag": "stable"}])
        ecr.batch_delete_image(repositoryName="team/api", imageIds=[{"imageDigest": digest}])
        ecr.delete_repository(repositoryName="team/app", force=True)
        got = receiver.wait_for(10)
        time.sleep(0.5)
        requests = receiver.requests
    events = [r.event for r in requests]
    # Each event once, signed over the exact body, in the order things happened.
    assert len({r.headers["x-moorage-event-id"] for r in requests}) == len(requests) == len(got)
    for r in requests:
        assert r.headers["x-moorage-signature"] == signature(SECRET, r.body)
        assert r.headers["x-moorage-event-id"] == r.event["id"]
        assert r.headers["content-type"] == "application/json"
    for event in events:
        assert set(event) == {
            "version",
            "id",
            "detail-type",
            "source",
            "account",
            "time",
            "region",
            "resources",
            "detail",
        }
        assert (event["version"], event["account"], event["region"]) == ("0", "123456789012", "us-east-1")
        assert event["time"].endswith("Z")
    image_events = [e for e in events if e["detail-type"] == "ECR Image Action"]
    assert {e["source"] for e in image_events} == {"aws.ecr"}
    assert {e["resources"] == [] for e in image_events} == {True}
    actions = [
        (d["action-type"], d["repository-name"], d.get("image-tag")) for d in _details(events, "ECR Image Action")
    ]
    assert actions == [
        ("PUSH", "team/api", "v1"),
        ("PUSH", "team/api", "stable"),  # PutImage: the same event as a /v2/ push
        ("PUSH", "team/app", None),  # the index's children, untagged
        ("PUSH", "team/app", None),
        ("PUSH", "team/app", "multi"),  # then the index with its tag
        ("DELETE", "team/api", "stable"),  # by tag: only the tag went
        ("DELETE", "team/api", "v1"),  # by digest: the image and its remaining tag
    ]
    first = _details(events, "ECR Image Action")[0]
    assert first == {
        "result": "SUCCESS",
        "repository-name": "team/api",
        "image-digest": digest,
        "action-type": "PUSH",
        "image-tag": "v1",
        "manifest-media-type": "application/vnd.oci.image.manifest.v1+json",
        "artifact-media-type": "application/vnd.oci.image.config.v1+json",
    }
    repo_events = [e for e in events if e["detail-type"] == "Moorage Repository Action"]
    assert [(e["source"], e["detail"]["action-type"], e["detail"]["repository-name"]) for e in repo_events] == [
        ("moorage", "CREATE", "team/api"),
        ("moorage", "CREATE", "team/app"),
        ("moorage", "DELETE", "team/app"),
    ]
    assert repo_events[0]["resources"] == ["arn:aws:ecr:us-east-1:123456789012:repository/team/api"]
    # The audit log holds the same events, byte for byte.
    lines = (tmp_path / "audit.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in events]
    assert [line.encode() for line in lines] == [r.body for r in requests]


def test_an_event_committed_before_a_sigkill_is_delivered_after_restart(tmp_path: Path, two_tags: Layout) -> None:
    need("skopeo")
    port = free_port()  # nothing listens there yet: deliveries are refused
    server = _server(tmp_path, f"http://127.0.0.1:{port}/hook")
    server.start()
    try:
        login(server)
        server.ecr().create_repository(repositoryName="team/crash")
        push(f"oci:{two_tags.root}:v1", server, "team/crash:v1")
        time.sleep(0.5)  # a delivery attempt or two fail meanwhile
        server.kill()
        with WebhookReceiver(port=port) as receiver:
            server.start()
            # The killed process's delivery lease (10 s) must run out before another takes over.
            got = receiver.wait_for(2, timeout=40)
            assert [(r.event["detail-type"], r.event["detail"].get("image-tag")) for r in got] == [
                ("Moorage Repository Action", None),
                ("ECR Image Action", "v1"),
            ]
    finally:
        server.stop()
