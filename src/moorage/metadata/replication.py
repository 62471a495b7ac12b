"""Repository creation templates and replication statuses: `Transaction.templates` and
`Transaction.replication`.

    creation_templates     one row per (registry, prefix): the template's fields as JSON, the
                           times it was created and last updated
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

__all__ = ["ReplicationStatusRecord", "ReplicationStatusTable", "TemplateRecord", "TemplateTable"]


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
