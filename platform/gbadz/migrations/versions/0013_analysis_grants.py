"""analysis grants: a request and its grant say whether they release a copy or aggregates

Issue #18 (compute-to-data): an access request may ask for ``analysis`` (differentially
private or thresholded aggregates computed inside the zone) instead of a ``copy`` of the
rows. The kind is part of what was decided and granted: a copy grant never answers an
analysis, an analysis grant never hands out a copy. Rows written before this revision were
all copies, hence the server default.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("access_requests", "grants"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="copy"))


def downgrade() -> None:
    for table in ("grants", "access_requests"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("kind")
