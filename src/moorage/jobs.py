"""Background jobs that hold database leases, so any number of processes and replicas can run
them and each job runs once per interval across all of them.

    Scheduler.run (every tick)
      for each job: due?  (kv "job/<name>/last-run", shared by every replica)
        └─ lease "job/<name>" taken?  ── no ──► another process runs it
             └─ yes: run_once(now), renewing the lease meanwhile; record last-run; release

A process killed mid-job stops renewing; its lease expires and another process takes the job
over at its next tick. `moorage serve` runs a scheduler in each worker (unless --no-jobs);
`moorage worker` runs one without serving HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Protocol

from moorage.clock import Clock
from moorage.metadata import MetadataStore

__all__ = ["Job", "Scheduler"]

log = logging.getLogger("moorage.jobs")


class Job(Protocol):
    name: str
    interval: timedelta

    async def run_once(self, now: datetime) -> dict[str, object]:
        """Do a bounded amount of work; safe to run again after a crash. Returns a summary."""
        ...


class Scheduler:
    def __init__(
        self,
        jobs: Sequence[Job],
        metadata: MetadataStore,
        *,
        clock: Clock,
        holder: str,
        tick: float = 5.0,
        lease_ttl: float = 60.0,
        on_finished: Callable[[str, str, dict[str, object] | None], None] | None = None,
    ) -> None:
        self._jobs = list(jobs)
        self._metadata = metadata
        self._clock = clock
        self._holder = holder
        self._tick = tick
        self._lease_ttl = lease_ttl
        self._on_finished = on_finished

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            for job in self._jobs:
                try:
                    await self.run_if_due(job)
                except Exception:
                    log.exception("job %s failed", job.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self._tick)

    async def run_if_due(self, job: Job, *, force: bool = False) -> dict[str, object] | None:
        """Run `job` when its interval has passed (or `force`) and no other process holds it."""
        now = self._clock.now()
        key = f"job/{job.name}/last-run"
        async with self._metadata.transaction() as tx:
            last = await tx.kv.get(key)
        if not force and last is not None and now - datetime.fromisoformat(last) < job.interval:
            return None
        lease = f"job/{job.name}"
        if not await self._acquire(lease):
            return None
        renewer = asyncio.create_task(self._renew(lease))
        try:
            try:
                report = await job.run_once(now)
            except Exception:
                if self._on_finished is not None:
                    self._on_finished(job.name, "failure", None)
                raise
            async with self._metadata.transaction(write=True) as tx:
                await tx.kv.put(key, now.isoformat())
            log.info("job %s: %s", job.name, report)
            if self._on_finished is not None:
                self._on_finished(job.name, "success", report)
            return report
        finally:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer
            async with self._metadata.transaction(write=True) as tx:
                await tx.leases.release(lease, self._holder)

    async def _acquire(self, lease: str) -> bool:
        # Leases run on real time: the clock-control offset must never let two holders overlap.
        async with self._metadata.transaction(write=True) as tx:
            return await tx.leases.acquire(lease, self._holder, datetime.now(UTC), self._lease_ttl)

    async def _renew(self, lease: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ttl / 3)
            if not await self._acquire(lease):
                log.warning("lost the lease %s", lease)
                return


async def last_runs(metadata: MetadataStore, names: Sequence[str]) -> dict[str, datetime | None]:
    """When each job (by name) last finished a run, from the state the Scheduler keeps."""
    async with metadata.transaction() as tx:
        found = {name: await tx.kv.get(f"job/{name}/last-run") for name in names}
    return {name: None if text is None else datetime.fromisoformat(text) for name, text in found.items()}
