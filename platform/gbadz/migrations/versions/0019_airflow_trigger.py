"""airflow trigger: an upload's run records the Airflow DAG run that ingests it

Issue #17: with ``GBADZ_INGEST__WORKER_MODE=airflow`` an accepted upload triggers a run of the
ingest DAG through Airflow's REST API (ADR 0026). The ingestion run keeps that DAG run's id
(deterministic: derived from the run id and the upload's SHA-256), its last known state, the
reason the last trigger failed (the upload stays queued), how many triggers were tried and
when the next one is due (backoff).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.add_column(sa.Column("airflow_run_id", sa.String(250), nullable=True))
        batch.add_column(sa.Column("airflow_state", sa.String(32), nullable=True))
        batch.add_column(sa.Column("trigger_error", sa.String(500), nullable=True))
        batch.add_column(sa.Column("trigger_attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("next_trigger_at", ts(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ingestion_runs") as batch:
        batch.drop_column("next_trigger_at")
        batch.drop_column("trigger_attempts")
        batch.drop_column("trigger_error")
        batch.drop_column("airflow_state")
        batch.drop_column("airflow_run_id")
