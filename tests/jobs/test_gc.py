"""Garbage collection on the real stores (SQLite + filesystem), driven through the services."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from moorage.app import Moorage, build
from moorage.clock import FixedClock
from moorage.config import load_settings
from moorage.errors import ManifestBlobUnknownError
from moorage.metadata.migrate import upgrade
from moorage.model import Digest, RegistryRef, Repository, RepositoryName
from tests.jobs.conftest import services

pytestmark = pytest.mark.anyio

REG = RegistryRef("123456789012", "us-east-1")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture
async def moorage(tmp_path: Path) -> AsyncIterator[Moorage]:
    async with services(tmp_path, {"gc.grace_period": "1h", "uploads.expiry": "2h"}) as built:
        yield built


def clock(m: Moorage) -> FixedClock:
    assert isinstance(m.clock, FixedClock)
    return m.clock


async def one(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def push_blob(m: Moorage, name: str, data: bytes) -> Digest:
    digest = Digest("sha256", hashlib.sha256(data).hexdigest())
    await m.uploads.upload_blob(REG, RepositoryName(name), digest, one(data))
    return digest


async def push_image(
    m: Moorage, name: str, tag: str | None, layers: list[bytes], *, principal: str | None = None
) -> Digest:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": random.random()}).encode()
    config_digest = await push_blob(m, name, config)
    descriptors = []
    for data in layers:
        descriptors.append(
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": str(await push_blob(m, name, data)),
                "size": len(data),
            }
        )
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": str(config_digest),
                "size": len(config),
            },
            "layers": descriptors,
        }
    ).encode()
    result = await m.registry.put_manifest(
        REG, RepositoryName(name), manifest, OCI_MANIFEST, tag=tag, principal=principal
    )
    return result.image.digest


def stored_bytes(m: Moorage) -> int:
    root = m.settings.storage.filesystem.effective_root(m.settings.data_dir) / "blobs"
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


async def create(m: Moorage, name: str) -> None:
    await m.registry.create_repository(Repository(REG, RepositoryName(name), created_at=clock(m).now()))


async def test_reclaims_exactly_the_unreferenced_bytes_after_the_grace_period(moorage: Moorage) -> None:
    await create(moorage, "app")
    shared, only_old, only_new = os.urandom(3000), os.urandom(5000), os.urandom(7000)
    old = await push_image(moorage, "app", "old", [shared, only_old])
    await push_image(moorage, "app", "new", [shared, only_new])
    old_image = await moorage.registry.get_manifest(REG, RepositoryName("app"), str(old))
    old_config = json.loads(old_image.body or b"")["config"]
    before = stored_bytes(moorage)

    await moorage.registry.delete_manifest(REG, RepositoryName("app"), str(old))
    clock(moorage).advance(timedelta(minutes=30))
    assert (await moorage.collector.collect(clock(moorage).now())).blobs == []  # inside the grace period
    assert stored_bytes(moorage) == before

    clock(moorage).advance(timedelta(minutes=31))
    plan = await moorage.collector.plan(clock(moorage).now())
    expected = len(only_old) + old_config["size"]
    assert plan.bytes == expected
    report = await moorage.collector.collect(clock(moorage).now())
    assert report.bytes == expected
    assert stored_bytes(moorage) == before - expected
    # the survivor still pulls, every blob intact
    image = await moorage.registry.get_manifest(REG, RepositoryName("app"), "new")
    for layer in json.loads(image.body or b"")["layers"]:
        blob = await moorage.registry.open_blob(REG, RepositoryName("app"), Digest.parse(layer["digest"]))
        assert blob.path is not None
        assert "sha256:" + hashlib.sha256(blob.path.read_bytes()).hexdigest() == layer["digest"]
    assert (await moorage.collector.collect(clock(moorage).now())).blobs == []  # nothing left to do


async def test_blob_used_in_another_repository_survives_and_deleted_repository_is_collected(moorage: Moorage) -> None:
    await create(moorage, "a")
    await create(moorage, "b")
    shared, alone = os.urandom(4000), os.urandom(4100)
    await push_image(moorage, "a", "v1", [shared, alone])
    await push_image(moorage, "b", "v1", [shared])
    await moorage.registry.delete_repository(REG, RepositoryName("a"), force=True)
    clock(moorage).advance(timedelta(hours=2))
    report = await moorage.collector.collect(clock(moorage).now())
    sizes = sorted(b.size for b in report.blobs)
    assert len(alone) in sizes
    assert len(shared) not in sizes
    blob = await moorage.registry.stat_blob(
        REG, RepositoryName("b"), Digest("sha256", hashlib.sha256(shared).hexdigest())
    )
    assert blob.size == len(shared)


async def test_uploaded_but_never_referenced_blob_goes_after_grace_and_stale_uploads_expire(moorage: Moorage) -> None:
    await create(moorage, "app")
    orphan = await push_blob(moorage, "app", os.urandom(999))
    session = await moorage.uploads.start(REG, RepositoryName("app"))
    await moorage.uploads.append(REG, RepositoryName("app"), session.upload_id, one(b"x" * 100))
    clock(moorage).advance(timedelta(hours=3))
    report = await moorage.collector.collect(clock(moorage).now())
    assert [b.digest for b in report.blobs] == [orphan]
    assert report.uploads == 1
    staging = moorage.settings.storage.filesystem.effective_root(moorage.settings.data_dir) / "uploads"
    assert not any(staging.iterdir())
    with pytest.raises(Exception, match="unknown"):
        await moorage.uploads.status(REG, RepositoryName("app"), session.upload_id)


async def test_pushes_racing_gc_never_lose_a_blob(tmp_path: Path) -> None:
    """Many concurrent pushes sharing layers, images deleted and re-pushed, while GC runs over
    and over with a tiny grace period on the real clock: every surviving image verifies."""
    settings, _ = load_settings(None, {}, {"data_dir": tmp_path, "gc.grace_period": "0s"})
    settings = replace(settings, gc=replace(settings.gc, grace_period=timedelta(milliseconds=300)))
    await upgrade(settings.metadata.effective_url(tmp_path))
    m = await build(settings)
    try:
        await m.registry.create_repository(Repository(REG, RepositoryName("race"), created_at=m.clock.now()))
        layers = [os.urandom(2048) for _ in range(6)]
        stop = asyncio.Event()

        async def collector() -> int:
            runs = 0
            while not stop.is_set():
                await m.collector.collect(m.clock.now())
                runs += 1
                await asyncio.sleep(0)
            return runs

        async def pusher(worker: int) -> list[tuple[str, Digest]]:
            kept: list[tuple[str, Digest]] = []
            rng = random.Random(worker)
            for i in range(8):
                tag = f"w{worker}-{i}"
                # A layer collected between its upload and the manifest (the push took longer than
                # the grace period: on a loaded machine, many times in a row) makes the push fail
                # cleanly with MANIFEST_BLOB_UNKNOWN; the client pushes again, as clients do.
                deadline = time.monotonic() + 120
                while True:
                    try:
                        digest = await push_image(m, "race", tag, rng.sample(layers, 3))
                        break
                    except ManifestBlobUnknownError:
                        if time.monotonic() > deadline:
                            raise AssertionError("push never succeeded") from None
                if i % 3 == 0:
                    await m.registry.delete_manifest(REG, RepositoryName("race"), str(digest))
                else:
                    kept.append((tag, digest))
            return kept

        gc_task = asyncio.create_task(collector())
        results = await asyncio.gather(*(pusher(w) for w in range(4)))
        stop.set()
        assert await gc_task > 3
        for tag, digest in [item for kept in results for item in kept]:
            image = await m.registry.get_manifest(REG, RepositoryName("race"), tag)
            assert image.digest == digest
            document = json.loads(image.body or b"")
            for descriptor in [document["config"], *document["layers"]]:
                blob = await m.registry.open_blob(REG, RepositoryName("race"), Digest.parse(descriptor["digest"]))
                assert blob.path is not None, descriptor
                assert "sha256:" + hashlib.sha256(blob.path.read_bytes()).hexdigest() == descriptor["digest"]
    finally:
        await m.close()
