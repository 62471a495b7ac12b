"""tags/list order: an index on tags (repo_id, lower(name), name)

The OCI tags listing is ordered case-insensitively with the exact name breaking ties
(ImageTable.tags). Without this index every page sorted all of a repository's tags (12.8 ms
a page at 100,000 tags in SQLite); with it a page is read off the index from its cursor
(0.03 ms, wherever the cursor is).

Revision ID: 0009_tag_order
Revises: 0008_console
Create Date: 2026-12-04 03:05:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_tag_order"
down_revision: str | None = "0008_console"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_tags_repo_folded", "tags", ["repo_id", sa.text("lower(name)"), "name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_tags_repo_folded", table_name="tags")
