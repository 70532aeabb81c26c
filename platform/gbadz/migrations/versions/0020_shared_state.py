"""shared state: what API replicas decide together lives in the database (issue #17, ADR 0027)

- ``auth_limit_keys``: one row per counted key (the SHA-256 of an address, a username at an
  address, ...). An attempt upserts its keys' rows first (``INSERT ... ON CONFLICT DO UPDATE``),
  which locks them until the attempt is counted: concurrent guesses on any replicas queue on
  the row, so none of them reads a count the others have not added to yet.
- ``catalog_generation``: one row, bumped by every transaction that changes the catalog. The
  read index of every replica compares it (with the row count and newest ``updated_at``, kept
  for writes made outside gbadz) instead of trusting a timestamp a replica's clock wrote.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_limit_keys",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("touched_at", gbadz.models.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key_hash", name=op.f("pk_auth_limit_keys")),
    )
    op.create_index(op.f("ix_auth_limit_keys_touched_at"), "auth_limit_keys", ["touched_at"])
    generation = op.create_table(
        "catalog_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_catalog_generation")),
    )
    op.bulk_insert(generation, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("catalog_generation")
    op.drop_index(op.f("ix_auth_limit_keys_touched_at"), table_name="auth_limit_keys")
    op.drop_table("auth_limit_keys")
