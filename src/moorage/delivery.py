"""Event delivery: consumers of the outbox (webhooks, the audit log) under database leases.

    EventDispatcher.run                      (in every `serve` worker and `moorage worker`)
      one loop per sink:
        lease "events/<sink>" ── held by another process? ──► wait (poll, or a local commit wakes us)
          └─ state = consumer row (position, retry state of its head event)
             for each stable event after state.position, in order:
               not for this sink (detail type, repository prefix)? ── advance
               deliver ── ok ──► advance; save the position (one small write per delivered event)
                       └─ failed ──► attempts+1, next attempt after 1 s, 2 s, 4 s ... ≤ retry_max_interval;
                                     failing for longer than retry_for ──► event_failures row, advance

A delivered event is recorded right after the sink accepted it, so in the normal case each event
reaches each sink once; a process killed between the two delivers it again after the lease
expires (at least once, never zero times). Order is kept per sink: the head event blocks the ones
behind it until it is delivered or given up. A sink that stays down costs one row update per
attempt and no memory: the queue is the table.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from moorage.config import Settings
from moorage.metadata import MetadataStore
from moorage.metadata.outbox import ConsumerState, StoredEvent

__all__ = [
    "AuditLogSink",
    "DeliveryError",
    "EventDispatcher",
    "EventRetentionJob",
    "Sink",
    "WebhookSink",
    "backoff",
    "signature",
    "sinks_from_settings",
]

log = logging.getLogger("moorage.events")


class DeliveryError(Exception):
    """The sink did not take the event (a non-2xx answer, a timeout, a refused connection, ...)."""


class Sink(Protocol):
    name: str

    def accepts(self, event: StoredEvent) -> bool:
        """Whether this sink wants the event at all (filters); not wanted = passed over."""
        ...

    async def deliver(self, event: StoredEvent) -> None:
        """Hand the event over; return only once it is taken. Raises DeliveryError."""
        ...

    async def close(self) -> None: ...


def signature(secret: str, body: bytes) -> str:
    """The `X-Moorage-Signature` value: HMAC-SHA256 of the exact body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def backoff(attempts: int, maximum: timedelta) -> timedelta:
    """Wait after the `attempts`-th failure: 1 s, 2 s, 4 s, ... capped at `maximum`."""
    seconds = 2.0 ** min(max(attempts - 1, 0), 30)
    return min(timedelta(seconds=seconds), maximum)


@dataclass(frozen=True, slots=True)
class SinkFilter:
    detail_types: frozenset[str] | None = None
    repository_prefix: str | None = None

    def accepts(self, event: StoredEvent) -> bool:
        if self.detail_types is not None and event.detail_type not in self.detail_types:
            return False
        if self.repository_prefix:
            return event.repository is not None and event.repository.startswith(self.repository_prefix)
        return True


class WebhookSink:
    """POSTs each event's JSON to a URL; 2xx = delivered."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: str | None = None,
        filter: SinkFilter | None = None,
        timeout: float = 5.0,
        user_agent: str = "moorage",
    ) -> None:
        import httpx

        self.name = name
        self.url = url
        self._secret = secret
        self._filter = filter or SinkFilter()
        self._client = httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False)
        self._user_agent = user_agent

    def accepts(self, event: StoredEvent) -> bool:
        return self._filter.accepts(event)

    async def deliver(self, event: StoredEvent) -> None:
        import httpx

        body = event.body.encode()
        headers = {
            "content-type": "application/json",
            "user-agent": self._user_agent,
            "x-moorage-event-id": event.id,
        }
        if self._secret:
            headers["x-moorage-signature"] = signature(self._secret, body)
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"HTTP {response.status_code}")

    async def close(self) -> None:
        await self._client.aclose()


class AuditLogSink:
    """Appends each event as one JSON line; fsynced before it counts as delivered."""

    name = "audit-log"

    def __init__(self, path: Path) -> None:
        self.path = path

    def accepts(self, event: StoredEvent) -> bool:
        return True

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    async def deliver(self, event: StoredEvent) -> None:
        try:
            await asyncio.to_thread(self._append, event.body.encode() + b"\n")
        except OSError as exc:
            raise DeliveryError(f"cannot append to {self.path}: {exc.strerror or exc}") from None

    async def close(self) -> None:
        return None


def _now() -> datetime:
    # Retries and leases run on real time, never on the test clock's offset.
    return datetime.now(UTC)


class EventDispatcher:
    """Runs every sink's delivery loop; `notify()` after a commit wakes them at once."""

    def __init__(
        self,
        metadata: MetadataStore,
        sinks: Sequence[Sink],
        *,
        holder: str,
        retry_max_interval: timedelta = timedelta(minutes=10),
        retry_for: timedelta = timedelta(hours=24),
        poll_interval: float = 0.5,
        lease_ttl: float = 10.0,
        batch: int = 100,
        on_failure: Callable[[str], None] | None = None,
        on_delivered: Callable[[str], None] | None = None,
    ) -> None:
        self._metadata = metadata
        self._sinks = list(sinks)
        self._holder = holder
        self._retry_max = retry_max_interval
        self._retry_for = retry_for
        self._poll = poll_interval
        self._lease_ttl = lease_ttl
        self._batch = batch
        self._on_failure = on_failure
        self._on_delivered = on_delivered
        self._wake: dict[str, asyncio.Event] = {}
        self._held: dict[str, float] = {}  # sink -> monotonic time its lease runs out

    @property
    def sinks(self) -> list[Sink]:
        return list(self._sinks)

    def notify(self) -> None:
        for event in self._wake.values():
            event.set()

    async def register(self) -> None:
        """Create each sink's consumer row (at the current head) if it is new. Called before
        serving, so no event committed afterwards can be missed by a brand-new sink."""
        async with self._metadata.transaction(write=True) as tx:
            for sink in self._sinks:
                await tx.events.register(sink.name, _now())

    async def run(self, stop: asyncio.Event) -> None:
        if not self._sinks:
            return
        await asyncio.gather(*(self._run_sink(sink, stop) for sink in self._sinks))

    async def close(self) -> None:
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _run_sink(self, sink: Sink, stop: asyncio.Event) -> None:
        wake = self._wake.setdefault(sink.name, asyncio.Event())
        lease = f"events/{sink.name}"
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    wait = await self.step(sink)
                except Exception:
                    log.exception("event delivery to %s failed unexpectedly", sink.name)
                    wait = max(self._poll, 1.0)
                if wait <= 0:
                    continue
                stopper = asyncio.ensure_future(stop.wait())
                waker = asyncio.ensure_future(wake.wait())
                try:
                    await asyncio.wait({stopper, waker}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    stopper.cancel()
                    waker.cancel()
        finally:
            with contextlib.suppress(Exception):
                async with self._metadata.transaction(write=True) as tx:
                    await tx.leases.release(lease, self._holder)

    async def step(self, sink: Sink) -> float:
        """One pass for one sink; returns how long to wait before the next (0 = go on at once)."""
        lease = f"events/{sink.name}"
        now = _now()
        held_until = self._held.get(sink.name)
        if held_until is None or held_until - time.monotonic() < self._lease_ttl / 2:
            async with self._metadata.transaction(write=True) as tx:
                if not await tx.leases.acquire(lease, self._holder, now, self._lease_ttl):
                    self._held.pop(sink.name, None)
                    return self._poll
                state = await tx.events.register(sink.name, now)
            self._held[sink.name] = time.monotonic() + self._lease_ttl
        else:
            async with self._metadata.transaction() as tx:
                found = await tx.events.consumer(sink.name)
            if found is None:
                self._held.pop(sink.name, None)
                return 0.0
            state = found
        if state.next_attempt_at is not None and state.next_attempt_at > now:
            return min((state.next_attempt_at - now).total_seconds(), self._lease_ttl / 3)
        async with self._metadata.transaction() as tx:
            batch = await tx.events.after(state.position, self._batch)
        if not batch:
            return self._poll
        passed = False
        for event in batch:
            if not sink.accepts(event):
                state = replace(state, position=event.position)
                passed = True
                continue
            if passed:
                await self._save(state)
                passed = False
            try:
                await sink.deliver(event)
            except DeliveryError as exc:
                return await self._failed(sink, state, event, str(exc))
            state = ConsumerState(sink.name, event.position)
            await self._save(state, renew=lease)
            if self._on_delivered is not None:
                self._on_delivered(sink.name)
        if passed:
            await self._save(state)
        return 0.0 if len(batch) == self._batch else self._poll

    async def _save(self, state: ConsumerState, *, renew: str | None = None) -> None:
        now = _now()
        async with self._metadata.transaction(write=True) as tx:
            await tx.events.save(state, now)
            if renew is not None and await tx.leases.acquire(renew, self._holder, now, self._lease_ttl):
                self._held[renew.removeprefix("events/")] = time.monotonic() + self._lease_ttl

    async def _failed(self, sink: Sink, state: ConsumerState, event: StoredEvent, error: str) -> float:
        now = _now()
        if self._on_failure is not None:
            self._on_failure(sink.name)
        attempts = state.attempts + 1
        first = state.first_failure_at or now
        if now - first >= self._retry_for:
            log.warning(
                "event %s: giving up on %s after %d attempts (%s); it is kept as failed",
                event.id,
                sink.name,
                attempts,
                error,
            )
            async with self._metadata.transaction(write=True) as tx:
                await tx.events.fail(sink.name, event, attempts, error, now)
                await tx.events.save(ConsumerState(sink.name, event.position), now)
            return 0.0
        delay = backoff(attempts, self._retry_max)
        log.info("event %s to %s failed (%s); attempt %d, next in %s", event.id, sink.name, error, attempts, delay)
        await self._save(
            ConsumerState(sink.name, state.position, attempts, first, now + delay, error[:500]),
        )
        return delay.total_seconds()


class EventRetentionJob:
    """Deletes events older than `retention` that every live consumer has passed (see
    metadata/outbox.py for what "live" means); failed events stay while their failure is listed."""

    name = "events-retention"

    def __init__(self, metadata: MetadataStore, retention: timedelta, interval: timedelta = timedelta(hours=1)) -> None:
        self._metadata = metadata
        self.retention = retention
        self.interval = interval

    async def run_once(self, now: datetime) -> dict[str, object]:
        deleted = 0
        while True:
            async with self._metadata.transaction(write=True) as tx:
                batch = await tx.events.prune(now - self.retention, 1000)
            deleted += batch
            if batch < 1000:
                return {"deleted": deleted}


def sinks_from_settings(settings: Settings, *, user_agent: str = "moorage") -> list[Sink]:
    """The sinks `[events]` configures: its webhooks (and the `env` one), then the audit log."""
    found: list[Sink] = []
    for hook in settings.events.all_webhooks():
        kinds = frozenset(hook.detail_types) if hook.detail_types is not None else None
        found.append(
            WebhookSink(
                hook.name,
                hook.url,
                secret=hook.secret,
                filter=SinkFilter(kinds, hook.repository_prefix),
                user_agent=user_agent,
            )
        )
    if settings.events.audit_log is not None:
        found.append(AuditLogSink(settings.events.audit_log))
    return found
