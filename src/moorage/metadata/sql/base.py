"""What every table module of the SQL store shares: the connection it runs statements on
(`Executor`), the `SqlTable` base with the dialect's `INSERT ... ON CONFLICT DO NOTHING`, time and
page conversions, and `touch` (make blobs GC candidates), which repositories, images and blobs
all call when they drop a reference.

Times are stored as epoch seconds (floats) in every dialect."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from sqlalchemy import Executable, Select, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.dml import Insert

from moorage.metadata import tables as t
from moorage.model import Page, PageRequest

__all__ = [
    "Executor",
    "SqlTable",
    "dt",
    "dt_req",
    "insert_ignore",
    "is_prebuilt",
    "limited",
    "paged",
    "prebuilt",
    "touch",
    "ts",
]

_S = TypeVar("_S")


def ts(value: datetime) -> float:
    return value.timestamp()


def dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def dt_req(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def paged(items: list[Any], limit: int | None, key: Any) -> Page[Any]:
    if limit is not None and len(items) > limit:
        items = items[:limit]
        return Page(items, key(items[-1]) if items else None)
    return Page(items, None)


def limited(stmt: Select[Any], page: PageRequest) -> Select[Any]:
    return stmt if page.limit is None else stmt.limit(page.limit + 1)


class Executor(Protocol):
    async def execute(self, statement: Executable, parameters: Any = None) -> Any: ...

    def begin_nested(self) -> AbstractAsyncContextManager[Any]: ...


_IGNORING: dict[tuple[str, str], Insert] = {}


def insert_ignore(dialect: str, table: Table) -> Insert:
    """`INSERT ... ON CONFLICT DO NOTHING` into `table`, built once per dialect. Hot paths execute
    it with their row as parameters (`execute(stmt, row)`) rather than `.values(row)`: building
    a VALUES clause costs more than the indexed insert itself."""
    key = (dialect, table.name)
    stmt = _IGNORING.get(key)
    if stmt is None:
        base = postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)
        stmt = _IGNORING[key] = prebuilt(base.on_conflict_do_nothing())
    return stmt


class SqlTable:
    def __init__(self, conn: Executor, dialect: str) -> None:
        self._c = conn
        self._dialect = dialect

    def _insert_ignore(self, table: Table) -> Insert:
        return insert_ignore(self._dialect, table)


async def touch(conn: Executor, dialect: str, digests: Sequence[str], now: datetime) -> None:
    """Make blobs GC candidates touched at `now` (inserted, or their time moved forward)."""
    if not digests:
        return
    rows = [{"digest": d, "since": ts(now)} for d in sorted(set(digests))]
    insert = postgresql.insert(t.gc_candidates) if dialect == "postgresql" else sqlite.insert(t.gc_candidates)
    stmt = insert.on_conflict_do_update(index_elements=["digest"], set_={"since": insert.excluded.since})
    await conn.execute(stmt, rows)


# Statements built once at import that may run on the SQLite fast path (`store._lean`): by
# identity, so a statement built per call never lands there.
_PREBUILT: dict[int, Any] = {}


def prebuilt(stmt: _S) -> _S:
    """Mark a module-level statement, built once, as one the store may run without SQLAlchemy's
    per-execution machinery on SQLite (compiled once; rows, types and errors as SQLAlchemy gives).
    A SELECT answers a Result; an INSERT/UPDATE/DELETE executed with parameters answers an object
    with only `rowcount` and `lastrowid`, so callers of a prebuilt DML statement read no more."""
    _PREBUILT[id(stmt)] = stmt
    return stmt


def is_prebuilt(stmt: Any) -> bool:
    return _PREBUILT.get(id(stmt)) is stmt
