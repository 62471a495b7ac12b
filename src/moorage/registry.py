"""The Registry service: repositories, manifests (images), tags and blob access.

Both front-ends call this; neither touches storage or SQL. Every method takes the registry
(`RegistryRef`) it acts on first. Manifest bytes are stored exactly as received, so every face
serves the bytes that were pushed (conversion on pull by tag is the only exception, and only
when the client does not accept the stored type).

A manifest PUT is one write transaction: lock the repository row, check that every referenced
blob is linked and every child manifest present, check tag mutability, insert the manifest and
its references, move the tag.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Final, Generic, TypeVar

from moorage import events as ev
from moorage import manifests as mf
from moorage.clock import Clock
from moorage.errors import (
    BlobUnknownError,
    DigestInvalidError,
    ImageTagAlreadyExistsError,
    ManifestBlobUnknownError,
    ManifestInvalidError,
    ManifestUnknownError,
    RangeNotSatisfiableError,
    RepositoryAlreadyExistsError,
    RepositoryNotEmptyError,
    RepositoryNotFoundError,
    TagInvalidError,
    TooLargeError,
    TooManyTagsError,
)
from moorage.metadata import ManifestRef, MetadataStore, Transaction
from moorage.model import (
    BlobInfo,
    ByteRange,
    Digest,
    Image,
    Page,
    PageRequest,
    RegistryRef,
    Repository,
    RepositoryName,
    parse_tag,
)
from moorage.pulls import PullTimes
from moorage.storage import BlobStore
from moorage.templates import Templates

__all__ = [
    "ACCOUNT_SETTINGS",
    "READ_CACHE_SECONDS",
    "BlobStream",
    "Limits",
    "ManifestPut",
    "ReadCache",
    "Registry",
    "manifest_references",
    "tag_is_immutable",
]

# ECR account settings: name -> (default, settable values). BASIC_SCAN_TYPE_VERSION takes only
# AWS_NATIVE, as botocore's PutAccountSetting documents ("Valid value for basic scan type:
# AWS_NATIVE"): the Clair-based engine (CLAIR) was retired on 2 February 2026.
ACCOUNT_SETTINGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "BASIC_SCAN_TYPE_VERSION": ("AWS_NATIVE", ("AWS_NATIVE",)),
    "REGISTRY_POLICY_SCOPE": ("V2", ("V2",)),
    "BLOB_MOUNTING": ("DISABLED", ("ENABLED", "DISABLED")),
}

IMAGE_NOT_FOUND = "Requested image not found"

READ_CACHE_SECONDS: Final = 1.0
"""How long a process may answer a manifest/blob read from memory. Writes of the same process
drop the cache at once; writes of other processes (workers, replicas) are seen within this bound,
as policy changes are (authz.POLICY_CACHE_SECONDS)."""

_K = TypeVar("_K")
_V = TypeVar("_V")


class ReadCache(Generic[_K, _V]):
    """Positive read results of this process, each kept at most `ttl` seconds counted from the
    moment the read that produced it began, so it can be no older than that. `forget()` (called
    whenever a write transaction of this process ends) drops everything and bumps `generation`;
    a read that began under an older generation is not stored, since it may predate the write.
    Misses (a repository, tag or blob not found) are never stored: what another process just
    created is found at once. Bounded by entries and by the bytes of the values' bodies."""

    __slots__ = ("_bytes", "_entries", "_max_bytes", "_max_entries", "_ttl", "generation")

    def __init__(self, ttl: float, *, max_entries: int = 10_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._ttl = ttl
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: dict[_K, tuple[float, int, _V]] = {}
        self._bytes = 0
        self.generation = 0

    def begin(self) -> tuple[float, int]:
        """The (time, generation) a read starts at, to hand to `put` with its result."""
        return time.monotonic(), self.generation

    def get(self, key: _K) -> _V | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if time.monotonic() - entry[0] >= self._ttl:
            self._drop(key)
            return None
        return entry[2]

    def put(self, key: _K, value: _V, started: tuple[float, int], size: int = 0) -> None:
        if self._ttl <= 0 or started[1] != self.generation or size > self._max_bytes // 8:
            return
        self._drop(key)
        while self._entries and (len(self._entries) >= self._max_entries or self._bytes + size > self._max_bytes):
            self._drop(next(iter(self._entries)))  # the oldest first
        self._entries[key] = (started[0], size, value)
        self._bytes += size

    def _drop(self, key: _K) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def forget(self) -> None:
        self.generation += 1
        self._entries.clear()
        self._bytes = 0


@dataclass(frozen=True, slots=True)
class Limits:
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 64 * 1024**3


@dataclass(frozen=True, slots=True)
class BlobStream:
    """An opened blob: the whole blob's info, the inclusive range to send (None: all of it), and
    either a local file path or an async byte iterator."""

    info: BlobInfo
    span: tuple[int, int] | None
    path: Path | None
    chunks: AsyncIterator[bytes] | None
    redirect: str | None = None


@dataclass(frozen=True, slots=True)
class ManifestPut:
    """The stored image; `created` when the manifest is new to the repository, `changed` when
    anything changed at all (new manifest or a tag moved onto it)."""

    image: Image
    created: bool
    changed: bool


@lru_cache(maxsize=1024)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(part) for part in pattern.split("*")))


def tag_is_immutable(repo: Repository, tag: str) -> bool:
    """Whether `tag` may not be moved in `repo` (ECR's four mutability modes with wildcard filters)."""
    matched = any(_wildcard(f).fullmatch(tag) for f in repo.mutability_exclusions)
    mode = repo.tag_mutability
    if mode == "IMMUTABLE":
        return True
    if mode == "IMMUTABLE_WITH_EXCLUSION":
        return not matched
    if mode == "MUTABLE_WITH_EXCLUSION":
        return matched
    return False


def manifest_references(parsed: mf.ParsedManifest) -> list[ManifestRef]:
    """The rows a stored manifest references: its blobs and its child manifests."""
    return _references(parsed)


def _references(parsed: mf.ParsedManifest) -> list[ManifestRef]:
    wanted = set(parsed.blob_references)
    blobs = ((parsed.config,) if parsed.config is not None else ()) + parsed.layers
    refs: list[ManifestRef] = [(d.digest, "blob", d.media_type) for d in blobs if d.digest in wanted]
    refs += [(d.digest, "manifest", d.media_type) for d in parsed.manifests]
    return refs


PushHook = Callable[[Transaction, Repository, Image, str | None, datetime], Awaitable[int]]
"""Runs in a push's transaction (repository, image, pushing principal's ARN, now); returns the
moorage.events.WORK_* bits of the consumers it found work for (0: none), which the push's event
carries so that the others pass it over."""


async def delete_referrers(tx: Transaction, repo: Repository, subject: Digest, now: datetime) -> list[Digest]:
    """Delete the referrers of a deleted image (signatures, SBOMs, ...), and theirs, with a DELETE
    event each: they follow their subject (ECR cleans them up after the subject is deleted)."""
    deleted: list[Digest] = []
    stack = [subject]
    while stack:
        for referrer in await tx.images.referrers(repo.id, stack.pop()):
            if await tx.images.referenced_by(repo.id, referrer.digest):
                continue  # an index still lists it: it stays (as an index child)
            tags = await tx.images.delete(repo.id, referrer.digest, now)
            await tx.events.add(ev.image_deleted(repo.registry, repo.name, referrer.digest, tags, now))
            deleted.append(referrer.digest)
            stack.append(referrer.digest)
    return deleted


class Registry:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        *,
        clock: Clock,
        limits: Limits,
        create_on_push: bool = True,
        pulls: PullTimes | None = None,
        read_cache_seconds: float = READ_CACHE_SECONDS,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._clock = clock
        self.limits = limits
        self._create_on_push = create_on_push
        self.pulls = pulls if pulls is not None else PullTimes(metadata, clock=clock)
        # Called in the transaction of every manifest push, after the manifest row is written:
        # (tx, repository, image, pushing principal's ARN or None, now). Managed signing records
        # its IN_PROGRESS rows (with the pusher) this way; the composition root appends them.
        self.push_hooks: list[PushHook] = []
        # Manifests by (registry, repository, reference) and blob links, for the pull path.
        self._manifests: ReadCache[tuple[RegistryRef, str, str], Image] = ReadCache(read_cache_seconds)
        self._links: ReadCache[tuple[RegistryRef, str, str], BlobInfo] = ReadCache(read_cache_seconds)
        metadata.on_writes_committed(self.forget_cached)

    def forget_cached(self) -> None:
        """Drop every cached read (a write transaction of this process ended, or a reset)."""
        self._manifests.forget()
        self._links.forget()

    # -- registry settings and documents -----------------------------------------------------

    async def account_setting(self, registry: RegistryRef, name: str) -> str:
        """An ECR account setting of the registry (its default when never set)."""
        async with self._metadata.transaction() as tx:
            value = await tx.kv.get(f"setting/{registry.account_id}/{registry.region}/{name}")
        return value if value is not None else ACCOUNT_SETTINGS[name][0]

    async def put_account_setting(self, registry: RegistryRef, name: str, value: str) -> None:
        async with self._metadata.transaction(write=True) as tx:
            await tx.kv.put(f"setting/{registry.account_id}/{registry.region}/{name}", value)

    async def document(self, registry: RegistryRef, kind: str) -> dict[str, object] | None:
        """A registry-level JSON document (replication configuration, registry policy, ...)."""
        async with self._metadata.transaction() as tx:
            text = await tx.kv.get(f"doc/{registry.account_id}/{registry.region}/{kind}")
        return None if text is None else dict(json.loads(text))

    # -- repositories ------------------------------------------------------------------------

    async def _repo(self, tx: Transaction, registry: RegistryRef, name: RepositoryName) -> Repository:
        repo = await tx.repositories.get(registry, name)
        if repo is None:
            raise RepositoryNotFoundError(name, registry.account_id)
        return repo

    def now(self) -> datetime:
        return self._clock.now()

    async def _repo_for_push(
        self, tx: Transaction, registry: RegistryRef, name: RepositoryName, *, create: bool | None = None
    ) -> Repository:
        """The repository locked for a write; created here when repositories are created on push."""
        repo = await tx.repositories.get(registry, name, for_update=True)
        if repo is None:
            if create is False:
                raise RepositoryNotFoundError(name, registry.account_id)
            # A matching CREATE_ON_PUSH template always wins; `create_on_push` is an implicit ROOT
            # template with ECR's defaults, used only when none matches (semantics §12.3).
            template = await Templates.select(tx, registry, name, "CREATE_ON_PUSH")
            if template is None and not (self._create_on_push or create):
                raise RepositoryNotFoundError(name, registry.account_id)
            repo = await Templates.create_repository(tx, registry, name, template, self._clock.now())
        return repo

    async def get_repository(self, registry: RegistryRef, name: RepositoryName) -> Repository:
        async with self._metadata.transaction() as tx:
            return await self._repo(tx, registry, name)

    async def repository_for_push(self, registry: RegistryRef, name: RepositoryName) -> Repository:
        """The repository a push goes to (created on first push when so configured)."""
        async with self._metadata.transaction() as tx:
            repo = await tx.repositories.get(registry, name)
        if repo is not None:
            return repo
        try:
            async with self._metadata.transaction(write=True) as tx:
                return await self._repo_for_push(tx, registry, name)
        except RepositoryAlreadyExistsError:
            # Two first pushes raced to create it (on another replica, say): the other one won.
            async with self._metadata.transaction() as tx:
                return await self._repo(tx, registry, name)

    async def create_repository(self, repo: Repository, tags: dict[str, str] | None = None) -> Repository:
        """Create a repository with its resource tags, atomically. Raises RepositoryAlreadyExistsError."""
        async with self._metadata.transaction(write=True) as tx:
            created = await tx.repositories.create(repo)
            if tags:
                await tx.resource_tags.put(created.id, tags)
            await tx.events.add([ev.repository_action(repo.registry, repo.name, "CREATE", self._clock.now())])
            return created

    async def describe_repositories(
        self, registry: RegistryRef, names: Sequence[RepositoryName] | None, page: PageRequest
    ) -> Page[Repository]:
        """The named repositories (all must exist) or a page of all of them in name order."""
        async with self._metadata.transaction() as tx:
            if names is None:
                return await tx.repositories.list_page(registry, page)
            return Page([await self._repo(tx, registry, name) for name in dict.fromkeys(names)])

    async def update_repository(self, registry: RegistryRef, name: RepositoryName, **changes: object) -> Repository:
        """Change settings fields of a repository (tag_mutability, mutability_exclusions, scan_on_push)."""
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            updated = replace(repo, **changes)  # type: ignore[arg-type]
            await tx.repositories.update(updated)
            return updated

    async def resource_tags(self, registry: RegistryRef, name: RepositoryName) -> dict[str, str]:
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            return await tx.resource_tags.get(repo.id)

    async def change_resource_tags(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        *,
        add: dict[str, str] | None = None,
        remove: Sequence[str] = (),
        max_tags: int = 50,
    ) -> dict[str, str]:
        """Merge `add` and drop `remove`; TooManyTagsError past `max_tags`. Returns the new tags."""
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            current = await tx.resource_tags.get(repo.id)
            merged = {k: v for k, v in {**current, **(add or {})}.items() if k not in set(remove)}
            if len([k for k in merged if not k.startswith("aws:")]) > max_tags:
                raise TooManyTagsError(max_tags)
            await tx.resource_tags.delete(repo.id, list(remove))
            await tx.resource_tags.put(repo.id, add or {})
            return merged

    async def delete_repository(self, registry: RegistryRef, name: RepositoryName, *, force: bool) -> Repository:
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            if not force and (await tx.images.list_page(repo.id, PageRequest(limit=1))).items:
                raise RepositoryNotEmptyError(name, registry.account_id)
            now = self._clock.now()
            await tx.repositories.delete(repo.id, now)
            await tx.events.add([ev.repository_action(registry, name, "DELETE", now)])
            return repo

    async def catalog(self, registry: RegistryRef, page: PageRequest) -> Page[str]:
        async with self._metadata.transaction() as tx:
            repos = await tx.repositories.list_page(registry, page)
        return Page([r.name for r in repos.items], repos.next_after)

    # -- manifests ---------------------------------------------------------------------------

    async def put_manifest(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        body: bytes,
        content_type: str | None,
        *,
        tag: str | None = None,
        digest: Digest | None = None,
        create_repository: bool | None = None,
        principal: str | None = None,
        require_blobs: bool = True,
    ) -> ManifestPut:
        """Store a manifest, optionally tagging it. `principal`: the pushing principal's ARN
        (for the push hooks; None for Moorage's own pushes). `digest`, when given, must be the body's digest.
        `require_blobs=False` (pull-through imports only) stores it before its blobs are linked:
        the cache fetches them from the upstream when they are first pulled.

        Raises ManifestInvalidError / UnsupportedError (bad document), DigestInvalidError,
        TagInvalidError, TooLargeError, ManifestBlobUnknownError, ImageTagAlreadyExistsError,
        RepositoryNotFoundError.
        """
        if len(body) > self.limits.max_manifest_bytes:
            raise TooLargeError("manifest", self.limits.max_manifest_bytes)
        if tag is not None:
            parse_tag(tag)
        actual = Digest("sha256", hashlib.sha256(body).hexdigest())
        if digest is not None and digest != actual:
            if digest.algorithm != "sha256":
                actual = Digest(digest.algorithm, hashlib.new(digest.algorithm, body).hexdigest())
            if digest != actual:
                raise DigestInvalidError(f"manifest digest {actual} does not match {digest}")
        parsed = mf.parse(body, content_type)
        refs = _references(parsed)
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            repo = await self._repo_for_push(tx, registry, name, create=create_repository)
            missing = await tx.blobs.missing(repo.id, parsed.blob_references) if require_blobs else []
            if missing:
                raise ManifestBlobUnknownError([str(d) for d in missing])
            missing = await tx.images.missing(repo.id, parsed.manifest_references)
            if missing:
                raise ManifestBlobUnknownError([str(d) for d in missing], children=True)
            if tag is not None and tag_is_immutable(repo, tag):
                current = await tx.images.get_by_tag(repo.id, tag, with_body=False)
                if current is not None:
                    raise ImageTagAlreadyExistsError(tag, name, registry.account_id)
            image = Image(
                registry=registry,
                repository=name,
                digest=actual,
                media_type=parsed.media_type,
                size=len(body),
                pushed_at=now,
                artifact_type=parsed.artifact_type,
                subject=parsed.subject.digest if parsed.subject else None,
                config_media_type=parsed.config.media_type if parsed.config else None,
                image_size=await self._image_size(tx, repo.id, parsed),
            )
            created = await tx.images.put(repo.id, image, body, refs)
            changed = created
            if tag is not None:
                changed = await tx.images.set_tag(repo.id, tag, actual, now) != actual or changed
            if not created:
                stored = await tx.images.get(repo.id, actual, with_body=False)
                if stored is not None and stored.status(now) != "ACTIVE":
                    # Pushing an archived (or still activating) image again restores it at once (§8).
                    await tx.images.set_storage_class(repo.id, actual, "STANDARD", activated_at=now)
                    stored = replace(stored, storage_class="STANDARD", last_activated_at=now)
                    changed = True
                image = stored if stored is not None else image
            # Every manifest PUT is one event, as ECR emits them (an idempotent re-push included).
            push = ev.image_action(
                registry,
                name,
                actual,
                "PUSH",
                now,
                tag=tag,
                manifest_media_type=parsed.media_type,
                artifact_media_type=parsed.artifact_type or (parsed.config.media_type if parsed.config else None),
            )
            work = 0
            for hook in self.push_hooks:
                work |= await hook(tx, repo, image, principal, now)
            await tx.events.add([replace(push, work=work)])
        tags = (tag,) if tag is not None else ()
        return ManifestPut(replace(image, tags=tags, body=body), created, changed)

    async def _image_size(self, tx: Transaction, repo_id: int, parsed: mf.ParsedManifest) -> int:
        if not parsed.manifest_references:
            return parsed.image_size
        # ECR reports the largest child's size for a manifest list / index.
        sizes = [0]
        for child in parsed.manifest_references:
            image = await tx.images.get(repo_id, child, with_body=False)
            if image is not None:
                sizes.append(image.image_size)
        return max(sizes)

    async def get_manifest(
        self, registry: RegistryRef, name: RepositoryName, reference: str, *, with_body: bool = True
    ) -> Image:
        """The manifest named by a tag or a digest, when it can be pulled: an archived or activating
        image is not (§8). Raises RepositoryNotFoundError or ManifestUnknownError, also for a
        reference that is neither a valid tag nor a digest: it names no manifest (the distribution
        spec's 404; only a PUT with such a reference is TAG_INVALID).

        Answered from the process's read cache when it holds the manifest (at most
        READ_CACHE_SECONDS old; see ReadCache)."""
        key = (registry, str(name), reference)
        cached = self._manifests.get(key)
        fits = cached is not None and (cached.body is not None or not with_body)
        if cached is not None and fits and cached.status(self._clock.now()) == "ACTIVE":
            return cached
        started = self._manifests.begin()
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            try:
                if Digest.looks_like(reference):
                    image = await tx.images.get(repo.id, Digest.parse(reference), with_body=with_body)
                else:
                    image = await tx.images.get_by_tag(repo.id, parse_tag(reference), with_body=with_body)
            except (TagInvalidError, DigestInvalidError):
                raise ManifestUnknownError(IMAGE_NOT_FOUND, reference) from None
        if image is None or image.status(self._clock.now()) != "ACTIVE":
            raise ManifestUnknownError(IMAGE_NOT_FOUND, reference)
        self._manifests.put(key, image, started, len(image.body or b""))
        return image

    async def delete_manifest(self, registry: RegistryRef, name: RepositoryName, reference: str) -> None:
        """Delete by digest (the image and all its tags) or by tag (that tag only).

        An image that an index in the repository still lists cannot be deleted
        (ManifestInvalidError, ECR's ImageReferencedByManifestList)."""
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            now = self._clock.now()
            if not Digest.looks_like(reference):
                tag = parse_tag(reference)
                untagged = await tx.images.remove_tag(repo.id, tag)
                if untagged is None:
                    raise ManifestUnknownError(IMAGE_NOT_FOUND, reference)
                await tx.events.add([ev.image_action(registry, name, untagged, "DELETE", now, tag=tag)])
                return
            digest = Digest.parse(reference)
            if await tx.images.get(repo.id, digest, with_body=False) is None:
                raise ManifestUnknownError(IMAGE_NOT_FOUND, reference)
            parents = await tx.images.referenced_by(repo.id, digest)
            if parents:
                raise ManifestInvalidError(f"image {digest} is referenced by the index {parents[0]}; delete that first")
            tags = await tx.images.delete(repo.id, digest, now)
            await tx.events.add(ev.image_deleted(registry, name, digest, tags, now))
            await delete_referrers(tx, repo, digest, now)

    async def list_tags(self, registry: RegistryRef, name: RepositoryName, page: PageRequest) -> Page[str]:
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            return await tx.images.tags(repo.id, page)

    async def referrers(
        self, registry: RegistryRef, name: RepositoryName, subject: Digest, artifact_type: str | None = None
    ) -> list[Image]:
        """Manifests whose `subject` is `subject` (bodies included, for their annotations),
        optionally only those of one artifact type."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            found = await tx.images.referrers(repo.id, subject)
            if artifact_type is not None:
                found = [i for i in found if i.artifact_type == artifact_type]
            bodies = [await tx.images.get(repo.id, i.digest) for i in found]
        return [b for b in bodies if b is not None]

    # -- blobs -------------------------------------------------------------------------------

    async def stat_blob(
        self, registry: RegistryRef, name: RepositoryName, digest: Digest, *, cached: bool = False
    ) -> BlobInfo:
        """The blob's size when the repository links it. Raises RepositoryNotFoundError, BlobUnknownError.
        `cached`: may come from the process's read cache (at most READ_CACHE_SECONDS old)."""
        key = (registry, str(name), str(digest))
        if cached:
            hit = self._links.get(key)
            if hit is not None:
                return hit
        started = self._links.begin()
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            info = await tx.blobs.linked(repo.id, digest)
        if info is None:
            raise BlobUnknownError(str(digest))
        self._links.put(key, info, started)
        return info

    async def open_blob(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        digest: Digest,
        byte_range: ByteRange | None = None,
        *,
        allow_redirect: bool = False,
    ) -> BlobStream:
        """Open a linked blob for reading, optionally a byte range of it. With `allow_redirect`,
        a store that can serve clients directly (S3 pre-signed URLs) answers with a URL instead.
        Raises BlobUnknownError, RangeNotSatisfiableError."""
        info = await self.stat_blob(registry, name, digest)
        span = None
        if byte_range is not None:
            span = byte_range.resolve(info.size)
            if span is None:
                raise RangeNotSatisfiableError(info.size)
        if allow_redirect and span is None:
            url = await self._blobs.redirect_url(digest, method="GET", expires_in=timedelta(minutes=20))
            if url is not None:
                return BlobStream(info, None, None, None, url)
        path = self._blobs.local_path(digest)
        if path is not None:
            return BlobStream(info, span, path, None)
        chunks = self._blobs.read(digest, ByteRange(*span) if span else None)
        return BlobStream(info, span, None, chunks)

    async def delete_blob(self, registry: RegistryRef, name: RepositoryName, digest: Digest) -> None:
        """Unlink a blob from the repository (its bytes are reclaimed by GC when nothing uses them)."""
        async with self._metadata.transaction(write=True) as tx:
            repo = await self._repo(tx, registry, name)
            if not await tx.blobs.unlink(repo.id, digest):
                raise BlobUnknownError(str(digest))

    async def mount_blob(
        self, registry: RegistryRef, name: RepositoryName, source: RepositoryName, digest: Digest
    ) -> BlobInfo | None:
        """Link a blob that `source` (same registry) links into `name`; None when it cannot be
        mounted (ECR mounts only when the registry's BLOB_MOUNTING setting is ENABLED)."""
        if await self.account_setting(registry, "BLOB_MOUNTING") != "ENABLED":
            return None
        async with self._metadata.transaction(write=True) as tx:
            src = await tx.repositories.get(registry, source)
            if src is None:
                return None
            info = await tx.blobs.linked(src.id, digest)
            if info is None:
                return None
            repo = await self._repo_for_push(tx, registry, name)
            if not await tx.blobs.claim(info, self._clock.now()):
                return None
            await tx.blobs.link(repo.id, digest, self._clock.now())
            return info

    async def layer(
        self, registry: RegistryRef, name: RepositoryName, digest: Digest, *, referenced: bool = True
    ) -> tuple[BlobInfo, str] | None:
        """A blob the repository links, with the media type a manifest gives it ("" when unknown).
        With `referenced`, only blobs some manifest of the repository references count."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            info = await tx.blobs.linked(repo.id, digest)
            if info is None:
                return None
            media_type = await tx.blobs.referenced(repo.id, digest)
        if media_type is None and referenced:
            return None
        return info, media_type or ""

    async def blob_referenced(self, registry: RegistryRef, name: RepositoryName, digest: Digest) -> bool:
        """Whether a manifest of the repository references the blob (linked or not yet)."""
        async with self._metadata.transaction() as tx:
            repo = await tx.repositories.get(registry, name)
            return repo is not None and await tx.blobs.referenced(repo.id, digest) is not None
