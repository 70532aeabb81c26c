"""The audit trail: one row per state change, written in the same transaction as the change.

Denials that abort a request are written with :func:`record_detached` in a short
transaction of their own, because the request's transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from gbadz.log import get_logger
from gbadz.models import Base, UTCDateTime, utcnow

log = get_logger("gbadz.audit")


class AuditEvent(Base):
    """An append-only record of who did what to which subject, and why."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(sa.String(200))
    action: Mapped[str] = mapped_column(sa.String(100), index=True)
    subject_type: Mapped[str] = mapped_column(sa.String(100))
    subject_id: Mapped[str] = mapped_column(sa.String(200))
    request_id: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    details: Mapped[dict[str, Any]] = mapped_column(sa.JSON, default=dict)

    __table_args__ = (sa.Index("ix_audit_events_subject", "subject_type", "subject_id"),)


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, event: AuditEvent) -> AuditEvent:
        self.session.add(event)
        self.session.flush()
        return event

    def for_subject(self, subject_type: str, subject_id: str) -> Sequence[AuditEvent]:
        stmt = (
            sa.select(AuditEvent)
            .where(AuditEvent.subject_type == subject_type, AuditEvent.subject_id == subject_id)
            .order_by(AuditEvent.id)
        )
        return self.session.scalars(stmt).all()

    def latest(self, limit: int = 50) -> Sequence[AuditEvent]:
        return self.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)).all()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str,
    details: dict[str, Any] | None = None,
    request_id: str | None = None,
) -> AuditEvent:
    """Add an audit event to the caller's transaction."""
    event = AuditEvent(
        actor=actor,
        action=action,
        subject_type=subject_type,
        subject_id=subject_id,
        details=details or {},
        request_id=request_id,
    )
    AuditRepository(session).add(event)
    log.info("audit", action=action, actor=actor, subject=f"{subject_type}:{subject_id}")
    return event


def record_detached(factory: sessionmaker[Session], **fields: Any) -> AuditEvent:
    """Record an event in its own transaction (for denials whose request will roll back).

    SQLite allows one writer at a time: call this before the request's transaction has
    written anything, as a denial naturally does (decide first, then write).
    """
    with factory.begin() as session:
        return record(session, **fields)
