"""transfer log: entries, head, signed checkpoints

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "transfer_log_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_transfer_log_head")),
    )
    op.execute("INSERT INTO transfer_log_head (id, size) VALUES (1, 0)")
    op.create_table(
        "transfer_log",
        sa.Column("index", big, autoincrement=False, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("grant_id", sa.String(36), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("dataset_id", sa.String(100), nullable=True),
        sa.Column("exporter_org_id", sa.String(36), nullable=True),
        sa.Column("recipient_org_id", sa.String(36), nullable=True),
        sa.Column("origin", sa.String(16), nullable=True),
        sa.Column("destination", sa.String(16), nullable=True),
        sa.Column("outcome", sa.String(32), nullable=True),
        sa.Column("mechanism", sa.String(32), nullable=True),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("leaf_hash", sa.String(64), nullable=False),
        sa.Column("logged_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("index", name=op.f("pk_transfer_log")),
        sa.UniqueConstraint("idempotency_key", name="uq_transfer_log_idempotency_key"),
    )
    op.create_index(op.f("ix_transfer_log_grant_id"), "transfer_log", ["grant_id"])
    op.create_index(op.f("ix_transfer_log_exporter_org_id"), "transfer_log", ["exporter_org_id"])
    op.create_index(op.f("ix_transfer_log_recipient_org_id"), "transfer_log", ["recipient_org_id"])
    op.create_table(
        "transfer_log_checkpoints",
        sa.Column("tree_size", big, autoincrement=False, nullable=False),
        sa.Column("root_hash", sa.String(64), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("key_id", sa.String(100), nullable=False),
        sa.Column("signature", sa.String(200), nullable=False),
        sa.Column("signed_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name=op.f("pk_transfer_log_checkpoints")),
    )


def downgrade() -> None:
    op.drop_table("transfer_log_checkpoints")
    op.drop_index(op.f("ix_transfer_log_recipient_org_id"), table_name="transfer_log")
    op.drop_index(op.f("ix_transfer_log_exporter_org_id"), table_name="transfer_log")
    op.drop_index(op.f("ix_transfer_log_grant_id"), table_name="transfer_log")
    op.drop_table("transfer_log")
    op.drop_table("transfer_log_head")
