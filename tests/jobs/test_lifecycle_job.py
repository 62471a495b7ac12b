"""Lifecycle policies applied by the job on the real stores (SQLite + filesystem), driven through the
services with a fixed clock; archive states; pull-time recording; the shared clock-control offset."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moorage.app import Moorage, build
from moorage.clock import FixedClock, OffsetClock
from moorage.config import load_settings
from moorage.errors import (
    LifecyclePolicyNotFoundError,
    LifecyclePreviewInProgressError,
    LifecyclePreviewNotFoundError,
    ManifestUnknownError,
    StorageClassUpdateError,
)
from moorage.images import ImageRef
from moorage.lifecycle_job import LifecycleJob
from moorage.metadata import LifecyclePreviewRecord
from moorage.metadata.migrate import upgrade
from moorage.model import Digest, Image, PageRequest, RegistryRef, Repository, RepositoryName

pytestmark = pytest.mark.anyio

REG = RegistryRef("123456789012", "us-east-1")
APP = RepositoryName("app")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
START = datetime(2026, 1, 1, tzinfo=UTC)
CI = "arn:aws:iam::123456789012:user/ci"
DAY = timedelta(days=1)


def policy(*rules: dict[str, object]) -> str:
    text = json.dumps({"rules": [{"rulePriority": i + 1, **r} for i, r in enumerate(rules)]})
    return text + " " * max(0, 100 - len(text))


KEEP_5_PROD = {
    "selection": {
        "tagStatus": "tagged",
        "tagPatternList": ["prod*"],
        "countType": "imageCountMoreThan",
        "countNumber": 5,
    },
    "action": {"type": "expire"},
}
UNTAGGED_1_DAY = {
    "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
    "action": {"type": "expire"},
}


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated, empty metadata database, copied for each test (migrating costs a second)."""
    root = tmp_path_factory.mktemp("lifecycle-template")
    asyncio.run(upgrade(f"sqlite:///{root / 'metadata.db'}"))
    return root / "metadata.db"


@pytest.fixture
async def moorage(tmp_path: Path, migrated: Path) -> AsyncIterator[Moorage]:
    settings, _ = load_settings(
        None, {}, {"data_dir": tmp_path, "gc.grace_period": "1h", "archive.restore_delay": "10m"}
    )
    shutil.copyfile(migrated, tmp_path / "metadata.db")
    services = await build(settings, clock=FixedClock(START))
    await services.registry.create_repository(Repository(REG, APP, created_at=START))
    try:
        yield services
    finally:
        await services.close()


def clock(m: Moorage) -> FixedClock:
    assert isinstance(m.clock, FixedClock)
    return m.clock


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def blob(m: Moorage, data: bytes) -> dict[str, object]:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    await m.uploads.upload_blob(REG, APP, digest, one(data))
    return {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": str(digest), "size": len(data)}


async def push(
    m: Moorage, tag: str | None, *, layers: tuple[bytes, ...] = (), subject: Digest | None = None
) -> tuple[Digest, bytes]:
    """Push an image (a fresh config, the given layers plus one of its own); returns digest and body."""
    config = await blob(m, json.dumps({"os": "linux", "n": os.urandom(8).hex()}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    document: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [await blob(m, data) for data in (*layers, os.urandom(500))],
    }
    if subject is not None:
        document["subject"] = {"mediaType": OCI_MANIFEST, "digest": str(subject), "size": 1}
    body = json.dumps(document).encode()
    result = await m.registry.put_manifest(REG, APP, body, OCI_MANIFEST, tag=tag)
    return result.image.digest, body


async def tags_of(m: Moorage) -> dict[str, tuple[str, ...]]:
    page = await m.images.describe(REG, APP, None, "ANY", PageRequest(), "ANY")
    return {str(i.digest): i.tags for i in page.items}


def stored_bytes(m: Moorage) -> int:
    root = m.settings.storage.filesystem.effective_root(m.settings.data_dir) / "blobs"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def test_job_expires_by_count_and_age_records_events_and_gc_reclaims_exactly(moorage: Moorage) -> None:
    shared = os.urandom(4000)
    prod = {}
    for i in range(1, 9):
        prod[f"prod-{i}"] = (await push(moorage, f"prod-{i}", layers=(shared,)))[0]
        clock(moorage).advance(timedelta(minutes=1))
    dev = (await push(moorage, "dev-1"))[0]
    old_untagged = [(await push(moorage, None, layers=(shared,)))[0] for _ in range(3)]
    clock(moorage).advance(DAY + timedelta(hours=1))
    fresh_untagged = (await push(moorage, None))[0]
    await moorage.lifecycle.put_policy(REG, APP, policy(KEEP_5_PROD, UNTAGGED_1_DAY))
    before = stored_bytes(moorage)

    job = LifecycleJob(moorage.lifecycle, moorage.settings.jobs.lifecycle_interval)
    scheduler = moorage.scheduler()
    summary = await scheduler.run_if_due(job)
    assert summary == {"repositories": 1, "expired": 6, "transitioned": 0, "failed": 0, "dry_run": False}
    assert await scheduler.run_if_due(job) is None  # not due again for a day

    survivors = await tags_of(moorage)
    expected = {str(prod[f"prod-{i}"]) for i in range(4, 9)} | {str(dev), str(fresh_untagged)}
    assert set(survivors) == expected
    for i in range(1, 4):
        with pytest.raises(ManifestUnknownError):
            await moorage.registry.get_manifest(REG, APP, f"prod-{i}")

    events = await moorage.lifecycle.history(REG, APP)
    assert len(events) == 6
    assert {(str(e.digest), e.action, e.rule_priority) for e in events} == {
        *((str(prod[f"prod-{i}"]), "EXPIRE", 1) for i in range(1, 4)),
        *((str(d), "EXPIRE", 2) for d in old_untagged),
    }
    assert all(e.at == clock(moorage).now() for e in events)
    # The same actions went to the outbox, in the transactions that made them.
    async with moorage.metadata.transaction() as tx:
        outbox = [json.loads(e.body) for e in await tx.events.listing(None, 1000)]
    actions = [e for e in outbox if e["detail-type"] == "Moorage Lifecycle Action"]
    assert {
        (a["detail"]["image-digest"], a["detail"]["action-type"], a["detail"]["rule-priority"]) for a in actions
    } == {(str(e.digest), e.action, e.rule_priority) for e in events}
    assert {a["source"] for a in actions} == {"moorage"}
    assert {a["detail"]["repository-name"] for a in actions} == {APP}
    record = await moorage.lifecycle.get_policy(REG, APP)
    assert record.last_evaluated_at == clock(moorage).now()

    # Bytes go only with GC, after its grace period, and exactly those no survivor references.
    assert stored_bytes(moorage) == before
    clock(moorage).advance(timedelta(hours=2))
    report = await moorage.collector.collect(clock(moorage).now())
    assert report.bytes > 0
    assert stored_bytes(moorage) == before - report.bytes
    assert len(shared) not in {b.size for b in report.blobs}  # still used by prod-4..8
    assert len(report.blobs) == 6 * 2  # each expired image: its config and its own layer


async def test_dry_run_and_preview_change_nothing(moorage: Moorage) -> None:
    for _ in range(3):
        await push(moorage, None)
    clock(moorage).advance(2 * DAY)
    await moorage.lifecycle.put_policy(REG, APP, policy(UNTAGGED_1_DAY))
    report = await moorage.lifecycle.run(clock(moorage).now(), dry_run=True)
    assert report.summary()["expired"] == 3
    assert len(await tags_of(moorage)) == 3
    assert (await moorage.lifecycle.get_policy(REG, APP)).last_evaluated_at is None

    with pytest.raises(LifecyclePreviewNotFoundError):
        await moorage.lifecycle.get_preview(REG, APP)
    await moorage.lifecycle.start_preview(REG, APP, None)
    await moorage.lifecycle.drain()
    preview = await moorage.lifecycle.get_preview(REG, APP)
    assert preview.status == "COMPLETE"
    assert len(preview.results) == 3
    assert {r["action"]["type"] for r in preview.results} == {"EXPIRE"}
    assert len(await tags_of(moorage)) == 3  # still there
    clock(moorage).advance(DAY + timedelta(seconds=1))
    assert (await moorage.lifecycle.get_preview(REG, APP)).status == "EXPIRED"


async def test_preview_in_progress_and_a_dead_one_fails(moorage: Moorage) -> None:
    await moorage.lifecycle.put_policy(REG, APP, policy(UNTAGGED_1_DAY))
    repo = await moorage.registry.get_repository(REG, APP)
    async with moorage.metadata.transaction(write=True) as tx:  # as left by a process that died mid-preview
        await tx.lifecycle.put_preview(repo.id, LifecyclePreviewRecord(policy(UNTAGGED_1_DAY), "IN_PROGRESS", START))
    with pytest.raises(LifecyclePreviewInProgressError):
        await moorage.lifecycle.start_preview(REG, APP, None)
    assert (await moorage.lifecycle.get_preview(REG, APP)).status == "IN_PROGRESS"
    clock(moorage).advance(timedelta(minutes=11))
    assert (await moorage.lifecycle.get_preview(REG, APP)).status == "FAILED"
    await moorage.lifecycle.start_preview(REG, APP, None)  # a failed one may be replaced
    await moorage.lifecycle.drain()
    assert (await moorage.lifecycle.get_preview(REG, APP)).status == "COMPLETE"


async def test_transition_archives_then_archive_expiry_waits_90_days(moorage: Moorage) -> None:
    digest, _ = await push(moorage, "v1")
    clock(moorage).advance(3 * DAY)
    archive_after_2_days = {
        "selection": {"tagStatus": "any", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 2},
        "action": {"type": "transition", "targetStorageClass": "archive"},
    }
    expire_after_90_in_archive = {
        "selection": {
            "tagStatus": "any",
            "storageClass": "archive",
            "countType": "sinceImageTransitioned",
            "countUnit": "days",
            "countNumber": 90,
        },
        "action": {"type": "expire"},
    }
    await moorage.lifecycle.put_policy(REG, APP, policy(archive_after_2_days, expire_after_90_in_archive))
    summary = (await moorage.lifecycle.run(clock(moorage).now())).summary()
    assert summary["transitioned"] == 1
    archived_at = clock(moorage).now()

    # Archived: hidden from the default listing, not pullable, visible with the ARCHIVED filter.
    assert await tags_of(moorage) == {str(digest): ("v1",)}  # "ANY" status
    assert (await moorage.images.describe(REG, APP, None, "ANY", PageRequest())).items == []
    archived = (await moorage.images.describe(REG, APP, None, "ANY", PageRequest(), "ARCHIVED")).items
    assert [(i.digest, i.last_archived_at) for i in archived] == [(digest, archived_at)]
    with pytest.raises(ManifestUnknownError):
        await moorage.registry.get_manifest(REG, APP, "v1")
    found, failures = await moorage.images.batch_get(REG, APP, [ImageRef(tag="v1")], [])
    assert found == []
    assert [f.code for f in failures] == ["ImageInaccessible"]

    clock(moorage).advance(89 * DAY)
    assert (await moorage.lifecycle.run(clock(moorage).now())).summary()["expired"] == 0
    clock(moorage).advance(2 * DAY)
    assert (await moorage.lifecycle.run(clock(moorage).now())).summary()["expired"] == 1
    assert await tags_of(moorage) == {}
    events = await moorage.lifecycle.history(REG, APP)
    assert [(e.action, e.rule_priority) for e in events] == [("EXPIRE", 2), ("TRANSITION", 1)]


async def test_storage_class_state_machine_and_repush_restores(moorage: Moorage) -> None:
    digest, body = await push(moorage, "v1")
    referrer, _ = await push(moorage, None, subject=digest)
    ref = ImageRef(tag="v1")
    with pytest.raises(StorageClassUpdateError):
        await moorage.images.update_storage_class(REG, APP, ref, "STANDARD")  # restore an ACTIVE image
    archived = await moorage.images.update_storage_class(REG, APP, ref, "ARCHIVE")
    now = clock(moorage).now()
    assert archived.status(now) == "ARCHIVED"
    statuses = {str(i.digest): i.status(now) for i in await _scan(moorage)}
    assert statuses == {str(digest): "ARCHIVED", str(referrer): "ARCHIVED"}  # the referrer follows
    with pytest.raises(StorageClassUpdateError):
        await moorage.images.update_storage_class(REG, APP, ref, "ARCHIVE")

    restoring = await moorage.images.update_storage_class(REG, APP, ref, "STANDARD")
    assert restoring.status(now) == "ACTIVATING"
    with pytest.raises(ManifestUnknownError):
        await moorage.registry.get_manifest(REG, APP, str(digest))  # not pullable while activating
    with pytest.raises(StorageClassUpdateError):
        await moorage.images.update_storage_class(REG, APP, ref, "ARCHIVE")
    clock(moorage).advance(timedelta(minutes=10, seconds=1))  # archive.restore_delay = 10m
    image = await moorage.registry.get_manifest(REG, APP, "v1")
    assert image.status(clock(moorage).now()) == "ACTIVE"
    assert image.last_activated_at == now + timedelta(minutes=10)

    # Archive again, then push the same manifest: restored at once.
    await moorage.images.update_storage_class(REG, APP, ref, "ARCHIVE")
    result = await moorage.registry.put_manifest(REG, APP, body, OCI_MANIFEST, tag="v1")
    assert result.changed
    image = await moorage.registry.get_manifest(REG, APP, "v1")
    assert image.last_activated_at == clock(moorage).now()


async def _scan(m: Moorage) -> list[Image]:
    repo = await m.registry.get_repository(REG, APP)
    async with m.metadata.transaction() as tx:
        return list(await tx.images.scan(repo.id))


async def test_lifecycle_never_acts_on_an_activating_image(moorage: Moorage) -> None:
    # Two images being restored (their restore times count as push times: the newest), one plain image.
    restoring = []
    for tag in ("v1", "v2"):
        restoring.append((await push(moorage, tag))[0])
        await moorage.images.update_storage_class(REG, APP, ImageRef(tag=tag), "ARCHIVE")
        await moorage.images.update_storage_class(REG, APP, ImageRef(tag=tag), "STANDARD")
        clock(moorage).advance(timedelta(minutes=1))
    plain, _ = await push(moorage, "v3")
    keep_one = {
        "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 1},
        "action": {"type": "expire"},
    }
    await moorage.lifecycle.put_policy(REG, APP, policy(keep_one))
    report = await moorage.lifecycle.run(clock(moorage).now(), dry_run=True)
    # v1 is a target too, but it is ACTIVATING: left alone.
    assert [d.digest for run in report.runs for d in run.decisions] == [str(plain)]
    report = await moorage.lifecycle.run(clock(moorage).now())
    assert [d.digest for run in report.runs for d in run.applied] == [str(plain)]
    assert set(await tags_of(moorage)) == {str(d) for d in restoring}


async def test_index_children_follow_their_index(moorage: Moorage) -> None:
    children = [await push(moorage, None) for _ in range(2)]
    index = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": str(d), "size": len(b)} for d, b in children],
        }
    ).encode()
    parent = (await moorage.registry.put_manifest(REG, APP, index, OCI_INDEX, tag="old")).image.digest
    clock(moorage).advance(3 * DAY)
    expire_old = {
        "selection": {
            "tagStatus": "tagged",
            "tagPrefixList": ["old"],
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": 1,
        },
        "action": {"type": "expire"},
    }
    untagged = {
        "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 1},
        "action": {"type": "expire"},
    }
    # Only the untagged rule: the children are listed by a surviving index, so nothing happens.
    await moorage.lifecycle.put_policy(REG, APP, policy(untagged))
    assert (await moorage.lifecycle.run(clock(moorage).now())).summary()["expired"] == 0
    await moorage.lifecycle.put_policy(REG, APP, policy(expire_old))
    report = await moorage.lifecycle.run(clock(moorage).now())
    applied = [(d.digest, d.cascaded_from) for run in report.runs for d in run.applied]
    assert applied[0] == (str(parent), None)
    assert sorted(applied[1:]) == sorted((str(d), str(parent)) for d, _ in children)
    assert await tags_of(moorage) == {}


async def test_repository_deletion_takes_policy_and_preview_but_keeps_history(moorage: Moorage) -> None:
    await push(moorage, None)
    clock(moorage).advance(2 * DAY)
    await moorage.lifecycle.put_policy(REG, APP, policy(UNTAGGED_1_DAY))
    await moorage.lifecycle.run(clock(moorage).now())
    await moorage.registry.delete_repository(REG, APP, force=True)
    await moorage.registry.create_repository(Repository(REG, APP, created_at=clock(moorage).now()))
    with pytest.raises(LifecyclePolicyNotFoundError):
        await moorage.lifecycle.get_policy(REG, APP)
    assert len(await moorage.lifecycle.history(REG, APP)) == 1
    await moorage.metadata.reset()
    assert await moorage.lifecycle.history() == []


async def test_pull_times_are_coalesced_and_excluded_principals_leave_them(moorage: Moorage) -> None:
    digest, _ = await push(moorage, "v1")
    pulls = moorage.registry.pulls

    async def pulled_at() -> datetime | None:
        await pulls.drain()
        image = await moorage.registry.get_manifest(REG, APP, str(digest), with_body=False)
        return image.last_pulled_at

    assert await pulled_at() is None
    await pulls.exclude(REG, CI)
    pulls.note(await moorage.registry.get_manifest(REG, APP, "v1"), CI)
    assert await pulled_at() is None  # excluded principal
    pulls.note(await moorage.registry.get_manifest(REG, APP, "v1"), "arn:aws:iam::123456789012:root")
    assert await pulled_at() == START
    clock(moorage).advance(timedelta(minutes=30))
    pulls.note(await moorage.registry.get_manifest(REG, APP, "v1"), None)
    assert await pulled_at() == START  # coalesced: recorded less than an hour ago
    clock(moorage).advance(timedelta(minutes=31))
    found, _ = await moorage.images.batch_get(REG, APP, [ImageRef(tag="v1")], [], principal_arn=None)
    assert len(found) == 1
    assert await pulled_at() == START + timedelta(minutes=61)
    await pulls.include(REG, CI)
    assert (await pulls.exclusions(REG, PageRequest())).items == []


async def test_offset_clock_is_shared_through_the_store(moorage: Moorage) -> None:
    first, second = OffsetClock(moorage.metadata, ttl=0.05), OffsetClock(moorage.metadata, ttl=0.05)
    await first.refresh()
    await second.refresh()
    real = datetime.now(UTC)
    assert abs((first.now() - real).total_seconds()) < 1
    assert await first.advance(timedelta(days=2)) == timedelta(days=2)
    assert await first.advance(timedelta(hours=1)) == timedelta(days=2, hours=1)
    assert second.offset == timedelta(0)  # cached until its ttl passes ...
    await asyncio.sleep(0.1)
    second.now()  # ... then the next now() refreshes it in the background
    await second.drain()
    assert second.offset == timedelta(days=2, hours=1)
    assert abs((second.now() - datetime.now(UTC) - timedelta(days=2, hours=1)).total_seconds()) < 1
    with pytest.raises(ValueError, match="forward"):
        await first.advance(timedelta(seconds=-1))
    await moorage.metadata.reset()  # /_moorage/reset: the offset goes with the rest
    assert await first.refresh() == timedelta(0)
