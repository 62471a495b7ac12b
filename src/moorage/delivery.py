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
import bisect
import contextlib
import hashlib
import hmac
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol, cast
from urllib.parse import urlsplit

from moorage.config import Settings
from moorage.metadata import MetadataStore
from moorage.metadata.outbox import ConsumerState, EventPosition, StoredEvent

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


class BatchSink(Protocol):
    """A sink that also wants to know where a pass begins and ends: `begin_batch` is called
    before the first event of each batch the dispatcher hands it (every event of the batch had
    committed by then), `end_batch` after the last (or the failure), so it may read a setting
    once per batch instead of once per event."""

    def begin_batch(self) -> None: ...

    def end_batch(self) -> None: ...


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


class _Connection:
    """One kept-alive HTTP/1.1 connection to a webhook's host. Webhook deliveries are small POSTs
    made one at a time per webhook, so this is all the client they need; a general-purpose client
    (httpx) measured ~7x the CPU per POST here, which pushes would pay for with every webhook."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.tls else 80)
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        default = 443 if self.tls else 80
        self.host_header = parts.netloc.rpartition("@")[2] if self.port != default else self.host
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            context = ssl.create_default_context() if self.tls else None
            self._reader, self._writer = await asyncio.open_connection(
                self.host, self.port, ssl=context, server_hostname=self.host if self.tls else None
            )
        return self._reader, self._writer

    async def post(self, headers: Sequence[tuple[str, str]], body: bytes) -> int:
        """POST and read the whole answer; returns its status. Raises OSError / ValueError."""
        reused = self._writer is not None and not self._writer.is_closing()
        try:
            return await self._exchange(headers, body)
        except (ConnectionError, asyncio.IncompleteReadError):
            await self.close()
            if not reused:
                raise
        # A kept-alive connection the server had closed meanwhile: once more on a new one.
        return await self._exchange(headers, body)

    async def _exchange(self, headers: Sequence[tuple[str, str]], body: bytes) -> int:
        reader, writer = await self._open()
        lines = [f"POST {self.target} HTTP/1.1", f"host: {self.host_header}", f"content-length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        version, _, rest = status_line.partition(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(f"not an HTTP/1.x answer: {status_line[:60]!r}")
        status = int(rest[:3])
        fields: dict[str, str] = {}
        for line in header_lines:
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip().lower()
        keep = fields.get("connection") != "close" and version == "HTTP/1.1"
        if "chunked" in fields.get("transfer-encoding", ""):
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                await reader.readexactly(size + 2)
                if size == 0:
                    break
        elif "content-length" in fields:
            await reader.readexactly(int(fields["content-length"]))
        elif status not in (204, 304) and not 100 <= status < 200:
            await reader.read()  # delimited by the end of the connection
            keep = False
        if not keep:
            await self.close()
        return status

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


class WebhookSink:
    """POSTs each event's JSON to a URL; 2xx = delivered; anything else, a timeout or a refused
    connection is a failure (the dispatcher retries)."""

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
        self.name = name
        self.url = url
        self._secret = secret
        self._filter = filter or SinkFilter()
        self._timeout = timeout
        self._user_agent = user_agent
        self._connection = _Connection(url)

    def accepts(self, event: StoredEvent) -> bool:
        return self._filter.accepts(event)

    async def deliver(self, event: StoredEvent) -> None:
        body = event.body.encode()
        headers = [
            ("content-type", "application/json"),
            ("user-agent", self._user_agent),
            ("x-moorage-event-id", event.id),
        ]
        if self._secret:
            headers.append(("x-moorage-signature", signature(self._secret, body)))
        try:
            status = await asyncio.wait_for(self._connection.post(headers, body), self._timeout)
        except TimeoutError:
            await self._connection.close()
            raise DeliveryError(f"no answer within {self._timeout:g} s") from None
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            await self._connection.close()
            raise DeliveryError(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__) from None
        if not 200 <= status < 300:
            raise DeliveryError(f"HTTP {status}")

    async def close(self) -> None:
        await self._connection.close()


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


class _RecentEvents:
    """The newest stable events, read once for every sink of this process: with three webhooks,
    a push costs one outbox read, not three. Everything after `known_from` is here, in order (a
    stable event that appears later sorts after every event read before, see metadata/outbox.py);
    a sink behind that point reads the store itself."""

    def __init__(self, metadata: MetadataStore, size: int) -> None:
        self._metadata = metadata
        self._size = size
        self._events: list[StoredEvent] = []
        self._positions: list[EventPosition] = []
        self._known_from: EventPosition | None = None
        self._fetching: asyncio.Future[None] | None = None

    async def after(self, position: EventPosition, limit: int) -> list[StoredEvent]:
        if self._known_from is not None and position < self._known_from:
            async with self._metadata.transaction() as tx:
                return await tx.events.after(position, limit)
        found = self._slice(position, limit)
        if len(found) < limit:
            await self._refresh()
            if self._known_from is not None and position < self._known_from:
                return await self.after(position, limit)
            found = self._slice(position, limit)
        return found

    def _slice(self, position: EventPosition, limit: int) -> list[StoredEvent]:
        index = bisect.bisect_right(self._positions, position)
        return self._events[index : index + limit]

    async def _refresh(self) -> None:
        # One read at a time, shared by every sink that asks meanwhile.
        if self._fetching is None:
            self._fetching = asyncio.ensure_future(self._fetch())
        fetching = self._fetching
        try:
            await asyncio.shield(fetching)
        finally:
            if self._fetching is fetching and fetching.done():
                self._fetching = None

    async def _fetch(self) -> None:
        async with self._metadata.transaction() as tx:
            if self._known_from is None:
                self._known_from = await tx.events.head()
            start = self._positions[-1] if self._positions else self._known_from
            fresh = await tx.events.after(start, self._size)
        events = self._events + fresh
        if len(events) > self._size:
            dropped = len(events) - self._size
            self._known_from = events[dropped - 1].position
            events = events[dropped:]
        self._events = events
        self._positions = [e.position for e in events]


class EventDispatcher:
    """Runs every sink's delivery loop; `notify()` after a commit wakes them at once.

    While a process holds a sink's lease it keeps the sink's position in memory and writes it at
    most once per `save_interval` (and when it goes idle, and before it lets the lease go): a
    burst of pushes costs one small write per second per sink, not one per event. A process that
    dies loses at most that much progress, and those events are delivered again by the next
    holder (at least once, never zero times).
    """

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
        save_interval: float = 1.0,
        batch: int = 100,
        on_failure: Callable[[str], None] | None = None,
        on_delivered: Callable[[str], None] | None = None,
        coalesce: float = 0.005,
    ) -> None:
        self._metadata = metadata
        self._sinks = list(sinks)
        self._holder = holder
        self._retry_max = retry_max_interval
        self._retry_for = retry_for
        self._poll = poll_interval
        self._lease_ttl = lease_ttl
        self._save_interval = save_interval
        self._batch = batch
        self._on_failure = on_failure
        self._on_delivered = on_delivered
        self._wake: dict[str, asyncio.Event] = {}
        self._held: dict[str, float] = {}  # sink -> monotonic time its lease runs out
        self._state: dict[str, ConsumerState] = {}  # sink -> its state, while the lease is held
        self._dirty: dict[str, float] = {}  # sink -> monotonic time of the oldest unsaved progress
        self._recent = _RecentEvents(metadata, max(batch, 256))
        self._coalesce = coalesce
        self._waking: asyncio.TimerHandle | None = None
        self._waking_loop: asyncio.AbstractEventLoop | None = None

    @property
    def sinks(self) -> list[Sink]:
        return list(self._sinks)

    def notify(self) -> None:
        """A commit in this process wrote events: wake every sink within `coalesce` seconds. The
        commits of a burst then cost one outbox read and one pass per sink together, instead of
        one each (a pass has a fixed cost: the read, the lease check, the sink's own look-ups)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None or self._coalesce <= 0:
            self._wake_all()
            return
        if self._waking is not None and self._waking_loop is loop:
            return  # a wake-up is already on its way
        self._waking_loop = loop
        self._waking = loop.call_later(self._coalesce, self._wake_all)

    def _wake_all(self) -> None:
        self._waking = None
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
        for sink in self._sinks:
            self._wake.setdefault(sink.name, asyncio.Event())

        async def stopper() -> None:
            await stop.wait()
            self._wake_all()

        watcher = asyncio.create_task(stopper())
        try:
            await asyncio.gather(*(self._run_sink(sink, stop) for sink in self._sinks))
        finally:
            watcher.cancel()

    async def close(self) -> None:
        for sink in self._sinks:
            with contextlib.suppress(Exception):
                await sink.close()

    async def _run_sink(self, sink: Sink, stop: asyncio.Event) -> None:
        wake = self._wake[sink.name]
        loop = asyncio.get_running_loop()
        try:
            while not stop.is_set():
                wake.clear()
                try:
                    wait = await self.step(sink)
                except Exception:
                    log.exception("event delivery to %s failed unexpectedly", sink.name)
                    self._forget(sink.name)
                    wait = max(self._poll, 1.0)
                if wait <= 0 or stop.is_set():
                    continue
                # A commit in this process (notify), the stop, or the timeout: whichever comes first.
                timer = loop.call_later(wait, wake.set)
                try:
                    await wake.wait()
                finally:
                    timer.cancel()
        finally:
            with contextlib.suppress(Exception):
                await self.flush(sink.name, release=True)

    def _forget(self, name: str) -> None:
        self._held.pop(name, None)
        self._state.pop(name, None)
        self._dirty.pop(name, None)

    async def _hold(self, name: str) -> ConsumerState | None:
        """The sink's state if this process holds (or now takes) its lease, else None."""
        mono = time.monotonic()
        held = self._held.get(name)
        state = self._state.get(name)
        if held is not None and state is not None and held - mono >= self._lease_ttl / 2:
            return state
        continuous = held is not None and held > mono and state is not None
        now = _now()
        async with self._metadata.transaction(write=True) as tx:
            if not await tx.leases.acquire(f"events/{name}", self._holder, now, self._lease_ttl):
                self._forget(name)
                return None
            if continuous and state is not None:
                if name in self._dirty:
                    await tx.events.save(state, now)
            else:
                # Taken anew (or after our lease ran out): another holder may have moved on.
                state = await tx.events.register(name, now)
        self._dirty.pop(name, None)
        self._held[name] = mono + self._lease_ttl
        self._state[name] = state
        return state

    async def flush(self, name: str, *, release: bool = False) -> None:
        """Write the sink's unsaved position (if this process still holds its lease)."""
        state = self._state.get(name)
        if state is None or (name not in self._dirty and not release):
            return
        now = _now()
        async with self._metadata.transaction(write=True) as tx:
            if await tx.leases.acquire(f"events/{name}", self._holder, now, self._lease_ttl):
                if name in self._dirty:
                    await tx.events.save(state, now)
                if release:
                    await tx.leases.release(f"events/{name}", self._holder)
        self._dirty.pop(name, None)
        if release:
            self._forget(name)
        else:
            self._held[name] = time.monotonic() + self._lease_ttl

    async def step(self, sink: Sink) -> float:
        """One pass for one sink; returns how long to wait before the next (0 = go on at once)."""
        name = sink.name
        state = await self._hold(name)
        if state is None:
            return self._poll
        now = _now()
        if state.next_attempt_at is not None and state.next_attempt_at > now:
            return min((state.next_attempt_at - now).total_seconds(), self._lease_ttl / 3)
        batch = await self._recent.after(state.position, self._batch)
        if not batch:
            unsaved = self._dirty.get(name)
            if unsaved is None:
                return self._poll
            due = unsaved + self._save_interval - time.monotonic()
            if due <= 0:
                await self.flush(name)
                return self._poll
            return min(due, self._poll)
        batched = cast(BatchSink, sink) if hasattr(sink, "begin_batch") else None
        if batched is not None:
            batched.begin_batch()
        try:
            for event in batch:
                if sink.accepts(event):
                    try:
                        await sink.deliver(event)
                    except DeliveryError as exc:
                        self._advance(name, state)
                        return await self._failed(sink, state, event, str(exc))
                    if self._on_delivered is not None:
                        self._on_delivered(name)
                state = ConsumerState(name, event.position)
        finally:
            if batched is not None:
                batched.end_batch()
        self._advance(name, state)
        if time.monotonic() - self._dirty[name] >= self._save_interval:
            await self.flush(name)
        # A full batch may have more behind it. Otherwise nothing is waiting: a commit in this
        # process since the loop cleared its wake event has set it again, so waiting is safe.
        return 0.0 if len(batch) == self._batch else min(self._poll, self._save_interval)

    def _advance(self, name: str, state: ConsumerState) -> None:
        if self._state.get(name) != state:
            self._state[name] = state
            self._dirty.setdefault(name, time.monotonic())

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
            self._advance(sink.name, ConsumerState(sink.name, event.position))
            await self.flush(sink.name)
            return 0.0
        delay = backoff(attempts, self._retry_max)
        log.info("event %s to %s failed (%s); attempt %d, next in %s", event.id, sink.name, error, attempts, delay)
        self._advance(sink.name, ConsumerState(sink.name, state.position, attempts, first, now + delay, error[:500]))
        await self.flush(sink.name)
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
