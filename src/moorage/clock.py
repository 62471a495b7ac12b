"""Time, injected: services never call `datetime.now` themselves, so tests and the clock-control
endpoint can move it."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from moorage.metadata import MetadataStore

__all__ = ["Clock", "FixedClock", "OffsetClock", "SystemClock"]

log = logging.getLogger("moorage.clock")


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FixedClock:
    """A clock that only moves when told (tests)."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class OffsetClock:
    """Real time plus an offset kept in the metadata store (`kv` row `clock/offset`, seconds), so
    every process and replica sees the same moved clock (`POST /_moorage/clock`, enabled by
    `testing.allow_clock_control`). Each process caches the offset for `ttl` seconds: `now()` never
    waits for the database; when the cached value is older than `ttl` it starts a refresh in the
    background (when an event loop runs) and answers with the value it has.

    The offset moves what the services measure with the injected clock: image push / pull /
    archive times and their ages, GC grace periods, upload expiry, job schedules. It never moves
    what must follow real time: SigV4 clock skew, registry-password, pagination-token and layer-URL
    expiry, and job leases (those call `datetime.now` / `time.time` themselves)."""

    KEY = "clock/offset"

    def __init__(self, metadata: MetadataStore, *, ttl: float = 1.0) -> None:
        self._metadata = metadata
        self._ttl = ttl
        self._offset = timedelta(0)
        self._read_at: float | None = None  # time.monotonic() of the last read
        self._refreshing: asyncio.Task[timedelta] | None = None

    @property
    def offset(self) -> timedelta:
        """The cached offset."""
        return self._offset

    def now(self) -> datetime:
        read_at = self._read_at
        if (read_at is None or time.monotonic() - read_at > self._ttl) and self._refreshing is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
            if loop is not None:
                self._refreshing = loop.create_task(self._background_refresh())
        return datetime.now(UTC) + self._offset

    async def _background_refresh(self) -> timedelta:
        try:
            return await self.refresh()
        except Exception:
            log.warning("could not read the clock offset; keeping %s", self._offset, exc_info=True)
            self._read_at = time.monotonic()  # retry after another ttl, not on every call
            return self._offset
        finally:
            self._refreshing = None

    async def refresh(self) -> timedelta:
        """Read the stored offset now (and cache it)."""
        async with self._metadata.transaction() as tx:
            stored = await tx.kv.get(self.KEY)
        self._set(stored)
        return self._offset

    async def advance(self, delta: timedelta) -> timedelta:
        """Move the shared clock forward by `delta` (never backwards); returns the new offset."""
        if delta < timedelta(0):
            raise ValueError("the clock only moves forward")
        async with self._metadata.transaction(write=True) as tx:
            stored = await tx.kv.get(self.KEY)
            total = timedelta(seconds=float(stored or 0)) + delta
            await tx.kv.put(self.KEY, repr(total.total_seconds()))
        self._set(repr(total.total_seconds()))
        return total

    async def drain(self) -> None:
        """Wait for a background refresh in flight (before the store closes)."""
        task = self._refreshing
        if task is not None:
            await asyncio.gather(task, return_exceptions=True)

    def _set(self, stored: str | None) -> None:
        self._offset = timedelta(seconds=float(stored)) if stored else timedelta(0)
        self._read_at = time.monotonic()
