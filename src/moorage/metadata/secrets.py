"""The Secrets Manager tables protocol: one row per secret (per account and region, by name and
by ARN) and one per version of its value. Values arrive here already sealed (`ciphertext`,
see `identity.Sealer`); this layer never sees a plaintext."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from moorage.model import RegistryRef

__all__ = ["SecretRecord", "SecretTable", "SecretVersionRecord"]


@dataclass(frozen=True, slots=True)
class SecretRecord:
    registry: RegistryRef  # the account and region the secret lives in
    name: str
    arn: str
    created_at: datetime
    last_changed_at: datetime
    description: str | None = None
    kms_key_id: str | None = None
    tags: tuple[tuple[str, str], ...] = ()  # in the order they were added
    last_accessed_at: datetime | None = None  # a day, as Secrets Manager keeps it
    deleted_at: datetime | None = None  # when DeleteSecret scheduled the deletion
    deletion_at: datetime | None = None  # the end of the recovery window


@dataclass(frozen=True, slots=True)
class SecretVersionRecord:
    arn: str
    version_id: str
    ciphertext: str  # sealed value; the associated data is "<arn>/<version_id>"
    binary: bool  # SecretBinary (else SecretString)
    created_at: datetime
    stages: tuple[str, ...] = field(default=())


class SecretTable(Protocol):
    async def get(self, registry: RegistryRef, name: str) -> SecretRecord | None: ...

    async def get_by_arn(self, arn: str) -> SecretRecord | None: ...

    async def list(self, registry: RegistryRef) -> Sequence[SecretRecord]:
        """Every secret of the account and region (scheduled for deletion too), by name."""
        ...

    async def insert(self, secret: SecretRecord) -> bool:
        """Add the secret; False when the name (or ARN) is taken."""
        ...

    async def update(self, secret: SecretRecord) -> None:
        """Store every mutable field of the secret with this ARN (description, key, tags, dates)."""
        ...

    async def delete(self, arn: str) -> None:
        """Remove the secret and all its versions."""
        ...

    async def versions(self, arn: str) -> Sequence[SecretVersionRecord]:
        """The secret's versions, oldest first."""
        ...

    async def add_version(self, version: SecretVersionRecord) -> bool:
        """Add a version; False when its id exists for the secret."""
        ...

    async def set_stages(self, arn: str, version_id: str, stages: Sequence[str]) -> None: ...

    async def delete_version(self, arn: str, version_id: str) -> None: ...
