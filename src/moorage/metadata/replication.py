"""Repository creation templates and replication statuses: `Transaction.templates` and
`Transaction.replication`.

    creation_templates     one row per (registry, prefix): the template's fields as JSON, the
                           times it was created and last updated
    replication_backfills  one row per StartReplicationBackfill: destination, status, progress
    backfill_items         what a backfill copies, one row per (repository, digest, tag): PENDING,
                           then COMPLETE or FAILED; the pending rows are its resumable queue
    replication_statuses   one row per (source image, destination registry): IN_PROGRESS,
                           COMPLETE or FAILED with a failure code; the consumer of the outbox
                           writes them, DescribeImageReplicationStatus and
                           `moorage replication status` read them
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from moorage.model import RegistryRef

__all__ = [
    "BackfillItem",
    "BackfillRecord",
    "BackfillTable",
    "ReplicationStatusRecord",
    "ReplicationStatusTable",
    "TemplateRecord",
    "TemplateTable",
    "item_key",
]


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    registry: RegistryRef
    prefix: str
    document: str  # the template's fields (but prefix and times) as JSON
    created_at: datetime
    updated_at: datetime


class TemplateTable(Protocol):
    async def get(self, registry: RegistryRef, prefix: str) -> TemplateRecord | None: ...

    async def list(self, registry: RegistryRef) -> list[TemplateRecord]:
        """Every template of the registry, in prefix order."""
        ...

    async def create(self, record: TemplateRecord) -> bool:
        """Insert; False (and nothing changed) when the registry has a template for that prefix."""
        ...

    async def update(self, record: TemplateRecord) -> bool:
        """Replace the document and `updated_at`; False when there is no such template."""
        ...

    async def delete(self, registry: RegistryRef, prefix: str) -> TemplateRecord | None: ...


@dataclass(frozen=True, slots=True)
class ReplicationStatusRecord:
    source: RegistryRef
    repository: str
    digest: str
    destination: RegistryRef
    status: str  # IN_PROGRESS | COMPLETE | FAILED
    failure_code: str | None
    updated_at: datetime


class ReplicationStatusTable(Protocol):
    async def put(self, records: Sequence[ReplicationStatusRecord]) -> None:
        """Create or replace each (source, repository, digest, destination) row."""
        ...

    async def for_image(self, source: RegistryRef, repository: str, digest: str) -> list[ReplicationStatusRecord]:
        """The rows of one image, by destination account and region."""
        ...

    async def list(
        self, *, repository: str | None = None, statuses: Sequence[str] = (), limit: int = 1000
    ) -> list[ReplicationStatusRecord]:
        """Rows of every registry (optionally of one repository name, of some statuses), newest first."""
        ...


@dataclass(frozen=True, slots=True)
class BackfillRecord:
    id: str
    source: RegistryRef
    destination: RegistryRef
    status: str  # PREPARING | IN_PROGRESS | COMPLETE | FAILED | STOPPING | STOPPED
    started_at: datetime
    ended_at: datetime | None = None
    failure_code: str | None = None
    total: int | None = None  # None until prepared
    completed: int = 0
    failed: int = 0
    failure_codes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class BackfillItem:
    backfill_id: str
    repository: str
    digest: str
    tag: str  # "" for an untagged image
    status: str  # PENDING | COMPLETE | FAILED
    failure_code: str | None = None
    sub_failure_codes: tuple[str, ...] = ()


class BackfillTable(Protocol):
    async def create(self, record: BackfillRecord) -> None: ...

    async def get(self, source: RegistryRef, backfill_id: str) -> BackfillRecord | None: ...

    async def update(self, record: BackfillRecord) -> None:
        """Store status, end, failure code and progress (by id)."""
        ...

    async def listing(self, source: RegistryRef | None = None, *, statuses: Sequence[str] = ()) -> list[BackfillRecord]:
        """Backfills (of one registry, of some statuses), newest first."""
        ...

    async def add_items(self, items: Sequence[BackfillItem]) -> None:
        """Insert items (an item already there is left as it is)."""
        ...

    async def items(
        self, backfill_id: str, *, statuses: Sequence[str] = (), after: str | None = None, limit: int | None = None
    ) -> list[BackfillItem]:
        """Items in (repository, digest, tag) order, after the key `after` (see `item_key`)."""
        ...

    async def finish_item(self, item: BackfillItem) -> None:
        """Store an item's outcome (by backfill id, repository, digest, tag)."""
        ...


def item_key(item: BackfillItem) -> str:
    """The order of a backfill's items as one string (for pagination tokens)."""
    return "\x00".join((item.repository, item.digest, item.tag))
