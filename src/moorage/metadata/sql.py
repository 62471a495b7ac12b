"""SqlMetadataStore: the MetadataStore on SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg).

Dialect differences live in small named functions here:
- `_engine_url`: plain `sqlite:///` / `postgresql://` URLs are mapped to the async drivers.
- `_on_sqlite_connect` / `_on_sqlite_begin`: WAL, foreign keys, a busy timeout, and `BEGIN IMMEDIATE`
  for write transactions, so SQLite writers queue on the database lock up front instead of
  failing when a read lock cannot be upgraded.
- `_insert_ignore`: `INSERT ... ON CONFLICT DO NOTHING` in either dialect.
PostgreSQL serialises writers per repository with `SELECT ... FOR UPDATE` on the repository row.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    Select,
    Table,
    and_,
    bindparam,
    create_engine,
    delete,
    event,
    false,
    func,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import RootTransaction, Row
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import Insert

from moorage.errors import RepositoryAlreadyExistsError
from moorage.metadata import (
    AccessKeyRecord,
    BlobTable,
    IdentityTable,
    ImageTable,
    KvTable,
    LeaseTable,
    LifecycleEvent,
    LifecyclePolicyRecord,
    LifecyclePreviewRecord,
    LifecycleTable,
    ManifestRef,
    PolicyTable,
    PullExclusionTable,
    RepositoryTable,
    ResourceTagTable,
    Transaction,
    UploadTable,
)
from moorage.metadata import tables as t
from moorage.model import (
    BlobInfo,
    Digest,
    Image,
    Page,
    PageRequest,
    RegistryRef,
    Repository,
    RepositoryName,
    UploadSession,
    UploadState,
)

__all__ = ["SqlMetadataStore", "async_url"]

_WRITE = "moorage_write"


def async_url(url: str) -> str:
    """Map a plain database URL to the SQLAlchemy async driver URL."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _dt_req(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _page(items: list[Any], limit: int | None, key: Any) -> Page[Any]:
    if limit is not None and len(items) > limit:
        items = items[:limit]
        return Page(items, key(items[-1]) if items else None)
    return Page(items, None)


def _limit(stmt: Select[Any], page: PageRequest) -> Select[Any]:
    return stmt if page.limit is None else stmt.limit(page.limit + 1)


class _Executor(Protocol):
    async def execute(self, statement: Executable, parameters: Any = None) -> Any: ...

    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...


class _SyncReads:
    """Runs a read transaction's statements on a synchronous SQLite connection, in the event
    loop's thread: WAL readers never wait for writers, and an indexed point query costs a few
    microseconds, far less than the thread hop every aiosqlite call makes."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> Any:
        return self._conn.execute(statement, parameters)

    def begin_nested(self) -> AbstractAsyncContextManager[Any]:
        raise RuntimeError("read transactions do not write")


class _Base:
    def __init__(self, conn: _Executor, dialect: str) -> None:
        self._c = conn
        self._dialect = dialect

    def _insert_ignore(self, table: Table) -> Insert:
        if self._dialect == "postgresql":
            return postgresql.insert(table).on_conflict_do_nothing()
        return sqlite.insert(table).on_conflict_do_nothing()


async def _touch(conn: _Executor, dialect: str, digests: Sequence[str], now: datetime) -> None:
    """Make blobs GC candidates touched at `now` (inserted, or their time moved forward)."""
    if not digests:
        return
    rows = [{"digest": d, "since": _ts(now)} for d in sorted(set(digests))]
    insert = postgresql.insert(t.gc_candidates) if dialect == "postgresql" else sqlite.insert(t.gc_candidates)
    stmt = insert.on_conflict_do_update(index_elements=["digest"], set_={"since": insert.excluded.since})
    await conn.execute(stmt, rows)


def _repository(row: Row[Any]) -> Repository:
    m = row._mapping
    return Repository(
        registry=RegistryRef(m["account_id"], m["region"]),
        name=RepositoryName(m["name"]),
        created_at=_dt_req(m["created_at"]),
        tag_mutability=m["tag_mutability"],
        mutability_exclusions=tuple(json.loads(m["mutability_exclusions"])),
        scan_on_push=bool(m["scan_on_push"]),
        encryption_type=m["encryption_type"],
        kms_key=m["kms_key"],
        id=m["id"],
    )


# Hot-path statements, built once: constructing SQLAlchemy expressions costs more than running
# an indexed SQLite query.
_REPO_BY_NAME = select(t.repositories).where(
    t.repositories.c.account_id == bindparam("account"),
    t.repositories.c.region == bindparam("region"),
    t.repositories.c.name == bindparam("name"),
)
_REPO_BY_NAME_LOCKED = _REPO_BY_NAME.with_for_update()


class _Repositories(_Base):
    def __init__(self, conn: _Executor, dialect: str, known: dict[int, tuple[RegistryRef, str]]) -> None:
        super().__init__(conn, dialect)
        self._known = known

    async def create(self, repo: Repository) -> Repository:
        values = {
            "account_id": repo.registry.account_id,
            "region": repo.registry.region,
            "name": repo.name,
            "created_at": _ts(repo.created_at),
            **self._settings(repo),
        }
        # ON CONFLICT DO NOTHING rather than catching the unique violation: no savepoint needed,
        # and on PostgreSQL the transaction stays usable.
        result = await self._c.execute(self._insert_ignore(t.repositories).values(values))
        if result.rowcount != 1:
            raise RepositoryAlreadyExistsError(repo.name, repo.registry.account_id)
        params = {"account": repo.registry.account_id, "region": repo.registry.region, "name": repo.name}
        new_id = (await self._c.execute(_REPO_BY_NAME, params)).first().id
        return Repository(
            registry=repo.registry,
            name=repo.name,
            created_at=repo.created_at,
            tag_mutability=repo.tag_mutability,
            mutability_exclusions=repo.mutability_exclusions,
            scan_on_push=repo.scan_on_push,
            encryption_type=repo.encryption_type,
            kms_key=repo.kms_key,
            id=int(new_id),
        )

    @staticmethod
    def _settings(repo: Repository) -> dict[str, Any]:
        return {
            "tag_mutability": repo.tag_mutability,
            "mutability_exclusions": json.dumps(list(repo.mutability_exclusions)),
            "scan_on_push": repo.scan_on_push,
            "encryption_type": repo.encryption_type,
            "kms_key": repo.kms_key,
        }

    async def get(self, registry: RegistryRef, name: RepositoryName, *, for_update: bool = False) -> Repository | None:
        params = {"account": registry.account_id, "region": registry.region, "name": name}
        row = (await self._c.execute(_REPO_BY_NAME_LOCKED if for_update else _REPO_BY_NAME, params)).first()
        if row is None:
            return None
        repo = _repository(row)
        self._known[repo.id] = (repo.registry, repo.name)
        return repo

    async def list_page(
        self, registry: RegistryRef, page: PageRequest, *, prefix: str | None = None
    ) -> Page[Repository]:
        r = t.repositories
        stmt = select(r).where(r.c.account_id == registry.account_id, r.c.region == registry.region)
        if page.after is not None:
            stmt = stmt.where(r.c.name > page.after)
        if prefix:
            stmt = stmt.where(r.c.name >= prefix, r.c.name < prefix + "\U0010ffff")
        rows = (await self._c.execute(_limit(stmt.order_by(r.c.name), page))).all()
        return _page([_repository(row) for row in rows], page.limit, lambda repo: repo.name)

    async def update(self, repo: Repository) -> None:
        await self._c.execute(update(t.repositories).where(t.repositories.c.id == repo.id).values(self._settings(repo)))

    async def delete(self, repo_id: int, now: datetime) -> None:
        rb = t.repo_blobs
        linked = await self._c.execute(select(rb.c.digest).where(rb.c.repo_id == repo_id))
        await _touch(self._c, self._dialect, [row[0] for row in linked], now)
        # Children first: SQLite enforces ON DELETE CASCADE only with foreign_keys=ON, and being
        # explicit keeps the order obvious on every dialect.
        for table in (
            t.uploads,
            t.tags,
            t.manifest_refs,
            t.manifests,
            t.repo_blobs,
            t.resource_tags,
            t.repository_policies,
            t.lifecycle_policies,
            t.lifecycle_previews,
        ):
            await self._c.execute(delete(table).where(table.c.repo_id == repo_id))
        await self._c.execute(delete(t.repositories).where(t.repositories.c.id == repo_id))


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


_IMAGE_BY_DIGEST = {flag: _image_by_digest(flag) for flag in (False, True)}
# Tags of one image / of a page of images. No ORDER BY (names are sorted in Python), so the
# (repo_id, digest) index is the one used.
_TAGS_OF = select(t.tags.c.name).where(t.tags.c.repo_id == bindparam("repo"), t.tags.c.digest == bindparam("digest"))
_TAGS_OF_MANY = select(t.tags.c.digest, t.tags.c.name).where(
    t.tags.c.repo_id == bindparam("repo"), t.tags.c.digest.in_(bindparam("digests", expanding=True))
)
_IMAGE_BY_TAG = {flag: _image_by_tag(flag) for flag in (False, True)}


class _Images(_Base):
    def __init__(self, conn: _Executor, dialect: str, repos: dict[int, tuple[RegistryRef, str]]) -> None:
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
        m = row._mapping
        registry, name = await self._repo(m["repo_id"])
        digest = Digest.parse(m["digest"])
        tag_names: tuple[str, ...] = tags or ()
        if with_tags and tags is None:
            rows = await self._c.execute(_TAGS_OF, {"repo": m["repo_id"], "digest": m["digest"]})
            tag_names = tuple(sorted(r[0] for r in rows))
        return Image(
            registry=registry,
            repository=RepositoryName(name),
            digest=digest,
            media_type=m["media_type"],
            size=m["size"],
            pushed_at=_dt_req(m["pushed_at"]),
            tags=tag_names,
            artifact_type=m["artifact_type"],
            subject=Digest.parse(m["subject"]) if m["subject"] else None,
            config_media_type=m["config_media_type"],
            image_size=m["image_size"],
            last_pulled_at=_dt(m["last_pulled_at"]),
            body=bytes(m["body"]) if with_body else None,
            storage_class=m["storage_class"],
            last_archived_at=_dt(m["last_archived_at"]),
            last_activated_at=_dt(m["last_activated_at"]),
        )

    async def put(self, repo_id: int, image: Image, body: bytes, refs: Sequence[ManifestRef]) -> bool:
        m = t.manifests
        stmt = self._insert_ignore(m).values(
            repo_id=repo_id,
            digest=str(image.digest),
            media_type=image.media_type,
            artifact_type=image.artifact_type,
            config_media_type=image.config_media_type,
            subject=str(image.subject) if image.subject else None,
            size=len(body),
            image_size=image.image_size,
            body=body,
            pushed_at=_ts(image.pushed_at),
        )
        result = await self._c.execute(stmt)
        if result.rowcount != 1:
            return False
        unique = {str(child): (kind, media_type) for child, kind, media_type in refs}
        if unique:
            await self._c.execute(
                t.manifest_refs.insert(),
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
        m = t.manifests
        stmt = select(*_IMAGE_COLUMNS).where(m.c.repo_id == repo_id)
        if page.after is not None:
            stmt = stmt.where(m.c.digest > page.after)
        rows = (await self._c.execute(_limit(stmt.order_by(m.c.digest), page))).all()
        if page.limit is not None:
            rows = rows[: page.limit + 1]
        # One query for the tags of the whole page, not one per image.
        tags: dict[str, list[str]] = {}
        if rows:
            found = await self._c.execute(_TAGS_OF_MANY, {"repo": repo_id, "digests": [r.digest for r in rows]})
            for digest, tag in found:
                tags.setdefault(digest, []).append(tag)
        images = [
            await self._image(row, with_body=False, with_tags=True, tags=tuple(sorted(tags.get(row.digest, ()))))
            for row in rows
        ]
        return _page(images, page.limit, lambda image: str(image.digest))

    async def tags(self, repo_id: int, page: PageRequest) -> Page[str]:
        # The OCI spec's lexical order is case-insensitive; the exact name breaks ties ("A" < "a").
        tg = t.tags
        folded = func.lower(tg.c.name)
        stmt = select(tg.c.name).where(tg.c.repo_id == repo_id)
        if page.after is not None:
            after = page.after
            stmt = stmt.where(or_(folded > after.lower(), and_(folded == after.lower(), tg.c.name > after)))
        rows = (await self._c.execute(_limit(stmt.order_by(folded, tg.c.name), page))).all()
        return _page([row[0] for row in rows], page.limit, lambda name: name)

    async def set_tag(self, repo_id: int, tag: str, digest: Digest, now: datetime) -> Digest | None:
        tg = t.tags
        previous = (
            await self._c.execute(select(tg.c.digest).where(tg.c.repo_id == repo_id, tg.c.name == tag))
        ).scalar()
        if previous is None:
            await self._c.execute(
                tg.insert().values(repo_id=repo_id, name=tag, digest=str(digest), updated_at=_ts(now))
            )
            return None
        if previous != str(digest):
            await self._c.execute(
                update(tg)
                .where(tg.c.repo_id == repo_id, tg.c.name == tag)
                .values(digest=str(digest), updated_at=_ts(now))
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
        await _touch(self._c, self._dialect, [row[0] for row in children], now)
        await self._c.execute(delete(refs).where(refs.c.repo_id == repo_id, refs.c.parent == str(digest)))
        await self._c.execute(delete(m).where(m.c.repo_id == repo_id, m.c.digest == str(digest)))
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
        stmt = select(*_IMAGE_COLUMNS).where(m.c.repo_id == repo_id, m.c.subject == str(subject)).order_by(m.c.digest)
        rows = (await self._c.execute(stmt)).all()
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
            values["last_archived_at"] = _ts(archived_at)
        if activated_at is not None:
            values["last_activated_at"] = _ts(activated_at)
        result = await self._c.execute(
            update(m).where(m.c.repo_id == repo_id, m.c.digest == str(digest)).values(values)
        )
        return bool(result.rowcount == 1)

    async def record_pull(self, repo_id: int, digest: Digest, now: datetime, *, unless_since: datetime) -> bool:
        m = t.manifests
        result = await self._c.execute(
            update(m)
            .where(
                m.c.repo_id == repo_id,
                m.c.digest == str(digest),
                or_(m.c.last_pulled_at.is_(None), m.c.last_pulled_at < _ts(unless_since)),
            )
            .values(last_pulled_at=_ts(now))
        )
        return bool(result.rowcount == 1)


_LINKED_BLOB = (
    select(t.blobs.c.size)
    .select_from(t.repo_blobs.join(t.blobs, t.blobs.c.digest == t.repo_blobs.c.digest))
    .where(
        t.repo_blobs.c.repo_id == bindparam("repo"),
        t.repo_blobs.c.digest == bindparam("digest"),
        t.blobs.c.deleting == false(),
    )
)


class _Blobs(_Base):
    async def add(self, info: BlobInfo, now: datetime) -> None:
        await self._c.execute(
            self._insert_ignore(t.blobs).values(digest=str(info.digest), size=info.size, created_at=_ts(now))
        )

    async def get(self, digest: Digest) -> BlobInfo | None:
        b = t.blobs
        size = (
            await self._c.execute(select(b.c.size).where(b.c.digest == str(digest), b.c.deleting == false()))
        ).scalar()
        return None if size is None else BlobInfo(digest, int(size))

    async def link(self, repo_id: int, digest: Digest, now: datetime) -> None:
        await self._c.execute(
            self._insert_ignore(t.repo_blobs).values(repo_id=repo_id, digest=str(digest), linked_at=_ts(now))
        )

    async def linked(self, repo_id: int, digest: Digest) -> BlobInfo | None:
        size = (await self._c.execute(_LINKED_BLOB, {"repo": repo_id, "digest": str(digest)})).scalar()
        return None if size is None else BlobInfo(digest, int(size))

    async def missing(self, repo_id: int, digests: Sequence[Digest]) -> list[Digest]:
        if not digests:
            return []
        rb, b = t.repo_blobs, t.blobs
        wanted = sorted({str(d) for d in digests})
        stmt = (
            select(rb.c.digest)
            .select_from(rb.join(b, b.c.digest == rb.c.digest))
            .where(rb.c.repo_id == repo_id, rb.c.digest.in_(wanted), b.c.deleting == false())
        )
        found = {row[0] for row in await self._c.execute(stmt)}
        return [d for d in digests if str(d) not in found]

    async def unlink(self, repo_id: int, digest: Digest) -> bool:
        rb = t.repo_blobs
        result = await self._c.execute(delete(rb).where(rb.c.repo_id == repo_id, rb.c.digest == str(digest)))
        return bool(result.rowcount > 0)

    async def claim(self, info: BlobInfo, now: datetime) -> bool:
        b = t.blobs
        await self._c.execute(
            self._insert_ignore(b).values(digest=str(info.digest), size=info.size, created_at=_ts(now))
        )
        deleting = (
            await self._c.execute(select(b.c.deleting).where(b.c.digest == str(info.digest)).with_for_update())
        ).scalar()
        if deleting:
            return False
        await _touch(self._c, self._dialect, [str(info.digest)], now)
        return True

    async def gc_candidates(self, touched_before: datetime, limit: int) -> list[Digest]:
        c = t.gc_candidates
        stmt = select(c.c.digest).where(c.c.since < _ts(touched_before)).order_by(c.c.since).limit(limit)
        return [Digest.parse(row[0]) for row in await self._c.execute(stmt)]

    async def mark_deleting(self, digest: Digest, touched_before: datetime) -> BlobInfo | None:
        b, c, refs = t.blobs, t.gc_candidates, t.manifest_refs
        key = str(digest)
        row = (await self._c.execute(select(b.c.size, b.c.deleting).where(b.c.digest == key).with_for_update())).first()
        since = (await self._c.execute(select(c.c.since).where(c.c.digest == key).with_for_update())).scalar()
        if row is None or since is None or since >= _ts(touched_before):
            if row is None:
                await self._c.execute(delete(c).where(c.c.digest == key))
            return None
        used = (await self._c.execute(select(refs.c.child).where(refs.c.child == key).limit(1))).first()
        await self._c.execute(delete(c).where(c.c.digest == key))
        if used is not None:
            return None
        await self._c.execute(update(b).where(b.c.digest == key).values(deleting=True))
        return BlobInfo(digest, int(row.size))

    async def mark_deleting_many(self, digests: Sequence[Digest], touched_before: datetime) -> list[BlobInfo]:
        # The set form of `mark_deleting`: same rules, five statements for the whole batch.
        b, c, refs = t.blobs, t.gc_candidates, t.manifest_refs
        keys = sorted({str(d) for d in digests})
        if not keys:
            return []
        sizes = {
            row.digest: int(row.size)
            for row in await self._c.execute(select(b.c.digest, b.c.size).where(b.c.digest.in_(keys)).with_for_update())
        }
        since = {
            row.digest: row.since
            for row in await self._c.execute(
                select(c.c.digest, c.c.since).where(c.c.digest.in_(keys)).with_for_update()
            )
        }
        cutoff = _ts(touched_before)
        due = [k for k in keys if k in sizes and k in since and since[k] < cutoff]
        used = set()
        if due:
            used = {
                row[0] for row in await self._c.execute(select(refs.c.child).where(refs.c.child.in_(due)).distinct())
            }
        dropped = [k for k in keys if k not in sizes] + due
        if dropped:
            await self._c.execute(delete(c).where(c.c.digest.in_(dropped)))
        marked = [k for k in due if k not in used]
        if marked:
            await self._c.execute(update(b).where(b.c.digest.in_(marked)).values(deleting=True))
        return [BlobInfo(Digest.parse(k), sizes[k]) for k in marked]

    async def in_use(self, digest: Digest) -> bool:
        refs = t.manifest_refs
        row = (await self._c.execute(select(refs.c.child).where(refs.c.child == str(digest)).limit(1))).first()
        return row is not None

    async def deleting(self, limit: int) -> list[Digest]:
        b = t.blobs
        rows = await self._c.execute(select(b.c.digest).where(b.c.deleting == true()).limit(limit))
        return [Digest.parse(row[0]) for row in rows]

    async def forget(self, digest: Digest) -> None:
        key = str(digest)
        await self._c.execute(delete(t.repo_blobs).where(t.repo_blobs.c.digest == key))
        await self._c.execute(delete(t.gc_candidates).where(t.gc_candidates.c.digest == key))
        await self._c.execute(delete(t.blobs).where(t.blobs.c.digest == key))

    async def forget_many(self, digests: Sequence[Digest]) -> None:
        keys = sorted({str(d) for d in digests})
        if keys:
            await self._c.execute(delete(t.repo_blobs).where(t.repo_blobs.c.digest.in_(keys)))
            await self._c.execute(delete(t.gc_candidates).where(t.gc_candidates.c.digest.in_(keys)))
            await self._c.execute(delete(t.blobs).where(t.blobs.c.digest.in_(keys)))

    async def referenced(self, repo_id: int, digest: Digest) -> str | None:
        refs = t.manifest_refs
        stmt = (
            select(refs.c.media_type)
            .where(refs.c.repo_id == repo_id, refs.c.child == str(digest), refs.c.kind == "blob")
            .limit(1)
        )
        row = (await self._c.execute(stmt)).first()
        return None if row is None else (row[0] or "")


class _ResourceTags(_Base):
    async def get(self, repo_id: int) -> dict[str, str]:
        rt = t.resource_tags
        rows = await self._c.execute(select(rt.c.key, rt.c.value).where(rt.c.repo_id == repo_id).order_by(rt.c.key))
        return {str(key): str(value) for key, value in rows}

    async def put(self, repo_id: int, tags: dict[str, str]) -> None:
        rt = t.resource_tags
        if not tags:
            return
        await self._c.execute(delete(rt).where(rt.c.repo_id == repo_id, rt.c.key.in_(sorted(tags))))
        await self._c.execute(rt.insert(), [{"repo_id": repo_id, "key": k, "value": v} for k, v in tags.items()])

    async def delete(self, repo_id: int, keys: Sequence[str]) -> None:
        rt = t.resource_tags
        if keys:
            await self._c.execute(delete(rt).where(rt.c.repo_id == repo_id, rt.c.key.in_(sorted(set(keys)))))


def _key_record(row: Row[Any, *tuple[Any, ...]]) -> AccessKeyRecord:
    m = row._mapping
    return AccessKeyRecord(m["id"], m["account_id"], m["user_name"], m["secret"], _dt_req(m["created_at"]))


class _Identities(_Base):
    async def create_account(self, account_id: str, now: datetime) -> bool:
        result = await self._c.execute(self._insert_ignore(t.accounts).values(id=account_id, created_at=_ts(now)))
        return bool(result.rowcount == 1)

    async def accounts(self) -> list[str]:
        return [row[0] for row in await self._c.execute(select(t.accounts.c.id).order_by(t.accounts.c.id))]

    async def delete_account(self, account_id: str) -> bool:
        await self._c.execute(delete(t.user_policies).where(t.user_policies.c.account_id == account_id))
        await self._c.execute(delete(t.access_keys).where(t.access_keys.c.account_id == account_id))
        await self._c.execute(delete(t.users).where(t.users.c.account_id == account_id))
        result = await self._c.execute(delete(t.accounts).where(t.accounts.c.id == account_id))
        return bool(result.rowcount == 1)

    async def create_user(self, account_id: str, name: str, now: datetime) -> bool:
        result = await self._c.execute(
            self._insert_ignore(t.users).values(account_id=account_id, name=name, created_at=_ts(now))
        )
        return bool(result.rowcount == 1)

    async def users(self, account_id: str) -> list[str]:
        u = t.users
        return [
            row[0]
            for row in await self._c.execute(select(u.c.name).where(u.c.account_id == account_id).order_by(u.c.name))
        ]

    async def delete_user(self, account_id: str, name: str) -> bool:
        k, u, up = t.access_keys, t.users, t.user_policies
        await self._c.execute(delete(up).where(up.c.account_id == account_id, up.c.user_name == name))
        await self._c.execute(delete(k).where(k.c.account_id == account_id, k.c.user_name == name))
        result = await self._c.execute(delete(u).where(u.c.account_id == account_id, u.c.name == name))
        return bool(result.rowcount == 1)

    async def user_exists(self, account_id: str, name: str) -> bool:
        u = t.users
        row = (await self._c.execute(select(u.c.name).where(u.c.account_id == account_id, u.c.name == name))).first()
        return row is not None

    async def add_key(self, record: AccessKeyRecord) -> None:
        await self._c.execute(
            t.access_keys.insert().values(
                id=record.access_key_id,
                account_id=record.account_id,
                user_name=record.user_name,
                secret=record.secret_ciphertext,
                created_at=_ts(record.created_at),
            )
        )

    async def key(self, access_key_id: str) -> AccessKeyRecord | None:
        row = (await self._c.execute(select(t.access_keys).where(t.access_keys.c.id == access_key_id))).first()
        return None if row is None else _key_record(row)

    async def keys(self, account_id: str | None = None) -> list[AccessKeyRecord]:
        k = t.access_keys
        stmt = select(k).order_by(k.c.account_id, k.c.id)
        if account_id is not None:
            stmt = stmt.where(k.c.account_id == account_id)
        return [_key_record(row) for row in await self._c.execute(stmt)]

    async def delete_key(self, access_key_id: str) -> bool:
        result = await self._c.execute(delete(t.access_keys).where(t.access_keys.c.id == access_key_id))
        return bool(result.rowcount == 1)


class _Policies(_Base):
    async def repository_policy(self, repo_id: int) -> str | None:
        rp = t.repository_policies
        value = (await self._c.execute(select(rp.c.document).where(rp.c.repo_id == repo_id))).scalar()
        return None if value is None else str(value)

    async def put_repository_policy(self, repo_id: int, document: str, now: datetime) -> None:
        rp = t.repository_policies
        values = {"repo_id": repo_id, "document": document, "updated_at": _ts(now)}
        await self._upsert(rp, values, ["repo_id"])

    async def delete_repository_policy(self, repo_id: int) -> bool:
        rp = t.repository_policies
        result = await self._c.execute(delete(rp).where(rp.c.repo_id == repo_id))
        return bool(result.rowcount == 1)

    async def any_repository_policy(self, registry: RegistryRef) -> bool:
        rp, r = t.repository_policies, t.repositories
        stmt = (
            select(rp.c.repo_id)
            .select_from(rp.join(r, r.c.id == rp.c.repo_id))
            .where(r.c.account_id == registry.account_id, r.c.region == registry.region)
            .limit(1)
        )
        return (await self._c.execute(stmt)).first() is not None

    async def registry_policy(self, registry: RegistryRef) -> str | None:
        gp = t.registry_policies
        stmt = select(gp.c.document).where(gp.c.account_id == registry.account_id, gp.c.region == registry.region)
        value = (await self._c.execute(stmt)).scalar()
        return None if value is None else str(value)

    async def put_registry_policy(self, registry: RegistryRef, document: str, now: datetime) -> None:
        values = {
            "account_id": registry.account_id,
            "region": registry.region,
            "document": document,
            "updated_at": _ts(now),
        }
        await self._upsert(t.registry_policies, values, ["account_id", "region"])

    async def delete_registry_policy(self, registry: RegistryRef) -> bool:
        gp = t.registry_policies
        result = await self._c.execute(
            delete(gp).where(gp.c.account_id == registry.account_id, gp.c.region == registry.region)
        )
        return bool(result.rowcount == 1)

    async def user_policies(self, account_id: str, user_name: str) -> list[tuple[str, str]]:
        up = t.user_policies
        stmt = (
            select(up.c.name, up.c.document)
            .where(up.c.account_id == account_id, up.c.user_name == user_name)
            .order_by(up.c.name)
        )
        return [(str(name), str(document)) for name, document in await self._c.execute(stmt)]

    async def put_user_policy(self, account_id: str, user_name: str, name: str, document: str, now: datetime) -> bool:
        up = t.user_policies
        key = (up.c.account_id == account_id, up.c.user_name == user_name, up.c.name == name)
        existed = (await self._c.execute(select(up.c.name).where(*key))).first() is not None
        values = {
            "account_id": account_id,
            "user_name": user_name,
            "name": name,
            "document": document,
            "updated_at": _ts(now),
        }
        await self._upsert(up, values, ["account_id", "user_name", "name"])
        return not existed

    async def delete_user_policy(self, account_id: str, user_name: str, name: str) -> bool:
        up = t.user_policies
        result = await self._c.execute(
            delete(up).where(up.c.account_id == account_id, up.c.user_name == user_name, up.c.name == name)
        )
        return bool(result.rowcount == 1)

    async def _upsert(self, table: Table, values: dict[str, Any], key: list[str]) -> None:
        changes = {k: v for k, v in values.items() if k not in key}
        if self._dialect == "postgresql":
            pg = postgresql.insert(table).values(values)
            await self._c.execute(pg.on_conflict_do_update(index_elements=key, set_=changes))
        else:
            lite = sqlite.insert(table).values(values)
            await self._c.execute(lite.on_conflict_do_update(index_elements=key, set_=changes))


def _policy_record(row: Row[Any, *tuple[Any, ...]]) -> LifecyclePolicyRecord:
    m = row._mapping
    return LifecyclePolicyRecord(m["document"], _dt_req(m["updated_at"]), _dt(m["last_evaluated_at"]))


class _Lifecycle(_Base):
    async def policy(self, repo_id: int) -> LifecyclePolicyRecord | None:
        lp = t.lifecycle_policies
        row = (await self._c.execute(select(lp).where(lp.c.repo_id == repo_id))).first()
        return None if row is None else _policy_record(row)

    async def put_policy(self, repo_id: int, document: str, now: datetime) -> None:
        lp = t.lifecycle_policies
        values = {"repo_id": repo_id, "document": document, "updated_at": _ts(now)}
        changes = {"document": document, "updated_at": _ts(now)}
        if self._dialect == "postgresql":
            pg = postgresql.insert(lp).values(values)
            await self._c.execute(pg.on_conflict_do_update(index_elements=["repo_id"], set_=changes))
        else:
            lite = sqlite.insert(lp).values(values)
            await self._c.execute(lite.on_conflict_do_update(index_elements=["repo_id"], set_=changes))

    async def delete_policy(self, repo_id: int) -> LifecyclePolicyRecord | None:
        record = await self.policy(repo_id)
        if record is not None:
            lp = t.lifecycle_policies
            await self._c.execute(delete(lp).where(lp.c.repo_id == repo_id))
        return record

    async def evaluated(self, repo_id: int, at: datetime) -> None:
        lp = t.lifecycle_policies
        await self._c.execute(update(lp).where(lp.c.repo_id == repo_id).values(last_evaluated_at=_ts(at)))

    async def with_policies(
        self, registry: RegistryRef | None = None, name: RepositoryName | None = None
    ) -> list[tuple[Repository, LifecyclePolicyRecord]]:
        lp, r = t.lifecycle_policies, t.repositories
        stmt = select(r, lp.c.document, lp.c.updated_at, lp.c.last_evaluated_at).select_from(
            lp.join(r, r.c.id == lp.c.repo_id)
        )
        if registry is not None:
            stmt = stmt.where(r.c.account_id == registry.account_id, r.c.region == registry.region)
        if name is not None:
            stmt = stmt.where(r.c.name == name)
        rows = await self._c.execute(stmt.order_by(r.c.id))
        return [(_repository(row), _policy_record(row)) for row in rows]

    async def preview(self, repo_id: int) -> LifecyclePreviewRecord | None:
        pv = t.lifecycle_previews
        row = (await self._c.execute(select(pv).where(pv.c.repo_id == repo_id))).first()
        if row is None:
            return None
        m = row._mapping
        return LifecyclePreviewRecord(
            m["document"], m["status"], _dt_req(m["started_at"]), _dt(m["finished_at"]), m["results"]
        )

    async def put_preview(self, repo_id: int, preview: LifecyclePreviewRecord) -> None:
        pv = t.lifecycle_previews
        changes = {
            "document": preview.document,
            "status": preview.status,
            "started_at": _ts(preview.started_at),
            "finished_at": None if preview.finished_at is None else _ts(preview.finished_at),
            "results": preview.results,
        }
        if self._dialect == "postgresql":
            pg = postgresql.insert(pv).values(repo_id=repo_id, **changes)
            await self._c.execute(pg.on_conflict_do_update(index_elements=["repo_id"], set_=changes))
        else:
            lite = sqlite.insert(pv).values(repo_id=repo_id, **changes)
            await self._c.execute(lite.on_conflict_do_update(index_elements=["repo_id"], set_=changes))

    async def add_events(self, events: Sequence[LifecycleEvent]) -> None:
        if not events:
            return
        await self._c.execute(
            t.lifecycle_events.insert(),
            [
                {
                    "account_id": e.registry.account_id,
                    "region": e.registry.region,
                    "repository": e.repository,
                    "digest": str(e.digest),
                    "tags": json.dumps(list(e.tags)),
                    "action": e.action,
                    "rule_priority": e.rule_priority,
                    "at": _ts(e.at),
                }
                for e in events
            ],
        )

    async def events(
        self, registry: RegistryRef | None = None, repository: RepositoryName | None = None, limit: int = 100
    ) -> list[LifecycleEvent]:
        ev = t.lifecycle_events
        stmt = select(ev)
        if registry is not None:
            stmt = stmt.where(ev.c.account_id == registry.account_id, ev.c.region == registry.region)
        if repository is not None:
            stmt = stmt.where(ev.c.repository == repository)
        rows = await self._c.execute(stmt.order_by(ev.c.at.desc(), ev.c.id.desc()).limit(limit))
        return [
            LifecycleEvent(
                RegistryRef(m["account_id"], m["region"]),
                RepositoryName(m["repository"]),
                Digest.parse(m["digest"]),
                tuple(json.loads(m["tags"])),
                m["action"],
                m["rule_priority"],
                _dt_req(m["at"]),
            )
            for m in (row._mapping for row in rows)
        ]


class _PullExclusions(_Base):
    @staticmethod
    def _where(registry: RegistryRef) -> Any:
        ex = t.pull_time_exclusions
        return and_(ex.c.account_id == registry.account_id, ex.c.region == registry.region)

    async def add(self, registry: RegistryRef, principal_arn: str, now: datetime) -> bool:
        result = await self._c.execute(
            self._insert_ignore(t.pull_time_exclusions).values(
                account_id=registry.account_id, region=registry.region, principal_arn=principal_arn, created_at=_ts(now)
            )
        )
        return bool(result.rowcount == 1)

    async def remove(self, registry: RegistryRef, principal_arn: str) -> bool:
        ex = t.pull_time_exclusions
        result = await self._c.execute(delete(ex).where(self._where(registry), ex.c.principal_arn == principal_arn))
        return bool(result.rowcount == 1)

    async def contains(self, registry: RegistryRef, principal_arn: str) -> bool:
        ex = t.pull_time_exclusions
        stmt = select(ex.c.principal_arn).where(self._where(registry), ex.c.principal_arn == principal_arn)
        return (await self._c.execute(stmt)).first() is not None

    async def count(self, registry: RegistryRef) -> int:
        ex = t.pull_time_exclusions
        return int((await self._c.execute(select(func.count()).select_from(ex).where(self._where(registry)))).scalar())

    async def list_page(self, registry: RegistryRef, page: PageRequest) -> Page[str]:
        ex = t.pull_time_exclusions
        stmt = select(ex.c.principal_arn).where(self._where(registry))
        if page.after is not None:
            stmt = stmt.where(ex.c.principal_arn > page.after)
        rows = (await self._c.execute(_limit(stmt.order_by(ex.c.principal_arn), page))).all()
        return _page([row[0] for row in rows], page.limit, lambda arn: arn)


class _Uploads(_Base):
    async def create(self, repo_id: int, state: UploadState, now: datetime) -> None:
        await self._c.execute(
            t.uploads.insert().values(
                id=state.upload_id,
                repo_id=repo_id,
                size=state.size,
                backend_state=json.dumps(dict(state.backend)),
                created_at=_ts(now),
                updated_at=_ts(now),
            )
        )

    async def get(self, registry: RegistryRef, name: RepositoryName, upload_id: str) -> UploadSession | None:
        u, r = t.uploads, t.repositories
        stmt = (
            select(u)
            .select_from(u.join(r, r.c.id == u.c.repo_id))
            .where(
                u.c.id == upload_id,
                r.c.account_id == registry.account_id,
                r.c.region == registry.region,
                r.c.name == name,
            )
        )
        row = (await self._c.execute(stmt)).first()
        if row is None:
            return None
        m = row._mapping
        return UploadSession(
            registry=registry,
            repository=name,
            upload_id=m["id"],
            state=UploadState(m["id"], int(m["size"]), json.loads(m["backend_state"])),
            created_at=_dt_req(m["created_at"]),
            updated_at=_dt_req(m["updated_at"]),
            part_sizes=tuple(json.loads(m["part_sizes"])),
        )

    async def save(
        self,
        upload_id: str,
        state: UploadState,
        now: datetime,
        *,
        expected_size: int,
        part_size: int | None = None,
    ) -> bool:
        u = t.uploads
        values: dict[str, Any] = {
            "size": state.size,
            "backend_state": json.dumps(dict(state.backend)),
            "updated_at": _ts(now),
        }
        if part_size is not None:
            parts = (
                await self._c.execute(select(u.c.part_sizes).where(u.c.id == upload_id, u.c.size == expected_size))
            ).scalar()
            if parts is None:
                return False
            values["part_sizes"] = json.dumps([*json.loads(parts), part_size])
        result = await self._c.execute(update(u).where(u.c.id == upload_id, u.c.size == expected_size).values(values))
        return bool(result.rowcount == 1)

    async def delete(self, upload_id: str) -> None:
        await self._c.execute(delete(t.uploads).where(t.uploads.c.id == upload_id))

    async def stale(self, updated_before: datetime, limit: int) -> list[tuple[str, UploadState]]:
        u = t.uploads
        stmt = select(u.c.id, u.c.size, u.c.backend_state).where(u.c.updated_at < _ts(updated_before)).limit(limit)
        return [
            (row.id, UploadState(row.id, int(row.size), json.loads(row.backend_state)))
            for row in await self._c.execute(stmt)
        ]


class _Leases(_Base):
    async def acquire(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        ls = t.leases
        expires = _ts(now) + ttl_seconds
        inserted = await self._c.execute(self._insert_ignore(ls).values(name=name, holder=holder, expires_at=expires))
        if inserted.rowcount == 1:
            return True
        result = await self._c.execute(
            update(ls)
            .where(ls.c.name == name, or_(ls.c.holder == holder, ls.c.expires_at < _ts(now)))
            .values(holder=holder, expires_at=expires)
        )
        return bool(result.rowcount == 1)

    async def release(self, name: str, holder: str) -> None:
        await self._c.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))


class _Kv(_Base):
    async def get(self, name: str) -> str | None:
        value = (await self._c.execute(select(t.kv.c.value).where(t.kv.c.name == name))).scalar()
        return None if value is None else str(value)

    async def put(self, name: str, value: str) -> None:
        if self._dialect == "postgresql":
            pg = postgresql.insert(t.kv).values(name=name, value=value)
            await self._c.execute(pg.on_conflict_do_update(index_elements=["name"], set_={"value": value}))
        else:
            lite = sqlite.insert(t.kv).values(name=name, value=value)
            await self._c.execute(lite.on_conflict_do_update(index_elements=["name"], set_={"value": value}))

    async def put_if_absent(self, name: str, value: str) -> str:
        await self._c.execute(self._insert_ignore(t.kv).values(name=name, value=value))
        stored = await self.get(name)
        assert stored is not None
        return stored


class _SqlTransaction:
    def __init__(self, conn: _Executor, dialect: str) -> None:
        known: dict[int, tuple[RegistryRef, str]] = {}
        self.repositories: RepositoryTable = _Repositories(conn, dialect, known)
        self.images: ImageTable = _Images(conn, dialect, known)
        self.blobs: BlobTable = _Blobs(conn, dialect)
        self.uploads: UploadTable = _Uploads(conn, dialect)
        self.resource_tags: ResourceTagTable = _ResourceTags(conn, dialect)
        self.identities: IdentityTable = _Identities(conn, dialect)
        self.policies: PolicyTable = _Policies(conn, dialect)
        self.lifecycle: LifecycleTable = _Lifecycle(conn, dialect)
        self.pull_exclusions: PullExclusionTable = _PullExclusions(conn, dialect)
        self.leases: LeaseTable = _Leases(conn, dialect)
        self.kv: KvTable = _Kv(conn, dialect)


_SQLITE_LOCK_WAIT = 30.0


def _on_sqlite_connect_nowait(dbapi_connection: Any, record: Any) -> None:
    _on_sqlite_connect(dbapi_connection, record)
    # The loop-thread write engine must never sleep inside SQLite: a locked database is retried
    # by `_begin_sqlite_write` with asyncio sleeps instead.
    dbapi_connection.execute("PRAGMA busy_timeout=0")


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control away from the driver so that `_on_sqlite_begin` decides the BEGIN kind.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _on_sqlite_begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get(_WRITE) else "BEGIN")


class SqlMetadataStore:
    """MetadataStore on one SQLAlchemy async engine."""

    def __init__(
        self, engine: AsyncEngine, sync_reads: Engine | None = None, sync_writes: Engine | None = None
    ) -> None:
        self._engine = engine
        self._dialect = engine.dialect.name
        self._sync_reads = sync_reads
        self._sync_writes = sync_writes
        self._idle_reads: list[Connection] = []

    @classmethod
    def open(cls, url: str) -> SqlMetadataStore:
        """Connect to a plain `sqlite:///path` or `postgresql://` URL (the schema must be migrated)."""
        full = async_url(url)
        if full.startswith("sqlite"):
            path = full.split(":///", 1)[1]
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            engine = create_async_engine(full, pool_size=8, max_overflow=16)
            reads = create_engine("sqlite:///" + path, pool_size=4, max_overflow=60)
            writes = create_engine("sqlite:///" + path, pool_size=2, max_overflow=30)
            for target in (engine.sync_engine, reads):
                event.listen(target, "connect", _on_sqlite_connect)
            event.listen(writes, "connect", _on_sqlite_connect_nowait)
            for target in (engine.sync_engine, reads, writes):
                event.listen(target, "begin", _on_sqlite_begin)
            return cls(engine, reads, writes)
        # No pre-ping: it costs a round trip per checkout on the hot path; stale connections are
        # recycled instead and a failed statement surfaces as an error for that one request.
        engine = create_async_engine(full, pool_size=10, max_overflow=20, pool_recycle=1800)
        return cls(engine)

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    @asynccontextmanager
    async def transaction(self, *, write: bool = False) -> AsyncIterator[Transaction]:
        if self._sync_reads is not None and not write:
            # Idle read connections are kept here rather than checked in and out of the pool:
            # the checkout costs more than the indexed queries a read transaction runs.
            sync = self._idle_reads.pop() if self._idle_reads else self._sync_reads.connect()
            try:
                with sync.begin():
                    yield _SqlTransaction(_SyncReads(sync), self._dialect)
            except BaseException:
                sync.close()
                raise
            if len(self._idle_reads) < 8:
                self._idle_reads.append(sync)
            else:
                sync.close()
            return
        if self._sync_writes is not None:
            sync, outer = await self._begin_sqlite_write()
            try:
                yield _SqlTransaction(_SyncReads(sync), self._dialect)
                outer.commit()
            except BaseException:
                outer.rollback()
                raise
            finally:
                sync.close()
            return
        async with self._engine.connect() as conn:
            if write:
                conn = await conn.execution_options(**{_WRITE: True})
            elif self._dialect == "postgresql":
                # READ COMMITTED would give every statement a new snapshot; the contract promises
                # read transactions one consistent snapshot (as SQLite's WAL readers get).
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                yield _SqlTransaction(conn, self._dialect)

    async def _begin_sqlite_write(self) -> tuple[Connection, RootTransaction]:
        """A write transaction on SQLite, run in the event loop's thread like reads: statements
        cost microseconds instead of a thread hop each. `BEGIN IMMEDIATE` never blocks the loop:
        the connection's busy timeout is 0 and a locked database is retried after short sleeps;
        once begun, the transaction holds the write lock and its statements do not wait."""
        assert self._sync_writes is not None
        delay, waited = 0.0005, 0.0
        while True:
            sync = self._sync_writes.connect().execution_options(**{_WRITE: True})
            try:
                return sync, sync.begin()
            except OperationalError as exc:
                sync.close()
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if waited > _SQLITE_LOCK_WAIT:
                    raise
            await asyncio.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.02)

    async def ping(self) -> None:
        async with self._engine.connect() as conn:
            await conn.execute(select(func.count()).select_from(t.kv))

    async def reset(self) -> None:
        async with self._engine.connect() as conn:
            conn = await conn.execution_options(**{_WRITE: True})
            async with conn.begin():
                for table in (
                    t.repository_policies,
                    t.registry_policies,
                    t.lifecycle_policies,
                    t.lifecycle_previews,
                    t.lifecycle_events,
                    t.pull_time_exclusions,
                    t.uploads,
                    t.tags,
                    t.manifest_refs,
                    t.manifests,
                    t.repo_blobs,
                    t.repositories,
                    t.blobs,
                    t.gc_candidates,
                ):
                    await conn.execute(delete(table))
                # Settings and documents go too; secrets (signing keys) stay.
                await conn.execute(delete(t.kv).where(~t.kv.c.name.startswith("secret/")))

    async def close(self) -> None:
        for idle in self._idle_reads:
            idle.close()
        self._idle_reads.clear()
        await self._engine.dispose()
        for sync in (self._sync_reads, self._sync_writes):
            if sync is not None:
                sync.dispose()
