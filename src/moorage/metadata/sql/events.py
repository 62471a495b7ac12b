"""SQL implementation of `Transaction.events` (the outbox), for SQLite and PostgreSQL.

Stability of `after()`: SQLite serialises writers, so events become visible in `seq` order and
every committed event is stable. PostgreSQL transactions take `seq` values when they insert but
may commit in another order; each event therefore records its transaction id (`xid`), and a
reader only returns events of transactions older than its snapshot's xmin — all of which have
finished — ordered by (xid, seq). Any event committed later has an xid at or above that xmin, so
it sorts after everything returned before.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, bindparam, delete, func, literal, or_, select, text, tuple_, union_all, update
from sqlalchemy.dialects import postgresql, sqlite

from moorage.metadata.outbox import ConsumerState, EventFailure, EventPosition, StoredEvent
from moorage.metadata.sql.base import prebuilt
from moorage.metadata.tables import event_consumers, event_failures, events

if TYPE_CHECKING:
    from moorage.events import Event

__all__ = ["SqlEvents"]

_COLUMNS = (
    events.c.xid,
    events.c.seq,
    events.c.id,
    events.c.detail_type,
    events.c.account_id,
    events.c.region,
    events.c.repository,
    events.c.created_at,
    events.c.body,
    events.c.work,
)


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _stored(row: Any) -> StoredEvent:
    m = row._mapping
    return StoredEvent(
        position=(int(m["xid"]), int(m["seq"])),
        id=m["id"],
        detail_type=m["detail_type"],
        account_id=m["account_id"],
        region=m["region"],
        repository=m["repository"],
        created_at=datetime.fromtimestamp(m["created_at"], UTC),
        body=m["body"],
        work=m["work"],
    )


def _consumer(row: Any) -> ConsumerState:
    m = row._mapping
    return ConsumerState(
        name=m["name"],
        position=(int(m["xid"]), int(m["seq"])),
        attempts=int(m["attempts"]),
        first_failure_at=_dt(m["first_failure_at"]),
        next_attempt_at=_dt(m["next_attempt_at"]),
        last_error=m["last_error"],
    )


def _stable(dialect: str) -> Any:
    if dialect == "postgresql":
        return events.c.xid < text("pg_snapshot_xmin(pg_current_snapshot())::text::bigint")
    return literal(True)


# The delivery loops run these constantly: built once per dialect, executed with parameters.
_AFTER: dict[str, Any] = {}
_CONSUMER = prebuilt(select(event_consumers).where(event_consumers.c.name == bindparam("name")))
_INSERT = {
    "postgresql": events.insert().values(xid=text("pg_current_xact_id()::text::bigint")),
    "sqlite": prebuilt(events.insert()),
}


def _after_statement(dialect: str) -> Any:
    stmt = _AFTER.get(dialect)
    if stmt is None:
        stmt = _AFTER[dialect] = prebuilt(_after_postgresql() if dialect == "postgresql" else _after_sqlite())
    return stmt


def _after_postgresql() -> Any:
    # PostgreSQL's btree takes the row comparison as one index range starting at the position.
    return (
        select(*_COLUMNS)
        .where(tuple_(events.c.xid, events.c.seq) > tuple_(bindparam("xid"), bindparam("seq")))
        .where(_stable("postgresql"))
        .order_by(events.c.xid, events.c.seq)
        .limit(bindparam("limit"))
    )


def _after_sqlite() -> Any:
    """The same rows for SQLite, whose planner turns `(xid, seq) > (?, ?)` into the range
    `xid >= ?` and then walks (and drops) every older event with that xid: 4 ms a read at 50,000
    events. As the union of "same xid, later seq" and "later xid", each half is an exact index
    range (12 µs there, whatever the outbox holds)."""
    same = (
        select(*_COLUMNS)
        .where(events.c.xid == bindparam("xid"), events.c.seq > bindparam("seq"))
        .order_by(events.c.seq)
        .limit(bindparam("limit"))
        .subquery()
    )
    later = (
        select(*_COLUMNS)
        .where(events.c.xid > bindparam("xid"))
        .order_by(events.c.xid, events.c.seq)
        .limit(bindparam("limit"))
        .subquery()
    )
    both = union_all(select(*same.c), select(*later.c)).subquery()
    return select(*both.c).order_by(both.c.xid, both.c.seq).limit(bindparam("limit"))


def count_after_statement(dialect: str, position: EventPosition) -> Any:
    """How many events sort after `position` (the backlog metric, per consumer)."""
    xid: Any = bindparam("xid", position[0])
    seq: Any = bindparam("seq", position[1])
    if dialect == "postgresql":
        return select(func.count()).where(tuple_(events.c.xid, events.c.seq) > tuple_(xid, seq))
    # As in _after_sqlite: two exact index ranges instead of every event from `xid` on.
    same = select(func.count()).where(events.c.xid == xid, events.c.seq > seq).scalar_subquery()
    later = select(func.count()).where(events.c.xid > xid).scalar_subquery()
    return select(same + later)


class SqlEvents:
    def __init__(self, conn: Any, dialect: str) -> None:
        self._c = conn
        self._dialect = dialect
        self.added = 0  # events written in this transaction (the store wakes consumers after commit)

    def _stable(self) -> Any:
        return _stable(self._dialect)

    async def add(self, new: Sequence[Event]) -> None:
        if not new:
            return
        rows = [
            {
                "id": e.id,
                "detail_type": e.detail_type,
                "account_id": e.registry.account_id,
                "region": e.registry.region,
                "repository": e.repository,
                "created_at": _ts(e.time),
                "body": e.body,
                "work": e.work,
            }
            for e in new
        ]
        await self._c.execute(_INSERT[self._dialect], rows)
        self.added += len(rows)

    async def after(self, position: EventPosition, limit: int) -> list[StoredEvent]:
        stmt = _after_statement(self._dialect)
        rows = (await self._c.execute(stmt, {"xid": position[0], "seq": position[1], "limit": limit})).all()
        return [_stored(r) for r in rows]

    async def head(self) -> EventPosition:
        stmt = select(*_COLUMNS).where(self._stable()).order_by(events.c.xid.desc(), events.c.seq.desc()).limit(1)
        row = (await self._c.execute(stmt)).first()
        if row is None:
            return (0, 0)
        found = _stored(row)
        return found.position

    async def get(self, event_id: str) -> StoredEvent | None:
        row = (await self._c.execute(select(*_COLUMNS).where(events.c.id == event_id))).first()
        return None if row is None else _stored(row)

    async def listing(self, since: datetime | None, limit: int) -> list[StoredEvent]:
        stmt = select(*_COLUMNS)
        if since is not None:
            stmt = stmt.where(events.c.created_at >= _ts(since))
        stmt = stmt.order_by(events.c.xid, events.c.seq).limit(limit)
        return [_stored(r) for r in (await self._c.execute(stmt)).all()]

    async def count_after(self, position: EventPosition) -> int:
        stmt = count_after_statement(self._dialect, position)
        return int((await self._c.execute(stmt)).scalar() or 0)

    async def register(self, name: str, now: datetime) -> ConsumerState:
        found = await self.consumer(name)
        if found is not None:
            return found
        xid, seq = await self.head()
        values = {"name": name, "xid": xid, "seq": seq, "attempts": 0, "seen_at": _ts(now)}
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        await self._c.execute(insert(event_consumers).values(**values).on_conflict_do_nothing())
        stored = await self.consumer(name)
        assert stored is not None
        return stored

    async def consumer(self, name: str) -> ConsumerState | None:
        row = (await self._c.execute(_CONSUMER, {"name": name})).first()
        return None if row is None else _consumer(row)

    async def consumers(self) -> list[ConsumerState]:
        rows = (await self._c.execute(select(event_consumers).order_by(event_consumers.c.name))).all()
        return [_consumer(r) for r in rows]

    async def save(self, state: ConsumerState, now: datetime) -> None:
        await self._c.execute(
            update(event_consumers)
            .where(event_consumers.c.name == state.name)
            .values(
                xid=state.position[0],
                seq=state.position[1],
                attempts=state.attempts,
                first_failure_at=None if state.first_failure_at is None else _ts(state.first_failure_at),
                next_attempt_at=None if state.next_attempt_at is None else _ts(state.next_attempt_at),
                last_error=state.last_error,
                seen_at=_ts(now),
            )
        )

    async def fail(self, consumer: str, event: StoredEvent, attempts: int, error: str, now: datetime) -> None:
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        await self._c.execute(
            insert(event_failures)
            .values(consumer=consumer, event_id=event.id, failed_at=_ts(now), attempts=attempts, last_error=error)
            .on_conflict_do_nothing()
        )

    async def failures(self, consumer: str | None, limit: int) -> list[EventFailure]:
        stmt = select(event_failures, *_COLUMNS).join(events, events.c.id == event_failures.c.event_id)
        if consumer is not None:
            stmt = stmt.where(event_failures.c.consumer == consumer)
        stmt = stmt.order_by(events.c.xid, events.c.seq).limit(limit)
        found = []
        for row in (await self._c.execute(stmt)).all():
            m = row._mapping
            found.append(
                EventFailure(
                    consumer=m["consumer"],
                    event=_stored(row),
                    failed_at=datetime.fromtimestamp(m["failed_at"], UTC),
                    attempts=int(m["attempts"]),
                    last_error=m["last_error"],
                )
            )
        return found

    async def resolve(self, consumer: str, event_id: str) -> bool:
        result = await self._c.execute(
            delete(event_failures).where(event_failures.c.consumer == consumer, event_failures.c.event_id == event_id)
        )
        return bool(result.rowcount)

    async def prune(self, before: datetime, limit: int) -> int:
        live = (
            await self._c.execute(
                select(event_consumers.c.xid, event_consumers.c.seq).where(event_consumers.c.seen_at >= _ts(before))
            )
        ).all()
        floor = min(((int(r[0]), int(r[1])) for r in live), default=None)
        victims = select(events.c.seq).where(events.c.created_at < _ts(before))
        if floor is not None:
            victims = victims.where(
                or_(
                    events.c.xid < floor[0],
                    and_(events.c.xid == floor[0], events.c.seq <= floor[1]),
                )
            )
        # Failed events are kept while their failure is on record.
        victims = victims.where(~events.c.id.in_(select(event_failures.c.event_id))).order_by(events.c.seq)
        seqs = [int(r[0]) for r in (await self._c.execute(victims.limit(limit))).all()]
        if not seqs:
            return 0
        await self._c.execute(delete(events).where(events.c.seq.in_(seqs)))
        return len(seqs)
