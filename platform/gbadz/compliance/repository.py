"""SQL of compliance: the transfer log filtered, counters grouped, parties named, mechanisms on file.

The compliance officer reads everything here; routes check the ``transfers:audit`` scope
before any of it is called.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz.access.models import MechanismEvidence
from gbadz.compliance.models import CounterTotal
from gbadz.identity.models import Organization
from gbadz.translog.models import LogEntry


@dataclass(frozen=True)
class TransferFilter:
    exporter: str | None = None
    recipient: str | None = None
    origin: str | None = None
    destination: str | None = None
    outcome: str | None = None
    mechanism: str | None = None
    dataset: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 1000
    kind: str | None = None  # None: every transfer (determinations are listed on their own)


def transfers(session: Session, where: TransferFilter) -> list[tuple[int, str, datetime, dict[str, Any]]]:
    """Log entries, newest first, with their entry documents parsed."""
    query = sa.select(LogEntry).order_by(LogEntry.index.desc()).limit(where.limit)
    if where.kind is not None:
        query = query.where(LogEntry.kind == where.kind)
    else:
        query = query.where(LogEntry.kind != "determination")
    for column, value in (
        (LogEntry.exporter_org_id, where.exporter),
        (LogEntry.recipient_org_id, where.recipient),
        (LogEntry.origin, where.origin),
        (LogEntry.destination, where.destination),
        (LogEntry.outcome, where.outcome),
        (LogEntry.mechanism, where.mechanism),
        (LogEntry.dataset_id, where.dataset),
    ):
        if value is not None:
            query = query.where(column == value)
    if where.since is not None:
        query = query.where(LogEntry.logged_at >= where.since)
    if where.until is not None:
        query = query.where(LogEntry.logged_at < where.until)
    return [(r.index, r.kind, r.logged_at, json.loads(r.entry)) for r in session.scalars(query)]


def organisation_names(session: Session) -> dict[str, str]:
    return {str(i): str(n) for i, n in session.execute(sa.select(Organization.id, Organization.name)).all()}


def logged_parties(session: Session) -> dict[str, list[str]]:
    """The exporter and recipient organisation ids that appear in the log."""
    found: dict[str, list[str]] = {}
    for side, column in (("exporters", LogEntry.exporter_org_id), ("recipients", LogEntry.recipient_org_id)):
        found[side] = [
            str(i) for i in session.scalars(sa.select(column).where(column.is_not(None)).distinct())
        ]
    return found


def transfers_per_day(session: Session, since: datetime) -> list[tuple[date, str | None, str | None, int]]:
    """Transfers per UTC day and route since ``since``."""
    day = (
        sa.func.date(sa.func.timezone("UTC", LogEntry.logged_at))
        if session.get_bind().dialect.name == "postgresql"
        else sa.func.date(LogEntry.logged_at)
    )
    query = (
        sa.select(day.label("day"), LogEntry.origin, LogEntry.destination, sa.func.count())
        # A reissue is not a new transfer, and a determination is the approval, not a transfer.
        .where(LogEntry.logged_at >= since, LogEntry.kind.not_in(("reissue", "determination")))
        .group_by(day, LogEntry.origin, LogEntry.destination)
        .order_by(day)
    )
    return [
        (d if isinstance(d, date) else date.fromisoformat(str(d)), o, t, int(n))
        for d, o, t, n in session.execute(query)
    ]


def counts_by_exporter(session: Session, year: int) -> dict[tuple[str, str], dict[str, int]]:
    """Individuals counted in ``year`` per (exporter, basis), by kind (pi, spi): the running totals."""
    query = sa.select(
        CounterTotal.exporter_id, CounterTotal.basis, CounterTotal.kind, CounterTotal.individuals
    ).where(CounterTotal.counter_year == year, CounterTotal.individuals > 0)
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for exporter_id, basis, kind, n in session.execute(query):
        totals.setdefault((exporter_id, basis), {"pi": 0, "spi": 0})[kind] = int(n)
    return totals


def mechanisms(session: Session) -> Sequence[MechanismEvidence]:
    return session.scalars(sa.select(MechanismEvidence)).all()
