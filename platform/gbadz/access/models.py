"""Tables of identity: organisations, OAuth clients, revoked tokens and used client assertions."""

from __future__ import annotations

from datetime import date, datetime
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


class AccessRequest(Base):
    """A startup's request for a dataset: its facts, the engine's decision and its state.

    States (DSP / data.all pattern): ``submitted`` (transient) -> ``under_provider_review``
    -> ``under_compliance_review`` (when the decision needs a mechanism or review) ->
    ``approved`` | ``rejected``. Auto-approval goes straight to ``approved``; a licence
    refusal or a ``PROHIBITED`` decision straight to ``rejected``.
    """

    __tablename__ = "access_requests"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    requester_org_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    provider_org_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    requested_by: Mapped[str] = mapped_column(sa.String(200))
    purpose: Mapped[str] = mapped_column(sa.String(64))
    purpose_text: Mapped[str] = mapped_column(sa.Text)
    columns: Mapped[list[str]] = mapped_column(sa.JSON)
    destination: Mapped[str] = mapped_column(sa.String(16))
    onward_transfer: Mapped[str] = mapped_column(sa.String(16))  # none | within_gba | outside_gba
    duration_days: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(32), index=True)
    decision: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    licence_findings: Mapped[list[str]] = mapped_column(sa.JSON)
    reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Grant(Base):
    """What an approved request allows: these columns, for this purpose, until expiry or revocation."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.ForeignKey("access_requests.id"), unique=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    grantee_org_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    provider_org_id: Mapped[str | None] = mapped_column(sa.String(36))
    purpose: Mapped[str] = mapped_column(sa.String(64))
    columns: Mapped[list[str]] = mapped_column(sa.JSON)
    decision: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at <= now else "active"


class MechanismEvidence(Base):
    """A filed transfer mechanism for one exporter -> recipient pair (crossborder-rules.md §7.3)."""

    __tablename__ = "mechanism_evidence"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    exporter_org_id: Mapped[str] = mapped_column(sa.String(36))
    recipient_org_id: Mapped[str] = mapped_column(sa.String(36))
    kind: Mapped[str] = mapped_column(sa.String(16))  # ASSESSMENT | SCC | CERT | GBA_SC
    reference: Mapped[str] = mapped_column(sa.String(200))
    issued: Mapped[date | None] = mapped_column(sa.Date, default=None)
    valid_to: Mapped[date | None] = mapped_column(sa.Date, default=None)
    effective_date: Mapped[date | None] = mapped_column(sa.Date, default=None)
    filing_date: Mapped[date | None] = mapped_column(sa.Date, default=None)
    purposes: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    recorded_by: Mapped[str] = mapped_column(sa.String(200))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        sa.UniqueConstraint("kind", "reference", name="uq_mechanism_evidence_kind"),
        sa.Index("ix_mechanism_evidence_pair", "exporter_org_id", "recipient_org_id"),
    )


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
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

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
