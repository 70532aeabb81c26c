"""ingest worker: an upload's run is claimed (running), and keeps the DAG's task states

Issue #19: the API's embedded ingest worker claims a queued upload (queued -> running, a
conditional UPDATE so two replicas never run one upload twice), runs it through the ingest
DAG and stores the task states the runner reports beside the result. ``status`` is a plain
string column (no CHECK), so the new states ``running`` and ``failed`` need no constraint.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.add_column(sa.Column("started_at", ts(), nullable=True))
        batch.add_column(sa.Column("task_states", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(100), nullable=True))
    op.create_index("ix_ingestion_runs_status", "ingestion_runs", ["status"])


def downgrade() -> None:
    op.drop_index("ix_ingestion_runs_status", table_name="ingestion_runs")
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.drop_column("claimed_by")
        batch.drop_column("task_states")
        batch.drop_column("started_at")
