"""Tables of identity: organisations, OAuth clients, revoked tokens and used client assertions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    registration_no: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    jurisdiction: Mapped[str] = mapped_column(sa.String(16))
    gba_registered: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    ciio: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (sa.UniqueConstraint("name", name="uq_organizations_name"),)


class OAuthClient(Base):
    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    org_id: Mapped[str] = mapped_column(sa.ForeignKey("organizations.id"), index=True)
    role: Mapped[str] = mapped_column(sa.String(32))
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


class CountedSubject(Base):
    """One individual counted once per exporter, year (Asia/Shanghai), basis and kind.

    The year-to-date counters of crossborder-rules.md §1.4 are counts of these rows:
    natural persons, de-duplicated; ``basis`` keeps exempt-basis (Provisions Arts.3-5(3))
    and mechanism-basis exports apart; ``kind`` is ``pi`` for every individual whose
    personal information left, ``spi`` for those whose sensitive personal information left.
    The primary key makes a repeated or concurrent delivery unable to count anyone twice.
    """

    __tablename__ = "counted_subjects"

    exporter_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    counter_year: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    basis: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    first_counted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
