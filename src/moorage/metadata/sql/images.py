"""Images: manifests, their tags and the references between them (`t.manifests`, `t.tags`,
`t.manifest_refs`). The manifest GET / HEAD path runs here: its statements are built once at import."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, bindparam, delete, exists, func, literal, or_, select, update
from sqlalchemy.engine import Row

from moorage.metadata import ManifestRef
from moorage.metadata import tables as t
from moorage.metadata.sql.base import Executor, SqlTable, dt, dt_req, paged, prebuilt, touch, ts
from moorage.metadata.sql.scans import forget_scans
from moorage.model import Digest, Image, Page, PageRequest, RegistryRef, RepositoryName

__all__ = ["SqlImages"]


_IMAGE_COLUMNS = (
    t.manifests.c.repo_id,
    t.manifests.c.digest,
    t.manifests.c.media_type,
    t.manifests.c.artifact_type,
    t.manifests.c.config_media_type,
    t.manifests.c.subject,
    t.manifests.c.size,
    t.manifests.c.image_size,
    t.manifests.c.pushed_at,
    t.manifests.c.last_pulled_at,
    t.manifests.c.storage_class,
    t.manifests.c.last_archived_at,
    t.manifests.c.last_activated_at,
)

_IMAGE_WIDTH = len(_IMAGE_COLUMNS)


def _stored(value: str) -> Digest:
    """A digest as this store wrote it (validated when the manifest was stored)."""
    algorithm, _, hexpart = value.partition(":")
    return Digest(algorithm, hexpart)


def _build(
    row: Row[Any, *tuple[Any, ...]], repo: tuple[RegistryRef, str], tags: tuple[str, ...], *, with_body: bool
) -> Image:
    """The Image of a row that selects _IMAGE_COLUMNS first (then the body, `with_body`), read by
    position: a keyed lookup per column costs a measurable share of a page of a hundred rows, and
    so do keyword arguments (the call passes Image's fields in order, see _IMAGE_FIELDS)."""
    (
        _repo_id,
        stored_digest,
        media_type,
        artifact_type,
        config_media_type,
        subject,
        size,
        image_size,
        pushed_at,
        last_pulled_at,
        storage_class,
        last_archived_at,
        last_activated_at,
    ) = row[:_IMAGE_WIDTH]
    return Image(
        repo[0],
        RepositoryName(repo[1]),
        _stored(stored_digest),
        media_type,
        size,
        dt_req(pushed_at),
        tags,
        artifact_type,
        _stored(subject) if subject else None,
        config_media_type,
        image_size,
        dt(last_pulled_at),
        bytes(row[_IMAGE_WIDTH]) if with_body else None,
        storage_class,
        dt(last_archived_at),
        dt(last_activated_at),
    )


# The order _build passes Image's fields in; a change to Image's fields must change both.
_IMAGE_FIELDS = (
    "registry",
    "repository",
    "digest",
    "media_type",
    "size",
    "pushed_at",
    "tags",
    "artifact_type",
    "subject",
    "config_media_type",
    "image_size",
    "last_pulled_at",
    "body",
    "storage_class",
    "last_archived_at",
    "last_activated_at",
)
if tuple(f.name for f in fields(Image)) != _IMAGE_FIELDS:  # pragma: no cover - caught at import
    raise ImportError("moorage.model.Image's fields changed: update _build and _IMAGE_FIELDS")


def _image_by_digest(with_body: bool) -> Select[Any]:
    m = t.manifests
    columns = (*_IMAGE_COLUMNS, m.c.body) if with_body else _IMAGE_COLUMNS
    return select(*columns).where(m.c.repo_id == bindparam("repo"), m.c.digest == bindparam("digest"))


def _image_by_tag(with_body: bool) -> Select[Any]:
    m, tg = t.manifests, t.tags
    columns = (*_IMAGE_COLUMNS, m.c.body) if with_body else _IMAGE_COLUMNS
    return (
        select(*columns)
        .select_from(tg.join(m, and_(m.c.repo_id == tg.c.repo_id, m.c.digest == tg.c.digest)))
        .where(tg.c.repo_id == bindparam("repo"), tg.c.name == bindparam("tag"))
    )


_IMAGE_BY_DIGEST = {flag: prebuilt(_image_by_digest(flag)) for flag in (False, True)}
# Tags of one image / of a page of images. No ORDER BY (names are sorted in Python), so the
# (repo_id, digest) index is the one used.
_TAGS_OF = prebuilt(
    select(t.tags.c.name).where(t.tags.c.repo_id == bindparam("repo"), t.tags.c.digest == bindparam("digest"))
)


def _list_page(after: bool, limit: bool) -> Select[Any]:
    m = t.manifests
    stmt = select(*_IMAGE_COLUMNS).where(m.c.repo_id == bindparam("repo"))
    if after:
        stmt = stmt.where(m.c.digest > bindparam("after"))
    stmt = stmt.order_by(m.c.digest)
    return stmt.limit(bindparam("limit")) if limit else stmt


# A page of a repository's images in digest order, (cursor?, limit?): built once each.
_LIST_PAGE = {(after, limit): prebuilt(_list_page(after, limit)) for after in (False, True) for limit in (False, True)}
_TAGS_OF_MANY = prebuilt(
    select(t.tags.c.digest, t.tags.c.name).where(
        t.tags.c.repo_id == bindparam("repo"), t.tags.c.digest.in_(bindparam("digests", expanding=True))
    )
)
# The tags of a page of list_page: its rows are every manifest of the repository whose digest
# lies between the first and the last (one snapshot), so a range of the (repo_id, digest) index
# holds exactly their tags, and reads at about half the cost of an IN list of a hundred digests.
_TAGS_OF_RANGE = prebuilt(
    select(t.tags.c.digest, t.tags.c.name).where(
        t.tags.c.repo_id == bindparam("repo"),
        t.tags.c.digest >= bindparam("first"),
        t.tags.c.digest <= bindparam("last"),
    )
)
_IMAGE_BY_TAG = {flag: prebuilt(_image_by_tag(flag)) for flag in (False, True)}


def _tag_page(after: bool, limit: bool) -> Select[Any]:
    """A page of a repository's tag names in the OCI spec's order: case-insensitive, the exact
    name breaking ties ("A" < "a"), after the cursor (`after`, `after_folded`: it lowercased)."""
    tg = t.tags
    folded = func.lower(tg.c.name)
    stmt = select(tg.c.name).where(tg.c.repo_id == bindparam("repo"))
    if after:
        # `folded >= cursor` on its own lets the index range start at the cursor
        # (ix_tags_repo_folded); the OR then drops the names up to it within equal foldings.
        stmt = stmt.where(
            folded >= bindparam("after_folded"),
            or_(folded > bindparam("after_folded"), tg.c.name > bindparam("after")),
        )
    stmt = stmt.order_by(folded, tg.c.name)
    return stmt.limit(bindparam("limit")) if limit else stmt


_TAG_PAGE = {(after, limit): prebuilt(_tag_page(after, limit)) for after in (False, True) for limit in (False, True)}


def _list_ids(tag_status: str, image_status: str, cursor: bool, limit: bool) -> Select[Any]:
    """ListImages entries as rows (digest, tag or NULL) in (digest, tag) order: manifests joined to
    their tags (outer for ANY, inner for TAGGED; UNTAGGED keeps manifests without any), walked along
    the (repo_id, digest) primary key from the cursor so a page reads about a page of rows."""
    m, tg = t.manifests, t.tags
    on = and_(tg.c.repo_id == m.c.repo_id, tg.c.digest == m.c.digest)
    key: ColumnElement[str]
    if tag_status == "UNTAGGED":
        stmt = select(m.c.digest, literal(None, tg.c.name.type).label("name")).where(~exists().where(on))
        key = literal("", tg.c.name.type)
    elif tag_status == "TAGGED":
        stmt = select(m.c.digest, tg.c.name).select_from(m.join(tg, on))
        key = tg.c.name
    else:
        stmt = select(m.c.digest, tg.c.name).select_from(m.outerjoin(tg, on))
        key = func.coalesce(tg.c.name, "")
    stmt = stmt.where(m.c.repo_id == bindparam("repo"))
    if cursor:
        # The range on the key's first column is what lets the index start at the cursor.
        after_digest: ColumnElement[str] = bindparam("after_digest")
        if tag_status == "UNTAGGED":
            stmt = stmt.where(m.c.digest > after_digest)
        else:
            stmt = stmt.where(m.c.digest >= after_digest, or_(m.c.digest > after_digest, key > bindparam("after_tag")))
    if image_status != "ANY":
        archived = m.c.storage_class == "ARCHIVE"
        activating = and_(m.c.last_activated_at.is_not(None), m.c.last_activated_at > bindparam("now"))
        stmt = stmt.where(
            archived
            if image_status == "ARCHIVED"
            else and_(~archived, activating if image_status == "ACTIVATING" else ~activating)
        )
    stmt = stmt.order_by(m.c.digest) if tag_status == "UNTAGGED" else stmt.order_by(m.c.digest, key)
    return stmt.limit(bindparam("limit")) if limit else stmt


# Every combination is small and ListImages is a listing users page through: built once at import.
_LIST_IDS = {
    (tag_status, image_status, cursor, limit): prebuilt(_list_ids(tag_status, image_status, cursor, limit))
    for tag_status in ("TAGGED", "UNTAGGED", "ANY")
    for image_status in ("ACTIVE", "ARCHIVED", "ACTIVATING", "ANY")
    for cursor in (False, True)
    for limit in (False, True)
}

# The push path's statements (PutImage, manifest PUT), built once like the read path's.
_INSERT_REF = prebuilt(t.manifest_refs.insert())
_INSERT_TAG = prebuilt(t.tags.insert())
_TAG_TARGET = prebuilt(
    select(t.tags.c.digest).where(t.tags.c.repo_id == bindparam("repo"), t.tags.c.name == bindparam("tag"))
)
_MOVE_TAG = prebuilt(
    update(t.tags)
    .where(t.tags.c.repo_id == bindparam("repo"), t.tags.c.name == bindparam("tag"))
    .values(digest=bindparam("new_digest"), updated_at=bindparam("updated"))
)


class SqlImages(SqlTable):
    def __init__(self, conn: Executor, dialect: str, repos: dict[int, tuple[RegistryRef, str]]) -> None:
        super().__init__(conn, dialect)
        self._repos = repos

    async def _repo(self, repo_id: int) -> tuple[RegistryRef, str]:
        known = self._repos.get(repo_id)
        if known is None:
            r = t.repositories
            row = (await self._c.execute(select(r.c.account_id, r.c.region, r.c.name).where(r.c.id == repo_id))).one()
            known = (RegistryRef(row.account_id, row.region), row.name)
            self._repos[repo_id] = known
        return known

    async def _image(
        self,
        row: Row[Any, *tuple[Any, ...]],
        *,
        with_body: bool,
        with_tags: bool,
        tags: tuple[str, ...] | None = None,
    ) -> Image:
        repo = await self._repo(row[0])
        tag_names: tuple[str, ...] = tags or ()
        if with_tags and tags is None:
            rows = await self._c.execute(_TAGS_OF, {"repo": row[0], "digest": row[1]})
            tag_names = tuple(sorted(r[0] for r in rows))
        return _build(row, repo, tag_names, with_body=with_body)

    async def put(self, repo_id: int, image: Image, body: bytes, refs: Sequence[ManifestRef]) -> bool:
        row = {
            "repo_id": repo_id,
            "digest": str(image.digest),
            "media_type": image.media_type,
            "artifact_type": image.artifact_type,
            "config_media_type": image.config_media_type,
            "subject": str(image.subject) if image.subject else None,
            "size": len(body),
            "image_size": image.image_size,
            "body": body,
            "pushed_at": ts(image.pushed_at),
        }
        result = await self._c.execute(self._insert_ignore(t.manifests), row)
        if result.rowcount != 1:
            return False
        unique = {str(child): (kind, media_type) for child, kind, media_type in refs}
        if unique:
            await self._c.execute(
                _INSERT_REF,
                [
                    {
                        "repo_id": repo_id,
                        "parent": str(image.digest),
                        "child": child,
                        "kind": kind,
                        "media_type": media_type,
                    }
                    for child, (kind, media_type) in unique.items()
                ],
            )
        return True

    async def get(
        self, repo_id: int, digest: Digest, *, with_body: bool = True, with_tags: bool = False
    ) -> Image | None:
        stmt = _IMAGE_BY_DIGEST[with_body]
        row = (await self._c.execute(stmt, {"repo": repo_id, "digest": str(digest)})).first()
        return None if row is None else await self._image(row, with_body=with_body, with_tags=with_tags)

    async def get_by_tag(
        self, repo_id: int, tag: str, *, with_body: bool = True, with_tags: bool = False
    ) -> Image | None:
        row = (await self._c.execute(_IMAGE_BY_TAG[with_body], {"repo": repo_id, "tag": tag})).first()
        return None if row is None else await self._image(row, with_body=with_body, with_tags=with_tags)

    async def list_page(self, repo_id: int, page: PageRequest) -> Page[Image]:
        params: dict[str, Any] = {"repo": repo_id}
        if page.after is not None:
            params["after"] = page.after
        if page.limit is not None:
            params["limit"] = page.limit + 1
        stmt = _LIST_PAGE[page.after is not None, page.limit is not None]
        rows = (await self._c.execute(stmt, params)).all()
        more = page.limit is not None and len(rows) > page.limit
        if more:
            rows = rows[: page.limit]
        if not rows:
            return Page([], None)
        # One query for the tags of the whole page, not one per image.
        tags: dict[str, list[str]] = {}
        found = await self._c.execute(_TAGS_OF_RANGE, {"repo": repo_id, "first": rows[0][1], "last": rows[-1][1]})
        for digest, tag in found:
            tags.setdefault(digest, []).append(tag)
        repo = await self._repo(repo_id)
        images = [_build(row, repo, tuple(sorted(tags.get(row[1], ()))), with_body=False) for row in rows]
        return Page(images, str(images[-1].digest) if more else None)

    async def list_ids(
        self,
        repo_id: int,
        page: PageRequest,
        *,
        tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
        image_status: Literal["ACTIVE", "ARCHIVED", "ACTIVATING", "ANY"] = "ANY",
        now: datetime,
    ) -> Page[tuple[Digest, str | None]]:
        after_digest, _, after_tag = (page.after or "").partition(" ")
        params: dict[str, Any] = {"repo": repo_id, "now": ts(now)}
        if after_digest:
            params.update(after_digest=after_digest, after_tag=after_tag)
        if page.limit is not None:
            params["limit"] = page.limit + 1
        stmt = _LIST_IDS[tag_status, image_status, bool(after_digest), page.limit is not None]
        parse = Digest.parse
        entries = [(parse(digest), tag) for digest, tag in await self._c.execute(stmt, params)]
        return paged(entries, page.limit, lambda entry: f"{entry[0]} {entry[1]}" if entry[1] else str(entry[0]))

    async def tags(self, repo_id: int, page: PageRequest) -> Page[str]:
        params: dict[str, Any] = {"repo": repo_id}
        if page.after is not None:
            params.update(after=page.after, after_folded=page.after.lower())
        if page.limit is not None:
            params["limit"] = page.limit + 1
        rows = await self._c.execute(_TAG_PAGE[page.after is not None, page.limit is not None], params)
        return paged([row[0] for row in rows], page.limit, lambda name: name)

    async def set_tag(self, repo_id: int, tag: str, digest: Digest, now: datetime) -> Digest | None:
        previous = (await self._c.execute(_TAG_TARGET, {"repo": repo_id, "tag": tag})).scalar()
        if previous is None:
            row = {"repo_id": repo_id, "name": tag, "digest": str(digest), "updated_at": ts(now)}
            await self._c.execute(_INSERT_TAG, row)
            return None
        if previous != str(digest):
            await self._c.execute(
                _MOVE_TAG, {"repo": repo_id, "tag": tag, "new_digest": str(digest), "updated": ts(now)}
            )
        return Digest.parse(previous)

    async def remove_tag(self, repo_id: int, tag: str) -> Digest | None:
        tg = t.tags
        previous = (
            await self._c.execute(select(tg.c.digest).where(tg.c.repo_id == repo_id, tg.c.name == tag))
        ).scalar()
        if previous is None:
            return None
        await self._c.execute(delete(tg).where(tg.c.repo_id == repo_id, tg.c.name == tag))
        return Digest.parse(previous)

    async def delete(self, repo_id: int, digest: Digest, now: datetime) -> list[str]:
        tg, m, refs = t.tags, t.manifests, t.manifest_refs
        names = [
            row[0]
            for row in await self._c.execute(
                select(tg.c.name).where(tg.c.repo_id == repo_id, tg.c.digest == str(digest)).order_by(tg.c.name)
            )
        ]
        await self._c.execute(delete(tg).where(tg.c.repo_id == repo_id, tg.c.digest == str(digest)))
        children = await self._c.execute(
            select(refs.c.child).where(refs.c.repo_id == repo_id, refs.c.parent == str(digest), refs.c.kind == "blob")
        )
        await touch(self._c, self._dialect, [row[0] for row in children], now)
        await self._c.execute(delete(refs).where(refs.c.repo_id == repo_id, refs.c.parent == str(digest)))
        await self._c.execute(delete(m).where(m.c.repo_id == repo_id, m.c.digest == str(digest)))
        await forget_scans(self._c, repo_id, str(digest))
        return names

    async def referenced_by(self, repo_id: int, digest: Digest) -> list[Digest]:
        refs = t.manifest_refs
        stmt = (
            select(refs.c.parent)
            .where(refs.c.repo_id == repo_id, refs.c.child == str(digest), refs.c.kind == "manifest")
            .order_by(refs.c.parent)
        )
        return [Digest.parse(row[0]) for row in await self._c.execute(stmt)]

    async def referrers(self, repo_id: int, subject: Digest) -> list[Image]:
        m = t.manifests
        # Sorted here, not by ORDER BY digest: with that, SQLite walks the whole repository along
        # the primary key instead of using ix_manifests_subject (62 ms vs 0.03 ms at 10,000 images).
        stmt = select(*_IMAGE_COLUMNS).where(m.c.repo_id == repo_id, m.c.subject == str(subject))
        rows = sorted((await self._c.execute(stmt)).all(), key=lambda row: str(row.digest))
        return [await self._image(row, with_body=False, with_tags=False) for row in rows]

    async def missing(self, repo_id: int, digests: Sequence[Digest]) -> list[Digest]:
        if not digests:
            return []
        m = t.manifests
        wanted = {str(d) for d in digests}
        found = {
            row[0]
            for row in await self._c.execute(
                select(m.c.digest).where(m.c.repo_id == repo_id, m.c.digest.in_(sorted(wanted)))
            )
        }
        return [d for d in digests if str(d) not in found]

    async def scan(self, repo_id: int) -> list[Image]:
        # The lifecycle job reads whole repositories (100,000 images): plain tuples, stored digests
        # taken as they are (they were validated on the way in), one datetime per stored time.
        m, tg = t.manifests, t.tags
        registry, name = await self._repo(repo_id)
        repository = RepositoryName(name)
        tags: dict[str, list[str]] = {}
        for digest, tag in await self._c.execute(
            select(tg.c.digest, tg.c.name).where(tg.c.repo_id == repo_id).order_by(tg.c.name)
        ):
            tags.setdefault(digest, []).append(tag)
        columns = (
            m.c.digest,
            m.c.media_type,
            m.c.size,
            m.c.pushed_at,
            m.c.artifact_type,
            m.c.subject,
            m.c.config_media_type,
            m.c.image_size,
            m.c.last_pulled_at,
            m.c.storage_class,
            m.c.last_archived_at,
            m.c.last_activated_at,
        )
        rows = await self._c.execute(select(*columns).where(m.c.repo_id == repo_id).order_by(m.c.digest))
        stamp = datetime.fromtimestamp
        images = []
        for (
            digest,
            media,
            size,
            pushed,
            artifact,
            subject,
            config,
            image_size,
            pulled,
            cls,
            archived,
            activated,
        ) in rows:
            images.append(
                Image(
                    registry,
                    repository,
                    Digest(*digest.split(":", 1)),
                    media,
                    size,
                    stamp(pushed, UTC),
                    tuple(tags.get(digest, ())),
                    artifact,
                    Digest(*subject.split(":", 1)) if subject else None,
                    config,
                    image_size,
                    None if pulled is None else stamp(pulled, UTC),
                    None,
                    cls,
                    None if archived is None else stamp(archived, UTC),
                    None if activated is None else stamp(activated, UTC),
                )
            )
        return images

    async def children(self, repo_id: int) -> list[tuple[Digest, Digest]]:
        refs = t.manifest_refs
        stmt = select(refs.c.parent, refs.c.child).where(refs.c.repo_id == repo_id, refs.c.kind == "manifest")
        return [(Digest.parse(parent), Digest.parse(child)) for parent, child in await self._c.execute(stmt)]

    async def set_storage_class(
        self,
        repo_id: int,
        digest: Digest,
        storage_class: str,
        *,
        archived_at: datetime | None = None,
        activated_at: datetime | None = None,
    ) -> bool:
        m = t.manifests
        values: dict[str, Any] = {"storage_class": storage_class}
        if archived_at is not None:
            values["last_archived_at"] = ts(archived_at)
        if activated_at is not None:
            values["last_activated_at"] = ts(activated_at)
        result = await self._c.execute(
            update(m).where(m.c.repo_id == repo_id, m.c.digest == str(digest)).values(values)
        )
        return bool(result.rowcount == 1)

    async def browse(
        self,
        repo_id: int,
        *,
        tag_status: Literal["TAGGED", "UNTAGGED", "ANY"] = "ANY",
        tag_contains: str | None = None,
        order: Literal["pushed", "size"] = "pushed",
        descending: bool = True,
        offset: int = 0,
        limit: int = 50,
        with_body: bool = False,
    ) -> tuple[list[Image], int]:
        m, tg = t.manifests, t.tags
        where: list[ColumnElement[bool]] = [m.c.repo_id == repo_id]
        # Uncorrelated IN / NOT IN subqueries: the database reads the repository's tags once per
        # query (not once per image), whatever the repository's size.
        tagged = select(tg.c.digest).where(tg.c.repo_id == repo_id)
        if tag_status == "TAGGED":
            where.append(m.c.digest.in_(tagged))
        elif tag_status == "UNTAGGED":
            where.append(m.c.digest.not_in(tagged))
        if tag_contains:
            escaped = tag_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append(m.c.digest.in_(tagged.where(tg.c.name.like(f"%{escaped}%", escape="\\"))))
        if tag_status == "UNTAGGED" and tag_contains:
            return [], 0  # an untagged image has no tag to contain anything
        total = await self._browse_total(repo_id, tag_status, tag_contains)
        key = m.c.pushed_at if order == "pushed" else m.c.image_size
        ordering = (key.desc(), m.c.digest.desc()) if descending else (key.asc(), m.c.digest.asc())
        # The page's digests first, walking the (repo_id, key, digest) index; then their rows.
        page = select(m.c.digest).where(*where).order_by(*ordering).limit(max(limit, 0)).offset(max(offset, 0))
        digests = [row[0] for row in await self._c.execute(page)]
        if not digests:
            return [], total
        columns = (*_IMAGE_COLUMNS, m.c.body) if with_body else _IMAGE_COLUMNS
        found = {
            row.digest: row
            for row in await self._c.execute(select(*columns).where(m.c.repo_id == repo_id, m.c.digest.in_(digests)))
        }
        tags: dict[str, list[str]] = {}
        for digest, tag in await self._c.execute(_TAGS_OF_MANY, {"repo": repo_id, "digests": digests}):
            tags.setdefault(digest, []).append(tag)
        images = [
            await self._image(found[d], with_body=with_body, with_tags=True, tags=tuple(sorted(tags.get(d, ()))))
            for d in digests
            if d in found
        ]
        return images, total

    async def _browse_total(self, repo_id: int, tag_status: str, tag_contains: str | None) -> int:
        """How many images pass browse's filters, counted over the tags (a tag always names an image
        of its repository) rather than by probing the tags once per image."""
        m, tg = t.manifests, t.tags
        tagged = select(func.count(tg.c.digest.distinct())).where(tg.c.repo_id == repo_id)
        if tag_contains:
            escaped = tag_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            tagged = tagged.where(tg.c.name.like(f"%{escaped}%", escape="\\"))
        if tag_status == "TAGGED" or tag_contains:
            return int((await self._c.execute(tagged)).scalar() or 0)
        every = int((await self._c.execute(select(func.count()).where(m.c.repo_id == repo_id))).scalar() or 0)
        if tag_status == "ANY":
            return every
        return every - int((await self._c.execute(tagged)).scalar() or 0)

    async def summaries(self, repo_ids: Sequence[int]) -> dict[int, tuple[int, int]]:
        if not repo_ids:
            return {}
        m = t.manifests
        stmt = (
            select(m.c.repo_id, func.count(), func.coalesce(func.sum(m.c.image_size), 0))
            .where(m.c.repo_id.in_(sorted(set(repo_ids))))
            .group_by(m.c.repo_id)
        )
        return {int(repo): (int(count), int(size)) for repo, count, size in await self._c.execute(stmt)}

    async def usage(self, registry: RegistryRef) -> tuple[int, int, int]:
        m, r = t.manifests, t.repositories
        repos = (
            await self._c.execute(
                select(func.count()).where(r.c.account_id == registry.account_id, r.c.region == registry.region)
            )
        ).scalar()
        stmt = (
            select(func.count(), func.coalesce(func.sum(m.c.image_size), 0))
            .select_from(m.join(r, r.c.id == m.c.repo_id))
            .where(r.c.account_id == registry.account_id, r.c.region == registry.region)
        )
        count, size = (await self._c.execute(stmt)).one()
        return int(repos or 0), int(count), int(size)

    async def record_pull(self, repo_id: int, digest: Digest, now: datetime, *, unless_since: datetime) -> bool:
        m = t.manifests
        result = await self._c.execute(
            update(m)
            .where(
                m.c.repo_id == repo_id,
                m.c.digest == str(digest),
                or_(m.c.last_pulled_at.is_(None), m.c.last_pulled_at < ts(unless_since)),
            )
            .values(last_pulled_at=ts(now))
        )
        return bool(result.rowcount == 1)
