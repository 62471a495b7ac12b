"""replication: creation_templates, replication_statuses, replication_backfills, backfill_items

Revision ID: 0003_replication
Revises: 0002
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_replication"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "creation_templates",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("prefix", sa.String(length=256), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "region", "prefix", name=op.f("pk_creation_templates")),
    )
    op.create_table(
        "replication_statuses",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("dest_account_id", sa.String(length=12), nullable=False),
        sa.Column("dest_region", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id",
            "region",
            "repository",
            "digest",
            "dest_account_id",
            "dest_region",
            name=op.f("pk_replication_statuses"),
        ),
    )
    op.create_index("ix_replication_statuses_updated_at", "replication_statuses", ["updated_at"], unique=False)

    op.create_table(
        "replication_backfills",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("dest_account_id", sa.String(length=12), nullable=False),
        sa.Column("dest_region", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("total", sa.Integer(), nullable=True),
        sa.Column("completed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failure_codes", sa.Text(), server_default="", nullable=False),
        sa.Column("started_at", sa.Float(), nullable=False),
        sa.Column("ended_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_replication_backfills")),
    )
    op.create_index(
        "ix_replication_backfills_registry", "replication_backfills", ["account_id", "region", "started_at"]
    )
    op.create_table(
        "backfill_items",
        sa.Column("backfill_id", sa.String(length=36), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("tag", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("sub_failure_codes", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["backfill_id"],
            ["replication_backfills.id"],
            name=op.f("fk_backfill_items_backfill_id_replication_backfills"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("backfill_id", "repository", "digest", "tag", name=op.f("pk_backfill_items")),
    )


def downgrade() -> None:
    op.drop_table("backfill_items")
    op.drop_index("ix_replication_backfills_registry", table_name="replication_backfills")
    op.drop_table("replication_backfills")
    op.drop_index("ix_replication_statuses_updated_at", table_name="replication_statuses")
    op.drop_table("replication_statuses")
    op.drop_table("creation_templates")
