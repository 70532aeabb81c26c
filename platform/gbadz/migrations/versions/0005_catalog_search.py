"""catalog search: denormalised listing fields, full-text index, provider organisation

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23

SQLite gets an FTS5 table kept in step by triggers; PostgreSQL a generated, weighted
tsvector column with a GIN index. Both index the same four fields (name, tags, columns,
description) that :mod:`gbadz.catalog.search` queries.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_FIELDS = ("search_name", "search_tags", "search_columns", "search_description")
_SQLITE_INSERT = (
    "INSERT INTO datasets_fts(dataset_id, name, tags, columns, description) "
    "VALUES (new.id, new.search_name, new.search_tags, new.search_columns, new.search_description);"
)


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    with op.batch_alter_table("datasets") as batch:
        batch.add_column(sa.Column("provider_org_id", sa.String(36), nullable=True))
        batch.add_column(sa.Column("regime", sa.String(16), nullable=False, server_default="elsewhere"))
        batch.add_column(sa.Column("visible_to", sa.String(200), nullable=False, server_default=" "))
        batch.add_column(sa.Column("purposes", sa.String(500), nullable=False, server_default=" "))
        for field in _FIELDS:
            batch.add_column(sa.Column(field, sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("current_version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("row_count", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("published_at", ts(), nullable=True))
        batch.create_index("ix_datasets_provider_org_id", ["provider_org_id"])
        batch.create_index("ix_datasets_updated_at_id", ["updated_at", "id"])
        batch.create_index("ix_datasets_name_id", ["name", "id"])
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE VIRTUAL TABLE datasets_fts USING fts5("
            "dataset_id UNINDEXED, name, tags, columns, description, "
            "tokenize = 'unicode61 remove_diacritics 2')"
        )
        op.execute(f"CREATE TRIGGER datasets_fts_ai AFTER INSERT ON datasets BEGIN {_SQLITE_INSERT} END")
        op.execute(
            "CREATE TRIGGER datasets_fts_ad AFTER DELETE ON datasets BEGIN "
            "DELETE FROM datasets_fts WHERE dataset_id = old.id; END"
        )
        on_update = (
            "CREATE TRIGGER datasets_fts_au AFTER UPDATE OF id, search_name, search_tags, search_columns, "
            "search_description ON datasets BEGIN DELETE FROM datasets_fts WHERE dataset_id = old.id; "
        )
        op.execute(on_update + _SQLITE_INSERT + " END")
        op.execute(
            "INSERT INTO datasets_fts(dataset_id, name, tags, columns, description) "
            "SELECT id, search_name, search_tags, search_columns, search_description FROM datasets"
        )
    else:
        op.execute(
            "ALTER TABLE datasets ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS ("
            "setweight(to_tsvector('simple', search_name), 'A') || "
            "setweight(to_tsvector('simple', search_tags), 'B') || "
            "setweight(to_tsvector('simple', search_columns), 'C') || "
            "setweight(to_tsvector('simple', search_description), 'D')) STORED"
        )
        op.execute("CREATE INDEX ix_datasets_search_tsv ON datasets USING gin (search_tsv)")
    op.add_column("ingestion_runs", sa.Column("submitted_by", sa.String(200), nullable=True))


def downgrade() -> None:
    op.drop_column("ingestion_runs", "submitted_by")
    if op.get_bind().dialect.name == "sqlite":
        for trigger in ("datasets_fts_ai", "datasets_fts_ad", "datasets_fts_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS datasets_fts")
    else:
        op.execute("DROP INDEX IF EXISTS ix_datasets_search_tsv")
        op.execute("ALTER TABLE datasets DROP COLUMN IF EXISTS search_tsv")
    with op.batch_alter_table("datasets") as batch:
        batch.drop_index("ix_datasets_name_id")
        batch.drop_index("ix_datasets_updated_at_id")
        batch.drop_index("ix_datasets_provider_org_id")
        for column in (
            "published_at",
            "row_count",
            "current_version",
            *reversed(_FIELDS),
            "purposes",
            "visible_to",
            "regime",
            "provider_org_id",
        ):
            batch.drop_column(column)
