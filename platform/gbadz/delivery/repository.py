"""SQL of delivery: the grant a caller holds, and what the transfer log says was delivered before.

The visibility rule of delivery is written once, in :func:`held_grant`: only the grant's
holder (the grantee organisation) may have its data delivered; to anyone else, the grant
is missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz.access.models import AccessRequest, Grant
from gbadz.translog.models import LogEntry


def held_grant(session: Session, grant_id: str, org_id: str, *, lock: bool = False) -> Grant | None:
    """The grant if ``org_id`` holds it; None if it is missing or someone else's. ``lock``: its
    row stays locked until the transaction ends (PostgreSQL), so deliveries of one grant queue."""
    query = sa.select(Grant).where(Grant.id == grant_id, Grant.grantee_org_id == org_id)
    return session.scalar(query.with_for_update() if lock else query)


def grant(session: Session, grant_id: str) -> Grant | None:
    """A grant by id, for a caller who proved it holds it (a Delta Sharing token names it)."""
    return session.get(Grant, grant_id)


def request_of(session: Session, grant: Grant) -> AccessRequest | None:
    return session.get(AccessRequest, grant.request_id)


def logged_by_key(session: Session, scoped_key: str) -> LogEntry | None:
    """The transfer-log entry of an earlier delivery sent with this idempotency key."""
    return session.scalar(sa.select(LogEntry).where(LogEntry.idempotency_key == scoped_key))


def recent_entries(session: Session, grant_id: str, limit: int = 50) -> Sequence[str]:
    """The newest transfer-log entries (JSON text) of a grant."""
    return session.scalars(
        sa.select(LogEntry.entry)
        .where(LogEntry.grant_id == grant_id)
        .order_by(LogEntry.index.desc())
        .limit(limit)
    ).all()


def issued_at_since(
    session: Session, grant_id: str, kinds: Sequence[str], since: datetime
) -> Sequence[datetime]:
    """When the grant's URL issuances since ``since`` were logged, oldest first (the rate limit)."""
    return session.scalars(
        sa.select(LogEntry.logged_at)
        .where(LogEntry.grant_id == grant_id, LogEntry.kind.in_(kinds), LogEntry.logged_at >= since)
        .order_by(LogEntry.logged_at)
    ).all()


def grants_with_copies(session: Session, grant_ids: Sequence[str] | None = None) -> Sequence[Grant]:
    """Grants whose delivery copies have not been deleted (all of them, or those named)."""
    query = sa.select(Grant).where(Grant.copies_deleted_at.is_(None))
    if grant_ids is not None:
        query = query.where(Grant.id.in_(grant_ids))
    return session.scalars(query).all()
