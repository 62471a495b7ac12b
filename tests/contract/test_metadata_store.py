"""The MetadataStore contract (see moorage.metadata), checked against every backend in conftest.py.

Every test runs on SQLite and on a real PostgreSQL server, each with a freshly migrated database.
Tests are grouped by sub-table; the last groups check transactions and concurrency.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from moorage.errors import RepositoryAlreadyExistsError
from moorage.images import StatusFilter, TagStatus
from moorage.metadata import AccessKeyRecord, ManifestRef, MetadataStore
from moorage.model import (
    BlobInfo,
    Digest,
    Image,
    PageRequest,
    RegistryRef,
    Repository,
    RepositoryName,
    UploadState,
)

pytestmark = pytest.mark.anyio

REGISTRY = RegistryRef("123456789012", "us-east-1")
OTHER_REGISTRY = RegistryRef("210987654321", "eu-west-1")
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


class Boom(Exception):
    """Raised inside a transaction to force a rollback."""


def now() -> datetime:
    return datetime.now(UTC)


def digest(seed: str | bytes) -> Digest:
    data = seed.encode() if isinstance(seed, str) else seed
    return Digest.parse("sha256:" + hashlib.sha256(data).hexdigest())


def repository(name: str, registry: RegistryRef = REGISTRY) -> Repository:
    return Repository(registry=registry, name=RepositoryName(name), created_at=now())


def image(
    repo: Repository,
    body: bytes,
    *,
    media_type: str = MANIFEST,
    subject: Digest | None = None,
    artifact_type: str | None = None,
) -> Image:
    return Image(
        registry=repo.registry,
        repository=repo.name,
        digest=digest(body),
        media_type=media_type,
        size=len(body),
        pushed_at=now(),
        artifact_type=artifact_type,
        subject=subject,
        config_media_type="application/vnd.oci.image.config.v1+json",
        image_size=len(body) + 1000,
    )


def blob_ref(blob: Digest, media_type: str | None = LAYER) -> ManifestRef:
    """A manifest's reference to its config or a layer."""
    return (blob, "blob", media_type)


def child_ref(child: Digest) -> ManifestRef:
    """An index's reference to a child manifest."""
    return (child, "manifest", MANIFEST)


async def create(store: MetadataStore, name: str, registry: RegistryRef = REGISTRY) -> Repository:
    async with store.transaction(write=True) as tx:
        return await tx.repositories.create(repository(name, registry))


async def push(
    store: MetadataStore,
    repo: Repository,
    body: bytes,
    *,
    tags: Sequence[str] = (),
    refs: Sequence[ManifestRef] = (),
    media_type: str = MANIFEST,
    subject: Digest | None = None,
) -> Image:
    """Store a manifest (and tags) in one write transaction; return the Image that was put."""
    img = image(repo, body, media_type=media_type, subject=subject)
    async with store.transaction(write=True) as tx:
        assert await tx.images.put(repo.id, img, body, refs)
        for tag in tags:
            await tx.images.set_tag(repo.id, tag, img.digest, now())
    return img


async def add_blob(store: MetadataStore, seed: str, size: int = 10) -> BlobInfo:
    info = BlobInfo(digest(seed), size)
    async with store.transaction(write=True) as tx:
        await tx.blobs.add(info, now())
    return info


# --- repositories --------------------------------------------------------------------------------


async def test_create_assigns_an_id_and_get_returns_the_repository(metadata_store: MetadataStore) -> None:
    wanted = Repository(
        registry=REGISTRY,
        name=RepositoryName("team/app"),
        created_at=now(),
        tag_mutability="IMMUTABLE_WITH_EXCLUSION",
        mutability_exclusions=("dev-*", "latest"),
        scan_on_push=True,
        encryption_type="KMS",
        kms_key="arn:aws:kms:us-east-1:123456789012:key/abc",
    )
    async with metadata_store.transaction(write=True) as tx:
        created = await tx.repositories.create(wanted)
    assert created.id > 0
    async with metadata_store.transaction() as tx:
        got = await tx.repositories.get(REGISTRY, RepositoryName("team/app"))
    assert got == created
    assert got.created_at == wanted.created_at
    assert got.mutability_exclusions == ("dev-*", "latest")


async def test_get_of_an_unknown_repository_is_none(metadata_store: MetadataStore) -> None:
    await create(metadata_store, "app")
    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, RepositoryName("other")) is None
        assert await tx.repositories.get(OTHER_REGISTRY, RepositoryName("app")) is None


async def test_create_of_an_existing_name_raises_and_keeps_the_first(metadata_store: MetadataStore) -> None:
    first = await create(metadata_store, "app")
    with pytest.raises(RepositoryAlreadyExistsError):
        await create(metadata_store, "app")
    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, RepositoryName("app")) == first


async def test_the_same_name_in_two_registries_is_two_repositories(metadata_store: MetadataStore) -> None:
    here = await create(metadata_store, "app")
    there = await create(metadata_store, "app", OTHER_REGISTRY)
    assert here.id != there.id
    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, RepositoryName("app")) == here
        assert await tx.repositories.get(OTHER_REGISTRY, RepositoryName("app")) == there


async def test_list_page_paginates_in_name_order(metadata_store: MetadataStore) -> None:
    for name in ["c", "a", "e", "b", "d"]:
        await create(metadata_store, name)
    await create(metadata_store, "zz-elsewhere", OTHER_REGISTRY)
    seen: list[str] = []
    after: str | None = None
    async with metadata_store.transaction() as tx:
        everything = await tx.repositories.list_page(REGISTRY, PageRequest())
        assert [r.name for r in everything.items] == ["a", "b", "c", "d", "e"]
        assert everything.next_after is None
        while True:
            page = await tx.repositories.list_page(REGISTRY, PageRequest(limit=2, after=after))
            assert len(page.items) <= 2
            seen.extend(r.name for r in page.items)
            if page.next_after is None:
                break
            assert page.next_after == page.items[-1].name
            after = page.next_after
    assert seen == ["a", "b", "c", "d", "e"]


async def test_list_page_of_an_exact_fit_has_no_next_page(metadata_store: MetadataStore) -> None:
    for name in ["a", "b"]:
        await create(metadata_store, name)
    async with metadata_store.transaction() as tx:
        page = await tx.repositories.list_page(REGISTRY, PageRequest(limit=2))
        empty = await tx.repositories.list_page(REGISTRY, PageRequest(limit=0))
    assert [r.name for r in page.items] == ["a", "b"]
    assert page.next_after is None
    assert list(empty.items) == []


async def test_list_page_filters_by_prefix(metadata_store: MetadataStore) -> None:
    for name in ["team/a", "team/b", "team/c", "teamx", "other/a"]:
        await create(metadata_store, name)
    async with metadata_store.transaction() as tx:
        team = await tx.repositories.list_page(REGISTRY, PageRequest(), prefix="team/")
        first = await tx.repositories.list_page(REGISTRY, PageRequest(limit=1), prefix="team/")
        assert first.next_after == "team/a"
        rest = await tx.repositories.list_page(REGISTRY, PageRequest(limit=5, after=first.next_after), prefix="team/")
    assert [r.name for r in team.items] == ["team/a", "team/b", "team/c"]
    assert [r.name for r in rest.items] == ["team/b", "team/c"]
    assert rest.next_after is None


async def test_update_stores_the_settings(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    changed = Repository(
        registry=repo.registry,
        name=repo.name,
        created_at=repo.created_at,
        tag_mutability="IMMUTABLE",
        mutability_exclusions=("latest",),
        scan_on_push=True,
        encryption_type=repo.encryption_type,
        kms_key=None,
        id=repo.id,
    )
    async with metadata_store.transaction(write=True) as tx:
        await tx.repositories.update(changed)
    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, repo.name) == changed


async def test_delete_removes_everything_scoped_to_the_repository(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    keep = await create(metadata_store, "keep")
    layer = await add_blob(metadata_store, "layer")
    child = await push(metadata_store, repo, b"child", refs=[blob_ref(layer.digest)])
    index = await push(metadata_store, repo, b"index", tags=["v1"], refs=[child_ref(child.digest)])
    kept = await push(metadata_store, keep, b"child", tags=["v1"])
    async with metadata_store.transaction(write=True) as tx:
        for r in (repo, keep):
            await tx.blobs.link(r.id, layer.digest, now())
        await tx.uploads.create(repo.id, UploadState("upload-1", 0), now())

    async with metadata_store.transaction(write=True) as tx:
        await tx.repositories.delete(repo.id, now())

    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, repo.name) is None
        assert await tx.images.get(repo.id, child.digest) is None
        assert await tx.images.get(repo.id, index.digest) is None
        assert await tx.images.get_by_tag(repo.id, "v1") is None
        assert list((await tx.images.tags(repo.id, PageRequest())).items) == []
        assert await tx.images.referenced_by(repo.id, child.digest) == []
        assert await tx.blobs.linked(repo.id, layer.digest) is None
        assert await tx.uploads.get(REGISTRY, repo.name, "upload-1") is None
        # Other repositories and the global blob record are untouched.
        assert await tx.blobs.get(layer.digest) == layer
        assert await tx.blobs.linked(keep.id, layer.digest) == layer
        got = await tx.images.get_by_tag(keep.id, "v1", with_body=False)
        assert got is not None
        assert got.digest == kept.digest


async def test_delete_is_idempotent(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    for _ in range(2):
        async with metadata_store.transaction(write=True) as tx:
            await tx.repositories.delete(repo.id, now())
    async with metadata_store.transaction(write=True) as tx:
        assert (await tx.repositories.create(repository("app"))).name == "app"


# --- images --------------------------------------------------------------------------------------


async def test_put_returns_false_and_changes_nothing_when_the_digest_exists(
    metadata_store: MetadataStore,
) -> None:
    repo = await create(metadata_store, "app")
    img = image(repo, b"manifest")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.images.put(repo.id, img, b"manifest", [])
    other_media_type = Image(
        registry=img.registry,
        repository=img.repository,
        digest=img.digest,
        media_type=INDEX,
        size=img.size,
        pushed_at=now() + timedelta(hours=1),
    )
    async with metadata_store.transaction(write=True) as tx:
        assert not await tx.images.put(repo.id, other_media_type, b"manifest", [blob_ref(digest("x"))])
    async with metadata_store.transaction() as tx:
        got = await tx.images.get(repo.id, img.digest)
    assert got is not None
    assert got.media_type == MANIFEST
    assert got.pushed_at == img.pushed_at


async def test_get_returns_the_manifest_with_or_without_body_and_tags(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    subject = digest("subject")
    img = image(repo, b'{"manifest": 1}', subject=subject, artifact_type="application/x-sbom")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.images.put(repo.id, img, b'{"manifest": 1}', [])
        for tag in ["v2", "latest", "v1"]:
            await tx.images.set_tag(repo.id, tag, img.digest, now())

    async with metadata_store.transaction() as tx:
        full = await tx.images.get(repo.id, img.digest, with_tags=True)
        bare = await tx.images.get(repo.id, img.digest, with_body=False)
    assert full is not None
    assert bare is not None
    assert full.body == b'{"manifest": 1}'
    assert full.tags == ("latest", "v1", "v2")
    assert bare.body is None
    assert bare.tags == ()
    for got in (full, bare):
        assert got.registry == REGISTRY
        assert got.repository == "app"
        assert got.digest == img.digest
        assert got.media_type == MANIFEST
        assert got.size == len(b'{"manifest": 1}')
        assert got.pushed_at == img.pushed_at
        assert got.subject == subject
        assert got.artifact_type == "application/x-sbom"
        assert got.config_media_type == img.config_media_type
        assert got.image_size == img.image_size
        assert got.last_pulled_at is None


async def test_get_of_an_unknown_digest_or_another_repository_is_none(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    img = await push(metadata_store, repo, b"manifest")
    async with metadata_store.transaction() as tx:
        assert await tx.images.get(repo.id, digest("nothing")) is None
        assert await tx.images.get(other.id, img.digest) is None


async def test_get_by_tag_follows_the_tag(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    img = await push(metadata_store, repo, b"manifest", tags=["v1", "latest"])
    async with metadata_store.transaction() as tx:
        got = await tx.images.get_by_tag(repo.id, "v1", with_tags=True)
        bare = await tx.images.get_by_tag(repo.id, "latest", with_body=False)
        assert await tx.images.get_by_tag(repo.id, "nope") is None
    assert got is not None
    assert got.digest == img.digest
    assert got.body == b"manifest"
    assert got.tags == ("latest", "v1")
    assert bare is not None
    assert bare.body is None


async def test_set_tag_returns_the_previous_digest_and_moves_the_tag(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    one = await push(metadata_store, repo, b"one")
    two = await push(metadata_store, repo, b"two")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.images.set_tag(repo.id, "latest", one.digest, now()) is None
        assert await tx.images.set_tag(repo.id, "latest", one.digest, now()) == one.digest
        assert await tx.images.set_tag(repo.id, "latest", two.digest, now()) == one.digest
    async with metadata_store.transaction() as tx:
        moved = await tx.images.get_by_tag(repo.id, "latest", with_body=False)
        old = await tx.images.get(repo.id, one.digest, with_tags=True)
    assert moved is not None
    assert moved.digest == two.digest
    assert old is not None
    assert old.tags == ()


async def test_remove_tag_returns_what_it_pointed_at(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    img = await push(metadata_store, repo, b"manifest", tags=["v1", "v2"])
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.images.remove_tag(repo.id, "v1") == img.digest
        assert await tx.images.remove_tag(repo.id, "v1") is None
        assert await tx.images.remove_tag(repo.id, "never") is None
    async with metadata_store.transaction() as tx:
        assert await tx.images.get_by_tag(repo.id, "v1") is None
        got = await tx.images.get(repo.id, img.digest, with_tags=True)
    assert got is not None
    assert got.tags == ("v2",)


async def test_tags_paginate_in_lexical_order(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    await push(metadata_store, repo, b"manifest", tags=["v3", "latest", "v1", "v2", "beta"])
    await push(metadata_store, other, b"manifest", tags=["zz"])
    seen: list[str] = []
    after: str | None = None
    async with metadata_store.transaction() as tx:
        everything = await tx.images.tags(repo.id, PageRequest())
        while True:
            page = await tx.images.tags(repo.id, PageRequest(limit=2, after=after))
            seen.extend(page.items)
            if page.next_after is None:
                break
            assert page.next_after == page.items[-1]
            after = page.next_after
    assert list(everything.items) == ["beta", "latest", "v1", "v2", "v3"]
    assert everything.next_after is None
    assert seen == ["beta", "latest", "v1", "v2", "v3"]


async def test_tags_paginate_case_insensitively_with_the_exact_name_breaking_ties(
    metadata_store: MetadataStore,
) -> None:
    # The OCI order: "A" and "a" fold alike, so the exact name decides ("A" < "a"); a cursor that
    # falls between two such names must neither repeat nor skip the second.
    repo = await create(metadata_store, "app")
    await push(metadata_store, repo, b"manifest", tags=["b", "AB", "a", "B", "ab", "A", "b1", "Ab"])
    expected = ["A", "a", "AB", "Ab", "ab", "B", "b", "b1"]
    async with metadata_store.transaction() as tx:
        assert list((await tx.images.tags(repo.id, PageRequest())).items) == expected
        for limit in (1, 2, 3):
            seen: list[str] = []
            after: str | None = None
            while True:
                page = await tx.images.tags(repo.id, PageRequest(limit=limit, after=after))
                seen.extend(page.items)
                if page.next_after is None:
                    break
                after = page.next_after
            assert seen == expected, limit
        # A cursor that is not a tag of the repository still starts right after its place.
        assert list((await tx.images.tags(repo.id, PageRequest(limit=3, after="Aa"))).items) == ["AB", "Ab", "ab"]


async def test_image_list_page_is_in_digest_order_without_bodies(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    pushed = [await push(metadata_store, repo, f"m{i}".encode(), tags=[f"t{i}"]) for i in range(3)]
    async with metadata_store.transaction() as tx:
        first = await tx.images.list_page(repo.id, PageRequest(limit=2))
        rest = await tx.images.list_page(repo.id, PageRequest(limit=2, after=first.next_after))
    listed = [*first.items, *rest.items]
    assert [str(i.digest) for i in listed] == sorted(str(i.digest) for i in pushed)
    assert first.next_after == str(first.items[-1].digest)
    assert rest.next_after is None
    assert all(i.body is None for i in listed)
    expected_tags = {img.digest: (f"t{i}",) for i, img in enumerate(pushed)}
    assert all(got.tags == expected_tags[got.digest] for got in listed)


async def test_image_list_page_reads_each_page_s_own_tags(metadata_store: MetadataStore) -> None:
    # Several tags, no tags, and the same manifests tagged otherwise in a second repository: each
    # page holds exactly the tags of its own images in this repository, sorted, at any page size.
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    expected: dict[Digest, tuple[str, ...]] = {}
    for i in range(7):
        tags = [f"v{i}.{j}" for j in range(i % 3)][::-1]
        img = await push(metadata_store, repo, f"shared{i}".encode(), tags=tags)
        expected[img.digest] = tuple(sorted(tags))
        await push(metadata_store, other, f"shared{i}".encode(), tags=[f"elsewhere{i}"])
    for limit in (1, 2, 3, 7):
        seen: dict[Digest, tuple[str, ...]] = {}
        after: str | None = None
        while True:
            async with metadata_store.transaction() as tx:
                page = await tx.images.list_page(repo.id, PageRequest(limit=limit, after=after))
            seen.update((img.digest, img.tags) for img in page.items)
            if page.next_after is None:
                break
            after = page.next_after
        assert seen == expected, limit


async def _listed_ids(
    store: MetadataStore,
    repo: Repository,
    limit: int | None,
    tag_status: TagStatus,
    image_status: StatusFilter,
    at: datetime,
) -> list[tuple[Digest, str | None]]:
    """Every ListImages entry, page by page, checking each cursor names the page's last entry."""
    out: list[tuple[Digest, str | None]] = []
    after: str | None = None
    while True:
        async with store.transaction() as tx:
            page = await tx.images.list_ids(
                repo.id,
                PageRequest(limit=limit, after=after),
                tag_status=tag_status,
                image_status=image_status,
                now=at,
            )
        out.extend(page.items)
        if page.next_after is None:
            return out
        assert limit is not None
        assert len(page.items) == limit
        last_digest, last_tag = page.items[-1]
        assert page.next_after == (f"{last_digest} {last_tag}" if last_tag else str(last_digest))
        after = page.next_after


async def test_list_ids_pages_one_entry_per_tag_and_per_untagged_image(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    await push(metadata_store, other, b"elsewhere", tags=["zz"])
    tagged = await push(metadata_store, repo, b"tagged", tags=["v2", "latest", "v1"])
    single = await push(metadata_store, repo, b"single", tags=["one"])
    bare = [await push(metadata_store, repo, f"bare{i}".encode()) for i in range(3)]
    archived = await push(metadata_store, repo, b"archived", tags=["old"])
    activating = await push(metadata_store, repo, b"activating")
    restored = await push(metadata_store, repo, b"restored", tags=["back"])
    at = now()
    async with metadata_store.transaction(write=True) as tx:
        await tx.images.set_storage_class(repo.id, archived.digest, "ARCHIVE", archived_at=at)
        await tx.images.set_storage_class(repo.id, activating.digest, "STANDARD", activated_at=at + timedelta(hours=1))
        await tx.images.set_storage_class(repo.id, restored.digest, "STANDARD", activated_at=at - timedelta(hours=1))
    status = {archived.digest: "ARCHIVED", activating.digest: "ACTIVATING"}
    tags = {
        tagged.digest: ["latest", "v1", "v2"],
        single.digest: ["one"],
        archived.digest: ["old"],
        restored.digest: ["back"],
    }
    everything = [tagged, single, *bare, archived, activating, restored]
    tag_statuses: tuple[TagStatus, ...] = ("TAGGED", "UNTAGGED", "ANY")
    image_statuses: tuple[StatusFilter, ...] = ("ACTIVE", "ARCHIVED", "ACTIVATING", "ANY")
    for tag_status in tag_statuses:
        for image_status in image_statuses:
            expected: list[tuple[Digest, str | None]] = []
            for img in sorted(everything, key=lambda i: str(i.digest)):
                if image_status not in ("ANY", status.get(img.digest, "ACTIVE")):
                    continue
                names = tags.get(img.digest, [])
                if names and tag_status != "UNTAGGED":
                    expected += [(img.digest, name) for name in names]
                elif not names and tag_status != "TAGGED":
                    expected.append((img.digest, None))
            for limit in (1, 2, 3, 100, None):
                got = await _listed_ids(metadata_store, repo, limit, tag_status, image_status, at)
                assert got == expected, (tag_status, image_status, limit)


async def test_list_ids_exact_fit_has_no_next_page_and_resumes_after_a_cursor(
    metadata_store: MetadataStore,
) -> None:
    repo = await create(metadata_store, "app")
    img = await push(metadata_store, repo, b"m", tags=["a", "b"])
    bare = await push(metadata_store, repo, b"n")
    first, second = sorted([img, bare], key=lambda i: str(i.digest))
    async with metadata_store.transaction() as tx:
        whole = await tx.images.list_ids(repo.id, PageRequest(limit=3), now=now())
        assert len(whole.items) == 3
        assert whole.next_after is None
        # `digest tag` resumes after that tag of that image; `digest` after the (untagged) image.
        if first is img:
            rest = await tx.images.list_ids(repo.id, PageRequest(limit=5, after=f"{img.digest} a"), now=now())
            assert list(rest.items) == [(img.digest, "b"), (bare.digest, None)]
        else:
            rest = await tx.images.list_ids(repo.id, PageRequest(limit=5, after=str(bare.digest)), now=now())
            assert list(rest.items) == [(img.digest, "a"), (img.digest, "b")]
        assert rest.next_after is None
        assert (
            list((await tx.images.list_ids(repo.id, PageRequest(after=f"{second.digest} zz"), now=now())).items) == []
        )


async def test_delete_returns_the_removed_tags_and_drops_references(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    child = await push(metadata_store, repo, b"child", tags=["child"])
    index = await push(
        metadata_store,
        repo,
        b"index",
        tags=["v1", "latest"],
        refs=[child_ref(child.digest)],
        media_type=INDEX,
    )
    async with metadata_store.transaction() as tx:
        assert await tx.images.referenced_by(repo.id, child.digest) == [index.digest]
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.images.delete(repo.id, index.digest, now()) == ["latest", "v1"]
        assert await tx.images.delete(repo.id, index.digest, now()) == []
    async with metadata_store.transaction() as tx:
        assert await tx.images.get(repo.id, index.digest) is None
        assert await tx.images.get_by_tag(repo.id, "v1") is None
        assert await tx.images.referenced_by(repo.id, child.digest) == []
        assert list((await tx.images.tags(repo.id, PageRequest())).items) == ["child"]
        assert await tx.images.get(repo.id, child.digest) is not None


async def test_referenced_by_lists_the_indexes_of_a_child(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    layer = digest("layer")
    child = await push(metadata_store, repo, b"child", refs=[blob_ref(layer)])
    refs: list[ManifestRef] = [child_ref(child.digest), child_ref(child.digest), blob_ref(layer)]
    indexes = [await push(metadata_store, repo, f"index-{i}".encode(), refs=refs, media_type=INDEX) for i in range(2)]
    await push(metadata_store, other, b"index-x", refs=[child_ref(child.digest)], media_type=INDEX)
    async with metadata_store.transaction() as tx:
        assert await tx.images.referenced_by(repo.id, child.digest) == sorted((i.digest for i in indexes), key=str)
        # Only index children count, never config/layer references.
        assert await tx.images.referenced_by(repo.id, layer) == []
        assert await tx.images.referenced_by(repo.id, digest("unknown")) == []


async def test_referrers_lists_manifests_by_subject(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    subject = await push(metadata_store, repo, b"subject")
    referrers = [await push(metadata_store, repo, f"sig-{i}".encode(), subject=subject.digest) for i in range(3)]
    await push(metadata_store, repo, b"unrelated", subject=digest("other"))
    async with metadata_store.transaction() as tx:
        got = await tx.images.referrers(repo.id, subject.digest)
        assert await tx.images.referrers(repo.id, digest("nobody")) == []
    assert [i.digest for i in got] == sorted((i.digest for i in referrers), key=str)
    assert all(i.subject == subject.digest and i.body is None for i in got)


async def test_missing_lists_the_manifests_the_repository_lacks(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    have = await push(metadata_store, repo, b"have")
    elsewhere = await push(metadata_store, other, b"elsewhere")
    absent = digest("absent")
    async with metadata_store.transaction() as tx:
        assert await tx.images.missing(repo.id, [absent, have.digest, elsewhere.digest]) == [
            absent,
            elsewhere.digest,
        ]
        assert await tx.images.missing(repo.id, [have.digest]) == []
        assert await tx.images.missing(repo.id, []) == []


# --- blobs ---------------------------------------------------------------------------------------


async def test_add_records_a_blob_idempotently(metadata_store: MetadataStore) -> None:
    info = BlobInfo(digest("blob"), 1234)
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.blobs.get(info.digest) is None
        await tx.blobs.add(info, now())
        await tx.blobs.add(info, now())
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.get(info.digest) == info
        assert await tx.blobs.get(digest("other")) is None


async def test_link_makes_a_blob_available_in_a_repository(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    info = await add_blob(metadata_store, "blob", 5 * 1024**3)
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.blobs.linked(repo.id, info.digest) is None
        await tx.blobs.link(repo.id, info.digest, now())
        await tx.blobs.link(repo.id, info.digest, now())
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.linked(repo.id, info.digest) == info


async def test_one_blob_linked_into_two_repositories(metadata_store: MetadataStore) -> None:
    one = await create(metadata_store, "one")
    two = await create(metadata_store, "two")
    info = await add_blob(metadata_store, "shared")
    async with metadata_store.transaction(write=True) as tx:
        await tx.blobs.link(one.id, info.digest, now())
        await tx.blobs.link(two.id, info.digest, now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.blobs.unlink(one.id, info.digest)
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.linked(one.id, info.digest) is None
        assert await tx.blobs.linked(two.id, info.digest) == info
        assert await tx.blobs.get(info.digest) == info


async def test_blob_missing_lists_what_the_repository_does_not_link(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    linked = await add_blob(metadata_store, "linked")
    elsewhere = await add_blob(metadata_store, "elsewhere")
    absent = digest("absent")
    async with metadata_store.transaction(write=True) as tx:
        await tx.blobs.link(repo.id, linked.digest, now())
        await tx.blobs.link(other.id, elsewhere.digest, now())
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.missing(repo.id, [absent, linked.digest, elsewhere.digest]) == [
            absent,
            elsewhere.digest,
        ]
        assert await tx.blobs.missing(repo.id, [linked.digest]) == []
        assert await tx.blobs.missing(repo.id, []) == []


@pytest.mark.parametrize("count", [31, 32, 33, 60])
async def test_blob_missing_for_many_blobs(metadata_store: MetadataStore, count: int) -> None:
    # Small manifests and large ones take different statements: the answer must not change.
    repo = await create(metadata_store, "app")
    blobs = [await add_blob(metadata_store, f"layer-{i}") for i in range(count - 1)]
    async with metadata_store.transaction(write=True) as tx:
        for blob in blobs[::2]:
            await tx.blobs.link(repo.id, blob.digest, now())
    wanted = [b.digest for b in blobs] + [digest("absent"), blobs[0].digest]  # a repeat too
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.missing(repo.id, wanted) == [b.digest for b in blobs[1::2]] + [digest("absent")]


async def test_unlink_reports_whether_there_was_a_link(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    info = await add_blob(metadata_store, "blob")
    async with metadata_store.transaction(write=True) as tx:
        await tx.blobs.link(repo.id, info.digest, now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.blobs.unlink(repo.id, info.digest)
        assert not await tx.blobs.unlink(repo.id, info.digest)
        assert not await tx.blobs.unlink(repo.id, digest("never"))
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.linked(repo.id, info.digest) is None
        assert await tx.blobs.get(info.digest) == info


async def test_referenced_gives_the_media_type_a_manifest_references_a_blob_under(
    metadata_store: MetadataStore,
) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    layer, config, bare = digest("layer"), digest("config"), digest("bare")
    child = await push(metadata_store, repo, b"child")
    img = await push(
        metadata_store,
        repo,
        b"manifest",
        refs=[
            blob_ref(layer),
            blob_ref(config, "application/vnd.oci.image.config.v1+json"),
            blob_ref(bare, None),
        ],
    )
    await push(metadata_store, repo, b"index", refs=[child_ref(child.digest)], media_type=INDEX)
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.referenced(repo.id, layer) == LAYER
        assert await tx.blobs.referenced(repo.id, config) == "application/vnd.oci.image.config.v1+json"
        assert await tx.blobs.referenced(repo.id, bare) == ""
        assert await tx.blobs.referenced(repo.id, digest("unreferenced")) is None
        assert await tx.blobs.referenced(other.id, layer) is None
        # An index's child is a manifest reference, not a blob reference.
        assert await tx.blobs.referenced(repo.id, child.digest) is None
    async with metadata_store.transaction(write=True) as tx:
        await tx.images.delete(repo.id, img.digest, now())
    async with metadata_store.transaction() as tx:
        assert await tx.blobs.referenced(repo.id, layer) is None


# --- uploads -------------------------------------------------------------------------------------


async def test_upload_create_then_get(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    started = now()
    state = UploadState("upload-1", 0, {"part": "1", "key": "uploads/upload-1"})
    async with metadata_store.transaction(write=True) as tx:
        await tx.uploads.create(repo.id, state, started)
    async with metadata_store.transaction() as tx:
        session = await tx.uploads.get(REGISTRY, repo.name, "upload-1")
        assert await tx.uploads.get(REGISTRY, repo.name, "upload-2") is None
    assert session is not None
    assert session.registry == REGISTRY
    assert session.repository == "app"
    assert session.upload_id == "upload-1"
    assert session.state == state
    assert session.created_at == started
    assert session.updated_at == started


async def test_upload_get_from_another_repository_is_none(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    await create(metadata_store, "other")
    await create(metadata_store, "app", OTHER_REGISTRY)
    async with metadata_store.transaction(write=True) as tx:
        await tx.uploads.create(repo.id, UploadState("upload-1", 0), now())
    async with metadata_store.transaction() as tx:
        assert await tx.uploads.get(REGISTRY, RepositoryName("other"), "upload-1") is None
        assert await tx.uploads.get(OTHER_REGISTRY, repo.name, "upload-1") is None
        assert await tx.uploads.get(REGISTRY, repo.name, "upload-1") is not None


async def test_upload_save_is_compare_and_set_on_the_size(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    started = now()
    async with metadata_store.transaction(write=True) as tx:
        await tx.uploads.create(repo.id, UploadState("upload-1", 0), started)
    later = started + timedelta(seconds=5)
    grown = UploadState("upload-1", 100, {"parts": "1"})
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.uploads.save("upload-1", grown, later, expected_size=0)
        # A second request that also saw size 0 lost the race.
        assert not await tx.uploads.save("upload-1", UploadState("upload-1", 50), later, expected_size=0)
        assert not await tx.uploads.save("gone", UploadState("gone", 1), later, expected_size=0)
    async with metadata_store.transaction() as tx:
        session = await tx.uploads.get(REGISTRY, repo.name, "upload-1")
    assert session is not None
    assert session.state == grown
    assert session.created_at == started
    assert session.updated_at == later


async def test_upload_delete_is_idempotent(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    async with metadata_store.transaction(write=True) as tx:
        await tx.uploads.create(repo.id, UploadState("upload-1", 0), now())
    for _ in range(2):
        async with metadata_store.transaction(write=True) as tx:
            await tx.uploads.delete("upload-1")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.uploads.get(REGISTRY, repo.name, "upload-1") is None
        assert not await tx.uploads.save("upload-1", UploadState("upload-1", 1), now(), expected_size=0)


# --- resource tags -------------------------------------------------------------------------------


async def test_resource_tags_put_merges_and_overwrites(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    other = await create(metadata_store, "other")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.resource_tags.get(repo.id) == {}
        await tx.resource_tags.put(repo.id, {"team": "a", "env": "dev"})
        await tx.resource_tags.put(repo.id, {"env": "prod", "cost": "42"})
        await tx.resource_tags.put(repo.id, {})
        await tx.resource_tags.put(other.id, {"team": "b"})
    async with metadata_store.transaction() as tx:
        assert await tx.resource_tags.get(repo.id) == {"cost": "42", "env": "prod", "team": "a"}
        assert await tx.resource_tags.get(other.id) == {"team": "b"}


async def test_resource_tags_delete_ignores_unknown_keys(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    async with metadata_store.transaction(write=True) as tx:
        await tx.resource_tags.put(repo.id, {"team": "a", "env": "dev", "cost": "42"})
    async with metadata_store.transaction(write=True) as tx:
        await tx.resource_tags.delete(repo.id, ["env", "nope", "env"])
        await tx.resource_tags.delete(repo.id, [])
    async with metadata_store.transaction() as tx:
        assert await tx.resource_tags.get(repo.id) == {"cost": "42", "team": "a"}


async def test_resource_tags_go_with_their_repository(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    async with metadata_store.transaction(write=True) as tx:
        await tx.resource_tags.put(repo.id, {"team": "a"})
    async with metadata_store.transaction(write=True) as tx:
        await tx.repositories.delete(repo.id, now())
    async with metadata_store.transaction() as tx:
        assert await tx.resource_tags.get(repo.id) == {}


# --- identities ----------------------------------------------------------------------------------


def access_key(key_id: str, account_id: str, user_name: str | None) -> AccessKeyRecord:
    return AccessKeyRecord(key_id, account_id, user_name, f"ciphertext-of-{key_id}", now())


async def test_accounts_create_list_and_delete(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.accounts() == []
        assert await tx.identities.create_account("210987654321", now())
        assert await tx.identities.create_account("123456789012", now())
        assert not await tx.identities.create_account("123456789012", now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.accounts() == ["123456789012", "210987654321"]
        assert await tx.identities.delete_account("210987654321")
        assert not await tx.identities.delete_account("210987654321")
    async with metadata_store.transaction() as tx:
        assert await tx.identities.accounts() == ["123456789012"]


async def test_users_create_list_and_delete(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        await tx.identities.create_account("123456789012", now())
        await tx.identities.create_account("210987654321", now())
        assert await tx.identities.create_user("123456789012", "ci", now())
        assert await tx.identities.create_user("123456789012", "alice", now())
        assert not await tx.identities.create_user("123456789012", "ci", now())
        assert await tx.identities.create_user("210987654321", "ci", now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.users("123456789012") == ["alice", "ci"]
        assert await tx.identities.user_exists("123456789012", "ci")
        assert not await tx.identities.user_exists("123456789012", "bob")
        assert await tx.identities.delete_user("123456789012", "ci")
        assert not await tx.identities.delete_user("123456789012", "ci")
    async with metadata_store.transaction() as tx:
        assert await tx.identities.users("123456789012") == ["alice"]
        assert await tx.identities.user_exists("210987654321", "ci")
        assert await tx.identities.users("999999999999") == []


async def test_access_keys_add_get_list_and_delete(metadata_store: MetadataStore) -> None:
    root = access_key("AKIAROOT", "123456789012", None)
    ci = access_key("AKIACI", "123456789012", "ci")
    foreign = access_key("AKIAFOREIGN", "210987654321", None)
    async with metadata_store.transaction(write=True) as tx:
        for account in ("123456789012", "210987654321"):
            await tx.identities.create_account(account, now())
        await tx.identities.create_user("123456789012", "ci", now())
        for record in (root, ci, foreign):
            await tx.identities.add_key(record)
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.key("AKIACI") == ci
        assert await tx.identities.key("AKIAROOT") == root
        assert await tx.identities.key("AKIANONE") is None
        assert await tx.identities.keys("123456789012") == [ci, root]
        assert await tx.identities.keys() == [ci, root, foreign]
        assert await tx.identities.delete_key("AKIAROOT")
        assert not await tx.identities.delete_key("AKIAROOT")
    async with metadata_store.transaction() as tx:
        assert await tx.identities.keys("123456789012") == [ci]


async def test_deleting_a_user_or_account_deletes_its_keys(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        await tx.identities.create_account("123456789012", now())
        await tx.identities.create_user("123456789012", "ci", now())
        await tx.identities.create_user("123456789012", "alice", now())
        await tx.identities.add_key(access_key("AKIACI", "123456789012", "ci"))
        await tx.identities.add_key(access_key("AKIAALICE", "123456789012", "alice"))
        await tx.identities.add_key(access_key("AKIAROOT", "123456789012", None))
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.delete_user("123456789012", "ci")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.identities.key("AKIACI") is None
        assert [k.access_key_id for k in await tx.identities.keys()] == ["AKIAALICE", "AKIAROOT"]
        assert await tx.identities.delete_account("123456789012")
    async with metadata_store.transaction() as tx:
        assert await tx.identities.keys() == []
        assert await tx.identities.users("123456789012") == []
        assert await tx.identities.accounts() == []


# --- leases --------------------------------------------------------------------------------------


async def test_lease_acquire_and_renew(metadata_store: MetadataStore) -> None:
    t0 = now()
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.leases.acquire("gc", "worker-a", t0, 30)
        assert await tx.leases.acquire("gc", "worker-a", t0 + timedelta(seconds=20), 30)
        # Renewed at t0+20, so still held at t0+45 although the first grant ended at t0+30.
        assert not await tx.leases.acquire("gc", "worker-b", t0 + timedelta(seconds=45), 30)


async def test_lease_is_blocked_for_another_holder_until_it_expires(metadata_store: MetadataStore) -> None:
    t0 = now()
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.leases.acquire("gc", "worker-a", t0, 30)
        assert not await tx.leases.acquire("gc", "worker-b", t0 + timedelta(seconds=10), 30)
        assert await tx.leases.acquire("other-job", "worker-b", t0, 30)
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.leases.acquire("gc", "worker-b", t0 + timedelta(seconds=31), 30)
        # worker-a's lease was taken over: it cannot renew it now.
        assert not await tx.leases.acquire("gc", "worker-a", t0 + timedelta(seconds=32), 30)


async def test_lease_release(metadata_store: MetadataStore) -> None:
    t0 = now()
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.leases.acquire("gc", "worker-a", t0, 30)
        await tx.leases.release("gc", "worker-b")  # not the holder: nothing happens
        assert not await tx.leases.acquire("gc", "worker-b", t0, 30)
        await tx.leases.release("gc", "worker-a")
        assert await tx.leases.acquire("gc", "worker-b", t0, 30)
        await tx.leases.release("never", "worker-a")


# --- kv ------------------------------------------------------------------------------------------


async def test_kv_get_and_put(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.kv.get("signing-key") is None
        await tx.kv.put("signing-key", "one")
        await tx.kv.put("signing-key", "two")
        await tx.kv.put("other", "")
    async with metadata_store.transaction() as tx:
        assert await tx.kv.get("signing-key") == "two"
        assert await tx.kv.get("other") == ""


async def test_kv_put_if_absent_keeps_the_first_value(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.kv.put_if_absent("instance-id", "first") == "first"
        assert await tx.kv.put_if_absent("instance-id", "second") == "first"
    async with metadata_store.transaction() as tx:
        assert await tx.kv.get("instance-id") == "first"


# --- transactions --------------------------------------------------------------------------------


async def test_an_exception_rolls_the_whole_transaction_back(metadata_store: MetadataStore) -> None:
    existing = await create(metadata_store, "existing")
    written: list[tuple[Repository, Image]] = []

    async def write_everything_then_fail() -> None:
        async with metadata_store.transaction(write=True) as tx:
            repo = await tx.repositories.create(repository("app"))
            img = image(repo, b"manifest")
            written.append((repo, img))
            assert await tx.images.put(repo.id, img, b"manifest", [])
            await tx.images.set_tag(repo.id, "latest", img.digest, now())
            await tx.blobs.add(BlobInfo(digest("blob"), 1), now())
            await tx.blobs.link(existing.id, digest("blob"), now())
            await tx.uploads.create(existing.id, UploadState("upload-1", 0), now())
            await tx.kv.put("key", "value")
            await tx.resource_tags.put(existing.id, {"team": "a"})
            await tx.identities.create_account("123456789012", now())
            assert await tx.leases.acquire("gc", "worker-a", now(), 30)
            raise Boom

    with pytest.raises(Boom):
        await write_everything_then_fail()
    [(repo, img)] = written
    async with metadata_store.transaction() as tx:
        assert await tx.repositories.get(REGISTRY, RepositoryName("app")) is None
        assert await tx.images.get(repo.id, img.digest) is None
        assert await tx.blobs.get(digest("blob")) is None
        assert await tx.blobs.linked(existing.id, digest("blob")) is None
        assert await tx.uploads.get(REGISTRY, existing.name, "upload-1") is None
        assert await tx.kv.get("key") is None
        assert await tx.resource_tags.get(existing.id) == {}
        assert await tx.identities.accounts() == []
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.leases.acquire("gc", "worker-b", now(), 30)


async def test_a_failed_create_does_not_spoil_the_transaction(metadata_store: MetadataStore) -> None:
    await create(metadata_store, "app")
    async with metadata_store.transaction(write=True) as tx:
        await tx.kv.put("before", "1")
        with pytest.raises(RepositoryAlreadyExistsError):
            await tx.repositories.create(repository("app"))
        await tx.kv.put("after", "2")
    async with metadata_store.transaction() as tx:
        assert await tx.kv.get("before") == "1"
        assert await tx.kv.get("after") == "2"


async def test_a_read_transaction_sees_committed_data(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "app")
    img = await push(metadata_store, repo, b"manifest", tags=["latest"])
    async with metadata_store.transaction() as tx:
        got = await tx.images.get_by_tag(repo.id, "latest")
    assert got is not None
    assert got.digest == img.digest


async def test_uncommitted_writes_are_invisible_to_readers(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as writer:
        await writer.repositories.create(repository("app"))
        await writer.kv.put("key", "value")
        async with metadata_store.transaction() as reader:
            assert await reader.repositories.get(REGISTRY, RepositoryName("app")) is None
            assert await reader.kv.get("key") is None
    async with metadata_store.transaction() as reader:
        assert await reader.repositories.get(REGISTRY, RepositoryName("app")) is not None


async def test_a_read_transaction_sees_one_snapshot(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        await tx.kv.put("key", "old")
    async with metadata_store.transaction() as reader:
        assert await reader.kv.get("key") == "old"
        async with metadata_store.transaction(write=True) as writer:
            await writer.kv.put("key", "new")
            await writer.repositories.create(repository("app"))
        assert await reader.kv.get("key") == "old"
        assert await reader.repositories.get(REGISTRY, RepositoryName("app")) is None


# --- concurrency ---------------------------------------------------------------------------------


async def test_for_update_serialises_writers_of_one_repository(metadata_store: MetadataStore) -> None:
    """Check-then-act under `for_update`: of writers that all find the tag absent, one sets it."""
    repo = await create(metadata_store, "app")
    candidates = [await push(metadata_store, repo, f"candidate-{i}".encode()) for i in range(4)]

    async def set_if_absent(candidate: Image) -> bool:
        async with metadata_store.transaction(write=True) as tx:
            locked = await tx.repositories.get(REGISTRY, repo.name, for_update=True)
            assert locked is not None
            current = await tx.images.get_by_tag(locked.id, "release", with_body=False)
            await asyncio.sleep(0.05)  # give the other writers every chance to interleave
            if current is not None:
                return False
            await tx.images.set_tag(locked.id, "release", candidate.digest, now())
            return True

    results = await asyncio.gather(*(set_if_absent(c) for c in candidates))
    assert results.count(True) == 1
    winner = candidates[results.index(True)]
    async with metadata_store.transaction() as tx:
        tagged = await tx.images.get_by_tag(repo.id, "release", with_body=False)
    assert tagged is not None
    assert tagged.digest == winner.digest


async def test_concurrent_creates_of_one_name_let_exactly_one_succeed(metadata_store: MetadataStore) -> None:
    async def attempt() -> Repository:
        async with metadata_store.transaction(write=True) as tx:
            created = await tx.repositories.create(repository("app"))
            await asyncio.sleep(0.01)
            return created

    results = await asyncio.gather(*(attempt() for _ in range(10)), return_exceptions=True)
    created = [r for r in results if isinstance(r, Repository)]
    failed = [r for r in results if not isinstance(r, Repository)]
    assert len(created) == 1
    assert all(isinstance(e, RepositoryAlreadyExistsError) for e in failed), failed
    async with metadata_store.transaction() as tx:
        page = await tx.repositories.list_page(REGISTRY, PageRequest())
    assert list(page.items) == created


# --- reset ---------------------------------------------------------------------------------------


async def test_reset_removes_every_repository_and_blob(metadata_store: MetadataStore) -> None:
    repos = [await create(metadata_store, "app"), await create(metadata_store, "app", OTHER_REGISTRY)]
    info = await add_blob(metadata_store, "blob")
    for repo in repos:
        img = await push(metadata_store, repo, b"manifest", tags=["latest"], refs=[blob_ref(info.digest)])
        async with metadata_store.transaction(write=True) as tx:
            await tx.blobs.link(repo.id, info.digest, now())
            await tx.uploads.create(repo.id, UploadState(f"upload-{repo.id}", 0), now())
            await tx.resource_tags.put(repo.id, {"team": "a"})

    await metadata_store.reset()

    async with metadata_store.transaction() as tx:
        for repo in repos:
            assert list((await tx.repositories.list_page(repo.registry, PageRequest())).items) == []
            assert await tx.images.get(repo.id, img.digest) is None
            assert list((await tx.images.tags(repo.id, PageRequest())).items) == []
            assert await tx.blobs.linked(repo.id, info.digest) is None
            assert await tx.uploads.get(repo.registry, repo.name, f"upload-{repo.id}") is None
            assert await tx.resource_tags.get(repo.id) == {}
        assert await tx.blobs.get(info.digest) is None
    # The store is usable afterwards, and the names are free again.
    assert (await create(metadata_store, "app")).name == "app"


# --- policies ------------------------------------------------------------------------------------


async def test_repository_policies_put_replace_delete_and_go_with_the_repository(metadata_store: MetadataStore) -> None:
    app, other = await create(metadata_store, "app"), await create(metadata_store, "app", OTHER_REGISTRY)
    async with metadata_store.transaction() as tx:
        assert await tx.policies.repository_policy(app.id) is None
        assert not await tx.policies.any_repository_policy(REGISTRY)
    async with metadata_store.transaction(write=True) as tx:
        await tx.policies.put_repository_policy(app.id, '{"v": 1}', now())
        await tx.policies.put_repository_policy(app.id, '{"v": 2}', now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.policies.repository_policy(app.id) == '{"v": 2}'
        assert await tx.policies.any_repository_policy(REGISTRY)
        assert not await tx.policies.any_repository_policy(OTHER_REGISTRY)
        assert await tx.policies.repository_policy(other.id) is None
        await tx.repositories.delete(app.id, now())
    async with metadata_store.transaction(write=True) as tx:
        assert not await tx.policies.any_repository_policy(REGISTRY)
        assert not await tx.policies.delete_repository_policy(app.id)
        await tx.policies.put_repository_policy(other.id, "{}", now())
        assert await tx.policies.delete_repository_policy(other.id)
        assert await tx.policies.repository_policy(other.id) is None


async def test_registry_policies_are_per_registry(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.policies.registry_policy(REGISTRY) is None
        await tx.policies.put_registry_policy(REGISTRY, "one", now())
        await tx.policies.put_registry_policy(REGISTRY, "two", now())
        await tx.policies.put_registry_policy(OTHER_REGISTRY, "other", now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.policies.registry_policy(REGISTRY) == "two"
        assert await tx.policies.delete_registry_policy(REGISTRY)
        assert not await tx.policies.delete_registry_policy(REGISTRY)
    async with metadata_store.transaction() as tx:
        assert await tx.policies.registry_policy(REGISTRY) is None
        assert await tx.policies.registry_policy(OTHER_REGISTRY) == "other"


async def test_user_policies_by_name_and_with_the_user(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        await tx.identities.create_account("123456789012", now())
        for name in ("ci", "dev"):
            await tx.identities.create_user("123456789012", name, now())
        assert await tx.policies.put_user_policy("123456789012", "ci", "push", "p1", now())
        assert not await tx.policies.put_user_policy("123456789012", "ci", "push", "p2", now())
        assert await tx.policies.put_user_policy("123456789012", "ci", "pull", "q", now())
        assert await tx.policies.put_user_policy("123456789012", "dev", "pull", "d", now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.policies.user_policies("123456789012", "ci") == [("pull", "q"), ("push", "p2")]
        assert await tx.policies.delete_user_policy("123456789012", "ci", "pull")
        assert not await tx.policies.delete_user_policy("123456789012", "ci", "pull")
        assert await tx.identities.delete_user("123456789012", "ci")
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.policies.user_policies("123456789012", "ci") == []
        assert await tx.policies.user_policies("123456789012", "dev") == [("pull", "d")]
        assert await tx.identities.delete_account("123456789012")
    async with metadata_store.transaction() as tx:
        assert await tx.policies.user_policies("123456789012", "dev") == []


# --- lifecycle, pull-time exclusions, storage classes, GC batches ---------------------------------


async def test_lifecycle_policy_preview_and_events(metadata_store: MetadataStore) -> None:
    from moorage.metadata import LifecycleEvent, LifecyclePreviewRecord

    at = datetime(2026, 3, 1, tzinfo=UTC)
    async with metadata_store.transaction(write=True) as tx:
        repo = await tx.repositories.create(repository("lc/a"))
        other = await tx.repositories.create(repository("lc/b"))
        assert await tx.lifecycle.policy(repo.id) is None
        await tx.lifecycle.put_policy(repo.id, "first", at)
        await tx.lifecycle.evaluated(repo.id, at + timedelta(hours=1))
        await tx.lifecycle.put_policy(repo.id, "second", at + timedelta(hours=2))  # keeps last_evaluated_at
        await tx.lifecycle.put_preview(repo.id, LifecyclePreviewRecord("second", "IN_PROGRESS", at))
        await tx.lifecycle.put_preview(repo.id, LifecyclePreviewRecord("second", "COMPLETE", at, at, "[]"))
        events = [
            LifecycleEvent(REGISTRY, repo.name, digest(f"e{i}"), (f"t{i}",), "EXPIRE", 1, at + timedelta(minutes=i))
            for i in range(3)
        ]
        await tx.lifecycle.add_events(events)
    async with metadata_store.transaction() as tx:
        record = await tx.lifecycle.policy(repo.id)
        assert record is not None
        assert (record.document, record.last_evaluated_at) == ("second", at + timedelta(hours=1))
        assert [r.name for r, _ in await tx.lifecycle.with_policies()] == ["lc/a"]
        assert await tx.lifecycle.with_policies(OTHER_REGISTRY) == []
        assert await tx.lifecycle.preview(repo.id) == LifecyclePreviewRecord("second", "COMPLETE", at, at, "[]")
        assert await tx.lifecycle.preview(other.id) is None
        assert await tx.lifecycle.events(REGISTRY, repo.name, 2) == events[::-1][:2]  # newest first
    async with metadata_store.transaction(write=True) as tx:
        await tx.repositories.delete(repo.id, now())
    async with metadata_store.transaction() as tx:
        assert await tx.lifecycle.policy(repo.id) is None
        assert await tx.lifecycle.preview(repo.id) is None
        assert len(await tx.lifecycle.events()) == 3  # history outlives the repository


async def test_pull_exclusions_per_registry(metadata_store: MetadataStore) -> None:
    arns = [f"arn:aws:iam::123456789012:role/r{i}" for i in range(3)]
    async with metadata_store.transaction(write=True) as tx:
        for arn in reversed(arns):
            assert await tx.pull_exclusions.add(REGISTRY, arn, now())
        assert not await tx.pull_exclusions.add(REGISTRY, arns[0], now())
        assert await tx.pull_exclusions.add(OTHER_REGISTRY, arns[0], now())
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.pull_exclusions.count(REGISTRY) == 3
        assert await tx.pull_exclusions.contains(REGISTRY, arns[1])
        first = await tx.pull_exclusions.list_page(REGISTRY, PageRequest(limit=2))
        assert (list(first.items), first.next_after) == (arns[:2], arns[1])
        assert list((await tx.pull_exclusions.list_page(REGISTRY, PageRequest(2, arns[1]))).items) == arns[2:]
        assert await tx.pull_exclusions.remove(REGISTRY, arns[1])
        assert not await tx.pull_exclusions.remove(REGISTRY, arns[1])
        assert not await tx.pull_exclusions.contains(REGISTRY, arns[1])
        assert await tx.pull_exclusions.count(OTHER_REGISTRY) == 1


async def test_storage_class_pull_times_and_scan(metadata_store: MetadataStore) -> None:
    at = datetime(2026, 3, 1, tzinfo=UTC)
    async with metadata_store.transaction(write=True) as tx:
        repo = await tx.repositories.create(repository("lc/scan"))
        child, index = image(repo, b"child"), image(repo, b"index", media_type=INDEX)
        await tx.images.put(repo.id, child, b"child", [])
        await tx.images.put(repo.id, index, b"index", [(child.digest, "manifest", MANIFEST)])
        await tx.images.set_tag(repo.id, "b", index.digest, at)
        await tx.images.set_tag(repo.id, "a", index.digest, at)
        assert await tx.images.set_storage_class(repo.id, child.digest, "ARCHIVE", archived_at=at)
        assert not await tx.images.set_storage_class(repo.id, digest("nope"), "ARCHIVE")
        assert await tx.images.record_pull(repo.id, index.digest, at, unless_since=at - timedelta(hours=1))
        assert not await tx.images.record_pull(
            repo.id, index.digest, at + timedelta(minutes=5), unless_since=at - timedelta(minutes=55)
        )
    async with metadata_store.transaction() as tx:
        scanned = {i.digest: i for i in await tx.images.scan(repo.id)}
        assert scanned[index.digest].tags == ("a", "b")
        assert scanned[index.digest].last_pulled_at == at
        assert (scanned[child.digest].storage_class, scanned[child.digest].last_archived_at) == ("ARCHIVE", at)
        assert await tx.images.children(repo.id) == [(index.digest, child.digest)]


async def test_gc_batches_mark_only_unreferenced_due_candidates(metadata_store: MetadataStore) -> None:
    old, fresh = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC)
    cutoff = datetime(2026, 1, 2, tzinfo=UTC)
    free, used, recent = digest("free"), digest("used"), digest("recent")
    async with metadata_store.transaction(write=True) as tx:
        repo = await tx.repositories.create(repository("lc/gc"))
        for blob, touched in ((free, old), (used, old), (recent, fresh)):
            assert await tx.blobs.claim(BlobInfo(blob, 10), touched)
        await tx.blobs.link(repo.id, used, old)
        await tx.images.put(repo.id, image(repo, b"m"), b"m", [blob_ref(used)])
    async with metadata_store.transaction(write=True) as tx:
        marked = await tx.blobs.mark_deleting_many([free, used, recent, digest("unknown")], cutoff)
        assert marked == [BlobInfo(free, 10)]
        assert await tx.blobs.get(free) is None  # deleting: absent
        assert await tx.blobs.deleting(10) == [free]
        await tx.blobs.forget_many([free])
        assert await tx.blobs.deleting(10) == []
        assert await tx.blobs.gc_candidates(fresh + timedelta(days=1), 10) == [recent]  # `used` dropped


# --- listings for the web console (ImageTable.browse / summaries / usage) -------------------------


async def test_browse_filters_sorts_pages_and_counts(metadata_store: MetadataStore) -> None:
    repo = await create(metadata_store, "browse")
    other = await create(metadata_store, "browse-other")
    await push(metadata_store, other, b"elsewhere", tags=["release-1"])
    # Bodies of growing length: image_size grows with them; push times grow with i too.
    pushed = []
    for i, tags in enumerate([["release-1", "latest"], [], ["dev-2"], [], ["release_3"]]):
        pushed.append(await push(metadata_store, repo, b"x" * (10 * (5 - i)) + f"{i}".encode(), tags=tags))
    newest_first = [p.digest for p in reversed(pushed)]
    async with metadata_store.transaction() as tx:
        everything, total = await tx.images.browse(repo.id)
        assert total == 5
        assert [i.digest for i in everything] == newest_first
        assert everything[-1].tags == ("latest", "release-1")
        assert all(i.body is None for i in everything)
        page, total = await tx.images.browse(repo.id, offset=1, limit=2)
        assert (total, [i.digest for i in page]) == (5, newest_first[1:3])
        by_size, _ = await tx.images.browse(repo.id, order="size", descending=True)
        assert [i.digest for i in by_size] == [p.digest for p in pushed]  # the first body is the longest
        oldest_first, _ = await tx.images.browse(repo.id, descending=False)
        assert [i.digest for i in oldest_first] == [p.digest for p in pushed]
        untagged, total = await tx.images.browse(repo.id, tag_status="UNTAGGED")
        assert (total, {i.digest for i in untagged}) == (2, {pushed[1].digest, pushed[3].digest})
        tagged, total = await tx.images.browse(repo.id, tag_status="TAGGED")
        assert (total, len(tagged)) == (3, 3)
        # Tag text is a substring match; `_` and `%` are literal characters, not wildcards.
        release, total = await tx.images.browse(repo.id, tag_contains="release")
        assert (total, {i.digest for i in release}) == (2, {pushed[0].digest, pushed[4].digest})
        literal, total = await tx.images.browse(repo.id, tag_contains="e_")
        assert (total, [i.digest for i in literal]) == (1, [pushed[4].digest])
        assert await tx.images.browse(repo.id, tag_contains="%") == ([], 0)
        assert await tx.images.browse(repo.id, tag_status="UNTAGGED", tag_contains="release") == ([], 0)
        with_body, _ = await tx.images.browse(repo.id, limit=1, with_body=True)
        assert with_body[0].body == b"x" * 10 + b"4"
        assert await tx.images.summaries([repo.id, other.id, 999_999]) == {
            repo.id: (5, sum(p.image_size for p in pushed)),
            other.id: (1, len(b"elsewhere") + 1000),
        }
        assert await tx.images.usage(REGISTRY) == (2, 6, sum(p.image_size for p in pushed) + len(b"elsewhere") + 1000)
        assert await tx.images.usage(OTHER_REGISTRY) == (0, 0, 0)
