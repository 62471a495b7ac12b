"""Secrets Manager: secrets, secret_versions

Revision ID: 0006_secrets
Revises: 0005_pull_through
Create Date: 2026-12-02 17:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_secrets"
down_revision: str | None = "0005_pull_through"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "secrets",
        sa.Column("arn", sa.String(length=2048), nullable=False),
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("kms_key_id", sa.String(length=2048), nullable=True),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("last_changed_at", sa.Float(), nullable=False),
        sa.Column("last_accessed_at", sa.Float(), nullable=True),
        sa.Column("deleted_at", sa.Float(), nullable=True),
        sa.Column("deletion_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("arn", name=op.f("pk_secrets")),
        sa.UniqueConstraint("account_id", "region", "name", name=op.f("uq_secrets_account_id")),
    )
    op.create_table(
        "secret_versions",
        sa.Column("arn", sa.String(length=2048), nullable=False),
        sa.Column("version_id", sa.String(length=64), nullable=False),
        sa.Column("ciphertext", sa.Text(), nullable=False),
        sa.Column("binary", sa.Boolean(), nullable=False),
        sa.Column("stages", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["arn"], ["secrets.arn"], name=op.f("fk_secret_versions_arn_secrets"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("arn", "version_id", name=op.f("pk_secret_versions")),
    )


def downgrade() -> None:
    op.drop_table("secret_versions")
    op.drop_table("secrets")
