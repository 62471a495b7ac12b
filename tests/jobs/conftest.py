"""Fixtures of the jobs tier: a migrated SQLite metadata store in the test's tmp dir, and the
whole service graph over one (`services`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from moorage.app import Moorage, build
from moorage.clock import FixedClock
from moorage.config import load_settings
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


@asynccontextmanager
async def services(tmp_path: Path, overrides: dict[str, object]) -> AsyncIterator[Moorage]:
    """Moorage's services on a migrated embedded store in `tmp_path`, configured by `overrides`,
    on a FixedClock at 2026-01-01 UTC; closed on exit."""
    settings, _ = load_settings(None, {}, {"data_dir": tmp_path, **overrides})
    await upgrade(settings.metadata.effective_url(tmp_path))
    built = await build(settings, clock=FixedClock(datetime(2026, 1, 1, tzinfo=UTC)))
    try:
        yield built
    finally:
        await built.close()
