"""Tables of identity: organisations, OAuth clients, people, authorization codes, revoked tokens, used assertions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, UOWTransaction, mapped_column

from gbadz import db
from gbadz.models import Base, UTCDateTime, utcnow


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    registration_no: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    jurisdiction: Mapped[str] = mapped_column(sa.String(16))
    gba_registered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    ciio: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    #: The zone's operator: the only kind of organisation whose people may be administrators.
    operator: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: Disabled: its people and clients stop working at once; its grants and records stay.
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None, index=True)

    __table_args__ = (sa.UniqueConstraint("name", name="uq_organizations_name"),)


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(32))
    #: What the client is for, as its administrator named it (optional; never a secret).
    name: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    auth_method: Mapped[str] = mapped_column(sa.String(32))
    secret_salt: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    secret_hash: Mapped[str | None] = mapped_column(sa.String(128), default=None)
    jwks: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class RevokedToken(Base):
    """Access tokens revoked before expiry (RFC 7009), by jti, kept until they would expire."""

    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UsedAssertion(Base):
    """Client-assertion jtis already seen (RFC 7523 replay protection), kept until expiry."""

    __tablename__ = "used_client_assertions"

    jti: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class User(Base):
    """A person who signs in to the console: a member of one organisation acting in one role."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    username: Mapped[str] = mapped_column(sa.String(64))
    display_name: Mapped[str] = mapped_column(sa.String(200))
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(32))
    password_hash: Mapped[str] = mapped_column(sa.String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None, index=True)

    __table_args__ = (sa.UniqueConstraint("username", name="uq_users_username"),)


class AuthorizationCode(Base):
    """An issued authorization code (RFC 6749 §4.1), kept by hash until used or expired."""

    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(sa.String(64))
    user_id: Mapped[str] = mapped_column(sa.String(36))
    redirect_uri: Mapped[str] = mapped_column(sa.String(500))
    scope: Mapped[str] = mapped_column(sa.String(500))
    code_challenge: Mapped[str] = mapped_column(sa.String(128))
    code_challenge_method: Mapped[str] = mapped_column(sa.String(8))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class AuthFailure(Base):
    """One failed sign-in or client authentication, by the SHA-256 of what it is counted against
    (an address, a username at an address, ...), so that every replica enforces the same limits."""

    __tablename__ = "auth_failures"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=True)
    key_hash: Mapped[str] = mapped_column(sa.String(64))
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)

    __table_args__ = (sa.Index("ix_auth_failures_key_at", "key_hash", "at"),)


class AuthLimitKey(Base):
    """One row per key failures are counted against (by its SHA-256). An attempt upserts its
    keys' rows before it counts, so concurrent attempts on any replicas queue on the row lock
    and each one sees the attempts before it (ADR 0027)."""

    __tablename__ = "auth_limit_keys"

    key_hash: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    touched_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


def _revokes(obj: object) -> bool:
    """Whether flushing ``obj`` revokes something a replica's revocation snapshot holds."""
    if isinstance(obj, RevokedToken):
        return True
    columns: dict[type, str] = {OAuthClient: "revoked_at", User: "disabled_at", Organization: "disabled_at"}
    column = columns.get(type(obj))
    return column is not None and sa.inspect(obj).attrs[column].history.has_changes()


@sa.event.listens_for(Session, "after_flush")
def _announce_revocation(session: Session, _flush: UOWTransaction) -> None:
    """A transaction that revokes a token or a client, or disables a person or an organisation,
    tells every replica as it commits (``NOTIFY``, ADR 0027): they re-read their revocation
    snapshot at once instead of within their 1 s refresh. Flushed state is still pre-flush here."""
    if any(_revokes(obj) for obj in (*session.new, *session.dirty)):
        db.notify(session, db.REVOCATIONS_CHANNEL)
