"""SQL implementation of `Transaction.scans` (image scans and their leases)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, or_, select, update

from moorage.metadata import tables as t
from moorage.metadata.scans import ScanRecord
from moorage.metadata.sql.base import Executor, SqlTable, dt, dt_req, prebuilt, ts
from moorage.model import RegistryRef

__all__ = ["SqlScans", "forget_scans"]

_S = t.image_scans


def _record(row: Any) -> ScanRecord:
    m = row._mapping
    return ScanRecord(
        registry=RegistryRef(m["account_id"], m["region"]),
        repository=m["repository"],
        digest=m["digest"],
        scan_type=m["scan_type"],
        status=m["status"],
        description=m["description"],
        requested_at=dt_req(m["requested_at"]),
        completed_at=dt(m["completed_at"]),
        attempts=int(m["attempts"]),
        result=m["result"],
    )


# A listing page's scans (DescribeImages, the console): built once, the digests an IN list.
_MANY = prebuilt(
    select(_S).where(
        _S.c.account_id == bindparam("account"),
        _S.c.region == bindparam("region"),
        _S.c.repository == bindparam("repository"),
        _S.c.digest.in_(bindparam("digests", expanding=True)),
    )
)


def _key(registry: RegistryRef, repository: str, digest: str) -> Any:
    return and_(
        _S.c.account_id == registry.account_id,
        _S.c.region == registry.region,
        _S.c.repository == repository,
        _S.c.digest == digest,
    )


async def forget_scans(conn: Executor, repo_id: int, digest: str | None = None) -> None:
    """Drop the scan rows (status, findings, package keys) of one image of a repository, or of all of
    its images when `digest` is None: called by image and repository deletion, in their transaction,
    so a deleted image's findings never outlive it (nor reach a later push of the same digest)."""
    r = t.repositories
    row = (await conn.execute(select(r.c.account_id, r.c.region, r.c.name).where(r.c.id == repo_id))).first()
    if row is None:
        return
    for table in (t.image_scans, t.image_packages):
        where = and_(table.c.account_id == row[0], table.c.region == row[1], table.c.repository == row[2])
        if digest is not None:
            where = and_(where, table.c.digest == digest)
        await conn.execute(delete(table).where(where))


class SqlScans(SqlTable):
    async def get(self, registry: RegistryRef, repository: str, digest: str) -> ScanRecord | None:
        row = (await self._c.execute(select(_S).where(_key(registry, repository, digest)))).first()
        return None if row is None else _record(row)

    async def put(self, record: ScanRecord) -> None:
        await self._c.execute(delete(_S).where(_key(record.registry, record.repository, record.digest)))
        await self._c.execute(
            insert(_S).values(
                account_id=record.registry.account_id,
                region=record.registry.region,
                repository=record.repository,
                digest=record.digest,
                scan_type=record.scan_type,
                status=record.status,
                description=record.description,
                requested_at=ts(record.requested_at),
                completed_at=None if record.completed_at is None else ts(record.completed_at),
                lease_until=None,
                attempts=record.attempts,
                result=record.result,
            )
        )

    async def set_packages(
        self, registry: RegistryRef, repository: str, digest: str, keys: Sequence[tuple[str, str]]
    ) -> None:
        p = t.image_packages
        where = and_(
            p.c.account_id == registry.account_id,
            p.c.region == registry.region,
            p.c.repository == repository,
            p.c.digest == digest,
        )
        await self._c.execute(delete(p).where(where))
        rows = [
            {
                "account_id": registry.account_id,
                "region": registry.region,
                "repository": repository,
                "digest": digest,
                "ecosystem": eco,
                "name": name,
            }
            for eco, name in sorted(set(keys))
        ]
        if rows:
            await self._c.execute(insert(p), rows)

    async def affected_by(self, generation: int, since: int) -> list[tuple[RegistryRef, str, str]]:
        p, a, r = t.image_packages, t.vuln_affected, t.vuln_records
        query = (
            select(p.c.account_id, p.c.region, p.c.repository, p.c.digest)
            .select_from(
                p.join(a, and_(a.c.ecosystem == p.c.ecosystem, a.c.name == p.c.name)).join(
                    r, and_(r.c.generation == a.c.generation, r.c.id == a.c.vuln_id)
                )
            )
            .where(a.c.generation == generation, r.c.changed_in > since)
            .distinct()
        )
        return [
            (RegistryRef(acct, region), repo, digest) for acct, region, repo, digest in await self._c.execute(query)
        ]

    async def claim(self, now: Any, lease_seconds: float, limit: int) -> list[ScanRecord]:
        free = and_(_S.c.status == "IN_PROGRESS", or_(_S.c.lease_until.is_(None), _S.c.lease_until < ts(now)))
        rows = (await self._c.execute(select(_S).where(free).order_by(_S.c.requested_at).limit(limit))).all()
        claimed = []
        for row in rows:
            rec = _record(row)
            done = await self._c.execute(
                update(_S)
                .where(_key(rec.registry, rec.repository, rec.digest), free)
                .values(lease_until=ts(now) + lease_seconds, attempts=_S.c.attempts + 1)
            )
            if done.rowcount:
                claimed.append(rec)
        return claimed

    async def many(self, registry: RegistryRef, repository: str, digests: Sequence[str]) -> list[ScanRecord]:
        if not digests:
            return []
        params = {
            "account": registry.account_id,
            "region": registry.region,
            "repository": repository,
            "digests": sorted(set(digests)),
        }
        return [_record(row) for row in await self._c.execute(_MANY, params)]
