"""pull-through cache rules: pull_through_rules

Revision ID: 0005_pull_through
Revises: 0004_scanning
Create Date: 2026-12-02 15:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_pull_through"
down_revision: str | None = "0004_scanning"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pull_through_rules",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("prefix", sa.String(length=30), nullable=False),
        sa.Column("upstream_url", sa.String(length=2048), nullable=False),
        sa.Column("upstream_registry", sa.String(length=64), nullable=True),
        sa.Column("upstream_prefix", sa.String(length=30), nullable=False),
        sa.Column("credential_arn", sa.String(length=612), nullable=True),
        sa.Column("custom_role_arn", sa.String(length=2048), nullable=True),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "region", "prefix", name=op.f("pk_pull_through_rules")),
    )


def downgrade() -> None:
    op.drop_table("pull_through_rules")
