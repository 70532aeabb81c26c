"""Console state: sign-ins in progress and signed-in browser sessions (server-side, by hash)."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


class PendingLogin(Base):
    """A sign-in the console started: its OAuth state (by hash) and PKCE verifier."""

    __tablename__ = "console_logins"

    state_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    code_verifier: Mapped[str] = mapped_column(sa.String(128))
    next_path: Mapped[str] = mapped_column(sa.String(500))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random id, the table only its SHA-256 (and no access token)."""

    __tablename__ = "console_sessions"

    id_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(sa.ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
