"""Tables of access: requests, grants and the mechanism evidence on file."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


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
    # copy (the rows leave, as granted) | analysis (only aggregates computed inside the zone leave).
    kind: Mapped[str] = mapped_column(sa.String(16), default="copy", server_default="copy")
    columns: Mapped[list[str]] = mapped_column(sa.JSON)
    destination: Mapped[str] = mapped_column(sa.String(16))  # the recipient's registered jurisdiction
    # Declared by the requester; it can only make the decision stricter (invariant 6).
    processing_location: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    necessity_justification: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # What a compliance officer accepted (necessity, provenance, anonymisation, Macao ground).
    findings: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict, server_default="{}")
    onward_transfer: Mapped[str] = mapped_column(sa.String(16))  # none | within_gba | outside_gba
    duration_days: Mapped[int] = mapped_column(sa.Integer)
    state: Mapped[str] = mapped_column(sa.String(32), index=True)
    decision: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    licence_findings: Mapped[list[str]] = mapped_column(sa.JSON)
    reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # Each review step, appended (never overwritten): {step, by, at, note}.
    reviews: Mapped[list[dict[str, Any]]] = mapped_column(sa.JSON, default=list, server_default="[]")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Grant(Base):
    """What an approved request allows: these columns, for this purpose, until expiry or revocation."""

    __tablename__ = "grants"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    request_id: Mapped[str] = mapped_column(sa.ForeignKey("access_requests.id"), unique=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    grantee_org_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    provider_org_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    purpose: Mapped[str] = mapped_column(sa.String(64))
    # The request's kind: a copy grant never answers an analysis, an analysis grant never a copy.
    kind: Mapped[str] = mapped_column(sa.String(16), default="copy", server_default="copy")
    columns: Mapped[list[str]] = mapped_column(sa.JSON)
    decision: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    granted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # Re-decided stricter at a transfer (or its contract was reclassified): no transfer until reviewed.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    suspended_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)
    # Individuals reserved against the exporter's counters until the first delivery counts them
    # (the volume-splitting guard of the request-time decision).
    reserved_pi: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    reserved_spi: Mapped[int] = mapped_column(sa.BigInteger, default=0, server_default="0")
    reserved_year: Mapped[int | None] = mapped_column(sa.Integer, default=None)
    # The compliance officer's determination (architecture.md invariant 8), also in the transfer log.
    determination: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, default=None)
    determination_log_index: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    # Grant end: the delivery copies deleted from the bucket, and the recipient's attestation.
    copies_deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deletion_attested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    deletion_attested_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    deletion_statement: Mapped[str | None] = mapped_column(sa.Text, default=None)

    def ended_at(self) -> datetime | None:
        """When the grant ended (revoked, or expired), or None while it runs."""
        return self.revoked_at or (self.expires_at if self.expires_at <= utcnow() else None)

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at <= now:
            return "expired"
        return "suspended" if self.suspended_at is not None else "active"


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
    # v2 (issue #16): the instrument exactly, who issued or received it, and what it covers.
    # Who recorded it (the person, or the client): they never approve with it (four eyes).
    recorded_by_subject: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    variant: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    authority: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    authority_name: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    sector: Mapped[str | None] = mapped_column(sa.String(16), default=None)
    dataset_ids: Mapped[list[str]] = mapped_column(sa.JSON, default=list, server_default="[]")
    spi_categories: Mapped[list[str] | None] = mapped_column(sa.JSON, default=None)
    approved_individuals: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    # The document itself, in the object-locked landing bucket.
    document_key: Mapped[str | None] = mapped_column(sa.String(300), default=None)
    document_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    document_size: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    document_type: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    # Amended (a newer item supersedes it) or withdrawn: kept, never used again.
    supersedes: Mapped[str | None] = mapped_column(sa.String(36), default=None)
    withdrawn_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    withdrawn_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    withdrawn_reason: Mapped[str | None] = mapped_column(sa.Text, default=None)

    __table_args__ = (
        sa.Index("ix_mechanism_evidence_reference", "kind", "reference"),
        sa.Index("ix_mechanism_evidence_pair", "exporter_org_id", "recipient_org_id"),
    )


class Obligation(Base):
    """A duty a decision creates, tracked: who owes it, by when, and whether it was met.

    ``precondition`` duties (PIPIA, notice and consent) must be met before data leaves; the
    others (filing within 10 working days, DSPDP notification, deletion at grant end) are
    owed after, with a due date the officer's dashboard watches.
    """

    __tablename__ = "obligations"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    grant_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    kind: Mapped[str] = mapped_column(sa.String(32))
    description: Mapped[str] = mapped_column(sa.Text)
    owner_org_id: Mapped[str | None] = mapped_column(sa.String(36), index=True)
    owner_role: Mapped[str] = mapped_column(sa.String(16))  # exporter | recipient
    due_on: Mapped[date | None] = mapped_column(sa.Date, default=None)
    precondition: Mapped[bool] = mapped_column(sa.Boolean, default=False)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)  # open | met
    reference: Mapped[str | None] = mapped_column(sa.String(300), default=None)
    evidence_date: Mapped[date | None] = mapped_column(sa.Date, default=None)  # e.g. the PIPIA's date
    met_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    met_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
