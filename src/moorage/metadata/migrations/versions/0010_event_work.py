"""events.work: which of Moorage's own consumers have work for an event

A push's transaction already knows whether the signing configuration gave it IN_PROGRESS rows
and whether the replication configuration has destinations for the repository. Written beside
the event, it lets the signing and replication consumers pass over the pushes they have nothing
to do for without a read transaction each (about 0.3 CPU-ms a push). NULL (every event written
before this revision) means undecided: every consumer looks, as before.

Revision ID: 0010_event_work
Revises: 0009_tag_order
Create Date: 2026-12-04 13:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_event_work"
down_revision: str | None = "0009_tag_order"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("work", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("work")
