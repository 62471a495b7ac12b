"""SqlMetadataStore: the MetadataStore on SQLAlchemy Core, for SQLite (aiosqlite) and PostgreSQL (asyncpg).

The store owns the engines and transactions; `SqlTransaction` composes one object per table
family (the sibling modules) on the transaction's connection.

Dialect differences live in small named functions:
- `async_url`: plain `sqlite:///` / `postgresql://` URLs are mapped to the async drivers.
- `_on_sqlite_connect` / `_on_sqlite_begin` / `_begin_sync`: WAL, foreign keys, a busy timeout,
  and `BEGIN IMMEDIATE` for write transactions, so SQLite writers queue on the database lock up
  front instead of failing when a read lock cannot be upgraded.
- `SqlTable._insert_ignore` (base.py): `INSERT ... ON CONFLICT DO NOTHING` in either dialect.
PostgreSQL serialises writers per repository with `SELECT ... FOR UPDATE` on the repository row.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Select, create_engine, delete, event, func, select
from sqlalchemy.engine import RootTransaction
from sqlalchemy.engine.result import IteratorResult, SimpleResultMetaData
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql.dml import UpdateBase

from moorage.metadata import (
    BlobTable,
    EventTable,
    IdentityTable,
    ImageTable,
    KvTable,
    LeaseTable,
    LifecycleTable,
    PolicyTable,
    PullExclusionTable,
    PullThroughRuleTable,
    RepositoryTable,
    ResourceTagTable,
    ScanTable,
    SecretTable,
    Transaction,
    UploadTable,
    VulnDbTable,
)
from moorage.metadata import tables as t
from moorage.metadata.replication import BackfillTable, ReplicationStatusTable, TemplateTable
from moorage.metadata.signing import SigningTable
from moorage.metadata.sql.base import Executor, is_prebuilt
from moorage.metadata.sql.blobs import SqlBlobs, SqlUploads
from moorage.metadata.sql.events import SqlEvents
from moorage.metadata.sql.identities import SqlIdentities, SqlPolicies, SqlPullExclusions
from moorage.metadata.sql.images import SqlImages
from moorage.metadata.sql.jobs import SqlKv, SqlLeases
from moorage.metadata.sql.lifecycle import SqlLifecycle
from moorage.metadata.sql.pull_through import SqlPullThroughRules
from moorage.metadata.sql.replication import SqlBackfills, SqlReplicationStatuses, SqlTemplates
from moorage.metadata.sql.repositories import SqlRepositories, SqlResourceTags
from moorage.metadata.sql.scans import SqlScans
from moorage.metadata.sql.secrets import SqlSecrets
from moorage.metadata.sql.signing import SqlSigning
from moorage.metadata.sql.vulndb import SqlVulnDb
from moorage.model import RegistryRef

__all__ = ["SqlMetadataStore", "SqlTransaction", "async_url"]

_WRITE = "moorage_write"


def async_url(url: str) -> str:
    """Map a plain database URL to the SQLAlchemy async driver URL."""
    if url.startswith("sqlite:///"):
        return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


class _Lean:
    """A prebuilt SELECT compiled once for SQLite: its SQL, the order of its parameters (with the
    values bound at build time, e.g. a LIMIT), and the shape of its rows with SQLAlchemy's type
    processors. Running it skips SQLAlchemy's per-execution work (cache key lookup, execution
    context, cursor result set-up), which costs more than the indexed query. An expanding IN
    list (`bindparam(..., expanding=True)`) is rendered as SQLAlchemy renders it, one `?` per
    value; an empty list is left to SQLAlchemy (it renders an empty-set expression)."""

    __slots__ = ("_bind_processors", "_defaults", "_expanding", "_meta", "_names", "_sized", "_sql")

    def __init__(self, compiled: Any) -> None:
        self._sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup or ())
        self._defaults: dict[str, Any] = dict(compiled.construct_params(escape_names=False, _check=False))
        self._bind_processors: dict[str, Any] = dict(compiled._bind_processors)
        self._expanding = frozenset(bind.key for bind in compiled.binds.values() if bind.expanding)
        self._sized: dict[tuple[int, ...], str] = {}  # the SQL for the IN lists' lengths
        columns = compiled._result_columns
        processors = [entry.type._cached_result_processor(compiled.dialect, None) for entry in columns]
        self._meta = SimpleResultMetaData(
            [entry.keyname for entry in columns],
            extra=[entry.objects for entry in columns],
            _processors=processors if any(processors) else None,
        )

    @staticmethod
    def of(statement: Executable, dialect: Any) -> _Lean | None:
        if not isinstance(statement, Select):
            return None
        compiled: Any = statement.compile(dialect=dialect)
        if compiled.positiontup is None or compiled.literal_execute_params:
            return None
        for bind in compiled.binds.values():
            if bind.expanding and (
                bind.key not in compiled.positiontup or f"__[POSTCOMPILE_{bind.key}]" not in compiled.string
            ):
                return None
        return _Lean(compiled)

    def run(self, driver: Any, parameters: Mapping[str, Any] | None) -> Any:
        """The rows as a Result; None (nothing run) for an empty or non-list IN value."""
        values = self._defaults if not parameters else {**self._defaults, **parameters}
        processors = self._bind_processors
        sql = self._sql
        if self._expanding:
            args: list[Any] = []
            sizes = []
            for name in self._names:
                value = values[name]
                if name in self._expanding:
                    if not isinstance(value, (list, tuple)) or not value:
                        return None
                    process = processors.get(name)
                    args.extend(value if process is None else [process(v) for v in value])
                    sizes.append(len(value))
                else:
                    args.append(processors[name](value) if name in processors else value)
            sql = self._expanded(tuple(sizes))
        else:
            args = [processors[name](values[name]) if name in processors else values[name] for name in self._names]
        try:
            rows = driver.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise DBAPIError.instance(sql, args, exc, sqlite3.Error) from exc
        return IteratorResult(self._meta, iter(rows))

    def _expanded(self, sizes: tuple[int, ...]) -> str:
        sql = self._sized.get(sizes)
        if sql is None:
            sql = self._sql
            lengths = iter(sizes)
            for name in self._names:
                if name in self._expanding:
                    sql = sql.replace(f"__[POSTCOMPILE_{name}]", ", ".join("?" * next(lengths)), 1)
            if len(self._sized) < 256:
                self._sized[sizes] = sql
        return sql


class _DmlResult:
    """What a lean INSERT/UPDATE/DELETE answers: the two attributes callers read."""

    __slots__ = ("lastrowid", "rowcount")

    def __init__(self, rowcount: int, lastrowid: int | None) -> None:
        self.rowcount = rowcount
        self.lastrowid = lastrowid


class _LeanDml:
    """A prebuilt INSERT/UPDATE/DELETE compiled once for SQLite per set of parameter names, as
    SQLAlchemy compiles it for those names (`column_keys`), run on the driver cursor. Only
    statements whose every bound value comes from the caller's parameters qualify: no Python-side
    column defaults to compute, no RETURNING, no IN lists; anything else runs through SQLAlchemy."""

    __slots__ = ("_bind_processors", "_names", "_sql")

    def __init__(self, compiled: Any) -> None:
        self._sql: str = compiled.string
        self._names: tuple[str, ...] = tuple(compiled.positiontup)
        self._bind_processors: dict[str, Any] = dict(compiled._bind_processors)

    @staticmethod
    def of(statement: Executable, dialect: Any, keys: tuple[str, ...], many: bool) -> _LeanDml | None:
        if not isinstance(statement, UpdateBase):
            return None
        compiled: Any = statement.compile(dialect=dialect, column_keys=list(keys), for_executemany=many)
        if (
            compiled.positiontup is None
            or compiled.insert_prefetch
            or compiled.update_prefetch
            or compiled.effective_returning
            or compiled.escaped_bind_names
            or any(bind.expanding for bind in compiled.binds.values())
            or not set(compiled.positiontup) <= set(keys)  # a value SQLAlchemy would ask for, or bound at build
        ):
            return None
        return _LeanDml(compiled)

    def _args(self, values: Mapping[str, Any]) -> list[Any]:
        processors = self._bind_processors
        return [processors[name](values[name]) if name in processors else values[name] for name in self._names]

    def run(self, driver: Any, parameters: Mapping[str, Any] | list[Mapping[str, Any]]) -> _DmlResult:
        if isinstance(parameters, list):
            args: Any = [self._args(row) for row in parameters]
            try:
                cursor = driver.executemany(self._sql, args)
            except sqlite3.Error as exc:
                raise DBAPIError.instance(self._sql, args, exc, sqlite3.Error) from exc
            return _DmlResult(cursor.rowcount, None)
        args = self._args(parameters)
        try:
            cursor = driver.execute(self._sql, args)
        except sqlite3.Error as exc:
            raise DBAPIError.instance(self._sql, args, exc, sqlite3.Error) from exc
        return _DmlResult(cursor.rowcount, cursor.lastrowid)


_LEAN: dict[int, _Lean | None] = {}
_LEAN_DML: dict[tuple[int, tuple[str, ...], bool], _LeanDml | None] = {}


def _lean(statement: Executable, dialect: Any) -> _Lean | None:
    """The lean form of a statement marked `prebuilt` (base.py), None for any other."""
    key = id(statement)
    if key in _LEAN:
        return _LEAN[key] if is_prebuilt(statement) else None
    if not is_prebuilt(statement):
        return None
    lean = _LEAN[key] = _Lean.of(statement, dialect)
    return lean


def _lean_dml(statement: Executable, dialect: Any, parameters: Any) -> _LeanDml | None:
    """The lean form of a prebuilt DML statement for these parameters (a row, or a list of rows
    with the same names), None when SQLAlchemy must run it."""
    if isinstance(parameters, dict):
        keys, many = tuple(sorted(parameters)), False
    elif isinstance(parameters, list) and parameters and isinstance(parameters[0], dict):
        first = parameters[0].keys()
        if any(row.keys() != first for row in parameters):
            return None
        keys, many = tuple(sorted(first)), True
    else:
        return None
    index = (id(statement), keys, many)
    if index in _LEAN_DML:
        return _LEAN_DML[index] if is_prebuilt(statement) else None
    if not is_prebuilt(statement):
        return None
    lean = _LEAN_DML[index] = _LeanDml.of(statement, dialect, keys, many)
    return lean


class _SyncReads:
    """Runs a read transaction's statements on a synchronous SQLite connection, in the event
    loop's thread: WAL readers never wait for writers, and an indexed point query costs a few
    microseconds, far less than the thread hop every aiosqlite call makes. Prebuilt SELECTs go
    through `_Lean`; everything else through SQLAlchemy."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, statement: Executable, parameters: Any = None) -> Any:
        if isinstance(statement, Select):
            if parameters is None or isinstance(parameters, dict):
                lean = _lean(statement, self._conn.dialect)
                if lean is not None:
                    result = lean.run(self._conn.connection.driver_connection, parameters)
                    if result is not None:
                        return result
        elif parameters:
            dml = _lean_dml(statement, self._conn.dialect, parameters)
            if dml is not None:
                return dml.run(self._conn.connection.driver_connection, parameters)
        return self._conn.execute(statement, parameters)

    def begin_nested(self) -> AbstractAsyncContextManager[Any]:
        raise RuntimeError("read transactions do not write")


class SqlTransaction:
    """The table families on one transaction's connection, each made when first used: a
    transaction touches two or three of the twenty, and it is begun on every request."""

    def __init__(self, conn: Executor, dialect: str) -> None:
        self._conn = conn
        self._dialect = dialect
        self._known: dict[int, tuple[RegistryRef, str]] = {}

    def events_added(self) -> int:
        """How many events this transaction wrote (the store wakes consumers after the commit)."""
        outbox: SqlEvents | None = self.__dict__.get("outbox")
        return 0 if outbox is None else outbox.added

    @cached_property
    def repositories(self) -> RepositoryTable:
        return SqlRepositories(self._conn, self._dialect, self._known)

    @cached_property
    def images(self) -> ImageTable:
        return SqlImages(self._conn, self._dialect, self._known)

    @cached_property
    def blobs(self) -> BlobTable:
        return SqlBlobs(self._conn, self._dialect)

    @cached_property
    def uploads(self) -> UploadTable:
        return SqlUploads(self._conn, self._dialect)

    @cached_property
    def resource_tags(self) -> ResourceTagTable:
        return SqlResourceTags(self._conn, self._dialect)

    @cached_property
    def identities(self) -> IdentityTable:
        return SqlIdentities(self._conn, self._dialect)

    @cached_property
    def policies(self) -> PolicyTable:
        return SqlPolicies(self._conn, self._dialect)

    @cached_property
    def lifecycle(self) -> LifecycleTable:
        return SqlLifecycle(self._conn, self._dialect)

    @cached_property
    def pull_exclusions(self) -> PullExclusionTable:
        return SqlPullExclusions(self._conn, self._dialect)

    @cached_property
    def leases(self) -> LeaseTable:
        return SqlLeases(self._conn, self._dialect)

    @cached_property
    def kv(self) -> KvTable:
        return SqlKv(self._conn, self._dialect)

    @cached_property
    def outbox(self) -> SqlEvents:
        return SqlEvents(self._conn, self._dialect)

    @cached_property
    def events(self) -> EventTable:
        return self.outbox

    @cached_property
    def templates(self) -> TemplateTable:
        return SqlTemplates(self._conn, self._dialect)

    @cached_property
    def replication(self) -> ReplicationStatusTable:
        return SqlReplicationStatuses(self._conn, self._dialect)

    @cached_property
    def backfills(self) -> BackfillTable:
        return SqlBackfills(self._conn, self._dialect)

    @cached_property
    def vulndb(self) -> VulnDbTable:
        return SqlVulnDb(self._conn, self._dialect)

    @cached_property
    def scans(self) -> ScanTable:
        return SqlScans(self._conn, self._dialect)

    @cached_property
    def pull_through(self) -> PullThroughRuleTable:
        return SqlPullThroughRules(self._conn, self._dialect)

    @cached_property
    def secrets(self) -> SecretTable:
        return SqlSecrets(self._conn, self._dialect)

    @cached_property
    def signing(self) -> SigningTable:
        return SqlSigning(self._conn, self._dialect)


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


def _begin_sync(sync: Connection, statement: str) -> RootTransaction:
    """A transaction on a loop-thread SQLite connection: SQLAlchemy's (which issues nothing, the
    driver's transaction control being off), then BEGIN straight on the driver. No "begin" event
    listener does it, because any listener on an engine makes SQLAlchemy dispatch events around
    every statement it runs; and the driver call costs less than a SQLAlchemy statement."""
    outer = sync.begin()
    try:
        sync.connection.driver_connection.execute(statement)  # type: ignore[union-attr]
    except sqlite3.Error as exc:
        outer.rollback()
        # As SQLAlchemy would have raised it (callers look for "locked" / "busy" in it).
        raise OperationalError(statement, None, exc) from exc
    except BaseException:
        outer.rollback()
        raise
    return outer


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
        self._idle_writes: list[Connection] = []
        self._event_listeners: list[Callable[[], None]] = []
        self._write_listeners: list[Callable[[], None]] = []

    def on_events_committed(self, callback: Callable[[], None]) -> None:
        self._event_listeners.append(callback)

    def on_writes_committed(self, callback: Callable[[], None]) -> None:
        self._write_listeners.append(callback)

    def _wrote(self) -> None:
        for callback in self._write_listeners:
            callback()

    def _committed(self, tx: SqlTransaction) -> None:
        if tx.events_added():
            for callback in self._event_listeners:
                callback()

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
            event.listen(engine.sync_engine, "begin", _on_sqlite_begin)
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
                with _begin_sync(sync, "BEGIN"):
                    yield SqlTransaction(_SyncReads(sync), self._dialect)
            except BaseException:
                sync.close()
                raise
            self._idle(self._idle_reads, sync, 8)
            return
        if self._sync_writes is not None:
            sync, outer = await self._begin_sqlite_write()
            try:
                writing = SqlTransaction(_SyncReads(sync), self._dialect)
                yield writing
                outer.commit()
            except BaseException:
                try:
                    outer.rollback()
                finally:
                    sync.close()
                    self._wrote()
                raise
            # Kept for the next write, as idle reads are: a pool checkout and check-in (with its
            # reset rollback) cost more than the statements of a small write transaction.
            self._idle(self._idle_writes, sync, 2)
            self._wrote()
            self._committed(writing)
            return
        async with self._engine.connect() as conn:
            if write:
                conn = await conn.execution_options(**{_WRITE: True})
            elif self._dialect == "postgresql":
                # READ COMMITTED would give every statement a new snapshot; the contract promises
                # read transactions one consistent snapshot (as SQLite's WAL readers get).
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            try:
                async with conn.begin():
                    current = SqlTransaction(conn, self._dialect)
                    yield current
            finally:
                if write:
                    self._wrote()
        if write:
            self._committed(current)

    @staticmethod
    def _idle(idle: list[Connection], sync: Connection, keep: int) -> None:
        if len(idle) < keep:
            idle.append(sync)
        else:
            sync.close()

    async def _begin_sqlite_write(self) -> tuple[Connection, RootTransaction]:
        """A write transaction on SQLite, run in the event loop's thread like reads: statements
        cost microseconds instead of a thread hop each. `BEGIN IMMEDIATE` never blocks the loop:
        the connection's busy timeout is 0 and a locked database is retried after short sleeps;
        once begun, the transaction holds the write lock and its statements do not wait."""
        assert self._sync_writes is not None
        delay, waited = 0.0005, 0.0
        while True:
            sync = self._idle_writes.pop() if self._idle_writes else self._sync_writes.connect()
            try:
                return sync, _begin_sync(sync, "BEGIN IMMEDIATE")
            except OperationalError as exc:
                if ("locked" not in str(exc) and "busy" not in str(exc)) or waited > _SQLITE_LOCK_WAIT:
                    sync.close()
                    raise
                self._idle(self._idle_writes, sync, 2)
            except BaseException:
                sync.close()
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
                    t.pull_through_rules,
                    t.secret_versions,
                    t.secrets,
                    t.signing_statuses,
                    t.event_failures,
                    t.events,
                    t.creation_templates,
                    t.backfill_items,
                    t.replication_backfills,
                    t.replication_statuses,
                    t.pull_time_exclusions,
                    t.uploads,
                    t.tags,
                    t.manifest_refs,
                    t.manifests,
                    t.repo_blobs,
                    t.repositories,
                    t.blobs,
                    t.gc_candidates,
                    t.image_scans,
                    t.image_packages,
                    t.vuln_affected,
                    t.vuln_records,
                ):
                    await conn.execute(delete(table))
                # Settings and documents go too; secrets (signing keys) stay.
                await conn.execute(delete(t.kv).where(~t.kv.c.name.startswith("secret/")))
        self._wrote()

    async def close(self) -> None:
        for idle in (*self._idle_reads, *self._idle_writes):
            idle.close()
        self._idle_reads.clear()
        self._idle_writes.clear()
        await self._engine.dispose()
        for sync in (self._sync_reads, self._sync_writes):
            if sync is not None:
                sync.dispose()
