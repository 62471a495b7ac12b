"""The outbox part of the MetadataStore contract (moorage.metadata.outbox), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from moorage.events import Event, image_action
from moorage.metadata import MetadataStore
from moorage.metadata.outbox import ConsumerState
from moorage.model import Digest, RegistryRef

pytestmark = pytest.mark.anyio

REGISTRY = RegistryRef("123456789012", "us-east-1")
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


def _event(n: int, repository: str = "team/app") -> Event:
    digest = Digest("sha256", f"{n:064x}")
    return image_action(REGISTRY, repository, digest, "PUSH", NOW, tag=f"v{n}")


async def _add(store: MetadataStore, *events: Event) -> None:
    async with store.transaction(write=True) as tx:
        await tx.events.add(list(events))


async def _ids_after(store: MetadataStore, position: tuple[int, int] = (0, 0)) -> list[str]:
    async with store.transaction() as tx:
        return [e.id for e in await tx.events.after(position, 100)]


async def test_events_are_read_back_in_order_with_their_exact_body(metadata_store: MetadataStore) -> None:
    first, second, third = _event(1), _event(2), _event(3)
    await _add(metadata_store, first, second)
    await _add(metadata_store, third)
    async with metadata_store.transaction() as tx:
        found = await tx.events.after((0, 0), 100)
        assert [e.id for e in found] == [first.id, second.id, third.id]
        assert found[0].body == first.body
        assert found[0].detail_type == "ECR Image Action"
        assert found[0].repository == "team/app"
        assert (found[0].account_id, found[0].region) == (REGISTRY.account_id, REGISTRY.region)
        assert [e.id for e in await tx.events.after(found[0].position, 100)] == [second.id, third.id]
        assert [e.id for e in await tx.events.after(found[1].position, 1)] == [third.id]
        assert [e.id for e in await tx.events.after(found[0].position, 1)] == [second.id]
        assert [e.id for e in await tx.events.after((found[0].position[0], 0), 2)] == [first.id, second.id]
        assert await tx.events.after(found[2].position, 100) == []
        assert await tx.events.head() == found[2].position
        assert await tx.events.count_after(found[0].position) == 2
        got = await tx.events.get(second.id)
        assert got is not None
        assert got.body == second.body
        assert await tx.events.get("nope") is None


async def test_rolled_back_events_never_appear(metadata_store: MetadataStore) -> None:
    class Boom(Exception):
        pass

    async def add_then_fail() -> None:
        async with metadata_store.transaction(write=True) as tx:
            await tx.events.add([_event(1)])
            raise Boom

    with pytest.raises(Boom):
        await add_then_fail()
    assert await _ids_after(metadata_store) == []


async def test_an_open_writer_holds_back_later_commits_so_no_reader_skips_its_event(
    metadata_store: MetadataStore,
) -> None:
    early, late = _event(1), _event(2)
    release = asyncio.Event()
    written = asyncio.Event()

    async def slow_writer() -> None:
        async with metadata_store.transaction(write=True) as tx:
            await tx.events.add([early])
            written.set()
            await release.wait()

    slow = asyncio.create_task(slow_writer())
    await written.wait()
    fast = asyncio.create_task(_add(metadata_store, late))
    await asyncio.sleep(0.3)  # PostgreSQL: `late` commits now; SQLite: it waits for the writer
    assert await _ids_after(metadata_store) == []
    release.set()
    await slow
    await fast
    assert await _ids_after(metadata_store) == [early.id, late.id]


async def test_consumers_start_at_the_head_and_keep_their_state(metadata_store: MetadataStore) -> None:
    await _add(metadata_store, _event(1))
    async with metadata_store.transaction(write=True) as tx:
        state = await tx.events.register("hook", NOW)
        head = await tx.events.head()
    assert state.position == head
    assert state.attempts == 0
    newer = _event(2)
    await _add(metadata_store, newer)
    assert await _ids_after(metadata_store, state.position) == [newer.id]
    retry = ConsumerState("hook", state.position, 3, NOW, NOW + timedelta(seconds=4), "HTTP 500")
    async with metadata_store.transaction(write=True) as tx:
        await tx.events.save(retry, NOW)
        again = await tx.events.register("hook", NOW)  # an existing consumer is left alone
    assert again == retry
    async with metadata_store.transaction() as tx:
        assert [c.name for c in await tx.events.consumers()] == ["hook"]
        assert await tx.events.consumer("other") is None


async def test_failures_are_kept_listed_and_resolved(metadata_store: MetadataStore) -> None:
    event = _event(1)
    await _add(metadata_store, event)
    async with metadata_store.transaction(write=True) as tx:
        stored = (await tx.events.after((0, 0), 1))[0]
        await tx.events.fail("hook", stored, 7, "HTTP 503", NOW)
        await tx.events.fail("hook", stored, 7, "HTTP 503", NOW)  # idempotent
    async with metadata_store.transaction() as tx:
        failures = await tx.events.failures("hook", 10)
        assert [(f.consumer, f.event.id, f.attempts, f.last_error) for f in failures] == [
            ("hook", event.id, 7, "HTTP 503")
        ]
        assert await tx.events.failures("other", 10) == []
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.events.resolve("hook", event.id)
        assert not await tx.events.resolve("hook", event.id)


async def test_prune_keeps_what_a_live_consumer_still_needs(metadata_store: MetadataStore) -> None:
    old = [_event(i) for i in range(4)]
    await _add(metadata_store, *old)
    async with metadata_store.transaction(write=True) as tx:
        stored = await tx.events.after((0, 0), 10)
        await tx.events.register("hook", NOW)
        # The consumer has handled the first two events only.
        await tx.events.save(ConsumerState("hook", stored[1].position), NOW)
        await tx.events.fail("other", stored[0], 3, "HTTP 500", NOW)
    later = NOW + timedelta(days=8)
    async with metadata_store.transaction(write=True) as tx:
        # Every event is older than the cut-off; the first is kept for its failure, the last two
        # because the consumer (seen after the cut-off) has not handled them yet.
        await tx.events.save(ConsumerState("hook", stored[1].position), later - timedelta(hours=1))
        deleted = await tx.events.prune(later - timedelta(hours=2), 100)
    assert deleted == 1
    assert await _ids_after(metadata_store) == [old[0].id, old[2].id, old[3].id]
    async with metadata_store.transaction(write=True) as tx:
        # A consumer not seen since the cut-off no longer holds events back.
        deleted = await tx.events.prune(later, 100)
    assert deleted == 2
    assert await _ids_after(metadata_store) == [old[0].id]
