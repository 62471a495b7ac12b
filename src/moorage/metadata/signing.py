"""The managed-signing tables' protocol: signing profiles (their keys sealed with the master key),
the per-account root CAs, and the signing status of each image per signing profile."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from moorage.model import RegistryRef

__all__ = ["SigningProfileRecord", "SigningRoot", "SigningStatusRecord", "SigningTable"]


@dataclass(frozen=True, slots=True)
class SigningProfileRecord:
    registry: RegistryRef  # the owning account and the region the profile lives in
    name: str
    version: str
    platform_id: str
    status: str  # Active | Canceled | Revoked
    validity_value: int
    validity_type: str  # DAYS | MONTHS | YEARS
    key_ciphertext: str  # the PKCS#8 PEM private key, sealed with the master key
    cert_chain: str  # PEM: the leaf, then the account's root
    created_at: datetime
    tags: dict[str, str] = field(default_factory=dict)
    status_reason: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revocation_effective_from: datetime | None = None

    @property
    def arn(self) -> str:
        return f"arn:aws:signer:{self.registry.region}:{self.registry.account_id}:/signing-profiles/{self.name}"

    @property
    def version_arn(self) -> str:
        return f"{self.arn}/{self.version}"


@dataclass(frozen=True, slots=True)
class SigningRoot:
    account_id: str
    key_ciphertext: str
    cert_pem: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SigningStatusRecord:
    registry: RegistryRef
    repository: str
    digest: str
    profile_arn: str
    status: str  # IN_PROGRESS | COMPLETE | FAILED
    updated_at: datetime
    failure_code: str | None = None
    failure_reason: str | None = None
    principal_arn: str | None = None  # who pushed (signing needs signer:SignPayload for them)
    signature_digest: str | None = None


class SigningTable(Protocol):
    async def profile(self, registry: RegistryRef, name: str) -> SigningProfileRecord | None: ...

    async def profiles(self, registry: RegistryRef) -> Sequence[SigningProfileRecord]:
        """Every profile of the account in the region, ordered by name."""
        ...

    async def put_profile(self, profile: SigningProfileRecord) -> None:
        """Insert, or replace the row of the same name."""
        ...

    async def root(self, account_id: str) -> SigningRoot | None: ...

    async def put_root(self, root: SigningRoot) -> SigningRoot:
        """Store the root unless one exists; return the one stored afterwards."""
        ...

    async def statuses(self, registry: RegistryRef, repository: str, digest: str) -> Sequence[SigningStatusRecord]:
        """The statuses of one image, ordered by profile ARN."""
        ...

    async def put_statuses(self, records: Sequence[SigningStatusRecord]) -> None:
        """Insert or replace (by registry, repository, digest and profile ARN)."""
        ...

    async def delete_statuses(self, registry: RegistryRef, repository: str, digest: str) -> None: ...
