"""image scanning: the OSV vulnerability database (vuln_records, vuln_affected) and image_scans

Revision ID: 0004_scanning
Revises: 0003_replication
Create Date: 2026-12-02 15:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_scanning"
down_revision: str | None = "0003_replication"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "vuln_records",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("id", sa.String(length=200), nullable=False),
        sa.Column("modified", sa.String(length=64), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("changed_in", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("generation", "id", name=op.f("pk_vuln_records")),
    )
    op.create_table(
        "vuln_affected",
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("ecosystem", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.Column("vuln_id", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("generation", "ecosystem", "name", "vuln_id", name=op.f("pk_vuln_affected")),
    )
    op.create_table(
        "image_scans",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("scan_type", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("completed_at", sa.Float(), nullable=True),
        sa.Column("lease_until", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("result", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("account_id", "region", "repository", "digest", name=op.f("pk_image_scans")),
    )
    op.create_index("ix_image_scans_status", "image_scans", ["status"], unique=False)
    op.create_table(
        "image_packages",
        sa.Column("account_id", sa.String(length=12), nullable=False),
        sa.Column("region", sa.String(length=32), nullable=False),
        sa.Column("repository", sa.String(length=256), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("ecosystem", sa.String(length=200), nullable=False),
        sa.Column("name", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint(
            "account_id", "region", "repository", "digest", "ecosystem", "name", name=op.f("pk_image_packages")
        ),
    )
    op.create_index("ix_image_packages_key", "image_packages", ["ecosystem", "name"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_image_packages_key", table_name="image_packages")
    op.drop_table("image_packages")
    op.drop_index("ix_image_scans_status", table_name="image_scans")
    op.drop_table("image_scans")
    op.drop_table("vuln_affected")
    op.drop_table("vuln_records")
