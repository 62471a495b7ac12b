"""Online garbage collection: blob bytes no manifest references any more, and stale uploads.

    upload committed / mount / manifest deleted / repository deleted
                    │   (the blob's digest becomes a candidate, touched now)
                    ▼
    gc_candidates ──(untouched for the grace period)──► mark_deleting: re-check in one
                    transaction that no manifest of any repository references it; mark it
                    "deleting" (it now counts as absent everywhere) ──► delete the bytes ──► forget

Nothing stops pushes or pulls. A push that needs a blob while GC deletes it waits for the
deletion to finish and then writes the bytes again (`Uploads._claim`); a push that claimed it
first makes GC's re-check fail. GC only ever looks at candidates, so its work follows the
garbage, not the size of the store. A GC interrupted after marking resumes with the marked blobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from moorage.clock import Clock
from moorage.metadata import MetadataStore
from moorage.model import BlobInfo
from moorage.storage import BlobStore

__all__ = ["GarbageCollector", "GcJob", "GcReport"]

_BATCH = 500
_MARK_BATCH = 100  # blobs marked (then forgotten) per write transaction


@dataclass
class GcReport:
    blobs: list[BlobInfo] = field(default_factory=list)
    uploads: int = 0
    dry_run: bool = False

    @property
    def bytes(self) -> int:
        return sum(b.size for b in self.blobs)

    def summary(self) -> dict[str, object]:
        return {"blobs": len(self.blobs), "bytes": self.bytes, "uploads": self.uploads, "dry_run": self.dry_run}


class GarbageCollector:
    def __init__(
        self,
        metadata: MetadataStore,
        blobs: BlobStore,
        *,
        clock: Clock,
        grace_period: timedelta,
        upload_expiry: timedelta,
    ) -> None:
        self._metadata = metadata
        self._blobs = blobs
        self._clock = clock
        self.grace_period = grace_period
        self.upload_expiry = upload_expiry

    async def plan(self, now: datetime) -> GcReport:
        """What a collection at `now` would reclaim (read-only)."""
        report = GcReport(dry_run=True)
        async with self._metadata.transaction() as tx:
            for digest in await tx.blobs.gc_candidates(now - self.grace_period, 1_000_000):
                info = await tx.blobs.get(digest)
                if info is not None and not await tx.blobs.in_use(digest):
                    report.blobs.append(info)
            report.uploads = len(await tx.uploads.stale(now - self.upload_expiry, 1_000_000))
        return report

    async def collect(
        self, now: datetime, *, limit: int | None = None, progress: Callable[[BlobInfo], None] | None = None
    ) -> GcReport:
        """Expire stale uploads and reclaim unreferenced blobs (at most `limit` blobs)."""
        report = GcReport()
        report.uploads = await self._expire_uploads(now)
        cutoff = now - self.grace_period
        while True:
            async with self._metadata.transaction() as tx:
                interrupted = await tx.blobs.deleting(_BATCH)
            if not interrupted:
                break
            for digest in interrupted:
                await self._blobs.delete(digest)
            async with self._metadata.transaction(write=True) as tx:
                await tx.blobs.forget_many(interrupted)
        while limit is None or len(report.blobs) < limit:
            wanted = _BATCH if limit is None else min(_BATCH, limit - len(report.blobs))
            async with self._metadata.transaction() as tx:
                candidates = await tx.blobs.gc_candidates(cutoff, wanted)
            if not candidates:
                break
            # A few write transactions per batch, not two per blob: on SQLite every commit is an fsync.
            # Blobs marked deleting count as absent at once; a crash before `forget` leaves them to
            # the `deleting` resumption above.
            for start in range(0, len(candidates), _MARK_BATCH):
                async with self._metadata.transaction(write=True) as tx:
                    marked = await tx.blobs.mark_deleting_many(candidates[start : start + _MARK_BATCH], cutoff)
                for info in marked:
                    await self._blobs.delete(info.digest)
                if marked:
                    async with self._metadata.transaction(write=True) as tx:
                        await tx.blobs.forget_many([info.digest for info in marked])
                for info in marked:
                    report.blobs.append(info)
                    if progress is not None:
                        progress(info)
        return report

    async def _expire_uploads(self, now: datetime) -> int:
        expired = 0
        while True:
            async with self._metadata.transaction() as tx:
                stale = await tx.uploads.stale(now - self.upload_expiry, _BATCH)
            if not stale:
                return expired
            for upload_id, state in stale:
                async with self._metadata.transaction(write=True) as tx:
                    await tx.uploads.delete(upload_id)
                await self._blobs.abort_upload(state)
                expired += 1


class GcJob:
    """The scheduled form of `GarbageCollector.collect` (bounded work per run)."""

    name = "gc"

    def __init__(self, collector: GarbageCollector, interval: timedelta) -> None:
        self._collector = collector
        self.interval = interval

    async def run_once(self, now: datetime) -> dict[str, object]:
        return (await self._collector.collect(now, limit=10_000)).summary()
