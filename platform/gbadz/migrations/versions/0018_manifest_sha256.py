"""manifest sha256: each published version records the SHA-256 of its manifest

Issue #20: every reuse of a stored file checks its SHA-256. A version's parts are checked
against the hashes its manifest lists; the manifest itself against this column, written when
the version is registered. Versions published before stay NULL: their parts are still checked
against their manifest.

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("manifest_sha256", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("manifest_sha256")
