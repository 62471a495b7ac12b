"""What background jobs coordinate through: leases (`t.leases`) and the key-value table (`t.kv`:
settings, documents, secrets, the shared clock offset)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from moorage.metadata import tables as t
from moorage.metadata.sql.base import SqlTable, prebuilt, ts

__all__ = ["SqlKv", "SqlLeases"]


class SqlLeases(SqlTable):
    async def acquire(self, name: str, holder: str, now: datetime, ttl_seconds: float) -> bool:
        ls = t.leases
        expires = ts(now) + ttl_seconds
        inserted = await self._c.execute(self._insert_ignore(ls).values(name=name, holder=holder, expires_at=expires))
        if inserted.rowcount == 1:
            return True
        result = await self._c.execute(
            update(ls)
            .where(ls.c.name == name, or_(ls.c.holder == holder, ls.c.expires_at < ts(now)))
            .values(holder=holder, expires_at=expires)
        )
        return bool(result.rowcount == 1)

    async def release(self, name: str, holder: str) -> None:
        await self._c.execute(delete(t.leases).where(t.leases.c.name == name, t.leases.c.holder == holder))


# Settings and documents are read on most requests and by every event consumer: built once.
_KV_GET = prebuilt(select(t.kv.c.value).where(t.kv.c.name == bindparam("name")))


def _upsert(insert: Any) -> Any:
    return insert.on_conflict_do_update(index_elements=["name"], set_={"value": insert.excluded.value})


_KV_PUT = {"postgresql": _upsert(postgresql.insert(t.kv)), "sqlite": _upsert(sqlite.insert(t.kv))}


class SqlKv(SqlTable):
    async def get(self, name: str) -> str | None:
        value = (await self._c.execute(_KV_GET, {"name": name})).scalar()
        return None if value is None else str(value)

    async def put(self, name: str, value: str) -> None:
        await self._c.execute(_KV_PUT[self._dialect], {"name": name, "value": value})

    async def put_if_absent(self, name: str, value: str) -> str:
        await self._c.execute(self._insert_ignore(t.kv).values(name=name, value=value))
        stored = await self.get(name)
        assert stored is not None
        return stored
