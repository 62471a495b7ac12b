"""The pull-through cache rules table protocol (one row per registry and ECR repository prefix)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from moorage.model import RegistryRef

__all__ = ["PullThroughRule", "PullThroughRuleTable"]


@dataclass(frozen=True, slots=True)
class PullThroughRule:
    registry: RegistryRef
    prefix: str  # the ecrRepositoryPrefix as given ("ROOT" or without the trailing '/')
    upstream_url: str
    upstream_registry: str | None
    upstream_prefix: str  # "ROOT" unless set
    credential_arn: str | None
    custom_role_arn: str | None
    created_at: datetime
    updated_at: datetime | None = None


class PullThroughRuleTable(Protocol):
    async def list(self, registry: RegistryRef) -> Sequence[PullThroughRule]:
        """Every rule of the registry, ordered by prefix."""
        ...

    async def insert(self, rule: PullThroughRule) -> bool:
        """Add the rule; False when one with that prefix exists."""
        ...

    async def update(
        self, registry: RegistryRef, prefix: str, credential_arn: str | None, custom_role_arn: str | None, now: datetime
    ) -> PullThroughRule | None: ...

    async def delete(self, registry: RegistryRef, prefix: str) -> PullThroughRule | None: ...
