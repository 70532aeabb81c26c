"""year-to-date counters of individuals exported

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "counted_subjects",
        sa.Column("exporter_id", sa.String(100), nullable=False),
        sa.Column("counter_year", sa.Integer(), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("subject", sa.String(128), nullable=False),
        sa.Column("first_counted_at", gbadz.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exporter_id", "counter_year", "basis", "kind", "subject", name=op.f("pk_counted_subjects")
        ),
    )


def downgrade() -> None:
    op.drop_table("counted_subjects")
