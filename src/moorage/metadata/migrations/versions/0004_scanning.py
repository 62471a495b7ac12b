"""image scanning: the OSV vulnerability database (vuln_records, vuln_affected)

Revision ID: 0003_scanning
Revises: 0003_replication
Create Date: 2026-12-02 15:10:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_scanning"
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


def downgrade() -> None:
    op.drop_table("vuln_affected")
    op.drop_table("vuln_records")
