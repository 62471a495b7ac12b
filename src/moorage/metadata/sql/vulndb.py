"""SQL implementation of `Transaction.vulndb` (the OSV vulnerability database), by generation."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import and_, delete, func, insert, literal, select

from moorage.metadata import tables as t
from moorage.metadata.sql.base import SqlTable
from moorage.metadata.sql.jobs import SqlKv
from moorage.metadata.vulndb import VulnDbState, VulnRow

__all__ = ["SqlVulnDb"]

_ACTIVE = "vulndb.active"


class SqlVulnDb(SqlTable):
    async def active(self) -> VulnDbState | None:
        value = (await self._c.execute(select(t.kv.c.value).where(t.kv.c.name == _ACTIVE))).scalar()
        if value is None:
            return None
        doc = json.loads(value)
        return VulnDbState(generation=int(doc["generation"]), meta=json.dumps(doc["meta"]))

    async def lookup(self, generation: int, ecosystem: str, name: str) -> list[str]:
        r, a = t.vuln_records, t.vuln_affected
        query = (
            select(r.c.body)
            .select_from(a.join(r, and_(r.c.generation == a.c.generation, r.c.id == a.c.vuln_id)))
            .where(a.c.generation == generation, a.c.ecosystem == ecosystem, a.c.name == name)
            .order_by(r.c.id)
        )
        return [str(body) for body in (await self._c.execute(query)).scalars()]

    async def modified(self, generation: int) -> dict[str, str]:
        r = t.vuln_records
        rows = await self._c.execute(select(r.c.id, r.c.modified).where(r.c.generation == generation))
        return {str(i): str(m) for i, m in rows}

    async def copy(self, source: int, target: int) -> None:
        r, a = t.vuln_records, t.vuln_affected
        await self._c.execute(
            insert(r).from_select(
                ["generation", "id", "modified", "source", "body", "changed_in"],
                select(literal(target), r.c.id, r.c.modified, r.c.source, r.c.body, r.c.changed_in).where(
                    r.c.generation == source
                ),
            )
        )
        await self._c.execute(
            insert(a).from_select(
                ["generation", "ecosystem", "name", "vuln_id"],
                select(literal(target), a.c.ecosystem, a.c.name, a.c.vuln_id).where(a.c.generation == source),
            )
        )

    async def put(self, generation: int, rows: Sequence[VulnRow]) -> None:
        if not rows:
            return
        r, a = t.vuln_records, t.vuln_affected
        ids = [row.id for row in rows]
        await self._c.execute(delete(a).where(a.c.generation == generation, a.c.vuln_id.in_(ids)))
        await self._c.execute(delete(r).where(r.c.generation == generation, r.c.id.in_(ids)))
        await self._c.execute(
            insert(r),
            [
                {
                    "generation": generation,
                    "id": x.id,
                    "modified": x.modified,
                    "source": x.source,
                    "body": x.body,
                    "changed_in": generation,
                }
                for x in rows
            ],
        )
        keys = [
            {"generation": generation, "ecosystem": eco, "name": name, "vuln_id": x.id}
            for x in rows
            for eco, name in sorted(set(x.keys))
        ]
        if keys:
            await self._c.execute(insert(a), keys)

    async def counts(self, generation: int) -> dict[str, int]:
        a = t.vuln_affected
        query = (
            select(a.c.ecosystem, func.count(func.distinct(a.c.vuln_id)))
            .where(a.c.generation == generation)
            .group_by(a.c.ecosystem)
        )
        return {str(eco): int(n) for eco, n in await self._c.execute(query)}

    async def activate(self, generation: int, meta: str) -> None:
        await SqlKv(self._c, self._dialect).put(
            _ACTIVE, json.dumps({"generation": generation, "meta": json.loads(meta)})
        )

    async def drop_except(self, generation: int) -> None:
        await self._c.execute(delete(t.vuln_affected).where(t.vuln_affected.c.generation != generation))
        await self._c.execute(delete(t.vuln_records).where(t.vuln_records.c.generation != generation))
