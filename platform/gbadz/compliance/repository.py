"""SQL of compliance: the transfer log filtered, counters grouped, parties named, mechanisms on file.

The compliance officer reads everything here; routes check the ``transfers:audit`` scope
before any of it is called.

Every filter and grouping over the transfer log reads the hashed entry (``transfer_log.entry``,
what the Merkle tree and the signed checkpoints cover), never the columns copied from it for
speed (``origin``, ``exporter_org_id``, ``kind``, ``logged_at``…): those are not covered by
verification, so a column altered in the database could otherwise hide a transfer from the
officer or attribute it to someone else (issue #20). Altering the entry itself is what
``gbadz audit verify`` and the log's verification catch.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session

from gbadz.access.models import MechanismEvidence
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


def _field(session: Session, *path: str) -> sa.ColumnElement[Any]:
    """A text value inside the hashed entry document, in SQL (JSON functions of either database)."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.jsonb_extract_path_text(sa.cast(LogEntry.entry, JSONB), *path)
    return sa.func.json_extract(LogEntry.entry, "$." + ".".join(f'"{p}"' for p in path))


def _is_determination(session: Session) -> sa.ColumnElement[bool]:
    kind = _field(session, "type")
    return sa.and_(kind.is_not(None), kind == "determination")


def _utc_text(at: datetime) -> str:
    """``ts_utc`` as entries write it (``datetime.isoformat`` in UTC): ISO text orders as time does."""
    return at.astimezone(UTC).isoformat()


def entry_kind(entry: dict[str, Any]) -> str:
    """The kind of a log entry, as its hashed document says (determination, download, reissue…)."""
    return str(entry.get("type") or entry.get("transfer_mode") or "transfer")


def transfers(session: Session, where: TransferFilter) -> list[tuple[int, str, datetime, dict[str, Any]]]:
    """Log entries, newest first, with their entry documents parsed; filtered on the documents."""
    query = (
        sa.select(LogEntry.index, LogEntry.entry, LogEntry.logged_at)
        .order_by(LogEntry.index.desc())
        .limit(where.limit)
    )
    if where.kind == "determination":
        query = query.where(_is_determination(session))
    else:
        query = query.where(sa.not_(_is_determination(session)))
        if where.kind is not None:
            query = query.where(_field(session, "transfer_mode") == where.kind)
    for path, value in (
        (("exporter", "org_id"), where.exporter),
        (("recipient", "org_id"), where.recipient),
        (("origin",), where.origin),
        (("destination",), where.destination),
        (("decision_outcome",), where.outcome),
        (("mechanism",), where.mechanism),
        (("dataset_id",), where.dataset),
    ):
        if value is not None:
            query = query.where(_field(session, *path) == value)
    if where.since is not None:
        query = query.where(_field(session, "ts_utc") >= _utc_text(where.since))
    if where.until is not None:
        query = query.where(_field(session, "ts_utc") < _utc_text(where.until))
    rows = []
    for index, text, logged_at in session.execute(query):
        entry = json.loads(text)
        # The entry's own time; an entry without a readable one shows when it was stored.
        try:
            at = datetime.fromisoformat(str(entry["ts_utc"]))
        except (KeyError, ValueError):
            at = logged_at
        rows.append((int(index), entry_kind(entry), at, entry))
    return rows


def organisation_names(session: Session) -> dict[str, str]:
    return {str(i): str(n) for i, n in session.execute(sa.select(Organization.id, Organization.name)).all()}


def logged_parties(session: Session) -> dict[str, list[str]]:
    """The exporter and recipient organisation ids that appear in the log (its hashed entries)."""
    found: dict[str, list[str]] = {}
    for side, party in (("exporters", "exporter"), ("recipients", "recipient")):
        column = _field(session, party, "org_id")
        found[side] = [
            str(i) for i in session.scalars(sa.select(column).where(column.is_not(None)).distinct())
        ]
    return found


def transfers_per_day(session: Session, since: datetime) -> list[tuple[date, str | None, str | None, int]]:
    """Transfers per UTC day and route since ``since`` (read from the hashed entries)."""
    stamp = _field(session, "ts_utc")
    day = sa.func.substr(stamp, 1, 10)  # entries write ts_utc in UTC: its date is its first ten characters
    origin, destination = _field(session, "origin"), _field(session, "destination")
    mode = _field(session, "transfer_mode")
    query = (
        sa.select(day.label("day"), origin, destination, sa.func.count())
        # A reissue is not a new transfer, and a determination is the approval, not a transfer.
        .where(
            stamp >= _utc_text(since),
            sa.not_(_is_determination(session)),
            sa.or_(mode.is_(None), mode != "reissue"),
        )
        .group_by(day, origin, destination)
        .order_by(day)
    )
    return [
        (d if isinstance(d, date) else date.fromisoformat(str(d)), o, t, int(n))
        for d, o, t, n in session.execute(query)
    ]


def counts_by_exporter(session: Session, year: int) -> dict[tuple[str, str], dict[str, int]]:
    """Individuals counted in ``year`` per (exporter, basis), by kind (pi, spi), as the hashed
    entries state them: each transfer signs the year-to-date totals after it, so the highest
    is the year's total. The live counters (``CounterTotal``) decide transfers; what an officer
    reads is what log verification covers (issue #20)."""
    query = sa.select(LogEntry.entry).where(
        sa.not_(_is_determination(session)), _field(session, "counter_year").is_not(None)
    )
    totals: dict[tuple[str, str], dict[str, int]] = {}
    for (text,) in session.execute(query.execution_options(yield_per=10_000)):
        entry = json.loads(text)
        exporter = (entry.get("exporter") or {}).get("org_id")
        basis = entry.get("counter_basis")
        if exporter is None or entry.get("counter_year") != year or basis in (None, "none"):
            continue
        counts = totals.setdefault((str(exporter), str(basis)), {"pi": 0, "spi": 0})
        for kind in ("pi", "spi"):
            counts[kind] = max(counts[kind], int(entry.get(f"{kind}_ytd_after") or 0))
    return {key: counts for key, counts in totals.items() if counts["pi"] or counts["spi"]}


def releases_by_exporter(session: Session, year: int) -> dict[str, tuple[int, float]]:
    """Aggregate releases (compute-to-data) logged in counter year ``year`` per exporter: how many,
    and the ε they spent, read from the hashed entries."""
    query = sa.select(LogEntry.entry).where(
        sa.not_(_is_determination(session)), _field(session, "transfer_mode") == "release"
    )
    found: dict[str, tuple[int, float]] = {}
    for (text,) in session.execute(query.execution_options(yield_per=10_000)):
        entry = json.loads(text)
        exporter = (entry.get("exporter") or {}).get("org_id")
        if exporter is None or entry.get("counter_year") != year:
            continue
        count, spent = found.get(str(exporter), (0, 0.0))
        found[str(exporter)] = (count + 1, spent + float((entry.get("release") or {}).get("epsilon") or 0.0))
    return found


def mechanisms(session: Session) -> Sequence[MechanismEvidence]:
    return session.scalars(sa.select(MechanismEvidence)).all()
