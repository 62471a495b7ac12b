"""Repository creation templates and replication statuses on SQL (metadata/replication.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from moorage.metadata import tables as t
from moorage.metadata.replication import BackfillItem, BackfillRecord, ReplicationStatusRecord, TemplateRecord
from moorage.metadata.sql.base import SqlTable, dt_req, ts
from moorage.model import RegistryRef

__all__ = ["SqlBackfills", "SqlReplicationStatuses", "SqlTemplates"]

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


_bf = t.replication_backfills
_bi = t.backfill_items


def _codes(text: str) -> tuple[str, ...]:
    return tuple(c for c in text.split(",") if c)


def _backfill(row: Any) -> BackfillRecord:
    return BackfillRecord(
        row.id,
        RegistryRef(row.account_id, row.region),
        RegistryRef(row.dest_account_id, row.dest_region),
        row.status,
        dt_req(row.started_at),
        dt_req(row.ended_at) if row.ended_at is not None else None,
        row.failure_code,
        row.total,
        row.completed,
        row.failed,
        _codes(row.failure_codes),
    )


def _item(row: Any) -> BackfillItem:
    return BackfillItem(
        row.backfill_id,
        row.repository,
        row.digest,
        row.tag,
        row.status,
        row.failure_code,
        _codes(row.sub_failure_codes),
    )


def _progress(record: BackfillRecord) -> dict[str, Any]:
    return {
        "status": record.status,
        "failure_code": record.failure_code,
        "total": record.total,
        "completed": record.completed,
        "failed": record.failed,
        "failure_codes": ",".join(record.failure_codes),
        "ended_at": ts(record.ended_at) if record.ended_at is not None else None,
    }


class SqlBackfills(SqlTable):
    async def create(self, record: BackfillRecord) -> None:
        await self._c.execute(
            _bf.insert().values(
                id=record.id,
                account_id=record.source.account_id,
                region=record.source.region,
                dest_account_id=record.destination.account_id,
                dest_region=record.destination.region,
                started_at=ts(record.started_at),
                **_progress(record),
            )
        )

    async def get(self, source: RegistryRef, backfill_id: str) -> BackfillRecord | None:
        stmt = select(_bf).where(
            _bf.c.id == backfill_id, _bf.c.account_id == source.account_id, _bf.c.region == source.region
        )
        row = (await self._c.execute(stmt)).first()
        return None if row is None else _backfill(row)

    async def update(self, record: BackfillRecord) -> None:
        await self._c.execute(update(_bf).where(_bf.c.id == record.id).values(**_progress(record)))

    async def listing(self, source: RegistryRef | None = None, *, statuses: Sequence[str] = ()) -> list[BackfillRecord]:
        stmt = select(_bf).order_by(_bf.c.started_at.desc(), _bf.c.id)
        if source is not None:
            stmt = stmt.where(_bf.c.account_id == source.account_id, _bf.c.region == source.region)
        if statuses:
            stmt = stmt.where(_bf.c.status.in_(list(statuses)))
        return [_backfill(r) for r in (await self._c.execute(stmt)).all()]

    async def add_items(self, items: Sequence[BackfillItem]) -> None:
        if not items:
            return
        rows = [
            {
                "backfill_id": i.backfill_id,
                "repository": i.repository,
                "digest": i.digest,
                "tag": i.tag,
                "status": i.status,
                "failure_code": i.failure_code,
                "sub_failure_codes": ",".join(i.sub_failure_codes),
            }
            for i in items
        ]
        await self._c.execute(self._insert_ignore(_bi), rows)

    async def items(
        self, backfill_id: str, *, statuses: Sequence[str] = (), after: str | None = None, limit: int | None = None
    ) -> list[BackfillItem]:
        stmt = select(_bi).where(_bi.c.backfill_id == backfill_id).order_by(_bi.c.repository, _bi.c.digest, _bi.c.tag)
        if statuses:
            stmt = stmt.where(_bi.c.status.in_(list(statuses)))
        if after is not None:
            repository, digest, tag = after.split("\x00")
            stmt = stmt.where(
                or_(
                    _bi.c.repository > repository,
                    and_(_bi.c.repository == repository, _bi.c.digest > digest),
                    and_(_bi.c.repository == repository, _bi.c.digest == digest, _bi.c.tag > tag),
                )
            )
        if limit is not None:
            stmt = stmt.limit(limit)
        return [_item(r) for r in (await self._c.execute(stmt)).all()]

    async def finish_item(self, item: BackfillItem) -> None:
        key = tuple_(_bi.c.backfill_id, _bi.c.repository, _bi.c.digest, _bi.c.tag)
        await self._c.execute(
            update(_bi)
            .where(key == tuple_(item.backfill_id, item.repository, item.digest, item.tag))
            .values(
                status=item.status,
                failure_code=item.failure_code,
                sub_failure_codes=",".join(item.sub_failure_codes),
            )
        )
