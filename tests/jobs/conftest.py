"""Fixtures of the jobs tier: a migrated SQLite metadata store in the test's tmp dir."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from moorage.metadata.migrate import upgrade
from moorage.metadata.sql import SqlMetadataStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqlMetadataStore]:
    """`sqlite:///<tmp>/metadata.db`, migrated; a second `SqlMetadataStore.open` on the same file
    stands for another process (or replica)."""
    url = f"sqlite:///{tmp_path}/metadata.db"
    await upgrade(url)
    opened = SqlMetadataStore.open(url)
    try:
        yield opened
    finally:
        await opened.close()
