"""Repositories and their resource tags (`t.repositories`, `t.resource_tags`).

Deleting a repository deletes every row that hangs off it, in every table (children first), and
makes its blobs GC candidates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.engine import Row

from moorage.errors import RepositoryAlreadyExistsError
from moorage.metadata import tables as t
from moorage.metadata.sql.base import Executor, SqlTable, dt_req, limited, paged, prebuilt, touch, ts
from moorage.metadata.sql.scans import forget_scans
from moorage.model import Page, PageRequest, RegistryRef, Repository, RepositoryName

__all__ = ["SqlRepositories", "SqlResourceTags", "repository_from_row"]


def _exclusions(text: str) -> tuple[str, ...]:
    return () if text == "[]" else tuple(json.loads(text))  # most repositories have none


def repository_from_row(row: Row[Any]) -> Repository:
    m = row._mapping
    return Repository(
        registry=RegistryRef(m["account_id"], m["region"]),
        name=RepositoryName(m["name"]),
        created_at=dt_req(m["created_at"]),
        tag_mutability=m["tag_mutability"],
        mutability_exclusions=_exclusions(m["mutability_exclusions"]),
        scan_on_push=bool(m["scan_on_push"]),
        encryption_type=m["encryption_type"],
        kms_key=m["kms_key"],
        id=m["id"],
    )


# Hot-path statements, built once: constructing SQLAlchemy expressions costs more than running
# an indexed SQLite query.
_REPO_BY_NAME = prebuilt(
    select(t.repositories).where(
        t.repositories.c.account_id == bindparam("account"),
        t.repositories.c.region == bindparam("region"),
        t.repositories.c.name == bindparam("name"),
    )
)
_REPO_BY_NAME_LOCKED = prebuilt(_REPO_BY_NAME.with_for_update())


class SqlRepositories(SqlTable):
    def __init__(self, conn: Executor, dialect: str, known: dict[int, tuple[RegistryRef, str]]) -> None:
        super().__init__(conn, dialect)
        self._known = known

    async def create(self, repo: Repository) -> Repository:
        values = {
            "account_id": repo.registry.account_id,
            "region": repo.registry.region,
            "name": repo.name,
            "created_at": ts(repo.created_at),
            **self._settings(repo),
        }
        # ON CONFLICT DO NOTHING rather than catching the unique violation: no savepoint needed,
        # and on PostgreSQL the transaction stays usable.
        result = await self._c.execute(self._insert_ignore(t.repositories), values)
        if result.rowcount != 1:
            raise RepositoryAlreadyExistsError(repo.name, repo.registry.account_id)
        if self._dialect == "sqlite":
            new_id = result.lastrowid  # the INTEGER PRIMARY KEY is the rowid
        else:
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
        repo = repository_from_row(row)
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
        rows = (await self._c.execute(limited(stmt.order_by(r.c.name), page))).all()
        return paged([repository_from_row(row) for row in rows], page.limit, lambda repo: repo.name)

    async def update(self, repo: Repository) -> None:
        await self._c.execute(update(t.repositories).where(t.repositories.c.id == repo.id).values(self._settings(repo)))

    async def delete(self, repo_id: int, now: datetime) -> None:
        rb = t.repo_blobs
        linked = await self._c.execute(select(rb.c.digest).where(rb.c.repo_id == repo_id))
        await touch(self._c, self._dialect, [row[0] for row in linked], now)
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
        await forget_scans(self._c, repo_id)
        await self._c.execute(delete(t.repositories).where(t.repositories.c.id == repo_id))


class SqlResourceTags(SqlTable):
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
