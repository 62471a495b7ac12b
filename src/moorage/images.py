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
  stored type (ECR's format conversion); pulling by digest never converts.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from moorage import manifests as mf
from moorage.clock import Clock
from moorage.errors import ManifestUnknownError, RepositoryNotFoundError, TagInvalidError
from moorage.metadata import MetadataStore, Transaction
from moorage.model import Digest, Image, Page, PageRequest, RegistryRef, Repository, RepositoryName, parse_tag

__all__ = ["ImageFailure", "ImageRef", "Images", "TagStatus", "convert_for"]

TagStatus = Literal["TAGGED", "UNTAGGED", "ANY"]
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
    def __init__(self, metadata: MetadataStore, *, clock: Clock) -> None:
        self._metadata = metadata
        self._clock = clock

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

    async def _resolve(self, tx: Transaction, repo_id: int, ref: ImageRef, *, with_body: bool) -> Image:
        digest, tag = self._check(ref)
        image = None
        if tag is not None:
            image = await tx.images.get_by_tag(repo_id, tag, with_body=with_body, with_tags=True)
            if image is not None and digest is not None and image.digest != digest:
                if await tx.images.get(repo_id, digest, with_body=False) is None:
                    raise _Failed("ImageNotFound", NOT_FOUND)
                raise _Failed(
                    "ImageTagDoesNotMatchDigest",
                    "Invalid request parameters: image tag does not match digest",
                )
        elif digest is not None:
            image = await tx.images.get(repo_id, digest, with_body=with_body, with_tags=True)
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
        self, registry: RegistryRef, name: RepositoryName, refs: Sequence[ImageRef], accepted: Sequence[str]
    ) -> tuple[list[tuple[ImageRef, Image]], list[ImageFailure]]:
        found: list[tuple[ImageRef, Image]] = []
        failures: list[ImageFailure] = []
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            for ref in refs:
                try:
                    image = await self._resolve(tx, repo.id, ref, with_body=True)
                    served = image if ref.tag is None else convert_for(image, accepted)
                    if served is None or (
                        ref.tag is None and accepted and not mf.negotiate(image.media_type, accepted)
                    ):
                        raise _Failed("ImageNotFound", NOT_FOUND)
                    found.append((ref, served))
                except _Failed as failed:
                    failures.append(ImageFailure(ref, failed.code, failed.reason))
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
                    removed += await self._delete_one(tx, repo.id, ref)
                except _Failed as failed:
                    failures.append(ImageFailure(ref, failed.code, failed.reason))
        return removed, failures

    async def _delete_one(self, tx: Transaction, repo_id: int, ref: ImageRef) -> list[tuple[Digest, str | None]]:
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
        return [(image.digest, t) for t in tags] if tags else [(image.digest, None)]

    async def describe(
        self,
        registry: RegistryRef,
        name: RepositoryName,
        refs: Sequence[ImageRef] | None,
        tag_status: TagStatus,
        page: PageRequest,
    ) -> Page[Image]:
        """Image details (with tags, without bodies). With `refs`, each must exist
        (ManifestUnknownError naming the first that does not)."""
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            if refs is not None:
                images: dict[Digest, Image] = {}
                for ref in refs:
                    try:
                        image = await self._resolve(tx, repo.id, ref, with_body=False)
                    except _Failed:
                        raise ManifestUnknownError(NOT_FOUND, f"{ref.digest}|{ref.tag}") from None
                    images.setdefault(image.digest, image)
                return Page(list(images.values()))
            return await self._scan(tx, repo.id, tag_status, page)

    async def _scan(self, tx: Transaction, repo_id: int, tag_status: TagStatus, page: PageRequest) -> Page[Image]:
        """A page of images passing the tag filter, fetching underlying pages until full."""
        wanted = page.limit
        after = page.after
        out: list[Image] = []
        while True:
            batch = await tx.images.list_page(repo_id, PageRequest(limit=max(wanted or 0, 100), after=after))
            for image in batch.items:
                if (tag_status == "TAGGED" and not image.tags) or (tag_status == "UNTAGGED" and image.tags):
                    continue
                out.append(image)
                if wanted is not None and len(out) == wanted:
                    return Page(out, str(image.digest))
            if batch.next_after is None:
                return Page(out, None)
            after = batch.next_after

    async def list_ids(
        self, registry: RegistryRef, name: RepositoryName, tag_status: TagStatus, page: PageRequest
    ) -> Page[tuple[Digest, str | None]]:
        """One (digest, tag) entry per tag and one (digest, None) per untagged image, ordered by
        digest then tag; the page cursor is `digest` or `digest tag` of the last entry."""
        cursor_digest, _, cursor_tag = (page.after or "").partition(" ")
        entries: list[tuple[Digest, str | None]] = []
        async with self._metadata.transaction() as tx:
            repo = await self._repo(tx, registry, name)
            after = None
            if cursor_digest:
                after = cursor_digest[:-1] + chr(ord(cursor_digest[-1]) - 1) + "\U0010ffff"
            images = await self._scan(tx, repo.id, tag_status, PageRequest(None, after))
        for image in images.items:
            rows: list[tuple[Digest, str | None]] = [(image.digest, t) for t in image.tags] or [(image.digest, None)]
            for digest, tag in rows:
                if cursor_digest and (str(digest), tag or "") <= (cursor_digest, cursor_tag):
                    continue
                entries.append((digest, tag))
        limit = page.limit
        if limit is not None and len(entries) > limit:
            last = entries[limit - 1]
            return Page(entries[:limit], f"{last[0]} {last[1]}" if last[1] else str(last[0]))
        return Page(entries, None)
