"""The managed-signing tables (metadata/signing.py), on SQLite and on a real PostgreSQL server,
each freshly migrated (to the latest revision)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from moorage.metadata import MetadataStore
from moorage.metadata.signing import SigningProfileRecord, SigningRoot, SigningStatusRecord
from moorage.model import RegistryRef

pytestmark = pytest.mark.anyio

EAST = RegistryRef("123456789012", "us-east-1")
WEST = RegistryRef("123456789012", "eu-west-1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ARN = "arn:aws:signer:us-east-1:123456789012:/signing-profiles/release"


def _profile(registry: RegistryRef, name: str, **changes: Any) -> SigningProfileRecord:
    base = SigningProfileRecord(
        registry,
        name,
        "AbCdE12345",
        "Notation-OCI-SHA384-ECDSA",
        "Active",
        135,
        "MONTHS",
        "sealed",
        "PEM",
        T0,
        {"a": "1"},
    )
    return replace(base, **changes)


async def test_profiles_are_per_account_and_region(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        await tx.signing.put_profile(_profile(EAST, "release"))
        await tx.signing.put_profile(_profile(EAST, "alpha"))
        await tx.signing.put_profile(_profile(WEST, "release", tags={}))
    later = T0 + timedelta(hours=1)
    async with metadata_store.transaction(write=True) as tx:
        await tx.signing.put_profile(
            _profile(EAST, "release", status="Revoked", revoked_at=later, revoked_by="me", status_reason="drill")
        )
    async with metadata_store.transaction() as tx:
        assert [p.name for p in await tx.signing.profiles(EAST)] == ["alpha", "release"]
        revoked = await tx.signing.profile(EAST, "release")
        assert revoked is not None
        assert (revoked.status, revoked.revoked_at, revoked.revoked_by, revoked.tags) == (
            "Revoked",
            later,
            "me",
            {"a": "1"},
        )
        assert revoked.arn == ARN
        west = await tx.signing.profile(WEST, "release")
        assert west is not None
        assert west.status == "Active"
        assert await tx.signing.profile(EAST, "missing") is None


async def test_the_first_root_stays(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        first = await tx.signing.put_root(SigningRoot("123456789012", "k1", "c1", T0))
        second = await tx.signing.put_root(SigningRoot("123456789012", "k2", "c2", T0))
    assert (first.key_ciphertext, second.key_ciphertext) == ("k1", "k1")
    async with metadata_store.transaction() as tx:
        assert await tx.signing.root("210987654321") is None


async def test_statuses_per_image_and_profile(metadata_store: MetadataStore) -> None:
    digest = "sha256:" + "a" * 64
    other = ARN.replace("release", "second")
    async with metadata_store.transaction(write=True) as tx:
        await tx.signing.put_statuses(
            [
                SigningStatusRecord(EAST, "app", digest, ARN, "IN_PROGRESS", T0, principal_arn="p"),
                SigningStatusRecord(EAST, "app", digest, other, "IN_PROGRESS", T0),
            ]
        )
        await tx.signing.put_statuses(
            [SigningStatusRecord(EAST, "app", digest, other, "FAILED", T0, "SigningProfileRevoked", "revoked")]
        )
    async with metadata_store.transaction() as tx:
        rows = await tx.signing.statuses(EAST, "app", digest)
        assert [(r.profile_arn, r.status, r.failure_code, r.principal_arn) for r in rows] == [
            (ARN, "IN_PROGRESS", None, "p"),
            (other, "FAILED", "SigningProfileRevoked", None),
        ]
        assert await tx.signing.statuses(WEST, "app", digest) == []
    async with metadata_store.transaction(write=True) as tx:
        await tx.signing.delete_statuses(EAST, "app", digest)
    async with metadata_store.transaction() as tx:
        assert await tx.signing.statuses(EAST, "app", digest) == []
