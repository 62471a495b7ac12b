"""managed signing: signing_profiles, signing_roots, signing_statuses

Revision ID: 0007_signing
Revises: 0006_secrets
Create Date: 2026-12-02 17:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_signing"
down_revision: str | None = "0006_secrets"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "signing_profiles",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=10), nullable=False),
        sa.Column("platform_id", sa.String(length=100), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("status_reason", sa.String(length=500), nullable=True),
        sa.Column("validity_value", sa.Integer(), nullable=False),
        sa.Column("validity_type", sa.String(length=10), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=False),
        sa.Column("cert_chain", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("revoked_by", sa.String(length=2048), nullable=True),
        sa.Column("revocation_effective_from", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "region", "name", name=op.f("pk_signing_profiles")),
    )
    op.create_table(
        "signing_roots",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("key_ciphertext", sa.Text(), nullable=False),
        sa.Column("cert_pem", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_signing_roots")),
    )
    op.create_table(
        "signing_statuses",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=200), nullable=False),
        sa.Column("profile_arn", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("failure_code", sa.String(length=100), nullable=True),
        sa.Column("failure_reason", sa.String(length=1000), nullable=True),
        sa.Column("principal_arn", sa.String(length=2048), nullable=True),
        sa.Column("signature_digest", sa.String(length=200), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "region", "repository", "digest", "profile_arn", name=op.f("pk_signing_statuses")
        ),
    )


def downgrade() -> None:
    op.drop_table("signing_statuses")
    op.drop_table("signing_roots")
    op.drop_table("signing_profiles")
