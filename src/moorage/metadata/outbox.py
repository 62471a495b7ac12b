"""The outbox's part of the metadata contract: `Transaction.events`.

    events            one row per event, written in the transaction of the change it reports
      position        (xid, seq): xid orders by writing transaction on PostgreSQL (0 on SQLite,
                      whose writers are serialised), seq by insertion
    event_consumers   one row per consumer (a webhook's name, "audit-log", later jobs): the
                      position it has handled, and the retry state of the event at its head
    event_failures    events a consumer gave up on after `retry_for`: kept, listed, resendable

Contract (tests/contract/test_metadata_store.py, on every backend):
- `after(position)` returns only *stable* events, in position order: every event it will ever
  return later sorts after the last one it returned. On PostgreSQL, where transactions commit out
  of the order in which they wrote, that means events of transactions older than the reading
  snapshot's xmin; on SQLite every committed event is stable. A consumer that advances its
  position past what `after` returned therefore never skips an event.
- `register` creates a consumer at the current head (it sees events committed after it) and
  leaves an existing one untouched.
- `prune(before)` deletes events older than `before` that every consumer seen since `before`
  has passed; a consumer not seen since then no longer holds events back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from moorage.events import Event

__all__ = ["ConsumerState", "EventFailure", "EventPosition", "EventTable", "StoredEvent"]

EventPosition = tuple[int, int]  # (xid, seq)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: EventPosition
    id: str
    detail_type: str
    account_id: str
    region: str
    repository: str | None
    created_at: datetime
    body: str
    work: int | None = None  # Event.work as written (moorage.events.WORK_*)


@dataclass(frozen=True, slots=True)
class ConsumerState:
    name: str
    position: EventPosition
    attempts: int = 0  # failed attempts at the event after `position`
    first_failure_at: datetime | None = None
    next_attempt_at: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class EventFailure:
    consumer: str
    event: StoredEvent
    failed_at: datetime
    attempts: int
    last_error: str


class EventTable(Protocol):
    async def add(self, events: Sequence[Event]) -> None:
        """Write events in this (write) transaction; they become visible when it commits."""
        ...

    async def after(self, position: EventPosition, limit: int) -> list[StoredEvent]:
        """Up to `limit` stable events after `position`, in order (see the module contract)."""
        ...

    async def head(self) -> EventPosition:
        """The position of the last stable event, (0, 0) when there is none."""
        ...

    async def get(self, event_id: str) -> StoredEvent | None: ...

    async def listing(self, since: datetime | None, limit: int) -> list[StoredEvent]:
        """Events created at or after `since`, oldest first."""
        ...

    async def count_after(self, position: EventPosition) -> int:
        """How many events sort after `position` (stable or not): a consumer's backlog."""
        ...

    async def register(self, name: str, now: datetime) -> ConsumerState:
        """The consumer's state, creating it at the current head when it does not exist."""
        ...

    async def consumer(self, name: str) -> ConsumerState | None: ...

    async def consumers(self) -> list[ConsumerState]: ...

    async def save(self, state: ConsumerState, now: datetime) -> None:
        """Store the consumer's position and retry state (and that it was seen at `now`)."""
        ...

    async def fail(self, consumer: str, event: StoredEvent, attempts: int, error: str, now: datetime) -> None:
        """Record that `consumer` gave up on `event` (idempotent)."""
        ...

    async def failures(self, consumer: str | None, limit: int) -> list[EventFailure]: ...

    async def resolve(self, consumer: str, event_id: str) -> bool:
        """Forget a failure (it was redelivered); False when there was none."""
        ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Delete up to `limit` events older than `before` that no live consumer still needs."""
        ...
