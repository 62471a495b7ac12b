"""The Secrets Manager tables (metadata/secrets.py), on SQLite and on a real PostgreSQL server,
each freshly migrated; and the Secrets service over them (sealing, stages, deletion window)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import pytest

from moorage.clock import FixedClock
from moorage.errors import SecretNotFoundError, SecretStateError
from moorage.identity import Identities
from moorage.metadata import MetadataStore, SecretRecord, SecretVersionRecord
from moorage.model import RegistryRef
from moorage.secrets import Secrets

pytestmark = pytest.mark.anyio

EAST = RegistryRef("123456789012", "us-east-1")
WEST = RegistryRef("123456789012", "eu-west-1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _secret(registry: RegistryRef, name: str, **extra: object) -> SecretRecord:
    arn = f"arn:aws:secretsmanager:{registry.region}:{registry.account_id}:secret:{name}-AbCdEf"
    return SecretRecord(registry, name, arn, T0, T0, **extra)  # type: ignore[arg-type]


async def test_secrets_are_unique_per_registry_and_name(metadata_store: MetadataStore) -> None:
    a = _secret(EAST, "a", description="first", tags=(("k", "v"), ("z", "1")))
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.secrets.insert(a)
        assert await tx.secrets.insert(_secret(WEST, "a"))
        assert await tx.secrets.insert(_secret(EAST, "b"))
        assert not await tx.secrets.insert(_secret(EAST, "a"))
    async with metadata_store.transaction() as tx:
        assert await tx.secrets.get(EAST, "a") == a
        assert await tx.secrets.get_by_arn(a.arn) == a
        assert await tx.secrets.get(EAST, "missing") is None
        assert [s.name for s in await tx.secrets.list(EAST)] == ["a", "b"]
        assert [s.name for s in await tx.secrets.list(WEST)] == ["a"]
    later = T0 + timedelta(days=1)
    changed = SecretRecord(
        EAST, "a", a.arn, T0, later, "second", "alias/k", (("k", "w"),), later, later, later + timedelta(days=7)
    )
    async with metadata_store.transaction(write=True) as tx:
        await tx.secrets.update(changed)
    async with metadata_store.transaction() as tx:
        assert await tx.secrets.get(EAST, "a") == changed


async def test_versions_and_stages_and_delete(metadata_store: MetadataStore) -> None:
    a = _secret(EAST, "a")
    v1 = SecretVersionRecord(a.arn, "v" * 32, "sealed-1", False, T0, ("AWSCURRENT",))
    v2 = SecretVersionRecord(a.arn, "w" * 32, "sealed-2", True, T0 + timedelta(seconds=1), ())
    async with metadata_store.transaction(write=True) as tx:
        await tx.secrets.insert(a)
        assert await tx.secrets.add_version(v1)
        assert await tx.secrets.add_version(v2)
        assert not await tx.secrets.add_version(v1)
        await tx.secrets.set_stages(a.arn, v1.version_id, ["AWSPREVIOUS"])
        await tx.secrets.set_stages(a.arn, v2.version_id, ["AWSCURRENT", "AWSPENDING"])
    async with metadata_store.transaction() as tx:
        versions = await tx.secrets.versions(a.arn)
        assert [(v.version_id, v.stages, v.binary, v.ciphertext) for v in versions] == [
            (v1.version_id, ("AWSPREVIOUS",), False, "sealed-1"),
            (v2.version_id, ("AWSCURRENT", "AWSPENDING"), True, "sealed-2"),
        ]
    async with metadata_store.transaction(write=True) as tx:
        await tx.secrets.delete_version(a.arn, v1.version_id)
    async with metadata_store.transaction() as tx:
        assert [v.version_id for v in await tx.secrets.versions(a.arn)] == [v2.version_id]
    async with metadata_store.transaction(write=True) as tx:
        await tx.secrets.delete(a.arn)
    async with metadata_store.transaction() as tx:
        assert await tx.secrets.get(EAST, "a") is None
        assert await tx.secrets.versions(a.arn) == []


async def test_the_service_seals_values_and_ends_the_recovery_window(metadata_store: MetadataStore) -> None:
    clock = FixedClock(T0)
    service = Secrets(metadata_store, Identities(metadata_store, os.urandom(32), clock=clock), clock=clock)
    record, version = await service.create(EAST, "ecr-pullthroughcache/x", value='{"username":"u","accessToken":"t"}')
    assert version is not None
    async with metadata_store.transaction() as tx:
        (stored,) = await tx.secrets.versions(record.arn)
    assert "accessToken" not in stored.ciphertext
    creds = await service.pull_through_credentials(EAST, record.arn)
    assert (creds.username, creds.access_token) == ("u", "t")

    other_key = Secrets(metadata_store, Identities(metadata_store, os.urandom(32), clock=clock), clock=clock)
    with pytest.raises(Exception, match="can't decrypt"):
        await other_key.get_value(EAST, record.arn)

    await service.delete(EAST, record.name, recovery_days=7)
    with pytest.raises(SecretStateError):
        await service.get_value(EAST, record.name)
    clock.advance(timedelta(days=7))
    with pytest.raises(SecretNotFoundError):
        await service.describe(EAST, record.name)
    again, _ = await service.create(EAST, "ecr-pullthroughcache/x", value="{}")  # the expired row is purged
    assert again.arn != record.arn or again.created_at != record.created_at
