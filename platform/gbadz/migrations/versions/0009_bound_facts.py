"""facts bound to registrations and data: counted individuals per version, reservations,
suspensions, declared processing location and reviewers' findings

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    with op.batch_alter_table("datasets") as batch:
        # Every dataset, old ones included, waits for a compliance officer's sign-off.
        batch.add_column(
            sa.Column("classification_state", sa.String(16), nullable=False, server_default="pending")
        )
        batch.add_column(sa.Column("classification_fingerprint", sa.String(64), nullable=True))
        batch.add_column(sa.Column("classification_review", sa.JSON(), nullable=True))
    with op.batch_alter_table("dataset_versions") as batch:
        batch.add_column(sa.Column("individuals", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("sensitive_individuals", sa.BigInteger(), nullable=True))
    op.create_table(
        "version_subjects",
        sa.Column("dataset_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("subject", sa.String(64), nullable=False),
        sa.Column("sensitive", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "version", "n", name="pk_version_subjects"),
    )
    op.create_table(
        "counter_totals",
        sa.Column("exporter_id", sa.String(100), nullable=False),
        sa.Column("counter_year", sa.Integer(), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("individuals", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("exporter_id", "counter_year", "basis", "kind", name="pk_counter_totals"),
    )
    # Counters recorded before the totals existed.
    op.execute(
        "INSERT INTO counter_totals (exporter_id, counter_year, basis, kind, individuals) "
        "SELECT exporter_id, counter_year, basis, kind, count(*) FROM counted_subjects "
        "GROUP BY exporter_id, counter_year, basis, kind"
    )
    op.create_table(
        "counted_versions",
        sa.Column("exporter_id", sa.String(100), nullable=False),
        sa.Column("counter_year", sa.Integer(), nullable=False),
        sa.Column("basis", sa.String(16), nullable=False),
        sa.Column("dataset_id", sa.String(100), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "exporter_id", "counter_year", "basis", "dataset_id", "version", name="pk_counted_versions"
        ),
    )
    with op.batch_alter_table("access_requests") as batch:
        batch.add_column(sa.Column("processing_location", sa.String(16), nullable=True))
        batch.add_column(sa.Column("necessity_justification", sa.Text(), nullable=True))
        batch.add_column(sa.Column("findings", sa.JSON(), nullable=False, server_default="{}"))
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("suspended_at", ts(), nullable=True))
        batch.add_column(sa.Column("suspended_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("reserved_pi", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved_spi", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("reserved_year", sa.Integer(), nullable=True))
    op.create_index("ix_grants_provider_org_id", "grants", ["provider_org_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_provider_org_id", "grants")
    with op.batch_alter_table("grants") as batch:
        for name in ("reserved_year", "reserved_spi", "reserved_pi", "suspended_reason", "suspended_at"):
            batch.drop_column(name)
    with op.batch_alter_table("access_requests") as batch:
        for name in ("findings", "necessity_justification", "processing_location"):
            batch.drop_column(name)
    op.drop_table("counted_versions")
    op.drop_table("counter_totals")
    op.drop_table("version_subjects")
    with op.batch_alter_table("dataset_versions") as batch:
        batch.drop_column("sensitive_individuals")
        batch.drop_column("individuals")
    with op.batch_alter_table("datasets") as batch:
        for name in ("classification_review", "classification_fingerprint", "classification_state"):
            batch.drop_column(name)
