"""Backends for the BlobStore contract suite.

Adding a backend: one more branch in `make_blob_store`, one in `staging_is_empty`, and its name in
`BLOB_STORE_KINDS`.

MetadataStore backends: `metadata_store` runs every test on SQLite (a file in tmp_path) and on
PostgreSQL (one real server per session, a fresh migrated database per test).
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from moorage.metadata import MetadataStore
from moorage.metadata.migrate import upgrade
from moorage.metadata.sql import SqlMetadataStore
from moorage.storage import BlobStore
from moorage.storage.filesystem import FilesystemBlobStore
from moorage.storage.memory import MemoryBlobStore
from tests.support.services import PostgresServer, postgres_available

BLOB_STORE_KINDS = ["memory", "filesystem"]


def make_blob_store(kind: str, tmp_path: Path) -> BlobStore:
    if kind == "memory":
        return MemoryBlobStore()
    if kind == "filesystem":
        return FilesystemBlobStore(tmp_path / "store")
    raise ValueError(f"unknown blob store kind: {kind}")


async def staging_is_empty(store: BlobStore) -> bool:
    """True when the backend holds no staged upload at all."""
    if isinstance(store, MemoryBlobStore):
        return not store.staged_upload_ids
    if isinstance(store, FilesystemBlobStore):
        return not any((store.root / "uploads").iterdir())
    raise TypeError(f"no staging check for {type(store).__name__}")


@pytest.fixture(params=BLOB_STORE_KINDS)
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    store = make_blob_store(request.param, tmp_path)
    try:
        yield store
        assert await staging_is_empty(store), "the test left staged uploads behind"
    finally:
        await store.close()


# --- MetadataStore -------------------------------------------------------------------------------

METADATA_STORE_KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
]
_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session; tests take fresh databases from it."""
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql (CI does)")
    with PostgresServer() as server:
        yield server


@pytest.fixture(params=METADATA_STORE_KINDS)
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A plain URL of an empty database of the parametrized kind (a PostgreSQL one is dropped after)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    name = f"moorage_{next(_database_numbers)}"
    url = server.create_database(name)
    try:
        yield url
    finally:
        server.drop_database(name)


@pytest.fixture
async def metadata_store(metadata_url: str) -> AsyncIterator[MetadataStore]:
    """A migrated, open SqlMetadataStore on `metadata_url`, closed after the test."""
    await upgrade(metadata_url)
    store = SqlMetadataStore.open(metadata_url)
    try:
        yield store
    finally:
        await store.close()
