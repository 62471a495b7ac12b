"""Event shapes (EventBridge envelope, ECR's detail keys) and the [events] settings."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moorage.config import (
    ConfigError,
    Settings,
    load_settings,
    render_toml,
    settings_from_json,
    settings_to_dict,
    settings_to_json,
)
from moorage.delivery import SinkFilter, signature
from moorage.events import image_action, image_deleted, lifecycle_action, repository_action
from moorage.metadata.outbox import StoredEvent
from moorage.model import Digest, RegistryRef

REGISTRY = RegistryRef("123456789012", "us-west-2")
AT = datetime(2019, 11, 16, 1, 54, 34, 123456, tzinfo=UTC)
DIGEST = Digest("sha256", "7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234" + "0000")


def test_a_push_event_has_the_shape_of_ecrs_documented_example() -> None:
    event = image_action(
        REGISTRY,
        "my-repository-name",
        DIGEST,
        "PUSH",
        AT,
        tag="latest",
        manifest_media_type="application/vnd.docker.distribution.manifest.v2+json",
        artifact_media_type="application/vnd.docker.container.image.v1+json",
    )
    body = json.loads(event.body)
    assert body == {
        "version": "0",
        "id": event.id,
        "detail-type": "ECR Image Action",
        "source": "aws.ecr",
        "account": "123456789012",
        "time": "2019-11-16T01:54:34Z",
        "region": "us-west-2",
        "resources": [],
        "detail": {
            "result": "SUCCESS",
            "repository-name": "my-repository-name",
            "image-digest": str(DIGEST),
            "action-type": "PUSH",
            "image-tag": "latest",
            "manifest-media-type": "application/vnd.docker.distribution.manifest.v2+json",
            "artifact-media-type": "application/vnd.docker.container.image.v1+json",
        },
    }
    assert event.envelope == body
    assert len(event.id) == 36


def test_an_untagged_push_or_delete_has_no_image_tag() -> None:
    detail = json.loads(image_action(REGISTRY, "r", DIGEST, "PUSH", AT).body)["detail"]
    assert "image-tag" not in detail
    deleted = image_deleted(REGISTRY, "r", DIGEST, [], AT)
    assert [json.loads(e.body)["detail"] for e in deleted] == [
        {"result": "SUCCESS", "repository-name": "r", "image-digest": str(DIGEST), "action-type": "DELETE"}
    ]


def test_deleting_a_tagged_image_by_digest_reports_each_tag() -> None:
    deleted = image_deleted(REGISTRY, "r", DIGEST, ["a", "b"], AT)
    assert [json.loads(e.body)["detail"]["image-tag"] for e in deleted] == ["a", "b"]
    assert len({e.id for e in deleted}) == 2


def test_moorage_only_events_keep_the_envelope_with_source_moorage() -> None:
    created = json.loads(repository_action(REGISTRY, "team/app", "CREATE", AT).body)
    assert created["source"] == "moorage"
    assert created["detail-type"] == "Moorage Repository Action"
    assert created["resources"] == ["arn:aws:ecr:us-west-2:123456789012:repository/team/app"]
    assert created["detail"]["action-type"] == "CREATE"
    expired = json.loads(
        lifecycle_action(REGISTRY, "team/app", DIGEST, "EXPIRE", AT, tags=["old"], rule_priority=3).body
    )
    assert expired["detail-type"] == "Moorage Lifecycle Action"
    assert expired["detail"] == {
        "result": "SUCCESS",
        "repository-name": "team/app",
        "image-digest": str(DIGEST),
        "image-tags": ["old"],
        "action-type": "EXPIRE",
        "rule-priority": 3,
    }


def test_signature_is_hmac_sha256_of_the_exact_body() -> None:
    # RFC 4231 test case 2
    assert (
        signature("Jefe", b"what do ya want for nothing?")
        == "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


def _stored(detail_type: str, repository: str | None) -> StoredEvent:
    return StoredEvent((0, 1), "id", detail_type, "123456789012", "us-east-1", repository, AT, "{}")


def test_sink_filters_by_detail_type_and_repository_prefix() -> None:
    both = SinkFilter(frozenset({"ECR Image Action"}), "team/")
    assert both.accepts(_stored("ECR Image Action", "team/app"))
    assert not both.accepts(_stored("ECR Image Action", "other/app"))
    assert not both.accepts(_stored("Moorage Repository Action", "team/app"))
    assert not both.accepts(_stored("ECR Image Action", None))
    assert SinkFilter().accepts(_stored("anything", None))


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "moorage.toml"
    path.write_text(text)
    return load_settings(path, env or {}, {})[0]


WEBHOOKS = """
[events]
retry_max_interval = "30s"
audit_log = "/var/log/moorage/events.jsonl"
[[events.webhooks]]
name = "deploy"
url = "https://hooks.example.test/deploy"
secret = "s3cret"
detail_types = ["ECR Image Action"]
repository_prefix = "prod/"
[[events.webhooks]]
name = "audit"
url = "http://127.0.0.1:9000/"
"""


def test_webhooks_from_the_file_and_the_environment(tmp_path: Path) -> None:
    settings = _load(tmp_path, WEBHOOKS, {"MOORAGE_EVENTS__WEBHOOK_URL": "http://127.0.0.1:1/env"})
    events = settings.events
    assert [(h.name, h.url) for h in events.all_webhooks()] == [
        ("deploy", "https://hooks.example.test/deploy"),
        ("audit", "http://127.0.0.1:9000/"),
        ("env", "http://127.0.0.1:1/env"),
    ]
    assert events.webhooks[0].detail_types == ("ECR Image Action",)
    assert events.webhooks[0].repository_prefix == "prod/"
    assert events.retry_max_interval == timedelta(seconds=30)
    assert events.retry_for == timedelta(hours=24)
    assert events.retention == timedelta(days=7)
    assert settings_from_json(settings_to_json(settings)) == settings
    shown = render_toml(settings_to_dict(settings))
    assert "[[events.webhooks]]" in shown
    assert "s3cret" not in shown


TWO_NAMED_A = '[[events.webhooks]]\nname = "a"\nurl = "http://x"\n[[events.webhooks]]\nname = "a"\nurl = "http://y"\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[events.webhooks]]\nname = "a"\nurl = "ftp://x"\n', "events.webhooks[0].url"),
        ('[[events.webhooks]]\nurl = "http://x"\n', "events.webhooks[0].name"),
        (
            '[[events.webhooks]]\nname = "a"\nurl = "http://x"\n[[events.webhooks]]\nname = "a"\nurl = "http://y"\n',
            "used by another",
        ),
        (
            '[[events.webhooks]]\nname = "a"\nurl = "http://x"\ncolour = "red"\n',
            "events.webhooks[0].colour: unknown setting",
        ),
        ('[[events.webhooks]]\nname = "audit-log"\nurl = "http://x"\n', "audit log"),
        ('[events]\nwebhooks = "http://x"\n', "events.webhooks: expected an array"),
        ('[events]\nretry_for = "0s"\n', "events.retry_for"),
    ],
)
def test_bad_events_settings_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _load(tmp_path, text)


def test_a_webhook_secret_without_a_url_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"events\.webhook_url"):
        _load(tmp_path, "", {"MOORAGE_EVENTS__WEBHOOK_SECRET": "x"})
