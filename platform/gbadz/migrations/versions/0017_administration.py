"""administration: organisations can be disabled, operator organisations, named clients

Issue #19: administrators manage organisations, clients and people from the console and the
CLI. An organisation gains ``disabled_at`` (its people and clients stop working at once; its
grants and records stay) and ``operator`` (the zone's operator: only its people may be
administrators); a client gains an optional ``name`` saying what it is for.

Revision ID: 0017
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0017"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("operator", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("disabled_at", gbadz.models.UTCDateTime(), nullable=True))
    op.create_index(op.f("ix_organizations_disabled_at"), "organizations", ["disabled_at"])
    with op.batch_alter_table("oauth_clients") as batch:
        batch.add_column(sa.Column("name", sa.String(100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oauth_clients") as batch:
        batch.drop_column("name")
    op.drop_index(op.f("ix_organizations_disabled_at"), table_name="organizations")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("disabled_at")
        batch.drop_column("operator")
