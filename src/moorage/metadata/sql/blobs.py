"""Blobs, their per-repository links, GC candidates (`t.blobs`, `t.repo_blobs`, `t.gc_candidates`)
and upload sessions (`t.uploads`)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, false, select, true, update

from moorage.metadata import tables as t
from moorage.metadata.sql.base import SqlTable, dt_req, prebuilt, touch, ts
from moorage.model import BlobInfo, Digest, RegistryRef, RepositoryName, UploadSession, UploadState

__all__ = ["SqlBlobs", "SqlUploads"]


_LINKED_BLOB = prebuilt(
    select(t.blobs.c.size)
    .select_from(t.repo_blobs.join(t.blobs, t.blobs.c.digest == t.repo_blobs.c.digest))
    .where(
        t.repo_blobs.c.repo_id == bindparam("repo"),
        t.repo_blobs.c.digest == bindparam("digest"),
        t.blobs.c.deleting == false(),
    )
)

# Which of a manifest's blobs are linked (every push asks): for the usual few blobs, one prebuilt
# statement per count with a parameter each (d0, d1, ...), which the SQLite store runs compiled
# once; past _LINKED_FIXED blobs, one IN list expanded per execution.
_LINKED_FIXED = 32


def _linked_of(digests: Any) -> Any:
    return (
        select(t.repo_blobs.c.digest)
        .select_from(t.repo_blobs.join(t.blobs, t.blobs.c.digest == t.repo_blobs.c.digest))
        .where(
            t.repo_blobs.c.repo_id == bindparam("repo"),
            t.repo_blobs.c.digest.in_(digests),
            t.blobs.c.deleting == false(),
        )
    )


_LINKED_OF_MANY = _linked_of(bindparam("digests", expanding=True))
_LINKED_OF_N = {n: prebuilt(_linked_of([bindparam(f"d{i}") for i in range(n)])) for n in range(1, _LINKED_FIXED + 1)}


class SqlBlobs(SqlTable):
    async def add(self, info: BlobInfo, now: datetime) -> None:
        await self._c.execute(
            self._insert_ignore(t.blobs).values(digest=str(info.digest), size=info.size, created_at=ts(now))
        )

    async def get(self, digest: Digest) -> BlobInfo | None:
        b = t.blobs
        size = (
            await self._c.execute(select(b.c.size).where(b.c.digest == str(digest), b.c.deleting == false()))
        ).scalar()
        return None if size is None else BlobInfo(digest, int(size))

    async def link(self, repo_id: int, digest: Digest, now: datetime) -> None:
        await self._c.execute(
            self._insert_ignore(t.repo_blobs).values(repo_id=repo_id, digest=str(digest), linked_at=ts(now))
        )

    async def linked(self, repo_id: int, digest: Digest) -> BlobInfo | None:
        size = (await self._c.execute(_LINKED_BLOB, {"repo": repo_id, "digest": str(digest)})).scalar()
        return None if size is None else BlobInfo(digest, int(size))

    async def missing(self, repo_id: int, digests: Sequence[Digest]) -> list[Digest]:
        if not digests:
            return []
        wanted = sorted({str(d) for d in digests})
        if len(wanted) <= _LINKED_FIXED:
            params: dict[str, Any] = {f"d{i}": digest for i, digest in enumerate(wanted)}
            params["repo"] = repo_id
            rows = await self._c.execute(_LINKED_OF_N[len(wanted)], params)
        else:
            rows = await self._c.execute(_LINKED_OF_MANY, {"repo": repo_id, "digests": wanted})
        found = {row[0] for row in rows}
        return [d for d in digests if str(d) not in found]

    async def unlink(self, repo_id: int, digest: Digest) -> bool:
        rb = t.repo_blobs
        result = await self._c.execute(delete(rb).where(rb.c.repo_id == repo_id, rb.c.digest == str(digest)))
        return bool(result.rowcount > 0)

    async def claim(self, info: BlobInfo, now: datetime) -> bool:
        b = t.blobs
        await self._c.execute(
            self._insert_ignore(b).values(digest=str(info.digest), size=info.size, created_at=ts(now))
        )
        deleting = (
            await self._c.execute(select(b.c.deleting).where(b.c.digest == str(info.digest)).with_for_update())
        ).scalar()
        if deleting:
            return False
        await touch(self._c, self._dialect, [str(info.digest)], now)
        return True

    async def gc_candidates(self, touched_before: datetime, limit: int) -> list[Digest]:
        c = t.gc_candidates
        stmt = select(c.c.digest).where(c.c.since < ts(touched_before)).order_by(c.c.since).limit(limit)
        return [Digest.parse(row[0]) for row in await self._c.execute(stmt)]

    async def mark_deleting(self, digest: Digest, touched_before: datetime) -> BlobInfo | None:
        b, c, refs = t.blobs, t.gc_candidates, t.manifest_refs
        key = str(digest)
        row = (await self._c.execute(select(b.c.size, b.c.deleting).where(b.c.digest == key).with_for_update())).first()
        since = (await self._c.execute(select(c.c.since).where(c.c.digest == key).with_for_update())).scalar()
        if row is None or since is None or since >= ts(touched_before):
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
        cutoff = ts(touched_before)
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


class SqlUploads(SqlTable):
    async def create(self, repo_id: int, state: UploadState, now: datetime) -> None:
        await self._c.execute(
            t.uploads.insert().values(
                id=state.upload_id,
                repo_id=repo_id,
                size=state.size,
                backend_state=json.dumps(dict(state.backend)),
                created_at=ts(now),
                updated_at=ts(now),
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
            created_at=dt_req(m["created_at"]),
            updated_at=dt_req(m["updated_at"]),
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
            "updated_at": ts(now),
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
        stmt = select(u.c.id, u.c.size, u.c.backend_state).where(u.c.updated_at < ts(updated_before)).limit(limit)
        return [
            (row.id, UploadState(row.id, int(row.size), json.loads(row.backend_state)))
            for row in await self._c.execute(stmt)
        ]
