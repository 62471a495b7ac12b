"""A page of tags/list is read off ix_tags_repo_folded from its cursor (SQLite, the embedded
default): without the index every page sorted all of a repository's tags, 12.8 ms a page at
100,000 tags; a cursor that is only filtered, not a range start, walked the index from the
repository's first tag."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from moorage.metadata.migrate import upgrade
from moorage.metadata.sql.images import _TAG_PAGE

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("after", [False, True], ids=["first page", "after a cursor"])
async def test_a_tag_page_reads_the_index_from_its_cursor(tmp_path: Path, after: bool) -> None:
    path = tmp_path / "metadata.db"
    await upgrade(f"sqlite:///{path}")
    compiled = _TAG_PAGE[after, True].compile(dialect=sqlite.dialect())
    names = compiled.positiontup or []
    values = {**compiled.params, "repo": 1, "after": "v1", "after_folded": "v1", "limit": 101}
    with sqlite3.connect(path) as db:
        plan = " | ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {compiled}", [values[n] for n in names]))
    assert "ix_tags_repo_folded" in plan
    assert "TEMP B-TREE" not in plan  # no sort of the repository's tags
    if after:
        assert "<expr>>?" in plan  # the range starts at the cursor
