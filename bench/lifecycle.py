#!/usr/bin/env python3
"""Lifecycle evaluation and garbage collection at scale.

    python bench/lifecycle.py [--images 100000] [--blobs 100000] [--quick]

1. `evaluate` (the pure lifecycle evaluator) over `--images` images of one repository: 60% tagged
   (prod-N, dev-N, release-N, feature-<x>-N), 40% untagged, 5% of them archived, 1% index children
   and 1% referrers, under a five-rule policy (count and age rules, tag patterns and prefixes, an
   archive rule). Also `parse_policy`, and `preview_result` (the GetLifecyclePolicyPreview shaping).
2. A dry-run `Lifecycle.run` of the same repository on a real SQLite metadata store (rows inserted in
   bulk): reading every image with its tags (`ImageTable.scan`) plus `evaluate`, i.e. what one run of
   the lifecycle job costs before it acts.
3. `GarbageCollector.collect()` over `--blobs` unreferenced blobs: candidates in the SQLite metadata
   store (bulk-inserted), bytes (512 B each) on the filesystem blob store (files written directly into
   its layout). Every blob is reclaimed; the time is collect() alone, and the blob files are checked
   to be gone afterwards.

Target (the issue): evaluation of 100,000 images in under 5 s. `--quick` uses 10,000 of each.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from moorage.clock import FixedClock
from moorage.gc import GarbageCollector
from moorage.lifecycle import ImageFacts, evaluate, parse_policy, preview_result
from moorage.lifecycle_job import Lifecycle
from moorage.metadata import tables as t
from moorage.metadata.migrate import upgrade
from moorage.metadata.sql import SqlMetadataStore
from moorage.storage.filesystem import FilesystemBlobStore

NOW = datetime(2026, 6, 1, tzinfo=UTC)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"

POLICY = json.dumps(
    {
        "rules": [
            {
                "rulePriority": 1,
                "selection": {
                    "tagStatus": "tagged",
                    "tagPatternList": ["prod-*"],
                    "countType": "imageCountMoreThan",
                    "countNumber": 50,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "selection": {
                    "tagStatus": "tagged",
                    "tagPrefixList": ["feature-"],
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 14,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 3,
                "selection": {
                    "tagStatus": "untagged",
                    "countType": "sinceImagePushed",
                    "countUnit": "days",
                    "countNumber": 7,
                },
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 4,
                "selection": {
                    "tagStatus": "any",
                    "countType": "sinceImagePulled",
                    "countUnit": "days",
                    "countNumber": 30,
                },
                "action": {"type": "transition", "targetStorageClass": "archive"},
            },
            {
                "rulePriority": 5,
                "selection": {
                    "tagStatus": "any",
                    "storageClass": "archive",
                    "countType": "sinceImageTransitioned",
                    "countUnit": "days",
                    "countNumber": 180,
                },
                "action": {"type": "expire"},
            },
        ]
    }
)


def digest_of(seed: str) -> str:
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


def make_images(n: int, rng: random.Random) -> list[ImageFacts]:
    images: list[ImageFacts] = []
    for i in range(n):
        pushed = NOW - timedelta(seconds=rng.randrange(0, 400 * 86400))
        roll = rng.random()
        if roll < 0.15:
            tags: tuple[str, ...] = (f"prod-{i}",)
        elif roll < 0.30:
            tags = (f"dev-{i}",)
        elif roll < 0.45:
            tags = (f"release-{i}", f"v{i}")
        elif roll < 0.60:
            tags = (f"feature-{rng.choice('abcdefgh')}-{i}",)
        else:
            tags = ()
        pulled = pushed + timedelta(seconds=rng.randrange(0, 60 * 86400)) if rng.random() < 0.5 else None
        archived = rng.random() < 0.05
        images.append(
            ImageFacts(
                digest=digest_of(f"image-{i}"),
                tags=tags,
                pushed_at=pushed,
                last_pulled_at=min(pulled, NOW) if pulled else None,
                storage_class="ARCHIVE" if archived else "STANDARD",
                transitioned_at=pushed + timedelta(days=1) if archived else None,
                media_type=OCI_MANIFEST,
            )
        )
    # 1% index children (an index of two platform images) and 1% referrers (signatures of an image)
    for _ in range(n // 200):
        parent, left, right = rng.sample(range(n), 3)
        images[parent] = _replace(
            images[parent], media_type=OCI_INDEX, children=(images[left].digest, images[right].digest)
        )
    for _ in range(n // 100):
        referrer, subject = rng.sample(range(n), 2)
        images[referrer] = _replace(images[referrer], tags=(), subject=images[subject].digest)
    return images


def _replace(image: ImageFacts, **changes: object) -> ImageFacts:
    from dataclasses import replace

    return replace(image, **changes)  # type: ignore[arg-type]


def bench_evaluate(n: int) -> list[tuple[str, str]]:
    rng = random.Random(5)
    images = make_images(n, rng)
    start = time.perf_counter()
    policy = parse_policy(POLICY)
    parse_s = time.perf_counter() - start
    start = time.perf_counter()
    decisions = evaluate(policy, images, NOW)
    eval_s = time.perf_counter() - start
    start = time.perf_counter()
    preview_result(decisions)
    shape_s = time.perf_counter() - start
    actions = {a: sum(1 for d in decisions if d.action == a) for a in ("EXPIRE", "TRANSITION")}
    verdict = "OK" if eval_s < 5 else "OVER the 5 s target"
    return [
        ("parse_policy (5 rules)", f"{parse_s * 1000:.2f} ms"),
        (
            f"evaluate, {n:,} images",
            f"{eval_s:.3f} s  ({actions['EXPIRE']:,} expire, {actions['TRANSITION']:,} archive; {verdict})",
        ),
        (f"preview_result, {len(decisions):,} decisions", f"{shape_s:.3f} s"),
    ]


async def _store(root: Path) -> SqlMetadataStore:
    url = f"sqlite:///{root / 'metadata.db'}"
    await upgrade(url)
    return SqlMetadataStore.open(url)


async def bench_run(n: int, root: Path) -> list[tuple[str, str]]:
    """A dry-run lifecycle run of one repository of `n` images on SQLite: scan + evaluate."""
    store = await _store(root)
    rng = random.Random(7)
    images = make_images(n, rng)
    start = time.perf_counter()
    async with store.engine.begin() as conn:
        created = await conn.execute(
            insert(t.repositories).values(account_id="123456789012", region="us-east-1", name="big", created_at=0.0)
        )
        assert created.inserted_primary_key is not None
        repo_id = created.inserted_primary_key[0]
        await conn.execute(
            insert(t.lifecycle_policies).values(repo_id=repo_id, document=POLICY, updated_at=NOW.timestamp())
        )
        rows = [
            {
                "repo_id": repo_id,
                "digest": img.digest,
                "media_type": img.media_type,
                "size": 500,
                "image_size": 1000,
                "body": b"{}",
                "pushed_at": img.pushed_at.timestamp(),
                "last_pulled_at": img.last_pulled_at.timestamp() if img.last_pulled_at else None,
                "storage_class": img.storage_class,
                "last_archived_at": img.transitioned_at.timestamp() if img.transitioned_at else None,
                "subject": img.subject,
            }
            for img in images
        ]
        for i in range(0, len(rows), 5000):
            await conn.execute(insert(t.manifests), rows[i : i + 5000])
        tag_rows = [
            {"repo_id": repo_id, "name": tag, "digest": img.digest, "updated_at": 0.0}
            for img in images
            for tag in img.tags
        ]
        for i in range(0, len(tag_rows), 5000):
            await conn.execute(insert(t.tags), tag_rows[i : i + 5000])
        refs = [
            {"repo_id": repo_id, "parent": img.digest, "child": child, "kind": "manifest", "media_type": OCI_MANIFEST}
            for img in images
            for child in img.children
        ]
        if refs:
            await conn.execute(insert(t.manifest_refs), refs)
    load_s = time.perf_counter() - start
    lifecycle = Lifecycle(store, clock=FixedClock(NOW))
    start = time.perf_counter()
    report = await lifecycle.run(NOW, dry_run=True)
    run_s = time.perf_counter() - start
    decided = sum(len(r.decisions) for r in report.runs)
    await store.close()
    return [
        (f"load {n:,} manifests + tags into SQLite (setup)", f"{load_s:.2f} s"),
        (f"lifecycle run (dry), {n:,} images: scan + evaluate", f"{run_s:.3f} s  ({decided:,} decisions)"),
    ]


async def bench_gc(n: int, root: Path) -> list[tuple[str, str]]:
    store = await _store(root)
    blobs = FilesystemBlobStore(root / "blobs")
    then = NOW - timedelta(days=2)
    start = time.perf_counter()
    rows = []
    for _ in range(n):
        data = os.urandom(512)
        hexdigest = hashlib.sha256(data).hexdigest()
        path = root / "blobs" / "blobs" / "sha256" / hexdigest[:2] / hexdigest
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(("sha256:" + hexdigest, len(data)))
    async with store.engine.begin() as conn:
        for i in range(0, n, 5000):
            chunk = rows[i : i + 5000]
            await conn.execute(
                insert(t.blobs), [{"digest": d, "size": s, "created_at": then.timestamp()} for d, s in chunk]
            )
            await conn.execute(insert(t.gc_candidates), [{"digest": d, "since": then.timestamp()} for d, _ in chunk])
    setup_s = time.perf_counter() - start
    collector = GarbageCollector(
        store, blobs, clock=FixedClock(NOW), grace_period=timedelta(hours=24), upload_expiry=timedelta(hours=24)
    )
    start = time.perf_counter()
    report = await collector.collect(NOW)
    gc_s = time.perf_counter() - start
    left = sum(1 for p in (root / "blobs" / "blobs").rglob("*") if p.is_file())
    await store.close()
    assert len(report.blobs) == n, (len(report.blobs), n)
    assert left == 0, left
    return [
        (f"write {n:,} blob files + candidate rows (setup)", f"{setup_s:.2f} s"),
        (
            f"GarbageCollector.collect(), {n:,} unreferenced blobs",
            f"{gc_s:.2f} s  ({n / gc_s:,.0f} blobs/s, {report.bytes / 1e6:.1f} MB reclaimed)",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--blobs", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="10,000 images and blobs")
    args = parser.parse_args()
    images, blob_count = (10_000, 10_000) if args.quick else (args.images, args.blobs)
    print(f"# moorage lifecycle / GC bench — Python {sys.version.split()[0]}, {platform.platform()}")
    rows = bench_evaluate(images)
    with tempfile.TemporaryDirectory(prefix="moorage-bench-") as tmp:
        rows += asyncio.run(bench_run(images, Path(tmp) / "run"))
        rows += asyncio.run(bench_gc(blob_count, Path(tmp) / "gc"))
    width = max(len(name) for name, _ in rows)
    print(f"| {'measurement'.ljust(width)} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value} |")


if __name__ == "__main__":
    main()
