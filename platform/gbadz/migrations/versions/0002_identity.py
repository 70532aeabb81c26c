"""identity: organisations, OAuth clients, revoked tokens, used client assertions

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    op.create_table(
        "organizations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(300), nullable=False),
        sa.Column("registration_no", sa.String(100), nullable=True),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("gba_registered", sa.Boolean(), nullable=False),
        sa.Column("ciio", sa.Boolean(), nullable=False),
        sa.Column("created_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_organizations")),
        sa.UniqueConstraint("name", name="uq_organizations_name"),
    )
    op.create_table(
        "oauth_clients",
        sa.Column("client_id", sa.String(64), nullable=False),
        sa.Column("org_id", sa.String(36), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("auth_method", sa.String(32), nullable=False),
        sa.Column("secret_salt", sa.String(64), nullable=True),
        sa.Column("secret_hash", sa.String(128), nullable=True),
        sa.Column("jwks", sa.JSON(), nullable=True),
        sa.Column("created_at", ts(), nullable=False),
        sa.Column("revoked_at", ts(), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_oauth_clients")),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organizations.id"], name=op.f("fk_oauth_clients_org_id_organizations")
        ),
    )
    op.create_index(op.f("ix_oauth_clients_org_id"), "oauth_clients", ["org_id"])
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(128), nullable=False),
        sa.Column("expires_at", ts(), nullable=False),
        sa.Column("revoked_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_tokens")),
    )
    op.create_index(op.f("ix_revoked_tokens_expires_at"), "revoked_tokens", ["expires_at"])
    op.create_table(
        "used_client_assertions",
        sa.Column("jti", sa.String(200), nullable=False),
        sa.Column("expires_at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_used_client_assertions")),
    )
    op.create_index(op.f("ix_used_client_assertions_expires_at"), "used_client_assertions", ["expires_at"])


def downgrade() -> None:
    op.drop_table("used_client_assertions")
    op.drop_table("revoked_tokens")
    op.drop_index(op.f("ix_oauth_clients_org_id"), table_name="oauth_clients")
    op.drop_table("oauth_clients")
    op.drop_table("organizations")
