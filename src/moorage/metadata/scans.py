"""Image scans' part of the metadata contract: `Transaction.scans`.

    image_scans   one row per scanned image (registry, repository, digest): the latest scan's
                  status, its times, its lease while a worker runs it, and its result (JSON)

A scan waiting to run or running has status IN_PROGRESS; `claim` hands such rows to one worker
at a time (a lease: a worker that dies stops holding it, and another takes the scan over).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from moorage.model import RegistryRef

__all__ = ["ScanRecord", "ScanTable"]


@dataclass(frozen=True, slots=True)
class ScanRecord:
    registry: RegistryRef
    repository: str
    digest: str
    scan_type: str  # BASIC / ENHANCED
    status: str  # IN_PROGRESS, COMPLETE, FAILED, UNSUPPORTED_IMAGE, ...
    description: str
    requested_at: datetime
    completed_at: datetime | None = None
    attempts: int = 0
    result: str | None = None  # JSON: findings, enhanced findings, counts, database time


class ScanTable(Protocol):
    async def get(self, registry: RegistryRef, repository: str, digest: str) -> ScanRecord | None: ...

    async def put(self, record: ScanRecord) -> None:
        """Insert or replace the image's scan row (and drop any lease on it)."""
        ...

    async def set_packages(
        self, registry: RegistryRef, repository: str, digest: str, keys: Sequence[tuple[str, str]]
    ) -> None:
        """Replace the (ecosystem, name) keys the image's inventory holds."""
        ...

    async def affected_by(self, generation: int, since: int) -> list[tuple[RegistryRef, str, str]]:
        """(registry, repository, digest) of scanned images holding a package that a record of
        vulnerability-database `generation`, changed by an import after generation `since`, names."""
        ...

    async def claim(self, now: datetime, lease_seconds: float, limit: int) -> list[ScanRecord]:
        """Up to `limit` IN_PROGRESS scans whose lease is free or expired, now leased to the caller."""
        ...

    async def many(self, registry: RegistryRef, repository: str, digests: Sequence[str]) -> list[ScanRecord]:
        """The scan rows of these images of one repository, in one query (a listing's page)."""
        ...
