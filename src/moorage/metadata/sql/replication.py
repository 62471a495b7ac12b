"""Repository creation templates and replication statuses on SQL (metadata/replication.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from moorage.metadata import tables as t
from moorage.metadata.replication import ReplicationStatusRecord, TemplateRecord
from moorage.metadata.sql.base import SqlTable, dt_req, ts
from moorage.model import RegistryRef

__all__ = ["SqlReplicationStatuses", "SqlTemplates"]

_ct = t.creation_templates
_rs = t.replication_statuses


def _template(row: Any) -> TemplateRecord:
    return TemplateRecord(
        RegistryRef(row.account_id, row.region),
        row.prefix,
        row.document,
        dt_req(row.created_at),
        dt_req(row.updated_at),
    )


class SqlTemplates(SqlTable):
    def _key(self, registry: RegistryRef, prefix: str) -> Any:
        return (_ct.c.account_id == registry.account_id) & (_ct.c.region == registry.region) & (_ct.c.prefix == prefix)

    async def get(self, registry: RegistryRef, prefix: str) -> TemplateRecord | None:
        row = (await self._c.execute(select(_ct).where(self._key(registry, prefix)))).first()
        return None if row is None else _template(row)

    async def list(self, registry: RegistryRef) -> list[TemplateRecord]:
        stmt = (
            select(_ct)
            .where(_ct.c.account_id == registry.account_id, _ct.c.region == registry.region)
            .order_by(_ct.c.prefix)
        )
        return [_template(r) for r in (await self._c.execute(stmt)).all()]

    async def create(self, record: TemplateRecord) -> bool:
        result = await self._c.execute(
            self._insert_ignore(_ct).values(
                account_id=record.registry.account_id,
                region=record.registry.region,
                prefix=record.prefix,
                document=record.document,
                created_at=ts(record.created_at),
                updated_at=ts(record.updated_at),
            )
        )
        return bool(result.rowcount == 1)

    async def update(self, record: TemplateRecord) -> bool:
        result = await self._c.execute(
            update(_ct)
            .where(self._key(record.registry, record.prefix))
            .values(document=record.document, updated_at=ts(record.updated_at))
        )
        return bool(result.rowcount == 1)

    async def delete(self, registry: RegistryRef, prefix: str) -> TemplateRecord | None:
        found = await self.get(registry, prefix)
        if found is not None:
            await self._c.execute(delete(_ct).where(self._key(registry, prefix)))
        return found


def _status(row: Any) -> ReplicationStatusRecord:
    return ReplicationStatusRecord(
        RegistryRef(row.account_id, row.region),
        row.repository,
        row.digest,
        RegistryRef(row.dest_account_id, row.dest_region),
        row.status,
        row.failure_code,
        dt_req(row.updated_at),
    )


class SqlReplicationStatuses(SqlTable):
    async def put(self, records: Sequence[ReplicationStatusRecord]) -> None:
        if not records:
            return
        rows = [
            {
                "account_id": r.source.account_id,
                "region": r.source.region,
                "repository": r.repository,
                "digest": r.digest,
                "dest_account_id": r.destination.account_id,
                "dest_region": r.destination.region,
                "status": r.status,
                "failure_code": r.failure_code,
                "updated_at": ts(r.updated_at),
            }
            for r in records
        ]
        insert = postgresql.insert(_rs) if self._dialect == "postgresql" else sqlite.insert(_rs)
        stmt = insert.on_conflict_do_update(
            index_elements=["account_id", "region", "repository", "digest", "dest_account_id", "dest_region"],
            set_={
                "status": insert.excluded.status,
                "failure_code": insert.excluded.failure_code,
                "updated_at": insert.excluded.updated_at,
            },
        )
        await self._c.execute(stmt, rows)

    async def for_image(self, source: RegistryRef, repository: str, digest: str) -> list[ReplicationStatusRecord]:
        stmt = (
            select(_rs)
            .where(
                _rs.c.account_id == source.account_id,
                _rs.c.region == source.region,
                _rs.c.repository == repository,
                _rs.c.digest == digest,
            )
            .order_by(_rs.c.dest_account_id, _rs.c.dest_region)
        )
        return [_status(r) for r in (await self._c.execute(stmt)).all()]

    async def list(
        self, *, repository: str | None = None, statuses: Sequence[str] = (), limit: int = 1000
    ) -> list[ReplicationStatusRecord]:
        stmt = select(_rs).order_by(_rs.c.updated_at.desc()).limit(limit)
        if repository is not None:
            stmt = stmt.where(_rs.c.repository == repository)
        if statuses:
            stmt = stmt.where(_rs.c.status.in_(list(statuses)))
        return [_status(r) for r in (await self._c.execute(stmt)).all()]
