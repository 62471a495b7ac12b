"""Event delivery on the real store and a real HTTP receiver: order, retries with backoff, giving
up after retry_for (kept as failed), filters, the audit log, and two dispatchers sharing a database."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moorage.delivery import AuditLogSink, EventDispatcher, SinkFilter, WebhookSink, backoff, signature
from moorage.events import Event, image_action, repository_action
from moorage.metadata.sql import SqlMetadataStore
from moorage.model import Digest, RegistryRef
from tests.support.receiver import WebhookReceiver

pytestmark = pytest.mark.anyio

REGISTRY = RegistryRef("123456789012", "us-east-1")


def _push(n: int, repository: str = "team/app") -> Event:
    return image_action(REGISTRY, repository, Digest("sha256", f"{n:064x}"), "PUSH", datetime.now(UTC), tag=f"v{n}")


async def _add(store: SqlMetadataStore, *events: Event) -> None:
    async with store.transaction(write=True) as tx:
        await tx.events.add(list(events))


async def _run_until(dispatcher: EventDispatcher, predicate: object, timeout: float = 20.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():  # type: ignore[operator]
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("condition not reached")
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


def test_backoff_doubles_from_one_second_up_to_the_maximum() -> None:
    cap = timedelta(seconds=10)
    assert [backoff(n, cap).total_seconds() for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


async def test_webhook_gets_each_event_once_in_order_signed(store: SqlMetadataStore) -> None:
    with WebhookReceiver() as receiver:
        sink = WebhookSink("hook", receiver.url, secret="s3cret")
        dispatcher = EventDispatcher(store, [sink], holder="a")
        await dispatcher.register()
        events = [_push(i) for i in range(5)]
        await _add(store, *events[:2])
        await _add(store, *events[2:])
        await _run_until(dispatcher, lambda: len(receiver.requests) >= 5)
        await asyncio.sleep(0.3)  # nothing more arrives
        got = receiver.requests
    assert [r.headers["x-moorage-event-id"] for r in got] == [e.id for e in events]
    for request, event in zip(got, events, strict=True):
        assert request.body == event.body.encode()
        assert request.headers["content-type"] == "application/json"
        assert request.headers["x-moorage-signature"] == signature("s3cret", request.body)
    assert got[0].event["detail"]["image-tag"] == "v0"


async def test_a_new_webhook_starts_with_events_committed_after_it_registered(store: SqlMetadataStore) -> None:
    await _add(store, _push(0))
    with WebhookReceiver() as receiver:
        dispatcher = EventDispatcher(store, [WebhookSink("hook", receiver.url)], holder="a")
        await dispatcher.register()
        later = _push(1)
        await _add(store, later)
        await _run_until(dispatcher, lambda: len(receiver.requests) >= 1)
        await asyncio.sleep(0.2)
        assert [r.headers["x-moorage-event-id"] for r in receiver.requests] == [later.id]


async def test_a_failing_receiver_is_retried_in_order_until_it_recovers(store: SqlMetadataStore) -> None:
    with WebhookReceiver(statuses=[500, 503, 500]) as receiver:
        dispatcher = EventDispatcher(
            store, [WebhookSink("hook", receiver.url)], holder="a", retry_max_interval=timedelta(seconds=1)
        )
        await dispatcher.register()
        events = [_push(i) for i in range(3)]
        await _add(store, *events)
        await _run_until(dispatcher, lambda: len(receiver.delivered()) >= 3)
        ids = [r.headers["x-moorage-event-id"] for r in receiver.requests]
    # The head event is retried (1 s, then capped at 1 s) and nothing overtakes it.
    assert ids == [events[0].id] * 4 + [events[1].id, events[2].id]
    async with store.transaction() as tx:
        state = await tx.events.consumer("hook")
    assert state is not None
    assert state.attempts == 0
    assert state.last_error is None


async def test_an_event_failing_past_retry_for_is_kept_as_failed_and_delivery_moves_on(
    store: SqlMetadataStore,
) -> None:
    with WebhookReceiver(statuses=[500, 500]) as receiver:
        dispatcher = EventDispatcher(
            store,
            [WebhookSink("hook", receiver.url)],
            holder="a",
            retry_max_interval=timedelta(seconds=1),
            retry_for=timedelta(seconds=0.5),
        )
        await dispatcher.register()
        doomed, fine = _push(1), _push(2)
        await _add(store, doomed, fine)
        await _run_until(dispatcher, lambda: len(receiver.delivered()) >= 1)
        assert [r.headers["x-moorage-event-id"] for r in receiver.delivered()] == [fine.id]
    async with store.transaction() as tx:
        failures = await tx.events.failures("hook", 10)
    assert [(f.event.id, f.attempts, f.last_error) for f in failures] == [(doomed.id, 2, "HTTP 500")]


async def test_a_refused_connection_is_a_retry_not_a_loss(store: SqlMetadataStore) -> None:
    with WebhookReceiver() as receiver:
        url = receiver.url
    # The receiver is gone: its port refuses connections.
    dispatcher = EventDispatcher(store, [WebhookSink("hook", url)], holder="a", retry_max_interval=timedelta(seconds=1))
    await dispatcher.register()
    await _add(store, _push(1))
    sink = dispatcher.sinks[0]
    wait = await dispatcher.step(sink)
    assert 0 < wait <= 1
    async with store.transaction() as tx:
        state = await tx.events.consumer("hook")
        pending = await tx.events.count_after(state.position if state else (0, 0))
    assert state is not None
    assert state.attempts == 1
    assert state.last_error
    assert pending == 1


async def test_filters_pass_over_events_a_webhook_does_not_want(store: SqlMetadataStore) -> None:
    with WebhookReceiver() as receiver:
        only_team = WebhookSink("team", receiver.url, filter=SinkFilter(frozenset({"ECR Image Action"}), "team/"))
        dispatcher = EventDispatcher(store, [only_team], holder="a")
        await dispatcher.register()
        wanted = _push(1, "team/app")
        await _add(
            store, _push(2, "other/app"), repository_action(REGISTRY, "team/x", "CREATE", datetime.now(UTC)), wanted
        )
        await _run_until(dispatcher, lambda: len(receiver.requests) >= 1)
        await asyncio.sleep(0.2)
        assert [r.headers["x-moorage-event-id"] for r in receiver.requests] == [wanted.id]
    async with store.transaction() as tx:
        state = await tx.events.consumer("team")
        assert state is not None
        assert await tx.events.count_after(state.position) == 0


async def test_the_audit_log_gets_one_json_line_per_event(store: SqlMetadataStore, tmp_path: Path) -> None:
    log_path = tmp_path / "audit" / "events.jsonl"
    dispatcher = EventDispatcher(store, [AuditLogSink(log_path)], holder="a")
    await dispatcher.register()
    events = [_push(i) for i in range(3)]
    await _add(store, *events)

    def written() -> int:
        return len(log_path.read_text().splitlines()) if log_path.exists() else 0

    await _run_until(dispatcher, lambda: written() >= 3)
    lines = log_path.read_text().splitlines()
    assert lines == [e.body for e in events]
    assert json.loads(lines[0])["detail-type"] == "ECR Image Action"


async def test_two_dispatchers_on_one_database_deliver_each_event_once(store: SqlMetadataStore, tmp_path: Path) -> None:
    other = SqlMetadataStore.open(f"sqlite:///{tmp_path}/metadata.db")
    try:
        with WebhookReceiver() as receiver:
            a = EventDispatcher(store, [WebhookSink("hook", receiver.url)], holder="a", poll_interval=0.05)
            b = EventDispatcher(other, [WebhookSink("hook", receiver.url)], holder="b", poll_interval=0.05)
            await a.register()
            await b.register()
            stop = asyncio.Event()
            tasks = [asyncio.create_task(d.run(stop)) for d in (a, b)]
            events = [_push(i) for i in range(40)]
            for i in range(0, 40, 4):
                await _add(store if i % 8 else other, *events[i : i + 4])
            for _ in range(1000):
                if len(receiver.delivered()) >= 40:
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*tasks)
            ids = [r.headers["x-moorage-event-id"] for r in receiver.requests]
    finally:
        await other.close()
    assert ids == [e.id for e in events]
