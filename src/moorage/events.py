"""Domain events, shaped as Amazon EventBridge events, written to the transactional outbox.

Every change a user may want to react to (a push, a tag move, an image or repository deleted, a
lifecycle action; later scans, replication, pull-through and signing results) is written as an
`Event` into the `events` table *in the same transaction as the change*. Nothing is sent from the
request path: consumers (webhooks, the audit log, and background jobs) read the table after the
commit, each keeping its own position (`delivery.py`). An event is therefore never reported for a
change that rolled back, and never lost for one that committed.

The envelope is EventBridge's; ECR's own detail types keep ECR's names and `source: aws.ecr`;
what ECR reports only through CloudTrail gets a Moorage detail type with `source: moorage`:

    {"version": "0", "id": <uuid>, "detail-type": "ECR Image Action", "source": "aws.ecr",
     "account": "123456789012", "time": "2026-01-01T00:00:00Z", "region": "us-east-1",
     "resources": [], "detail": {"result": "SUCCESS", "repository-name": "team/app",
                                 "image-digest": "sha256:...", "action-type": "PUSH",
                                 "image-tag": "1.0", "manifest-media-type": "...",
                                 "artifact-media-type": "..."}}

The body is serialised once, when the event is created, and stored as text: a webhook receives
exactly those bytes, so its HMAC signature can be checked against what the audit log holds too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from moorage.model import Digest, RegistryRef

__all__ = [
    "ECR_SOURCE",
    "IMAGE_ACTION",
    "LIFECYCLE_ACTION",
    "MOORAGE_SOURCE",
    "PULL_THROUGH_CACHE_ACTION",
    "REPLICATION_ACTION",
    "REPOSITORY_ACTION",
    "SIGNING_ACTION",
    "Event",
    "image_action",
    "image_deleted",
    "lifecycle_action",
    "pull_through_cache_action",
    "replication_action",
    "repository_action",
    "repository_arn",
    "signing_action",
]

ECR_SOURCE = "aws.ecr"
MOORAGE_SOURCE = "moorage"

IMAGE_ACTION = "ECR Image Action"
REPOSITORY_ACTION = "Moorage Repository Action"
LIFECYCLE_ACTION = "Moorage Lifecycle Action"
REPLICATION_ACTION = "ECR Replication Action"

# Bits of Event.work: the push's transaction knew the consumer has something to do for it.
WORK_SIGNING = 1  # the push recorded IN_PROGRESS signing rows
WORK_REPLICATION = 2  # the replication configuration had destinations for the repository


def wants(work: int | None, bit: int) -> bool:
    """Whether a consumer owning `bit` has to look at an event with `work` (None: undecided, so yes)."""
    return work is None or bool(work & bit)


def repository_arn(registry: RegistryRef, name: str) -> str:
    return f"arn:aws:ecr:{registry.region}:{registry.account_id}:repository/{name}"


def _timestamp(at: datetime) -> str:
    # EventBridge writes whole seconds in UTC with a Z.
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Event:
    """One event as written to the outbox. `body` is the exact JSON delivered to every consumer."""

    id: str
    detail_type: str
    source: str
    registry: RegistryRef
    time: datetime
    repository: str | None
    body: str
    # Which of Moorage's own consumers have work for this event (WORK_* bits), decided in the
    # writing transaction; None = not decided, every consumer looks (see `wants`).
    work: int | None = None

    @classmethod
    def create(
        cls,
        detail_type: str,
        source: str,
        registry: RegistryRef,
        at: datetime,
        detail: Mapping[str, Any],
        *,
        repository: str | None = None,
        resources: Sequence[str] = (),
    ) -> Event:
        event_id = str(uuid.uuid4())
        envelope = {
            "version": "0",
            "id": event_id,
            "detail-type": detail_type,
            "source": source,
            "account": registry.account_id,
            "time": _timestamp(at),
            "region": registry.region,
            "resources": list(resources),
            "detail": dict(detail),
        }
        body = json.dumps(envelope, separators=(",", ":"), ensure_ascii=False)
        return cls(event_id, detail_type, source, registry, at, repository, body)

    @property
    def envelope(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.body)
        return value


def image_action(
    registry: RegistryRef,
    repository: str,
    digest: Digest,
    action: Literal["PUSH", "DELETE"],
    at: datetime,
    *,
    tag: str | None = None,
    manifest_media_type: str | None = None,
    artifact_media_type: str | None = None,
) -> Event:
    """ECR's `ECR Image Action`: one per manifest PUT (PutImage or /v2/), one per image reference
    deleted. `image-tag` is present when the push or deletion named a tag; the media types on a
    push (`artifact-media-type` is the config's media type, or the artifact type of an artifact)."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": str(digest),
        "action-type": action,
    }
    if tag is not None:
        detail["image-tag"] = tag
    if manifest_media_type is not None:
        detail["manifest-media-type"] = manifest_media_type
    if artifact_media_type is not None:
        detail["artifact-media-type"] = artifact_media_type
    return Event.create(IMAGE_ACTION, ECR_SOURCE, registry, at, detail, repository=repository)


def image_deleted(
    registry: RegistryRef, repository: str, digest: Digest, tags: Sequence[str], at: datetime
) -> list[Event]:
    """The events of deleting an image by digest: one per tag it had, or one without a tag."""
    if not tags:
        return [image_action(registry, repository, digest, "DELETE", at)]
    return [image_action(registry, repository, digest, "DELETE", at, tag=tag) for tag in tags]


def repository_action(
    registry: RegistryRef, repository: str, action: Literal["CREATE", "DELETE"], at: datetime
) -> Event:
    """Moorage's `Moorage Repository Action` (ECR reports these only in CloudTrail)."""
    arn = repository_arn(registry, repository)
    detail = {"result": "SUCCESS", "repository-name": repository, "repository-arn": arn, "action-type": action}
    return Event.create(REPOSITORY_ACTION, MOORAGE_SOURCE, registry, at, detail, repository=repository, resources=[arn])


def lifecycle_action(
    registry: RegistryRef,
    repository: str,
    digest: Digest,
    action: Literal["EXPIRE", "TRANSITION"],
    at: datetime,
    *,
    tags: Sequence[str],
    rule_priority: int,
    storage_class: str | None = None,
) -> Event:
    """Moorage's `Moorage Lifecycle Action`: what a lifecycle rule did to one image."""
    detail: dict[str, Any] = {
        "result": "SUCCESS",
        "repository-name": repository,
        "image-digest": str(digest),
        "image-tags": list(tags),
        "action-type": action,
        "rule-priority": rule_priority,
    }
    if storage_class is not None:
        detail["target-storage-class"] = storage_class
    arn = repository_arn(registry, repository)
    return Event.create(LIFECYCLE_ACTION, MOORAGE_SOURCE, registry, at, detail, repository=repository, resources=[arn])


def replication_action(
    destination: RegistryRef,
    repository: str,
    digest: Digest,
    source: RegistryRef,
    at: datetime,
    *,
    tag: str | None = None,
    failure_code: str | None = None,
) -> Event:
    """ECR's `ECR Replication Action`, in the destination registry: one per image and destination.
    A failed copy has `result` FAILURE and Moorage's `failure-code`."""
    detail: dict[str, Any] = {
        "result": "SUCCESS" if failure_code is None else "FAILURE",
        "repository-name": repository,
        "image-digest": str(digest),
        "source-account": source.account_id,
        "action-type": "REPLICATE",
        "source-region": source.region,
    }
    if tag is not None:
        detail["image-tag"] = tag
    if failure_code is not None:
        detail["failure-code"] = failure_code
    arn = repository_arn(destination, repository)
    return Event.create(REPLICATION_ACTION, ECR_SOURCE, destination, at, detail, repository=repository, resources=[arn])


PULL_THROUGH_CACHE_ACTION = "ECR Pull Through Cache Action"


def pull_through_cache_action(
    registry: RegistryRef,
    repository: str,
    prefix: str,
    upstream_url: str,
    at: datetime,
    *,
    tag: str | None = None,
    digest: str | None = None,
    failure: tuple[str, str] | None = None,
) -> Event:
    """ECR's `ECR Pull Through Cache Action`: an image synced from the upstream into a cached
    repository (`sync-status` SUCCESS), or a sync that failed (FAILED, with the failure code and
    reason)."""
    detail: dict[str, Any] = {
        "rule-version": "1",
        "sync-status": "FAILED" if failure else "SUCCESS",
        "ecr-repository-prefix": prefix,
        "repository-name": repository,
        "upstream-registry-url": upstream_url,
    }
    if tag is not None:
        detail["image-tag"] = tag
    if digest is not None:
        detail["image-digest"] = digest
    if failure is not None:
        detail["failure-code"], detail["failure-reason"] = failure
    return Event.create(PULL_THROUGH_CACHE_ACTION, ECR_SOURCE, registry, at, detail, repository=repository)


SIGNING_ACTION = "Moorage Image Signing Action"


def signing_action(
    registry: RegistryRef,
    repository: str,
    digest: Digest,
    profile: str,
    at: datetime,
    *,
    signature: str | None,
    failure: tuple[str | None, str | None] = (None, None),
) -> Event:
    """Moorage's `Moorage Image Signing Action` (EventBridge has no ECR type for managed signing):
    one per image and signing profile, SUCCESS with the signature manifest's digest, or FAILURE
    with the failure code and reason of DescribeImageSigningStatus."""
    code, reason = failure
    detail: dict[str, Any] = {
        "result": "FAILURE" if code else "SUCCESS",
        "repository-name": repository,
        "image-digest": str(digest),
        "action-type": "SIGN",
        "signing-profile-arn": profile,
    }
    if signature is not None:
        detail["signature-digest"] = signature
    if code:
        detail["failure-code"] = code
        detail["failure-reason"] = reason
    arn = repository_arn(registry, repository)
    return Event.create(
        SIGNING_ACTION, MOORAGE_SOURCE, registry, at, detail, repository=repository, resources=[arn, profile]
    )
