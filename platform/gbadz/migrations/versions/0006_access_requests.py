"""access requests, grants and the mechanism evidence registry

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    op.create_table(
        "access_requests",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("dataset_id", sa.String(100), nullable=False),
        sa.Column("requester_org_id", sa.String(36), nullable=False),
        sa.Column("provider_org_id", sa.String(36), nullable=True),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("purpose_text", sa.Text(), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("destination", sa.String(16), nullable=False),
        sa.Column("onward_transfer", sa.String(16), nullable=False),
        sa.Column("duration_days", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("licence_findings", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_requests")),
    )
    op.create_index(op.f("ix_access_requests_dataset_id"), "access_requests", ["dataset_id"])
    op.create_index(op.f("ix_access_requests_requester_org_id"), "access_requests", ["requester_org_id"])
    op.create_index(op.f("ix_access_requests_provider_org_id"), "access_requests", ["provider_org_id"])
    op.create_index(op.f("ix_access_requests_state"), "access_requests", ["state"])
    op.create_table(
        "grants",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("dataset_id", sa.String(100), nullable=False),
        sa.Column("grantee_org_id", sa.String(36), nullable=False),
        sa.Column("provider_org_id", sa.String(36), nullable=True),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=False),
        sa.Column("decision", sa.JSON(), nullable=False),
        sa.Column("granted_at", ts(), nullable=False),
        sa.Column("expires_at", ts(), nullable=False),
        sa.Column("revoked_at", ts(), nullable=True),
        sa.Column("revoked_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grants")),
        sa.ForeignKeyConstraint(
            ["request_id"], ["access_requests.id"], name=op.f("fk_grants_request_id_access_requests")
        ),
        sa.UniqueConstraint("request_id", name="uq_grants_request_id"),
    )
    op.create_index(op.f("ix_grants_grantee_org_id"), "grants", ["grantee_org_id"])
    op.create_index(op.f("ix_grants_dataset_id"), "grants", ["dataset_id"])
    op.create_table(
        "mechanism_evidence",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("exporter_org_id", sa.String(36), nullable=False),
        sa.Column("recipient_org_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reference", sa.String(200), nullable=False),
        sa.Column("issued", sa.Date(), nullable=True),
        sa.Column("valid_to", sa.Date(), nullable=True),
        sa.Column("effective_date", sa.Date(), nullable=True),
        sa.Column("filing_date", sa.Date(), nullable=True),
        sa.Column("purposes", sa.JSON(), nullable=False),
        sa.Column("recorded_by", sa.String(200), nullable=False),
        sa.Column("recorded_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mechanism_evidence")),
        sa.UniqueConstraint("kind", "reference", name="uq_mechanism_evidence_kind"),
    )
    op.create_index(
        "ix_mechanism_evidence_pair", "mechanism_evidence", ["exporter_org_id", "recipient_org_id"]
    )


def downgrade() -> None:
    op.drop_index("ix_mechanism_evidence_pair", table_name="mechanism_evidence")
    op.drop_table("mechanism_evidence")
    op.drop_index(op.f("ix_grants_dataset_id"), table_name="grants")
    op.drop_index(op.f("ix_grants_grantee_org_id"), table_name="grants")
    op.drop_table("grants")
    for column in ("state", "provider_org_id", "requester_org_id", "dataset_id"):
        op.drop_index(op.f(f"ix_access_requests_{column}"), table_name="access_requests")
    op.drop_table("access_requests")
