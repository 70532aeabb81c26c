"""analysis budget: each analysis grant's privacy budget, and the analyses asked under it

Compute-to-data (issue #18): a grant of kind ``analysis`` spends a differential-privacy budget
(ε, δ from the contract's ``gbadz.compute.budget``) across its queries. The budget row is
charged under a row lock before a query runs; each query is a row that ends released (its
result and transfer-log index kept) or refunded.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    op.create_table(
        "analysis_budgets",
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("epsilon_total", sa.Float(), nullable=False),
        sa.Column("delta_total", sa.Float(), nullable=False),
        sa.Column("epsilon_spent", sa.Float(), nullable=False),
        sa.Column("delta_spent", sa.Float(), nullable=False),
        sa.Column("updated_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name="pk_analysis_budgets"),
    )
    op.create_table(
        "analyses",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("grant_id", sa.String(36), nullable=False),
        sa.Column("dataset_id", sa.String(100), nullable=False),
        sa.Column("dataset_version", sa.Integer(), nullable=False),
        sa.Column("sql", sa.Text(), nullable=False),
        sa.Column("query_sha256", sa.String(64), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("columns", sa.JSON(), nullable=True),
        sa.Column("rows", sa.JSON(), nullable=True),
        sa.Column("accuracy", sa.JSON(), nullable=True),
        sa.Column("result_sha256", sa.String(64), nullable=True),
        sa.Column("transfer_id", sa.String(36), nullable=True),
        sa.Column("log_index", sa.BigInteger(), nullable=True),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("finished_at", ts(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_analyses"),
        sa.UniqueConstraint("grant_id", "idempotency_key", name="uq_analyses_grant_idempotency_key"),
    )
    op.create_index("ix_analyses_grant_id", "analyses", ["grant_id"])
    op.create_index("ix_analyses_state", "analyses", ["state"])


def downgrade() -> None:
    op.drop_index("ix_analyses_state", table_name="analyses")
    op.drop_index("ix_analyses_grant_id", table_name="analyses")
    op.drop_table("analyses")
    op.drop_table("analysis_budgets")
