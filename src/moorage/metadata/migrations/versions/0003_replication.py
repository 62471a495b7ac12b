"""replication: creation_templates, replication_statuses

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


def downgrade() -> None:
    op.drop_index("ix_replication_statuses_updated_at", table_name="replication_statuses")
    op.drop_table("replication_statuses")
    op.drop_table("creation_templates")
