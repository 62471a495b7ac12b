"""The Images service: ECR's image-level queries and batch operations over one repository.

ECR addresses images by `ImageIdentifier` (a tag, a digest, or both) and reports per-item
failures instead of failing a whole batch. The rules live here, not in the wire layer:

- a digest must look like `alg:hex` (`InvalidImageDigest`), a tag must be a valid tag
  (`InvalidImageTag`), one of them must be given (`MissingDigestAndTag`), and when both are
  given they must name the same image (`ImageTagDoesNotMatchDigest`);
- deleting by tag removes the tag, and the image with it when it was the last tag; deleting by
  digest removes the image and all its tags; an image an index still lists cannot be deleted
  (`ImageReferencedByManifestList`);
- pulling by tag converts between Docker schema 2 and OCI when the caller does not accept the
  stored type (ECR's format conversion); pulling by digest never converts;
- storage classes (semantics.md §8): an ACTIVE image can be archived (ARCHIVED), an archived one
  restored (ACTIVATING for `restore_delay`, then ACTIVE); anything else is refused. Archived and
  activating images cannot be pulled (`ImageInaccessible`) and are listed only when the status
  filter asks for them. Referrers follow their subject.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Literal

from moorage import events as ev
from moorage import manifests as mf
from moorage.clock import Clock
from moorage.errors import ManifestUnknownError, RepositoryNotFoundError, StorageClassUpdateError, TagInvalidError
from moorage.metadata import MetadataStore, Transaction
from moorage.model import Digest, Image, Page, PageRequest, RegistryRef, Repository, RepositoryName, parse_tag
from moorage.pulls import PullTimes
from moorage.registry import delete_referrers

__all__ = [
    "ImageFailure",
    "ImageRef",
    "Images",
    "StatusFilter",
    "TagStatus",
    "convert_for",
]

TagStatus = Literal["TAGGED", "UNTAGGED", "ANY"]
StatusFilter = Literal["ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"]
_ECR_DIGEST_RE = re.compile(r"[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+")
NOT_FOUND = "Requested image not found"


@dataclass(frozen=True, slots=True)
class ImageRef:
    digest: str | None = None
    tag: str | None = None


@dataclass(frozen=True, slots=True)
class ImageFailure:
    ref: ImageRef
    code: str
    reason: str


class _Failed(Exception):
    def __init__(self, code: str, reason: str) -> None:
        self.code = code
        self.reason = reason


def convert_for(image: Image, accept: Sequence[str]) -> Image | None:
    """`image` as the caller can take it: as stored when acceptable, else converted between
    Docker schema 2 and OCI (new bytes, new digest), else None."""
    if not accept or mf.negotiate(image.media_type, accept) or image.body is None:
        return image
    conversions = {
        mf.DOCKER_MANIFEST_V2: (mf.OCI_MANIFEST, mf.docker_to_oci),
        mf.DOCKER_MANIFEST_LIST: (mf.OCI_INDEX, mf.docker_to_oci),
        mf.OCI_MANIFEST: (mf.DOCKER_MANIFEST_V2, mf.oci_to_docker),
        mf.OCI_INDEX: (mf.DOCKER_MANIFEST_LIST, mf.oci_to_docker),
    }
    target = conversions.get(image.media_type)
    if target is None or not mf.negotiate(target[0], accept):
        return None
    body = target[1](image.body, image.media_type)
    if body is None:
        return None
    return replace(image, body=body, media_type=target[0], digest=mf.digest_of(body), size=len(body))


class Images:
    def __init__(
        self,
        metadata: MetadataStore,
        *,
        clock: Clock,
        pulls: PullTimes | None = None,
        restore_delay: timedelta = timedelta(0),
    ) -> None:
        self._metadata = metadata
        self._clock = clock
        self.pulls = pulls if pulls is not None else PullTimes(metadata, clock=clock)
        self.restore_delay = restore_delay

    async def _repo(self, tx: Transaction, registry: RegistryRef, name: RepositoryName) -> Repository:
        repo = await tx.repositories.get(registry, name)
        if repo is None:
            raise RepositoryNotFoundError(name, registry.account_id)
        return repo

    @staticmethod
    def _check(ref: ImageRef) -> tuple[Digest | None, str | None]:
        if ref.digest is None and ref.tag is None:
            raise _Failed("MissingDigestAndTag", "Invalid request parameters: both tag and digest cannot be null")
        digest = None
        if ref.digest is not None:
            if not _ECR_DIGEST_RE.fullmatch(ref.digest):
                raise _Failed(
                    "InvalidImageDigest",
                    "Invalid request parameters: image digest should satisfy the regex '[a-zA-Z0-9-_+.]+:[a-fA-F0-9]+'",
                )
            try:
                digest = Digest.parse(ref.digest)
            except Exception:
                raise _Failed("ImageNotFound", NOT_FOUND) from None
        if ref.tag is not None:
            try:
                parse_tag(ref.tag)
            except TagInvalidError:
                raise _Failed("InvalidImageTag", f"Invalid request parameters: invalid image tag '{ref.tag}'") from None
        return digest, ref.tag

    async def _resolve(
        self, tx: Transaction, repo_id: int, ref: ImageRef, *, with_body: bool, with_tags: bool = True
    ) -> Image:
        digest, tag = self._check(ref)
        image = None
        if tag is not None:
            image = await tx.images.get_by_tag(repo_id, tag, with_body=with_body, with_tags=with_tags)
            if image is not None and digest is not None and image.digest != digest:
                if await tx.images.get(repo_id, digest, with_body=False) is None:
                    raise _Failed("ImageNotFound", NOT_FOUND)
                raise _Failed(
                    "ImageTagDoesNotMatchDigest",
                    "Invalid request parameters: image tag does not match digest",
                )
        elif digest is not None:
            image = await tx.images.get(repo_id, digest, with_body=with_body, with_tags=with_tags)
        if image is None:
            raise _Failed("ImageNotFound", NOT_FOUND)
        return image

    async def resolve(self, registry: RegistryRef, name: RepositoryName, ref: ImageRef) -> Image:
        """One image (with tags, without body). Raises ManifestUnknownError, RepositoryNotFoundError."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            try:
                return await self._resolve(tx, repo.id, ref, with_body=False)
            except _Failed as failed:
                raise ManifestUnknownError(failed.reason, ref.tag or ref.digest or "") from None

    async def batch_get(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        refs: Sequence[ImageRef],
        accepted: Sequence[str],
        *,
        principal_arn: str | None = None,
    ) -> tuple[list[tuple[ImageRef, Image]], list[ImageFailure]]:
        """The images, with their bodies and without their tags (a pull: records their pull time
        for `principal_arn`, see pulls.py)."""
        found: list[tuple[ImageRef, Image]] = []
        failures: list[ImageFailure] = []
        pulled: dict[Digest, Image] = {}
        now = self._clock.now()
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            for ref in refs:
                try:
                    image = await self._resolve(tx, repo.id, ref, with_body=True, with_tags=False)
                    status = image.status(now)
                    if status != "ACTIVE":
                        raise _Failed(
                            "ImageInaccessible",
                            "The requested image is archived and cannot be pulled"
                            if status == "ARCHIVED"
                            else "The requested image is being restored from archive and cannot be pulled yet",
                        )
                    served = image if ref.tag is None else convert_for(image, accepted)
                    if served is None or (
                        ref.tag is None and accepted and not mf.negotiate(image.media_type, accepted)
                    ):
                        raise _Failed("ImageNotFound", NOT_FOUND)
                    found.append((ref, served))
                    pulled[image.digest] = image
                except _Failed as failed:
                    failures.append(ImageFailure(ref, failed.code, failed.reason))
        for image in pulled.values():
            self.pulls.note(image, principal_arn)
        return found, failures

    async def batch_delete(
        self, registry: RegistryRef, name: RepositoryName, refs: Sequence[ImageRef]
    ) -> tuple[list[tuple[Digest, str | None]], list[ImageFailure]]:
        """Delete images / tags; return the (digest, tag) references actually removed."""
        removed: list[tuple[Digest, str | None]] = []
        failures: list[ImageFailure] = []
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            for ref in refs:
                try:
                    removed += await self._delete_one(tx, repo.id, ref, repo)
                except _Failed as failed:
                    failures.append(ImageFailure(ref, failed.code, failed.reason))
            now = self._clock.now()
            await tx.events.add(
                [ev.image_action(registry, name, digest, "DELETE", now, tag=tag) for digest, tag in removed]
            )
        return removed, failures

    async def _delete_one(
        self, tx: Transaction, repo_id: int, ref: ImageRef, repo: Repository | None = None
    ) -> list[tuple[Digest, str | None]]:
        image = await self._resolve(tx, repo_id, ref, with_body=False)
        if ref.tag is not None and ref.digest is None and len(image.tags) > 1:
            await tx.images.remove_tag(repo_id, ref.tag)
            return [(image.digest, ref.tag)]
        parents = await tx.images.referenced_by(repo_id, image.digest)
        if parents:
            raise _Failed(
                "ImageReferencedByManifestList",
                f"Requested image is referenced by a manifest list: [{', '.join(map(str, parents))}]",
            )
        tags = await tx.images.delete(repo_id, image.digest, self._clock.now())
        if repo is not None:
            await delete_referrers(tx, repo, image.digest, self._clock.now())
        return [(image.digest, t) for t in tags] if tags else [(image.digest, None)]

    async def describe(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        refs: Sequence[ImageRef] | None,
        tag_status: TagStatus,
        page: PageRequest,
        image_status: StatusFilter = "ACTIVE",
    ) -> Page[Image]:
        """Image details (with tags, without bodies). With `refs`, each must exist
        (ManifestUnknownError naming the first that does not), whatever its status; without, only
        images whose status passes `image_status`."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            if refs is not None:
                images: dict[Digest, Image] = {}
                for ref in refs:
                    try:
                        image = await self._resolve(tx, repo.id, ref, with_body=False)
                    except _Failed:
                        raise ManifestUnknownError(NOT_FOUND, image_id=(ref.digest, ref.tag)) from None
                    images.setdefault(image.digest, image)
                return Page(list(images.values()))
            return await self._scan(tx, repo.id, tag_status, page, image_status)

    async def _scan(
        self,
        tx: Transaction,
        repo_id: int,
        tag_status: TagStatus,
        page: PageRequest,
        image_status: StatusFilter = "ACTIVE",
    ) -> Page[Image]:
        """A page of images passing the tag and status filters, fetching underlying pages until full."""
        wanted = page.limit
        after = page.after
        out: list[Image] = []
        now = self._clock.now()
        while True:
            # One row past the page in the same query: no second query just to learn a next page exists.
            batch = await tx.images.list_page(repo_id, PageRequest(limit=max(wanted or 0, 100) + 1, after=after))
            for image in batch.items:
                if (tag_status == "TAGGED" and not image.tags) or (tag_status == "UNTAGGED" and image.tags):
                    continue
                if image_status != "ANY" and image.status(now) != image_status:
                    continue
                out.append(image)
                # One item past the page tells whether a next page exists (no empty last page).
                if wanted and len(out) > wanted:
                    return Page(out[:wanted], str(out[wanted - 1].digest))
            if batch.next_after is None:
                return Page(out, None)
            after = batch.next_after

    async def list_ids(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        tag_status: TagStatus,
        page: PageRequest,
        image_status: StatusFilter = "ACTIVE",
    ) -> Page[tuple[Digest, str | None]]:
        """One (digest, tag) entry per tag and one (digest, None) per untagged image, ordered by
        digest then tag; the page cursor is `digest` or `digest tag` of the last entry. The page
        is read from the metadata store as a page (ImageTable.list_ids), whatever the repository's size."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            return await tx.images.list_ids(
                repo.id, page, tag_status=tag_status, image_status=image_status, now=self._clock.now()
            )

    async def update_storage_class(
        self, registry: RegistryRef, name: RepositoryName, ref: ImageRef, target: Literal["STANDARD", "ARCHIVE"]
    ) -> Image:
        """UpdateImageStorageClass: archive an ACTIVE image (ARCHIVED at once) or restore an ARCHIVED one
        (ACTIVATING for `restore_delay`, then ACTIVE). Referrers of the image follow it. Returns the image
        as it is afterwards. Raises ManifestUnknownError, StorageClassUpdateError."""
        now = self._clock.now()
        async with self._metadata.transaction(write=True) as tx:
            repo = await tx.repositories.get(registry, name, for_update=True)
            if repo is None:
                raise RepositoryNotFoundError(name, registry.account_id)
            try:
                image = await self._resolve(tx, repo.id, ref, with_body=False)
            except _Failed as failed:
                raise ManifestUnknownError(failed.reason, image_id=(ref.digest, ref.tag)) from None
            status = image.status(now)
            if target == "ARCHIVE":
                if status != "ACTIVE":
                    raise StorageClassUpdateError(
                        f"The image with digest '{image.digest}' cannot be archived because its status is {status}"
                    )
                changed = replace(image, storage_class="ARCHIVE", last_archived_at=now)
            else:
                if status != "ARCHIVED":
                    raise StorageClassUpdateError(
                        f"The image with digest '{image.digest}' cannot be restored because its status is {status}"
                    )
                changed = replace(image, storage_class="STANDARD", last_activated_at=now + self.restore_delay)
            followers = [f.digest for f in await self._followers(tx, repo.id, image.digest) if f.status(now) == status]
            for digest in [image.digest, *followers]:
                await tx.images.set_storage_class(
                    repo.id,
                    digest,
                    changed.storage_class,
                    archived_at=changed.last_archived_at if target == "ARCHIVE" else None,
                    activated_at=changed.last_activated_at if target == "STANDARD" else None,
                )
        return changed

    @staticmethod
    async def _followers(tx: Transaction, repo_id: int, subject: Digest) -> list[Image]:
        """The referrers of `subject`, and theirs, transitively (they follow its storage class)."""
        out: list[Image] = []
        seen = {subject}
        stack = [subject]
        while stack:
            for referrer in await tx.images.referrers(repo_id, stack.pop()):
                if referrer.digest not in seen:
                    seen.add(referrer.digest)
                    out.append(referrer)
                    stack.append(referrer.digest)
        return out

    # -- listings a person reads (the web console) --------------------------------------------

    async def browse(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        *,
        tag_status: TagStatus = "ANY",
        tag_contains: str | None = None,
        order: Literal["pushed", "size"] = "pushed",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        with_body: bool = False,
    ) -> tuple[list[Image], int]:
        """A page of the repository's images (with tags) sorted by push time or size, and how many
        pass the filters (ImageTable.browse: a fixed number of queries). Raises RepositoryNotFoundError."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            return await tx.images.browse(
                repo.id,
                tag_status=tag_status,
                tag_contains=tag_contains,
                order=order,
                descending=descending,
                offset=offset,
                limit=limit,
                with_body=with_body,
            )

    async def summaries(self, repositories: Sequence[Repository]) -> dict[int, tuple[int, int]]:
        """(image count, total image size) per repository id, in one query."""
        async with self._metadata.transaction() as tx:
            return await tx.images.summaries([r.id for r in repositories])

    async def usage(self, registry: RegistryRef) -> tuple[int, int, int]:
        """(repositories, images, total image size) of the registry."""
        async with self._metadata.transaction() as tx:
            return await tx.images.usage(registry)
