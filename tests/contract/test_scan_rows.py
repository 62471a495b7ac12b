"""A scan's rows (status, findings, the package keys CONTINUOUS_SCAN re-matches by) go with their image:
`images.delete` (BatchDeleteImage, a /v2/ manifest DELETE, lifecycle expiry all go through it) and
`repositories.delete` drop them in their own transaction. On SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest

from moorage.metadata import MetadataStore
from moorage.metadata.scans import ScanRecord
from moorage.scanning.vulndb import import_paths
from tests.contract.test_metadata_store import REGISTRY, Boom, create, now, push
from tests.scanning.helpers import DATA

pytestmark = pytest.mark.anyio


async def _scanned(store: MetadataStore, repository: str, digest: str) -> None:
    async with store.transaction(write=True) as tx:
        await tx.scans.put(
            ScanRecord(REGISTRY, repository, digest, "BASIC", "COMPLETE", "done", now(), now(), 1, '{"findings": []}')
        )
        await tx.scans.set_packages(REGISTRY, repository, digest, [("Debian:12", "openssl"), ("PyPI", "requests")])


async def _affected(store: MetadataStore) -> set[tuple[str, str]]:
    """(repository, digest) of the images an import of the fixture records re-matches (CONTINUOUS_SCAN)."""
    report = await import_paths(store, [DATA / "osv"])
    async with store.transaction() as tx:
        return {(repo, digest) for _, repo, digest in await tx.scans.affected_by(report.generation, 0)}


async def test_deleting_an_image_drops_its_scan_and_package_keys(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "scan/app")
    kept, gone = await push(metadata_store, repo, b"kept"), await push(metadata_store, repo, b"gone")
    for img in (kept, gone):
        await _scanned(metadata_store, "scan/app", str(img.digest))

    # A rolled-back delete keeps everything.
    with pytest.raises(Boom):  # noqa: PT012 - the transaction must see the exception
        async with metadata_store.transaction(write=True) as tx:
            await tx.images.delete(repo.id, gone.digest, now())
            raise Boom
    async with metadata_store.transaction() as tx:
        assert await tx.scans.get(REGISTRY, "scan/app", str(gone.digest)) is not None

    async with metadata_store.transaction(write=True) as tx:
        await tx.images.delete(repo.id, gone.digest, now())
    async with metadata_store.transaction() as tx:
        assert await tx.scans.get(REGISTRY, "scan/app", str(gone.digest)) is None
        assert await tx.scans.get(REGISTRY, "scan/app", str(kept.digest)) is not None
        assert await tx.scans.claim(now(), 60, 10) == []
    assert await _affected(metadata_store) == {("scan/app", str(kept.digest))}


async def test_deleting_a_repository_drops_the_scans_of_all_its_images(metadata_store: MetadataStore) -> None:
    repo, other = await create(metadata_store, "scan/a"), await create(metadata_store, "scan/b")
    a, b = await push(metadata_store, repo, b"a"), await push(metadata_store, other, b"b")
    await _scanned(metadata_store, "scan/a", str(a.digest))
    await _scanned(metadata_store, "scan/b", str(b.digest))
    async with metadata_store.transaction(write=True) as tx:
        await tx.repositories.delete(repo.id, now())
    async with metadata_store.transaction() as tx:
        assert await tx.scans.get(REGISTRY, "scan/a", str(a.digest)) is None
        assert await tx.scans.get(REGISTRY, "scan/b", str(b.digest)) is not None
    assert await _affected(metadata_store) == {("scan/b", str(b.digest))}


async def test_many_answers_the_scans_of_exactly_the_digests_asked(metadata_store: MetadataStore) -> None:
    # An IN list of any length (SQLite runs it on its lean path, one ? per value), none included.
    repo = await create(metadata_store, "scan/many")
    images = [await push(metadata_store, repo, f"image-{n}".encode()) for n in range(4)]
    digests = [str(img.digest) for img in images]
    for digest in digests[:3]:
        await _scanned(metadata_store, "scan/many", digest)
    await _scanned(metadata_store, "scan/other", digests[0])  # same digest, another repository
    async with metadata_store.transaction() as tx:
        for asked in ([], digests[:1], digests[1:3], [digests[2], digests[2]], digests, ["sha256:" + "0" * 64]):
            found = await tx.scans.many(REGISTRY, "scan/many", asked)
            assert sorted(r.digest for r in found) == sorted(set(asked) & set(digests[:3]))
            assert {r.repository for r in found} <= {"scan/many"}
