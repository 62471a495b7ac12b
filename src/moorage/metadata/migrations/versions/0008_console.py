"""console listings: indexes on manifests (repo_id, pushed_at, digest) and (repo_id, image_size, digest)

The web console's repository page sorts a repository's images by push time or size and pages
through them (ImageTable.browse); these indexes let that page be read off an index instead of
sorting every image of the repository per request.

Revision ID: 0008_console
Revises: 0007_signing
Create Date: 2026-12-02 17:55:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008_console"
down_revision: str | None = "0007_signing"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.create_index("ix_manifests_pushed", ["repo_id", "pushed_at", "digest"], unique=False)
        batch_op.create_index("ix_manifests_size", ["repo_id", "image_size", "digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.drop_index("ix_manifests_size")
        batch_op.drop_index("ix_manifests_pushed")
