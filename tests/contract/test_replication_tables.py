"""The creation-template and replication-status tables (metadata/replication.py), on SQLite and
on a real PostgreSQL server, each freshly migrated."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from moorage.metadata import MetadataStore
from moorage.metadata.replication import ReplicationStatusRecord, TemplateRecord
from moorage.model import RegistryRef

pytestmark = pytest.mark.anyio

EAST = RegistryRef("123456789012", "us-east-1")
WEST = RegistryRef("123456789012", "eu-west-1")
OTHER = RegistryRef("210987654321", "us-east-1")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_templates_are_per_registry_and_prefix(metadata_store: MetadataStore) -> None:
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.templates.create(TemplateRecord(EAST, "prod", '{"a": 1}', T0, T0))
        assert await tx.templates.create(TemplateRecord(EAST, "ROOT", '{"a": 2}', T0, T0))
        assert await tx.templates.create(TemplateRecord(WEST, "prod", '{"a": 3}', T0, T0))
        assert not await tx.templates.create(TemplateRecord(EAST, "prod", '{"a": 4}', T0, T0))
    later = T0 + timedelta(minutes=1)
    async with metadata_store.transaction(write=True) as tx:
        assert await tx.templates.update(TemplateRecord(EAST, "prod", '{"a": 5}', T0, later))
        assert not await tx.templates.update(TemplateRecord(OTHER, "prod", '{"a": 6}', T0, later))
    async with metadata_store.transaction() as tx:
        assert [(r.prefix, r.document) for r in await tx.templates.list(EAST)] == [
            ("ROOT", '{"a": 2}'),
            ("prod", '{"a": 5}'),
        ]
        prod = await tx.templates.get(EAST, "prod")
        assert prod is not None
        assert (prod.created_at, prod.updated_at) == (T0, later)
        assert await tx.templates.get(OTHER, "prod") is None
    async with metadata_store.transaction(write=True) as tx:
        deleted = await tx.templates.delete(EAST, "prod")
        assert deleted is not None
        assert deleted.document == '{"a": 5}'
        assert await tx.templates.delete(EAST, "prod") is None
    async with metadata_store.transaction() as tx:
        assert [r.prefix for r in await tx.templates.list(EAST)] == ["ROOT"]
        assert [r.prefix for r in await tx.templates.list(WEST)] == ["prod"]


async def test_statuses_are_replaced_per_image_and_destination(metadata_store: MetadataStore) -> None:
    digest = "sha256:" + "a" * 64

    def row(dest: RegistryRef, status: str, code: str | None, at: datetime) -> ReplicationStatusRecord:
        return ReplicationStatusRecord(EAST, "team/app", digest, dest, status, code, at)

    async with metadata_store.transaction(write=True) as tx:
        await tx.replication.put([row(WEST, "IN_PROGRESS", None, T0), row(OTHER, "IN_PROGRESS", None, T0)])
    async with metadata_store.transaction(write=True) as tx:
        await tx.replication.put([row(WEST, "COMPLETE", None, T0 + timedelta(seconds=1))])
        await tx.replication.put([row(OTHER, "FAILED", "ACCESS_DENIED", T0 + timedelta(seconds=2))])
    async with metadata_store.transaction() as tx:
        found = await tx.replication.for_image(EAST, "team/app", digest)
        assert [(r.destination, r.status, r.failure_code) for r in found] == [
            (WEST, "COMPLETE", None),
            (OTHER, "FAILED", "ACCESS_DENIED"),
        ]
        assert await tx.replication.for_image(WEST, "team/app", digest) == []
        failed = await tx.replication.list(statuses=["FAILED", "IN_PROGRESS"])
        assert [(r.destination, r.status) for r in failed] == [(OTHER, "FAILED")]
        newest = await tx.replication.list(repository="team/app")
        assert [r.destination for r in newest] == [OTHER, WEST]
        assert await tx.replication.list(repository="other") == []
