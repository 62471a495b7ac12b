"""The delivery loops' outbox read (`events.after`) and the backlog count on SQLite starts its index range at the
position: with the row-value form `(xid, seq) > (?, ?)`, SQLite ranged over `xid >= ?` alone and
walked every older event, 4 ms a read at 50,000 events, on every push's wake-up."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from moorage.metadata.migrate import upgrade
from moorage.metadata.sql.events import _after_statement, count_after_statement

pytestmark = pytest.mark.anyio


async def test_the_outbox_read_ranges_from_its_position(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    await upgrade(f"sqlite:///{path}")
    compiled = _after_statement("sqlite").compile(dialect=sqlite.dialect())
    values = {**compiled.params, "xid": 0, "seq": 40_000, "limit": 100}
    with sqlite3.connect(path) as db:
        rows = db.execute(f"EXPLAIN QUERY PLAN {compiled}", [values[n] for n in compiled.positiontup or []])
        plan = " | ".join(row[3] for row in rows)
    assert "ix_events_position (xid=? AND seq>?)" in plan
    assert "SCAN events" not in plan


async def test_the_backlog_count_ranges_from_its_position(tmp_path: Path) -> None:
    path = tmp_path / "metadata.db"
    await upgrade(f"sqlite:///{path}")
    compiled = count_after_statement("sqlite", (0, 40_000)).compile(dialect=sqlite.dialect())
    with sqlite3.connect(path) as db:
        rows = db.execute(f"EXPLAIN QUERY PLAN {compiled}", [compiled.params[n] for n in compiled.positiontup or []])
        plan = " | ".join(row[3] for row in rows)
    assert "ix_events_position (xid=? AND seq>?)" in plan
    assert "ix_events_position (xid>?)" in plan
    assert "SCAN events" not in plan
