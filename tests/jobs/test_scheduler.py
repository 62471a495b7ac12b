"""Background jobs under database leases: once per interval across processes, and taken over
after a holder dies without releasing its lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from moorage.clock import SystemClock
from moorage.jobs import Scheduler
from moorage.metadata.sql import SqlMetadataStore

pytestmark = pytest.mark.anyio


class CountingJob:
    name = "counting"

    def __init__(self, interval: timedelta, hold: float = 0.0) -> None:
        self.interval = interval
        self.hold = hold
        self.runs = 0
        self.running = asyncio.Event()

    async def run_once(self, now: datetime) -> dict[str, object]:
        self.runs += 1
        self.running.set()
        await asyncio.sleep(self.hold)
        return {"runs": self.runs}


async def test_a_job_runs_once_per_interval_across_schedulers(store: SqlMetadataStore, tmp_path: Path) -> None:
    other = SqlMetadataStore.open(f"sqlite:///{tmp_path}/metadata.db")
    try:
        job_a, job_b = CountingJob(timedelta(hours=1)), CountingJob(timedelta(hours=1))
        a = Scheduler([job_a], store, clock=SystemClock(), holder="a")
        b = Scheduler([job_b], other, clock=SystemClock(), holder="b")
        assert await a.run_if_due(job_a) == {"runs": 1}
        assert await b.run_if_due(job_b) is None  # a ran it this interval
        assert await a.run_if_due(job_a) is None
        assert await b.run_if_due(job_b, force=True) == {"runs": 1}
        assert job_a.runs + job_b.runs == 2
    finally:
        await other.close()


async def test_concurrent_holders_never_run_the_same_job_together(store: SqlMetadataStore) -> None:
    job_a, job_b = CountingJob(timedelta(0), hold=0.3), CountingJob(timedelta(0), hold=0.3)
    a = Scheduler([job_a], store, clock=SystemClock(), holder="a")
    b = Scheduler([job_b], store, clock=SystemClock(), holder="b")
    first = asyncio.create_task(a.run_if_due(job_a, force=True))
    await job_a.running.wait()
    assert await b.run_if_due(job_b, force=True) is None  # a holds the lease
    assert await first == {"runs": 1}
    assert await b.run_if_due(job_b, force=True) == {"runs": 1}  # released: b may run now


async def test_a_dead_holders_lease_is_taken_over_after_it_expires(store: SqlMetadataStore) -> None:
    # A holder that died mid-job: it took the lease and never renewed nor released it.
    async with store.transaction(write=True) as tx:
        assert await tx.leases.acquire("job/counting", "dead", datetime.now(UTC), 0.5)
    job = CountingJob(timedelta(0))
    survivor = Scheduler([job], store, clock=SystemClock(), holder="survivor", lease_ttl=0.5)
    assert await survivor.run_if_due(job, force=True) is None
    await asyncio.sleep(0.6)
    assert await survivor.run_if_due(job, force=True) == {"runs": 1}
