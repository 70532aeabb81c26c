"""identity hardening: no access tokens at rest, shared failed-attempt counters

Console sessions stored each person's bearer token in clear (issue #20 item 7). The column
goes; the tokens it held are added to the revocation list until they expire (their bytes may
survive in free pages of a SQLite file) and the sessions are closed: people sign in again.
Failed sign-ins and client authentications are counted in ``auth_failures`` (by the SHA-256
of their key: no username or address in clear) so that every API replica sees them.

Revision ID: 0012
Revises: 0010
Create Date: 2026-12-02
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import gbadz.models

revision = "0012"
down_revision = "0010"
branch_labels = None
depends_on = None


def _claims(token: str) -> dict[str, object]:
    try:
        payload = token.split(".")[1]
        data = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def upgrade() -> None:
    ts = gbadz.models.UTCDateTime
    bind = op.get_bind()
    sessions = sa.table("console_sessions", sa.column("access_token", sa.Text()))
    revoked = sa.table(
        "revoked_tokens",
        sa.column("jti", sa.String(128)),
        sa.column("expires_at", ts()),
        sa.column("revoked_at", ts()),
    )
    now = datetime.now(UTC)
    seen: set[str] = set()
    for (token,) in bind.execute(sa.select(sessions.c.access_token)):
        claims = _claims(str(token or ""))
        jti, exp = claims.get("jti"), claims.get("exp")
        if not isinstance(jti, str) or not isinstance(exp, int) or jti in seen:
            continue
        expires = datetime.fromtimestamp(min(exp, 2**31), UTC)
        if expires > now:
            seen.add(jti)
            exists = bind.execute(sa.select(revoked.c.jti).where(revoked.c.jti == jti)).first()
            if exists is None:
                bind.execute(revoked.insert().values(jti=jti, expires_at=expires, revoked_at=now))
    op.execute(sa.text("DELETE FROM console_sessions"))
    with op.batch_alter_table("console_sessions") as batch:
        batch.drop_column("access_token")
        batch.drop_column("token_expires_at")
    op.create_index(op.f("ix_users_disabled_at"), "users", ["disabled_at"])
    op.create_table(
        "auth_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("at", ts(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_failures")),
    )
    op.create_index("ix_auth_failures_key_at", "auth_failures", ["key_hash", "at"])
    op.create_index(op.f("ix_auth_failures_at"), "auth_failures", ["at"])


def downgrade() -> None:
    op.drop_table("auth_failures")
    op.drop_index(op.f("ix_users_disabled_at"), table_name="users")
    op.execute(sa.text("DELETE FROM console_sessions"))
    with op.batch_alter_table("console_sessions") as batch:
        batch.add_column(sa.Column("access_token", sa.Text(), nullable=False, server_default=""))
        batch.add_column(
            sa.Column(
                "token_expires_at", gbadz.models.UTCDateTime(), nullable=False, server_default="1970-01-01"
            )
        )
