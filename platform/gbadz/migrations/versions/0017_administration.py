"""administration: organisations can be disabled, operator organisations, named clients

Issue #19: administrators manage organisations, clients and people from the console and the
CLI. An organisation gains ``disabled_at`` (its people and clients stop working at once; its
grants and records stay) and ``operator`` (the zone's operator: only its people may be
administrators); a client gains an optional ``name`` saying what it is for.

Revision ID: 0017
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0017"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch: SQLite would rebuild the table, and dropping the old
    # ``organizations`` fails while people, clients and grants reference it.
    op.add_column(
        "organizations", sa.Column("operator", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.add_column("organizations", sa.Column("disabled_at", gbadz.models.UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_organizations_disabled_at"), "organizations", ["disabled_at"])
    op.add_column("oauth_clients", sa.Column("name", sa.String(100), nullable=True))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL), for the same reason.
    op.drop_column("oauth_clients", "name")
    op.drop_index(op.f("ix_organizations_disabled_at"), table_name="organizations")
    op.drop_column("organizations", "disabled_at")
    op.drop_column("organizations", "operator")
