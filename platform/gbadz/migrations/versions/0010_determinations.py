"""determinations: review steps, evidence registry v2, obligations, grant end

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("reviews", sa.JSON(), nullable=False, server_default="[]"))
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("determination", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("determination_log_index", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("copies_deleted_at", ts(), nullable=True))
        batch.add_column(sa.Column("deletion_attested_at", ts(), nullable=True))
        batch.add_column(sa.Column("deletion_attested_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("deletion_statement", sa.Text(), nullable=True))
    with op.batch_alter_table("mechanism_evidence") as batch:
        # An amended or withdrawn filing keeps its row; its reference may be filed again.
        batch.drop_constraint("uq_mechanism_evidence_kind", type_="unique")
        batch.create_index("ix_mechanism_evidence_reference", ["kind", "reference"])
        batch.add_column(sa.Column("recorded_by_subject", sa.String(200), nullable=True))
        batch.add_column(sa.Column("variant", sa.String(32), nullable=True))
        batch.add_column(sa.Column("authority", sa.String(32), nullable=True))
        batch.add_column(sa.Column("authority_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("sector", sa.String(16), nullable=True))
        batch.add_column(sa.Column("dataset_ids", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("spi_categories", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("approved_individuals", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("document_key", sa.String(300), nullable=True))
        batch.add_column(sa.Column("document_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("document_size", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("document_type", sa.String(100), nullable=True))
        batch.add_column(sa.Column("supersedes", sa.String(36), nullable=True))
        batch.add_column(sa.Column("withdrawn_at", ts(), nullable=True))
        batch.add_column(sa.Column("withdrawn_by", sa.String(200), nullable=True))
        batch.add_column(sa.Column("withdrawn_reason", sa.Text(), nullable=True))
    op.create_table(
        "obligations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner_org_id", sa.String(36), nullable=True),
        sa.Column("owner_role", sa.String(16), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("precondition", sa.Boolean(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(300), nullable=True),
        sa.Column("evidence_date", sa.Date(), nullable=True),
        sa.Column("met_by", sa.String(200), nullable=True),
        sa.Column("met_at", ts(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
    )
    op.create_index("ix_obligations_grant_id", "obligations", ["grant_id"])
    op.create_index("ix_obligations_owner_org_id", "obligations", ["owner_org_id"])
    op.create_index("ix_obligations_state", "obligations", ["state"])


def downgrade() -> None:
    op.drop_index("ix_obligations_state", table_name="obligations")
    op.drop_index("ix_obligations_owner_org_id", table_name="obligations")
    op.drop_index("ix_obligations_grant_id", table_name="obligations")
    op.drop_table("obligations")
    with op.batch_alter_table("mechanism_evidence") as batch:
        for name in (
            "withdrawn_reason",
            "withdrawn_by",
            "withdrawn_at",
            "supersedes",
            "document_type",
            "document_size",
            "document_sha256",
            "document_key",
            "approved_individuals",
            "spi_categories",
            "dataset_ids",
            "sector",
            "authority_name",
            "authority",
            "variant",
            "recorded_by_subject",
        ):
            batch.drop_column(name)
        batch.drop_index("ix_mechanism_evidence_reference")
        batch.create_unique_constraint("uq_mechanism_evidence_kind", ["kind", "reference"])
    with op.batch_alter_table("grants") as batch:
        for name in (
            "deletion_statement",
            "deletion_attested_by",
            "deletion_attested_at",
            "copies_deleted_at",
            "determination_log_index",
            "determination",
        ):
            batch.drop_column(name)
    with op.batch_alter_table("access_requests") as batch:
        batch.drop_column("reviews")
