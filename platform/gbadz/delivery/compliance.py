"""The compliance officer's API: transfers with their legal bases, counters against the thresholds,
mechanisms about to expire (scope ``transfers:audit``)."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field

from gbadz.access import counters
from gbadz.access.auth import require_scopes
from gbadz.access.identity import JURISDICTIONS
from gbadz.access.models import CountedSubject, MechanismEvidence, Organization
from gbadz.access.tokens import Principal
from gbadz.access.transfer import OUTCOMES, Evidence, add_working_days, valid_until, working_days_between
from gbadz.errors import BadRequest, InsufficientScope, Unauthenticated, error_responses
from gbadz.translog.models import LogEntry

router = APIRouter(
    prefix="/api/v1", tags=["compliance"], responses=error_responses(Unauthenticated, InsufficientScope)
)
Auditor = Annotated[Principal, Depends(require_scopes("transfers:audit"))]
Jurisdiction = Literal[JURISDICTIONS]  # type: ignore[valid-type]
Outcome = Literal[OUTCOMES]  # type: ignore[valid-type]
THRESHOLDS = {"spi": (10_000,), "pi": (100_000, 1_000_000)}
CSV_FIELDS = (
    "index",
    "ts_utc",
    "transfer_id",
    "dataset_id",
    "dataset_version",
    "origin",
    "destination",
    "exporter",
    "recipient",
    "decision_outcome",
    "rule_id",
    "legal_basis",
    "mechanism",
    "purpose_code",
    "n_individuals",
    "pi_ytd_after",
    "spi_ytd_after",
    "content_hash",
    "rules_hash",
)


class TransferRow(BaseModel):
    index: int
    kind: str
    logged_at: datetime
    entry: dict[str, Any]


class CounterRead(BaseModel):
    exporter_org_id: str
    exporter: str | None
    year: int
    basis: Literal["mechanism", "exempt"]
    pi_individuals: int
    spi_individuals: int
    thresholds: dict[str, list[int]] = Field(
        description="the legal thresholds the counts are watched against"
    )
    next_threshold: dict[str, int | None]
    share_of_next: dict[str, float | None]


class ExpiringRead(BaseModel):
    id: str
    exporter_org_id: str
    recipient_org_id: str
    kind: str
    reference: str
    valid_to: date
    working_days_left: int


def _flat(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    row = {k: entry.get(k) for k in CSV_FIELDS}
    row["index"] = index
    row["exporter"] = (entry.get("exporter") or {}).get("name")
    row["recipient"] = (entry.get("recipient") or {}).get("name")
    return row


@router.get(
    "/transfers",
    response_model=list[TransferRow],
    responses=error_responses(BadRequest),
    summary="Transfers from the log, filtered; format=csv for a spreadsheet",
)
def list_transfers(
    request: Request,
    principal: Auditor,
    exporter: Annotated[str | None, Query(max_length=36, description="exporter organisation id")] = None,
    recipient: Annotated[str | None, Query(max_length=36, description="recipient organisation id")] = None,
    origin: Annotated[Jurisdiction | None, Query()] = None,
    destination: Annotated[Jurisdiction | None, Query()] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    mechanism: Annotated[str | None, Query(max_length=32)] = None,
    dataset: Annotated[str | None, Query(max_length=100)] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise BadRequest(f"{name}: give a time zone, e.g. 2026-11-01T00:00:00Z")
    query = sa.select(LogEntry).order_by(LogEntry.index.desc()).limit(limit)
    for column, value in (
        (LogEntry.exporter_org_id, exporter),
        (LogEntry.recipient_org_id, recipient),
        (LogEntry.origin, origin),
        (LogEntry.destination, destination),
        (LogEntry.outcome, outcome),
        (LogEntry.mechanism, mechanism),
        (LogEntry.dataset_id, dataset),
    ):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(LogEntry.logged_at >= since)
    if until is not None:
        query = query.where(LogEntry.logged_at < until)
    with request.app.state.sessionmaker() as session:
        rows = [(r.index, r.kind, r.logged_at, json.loads(r.entry)) for r in session.scalars(query)]
    if format == "csv":
        sink = io.StringIO()
        writer = csv.DictWriter(sink, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for index, _, _, entry in rows:
            writer.writerow(_flat(index, entry))
        return Response(
            sink.getvalue(),
            media_type="text/csv",
            headers={
                "Content-Disposition": 'attachment; filename="gbadz-transfers.csv"',
                "Cache-Control": "no-store",
            },
        )
    body = [TransferRow(index=i, kind=k, logged_at=t, entry=e).model_dump(mode="json") for i, k, t, e in rows]
    return Response(
        json.dumps(body, ensure_ascii=False),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


class Party(BaseModel):
    org_id: str
    name: str | None


class Parties(BaseModel):
    exporters: list[Party]
    recipients: list[Party]


@router.get(
    "/compliance/parties",
    response_model=Parties,
    summary="Exporters and recipients that appear in the transfer log (for filters), by name",
)
def log_parties(request: Request, principal: Auditor) -> Parties:
    with request.app.state.sessionmaker() as session:
        names = dict(session.execute(sa.select(Organization.id, Organization.name)).all())
        found = {}
        for side, column in (
            ("exporters", LogEntry.exporter_org_id),
            ("recipients", LogEntry.recipient_org_id),
        ):
            ids = session.scalars(sa.select(column).where(column.is_not(None)).distinct()).all()
            found[side] = sorted(
                (Party(org_id=i, name=names.get(i)) for i in ids), key=lambda p: (p.name or p.org_id).lower()
            )
    return Parties(**found)


class RouteDay(BaseModel):
    day: date = Field(description="UTC calendar day")
    origin: str
    destination: str
    transfers: int


@router.get(
    "/compliance/transfers-by-route",
    response_model=list[RouteDay],
    summary="Transfers per route (origin -> destination) per UTC day over the last N days",
)
def transfers_by_route(
    request: Request, principal: Auditor, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> list[RouteDay]:
    since = datetime.now(UTC) - timedelta(days=days)
    dialect = request.app.state.engine.dialect.name
    day = (
        sa.func.date(sa.func.timezone("UTC", LogEntry.logged_at))
        if dialect == "postgresql"
        else sa.func.date(LogEntry.logged_at)
    )
    query = (
        sa.select(day.label("day"), LogEntry.origin, LogEntry.destination, sa.func.count())
        .where(LogEntry.logged_at >= since)
        .group_by(day, LogEntry.origin, LogEntry.destination)
        .order_by(day)
    )
    with request.app.state.sessionmaker() as session:
        rows = session.execute(query).all()
    return [
        RouteDay(
            day=d if isinstance(d, date) else date.fromisoformat(str(d)),
            origin=o or "?",
            destination=t or "?",
            transfers=int(n),
        )
        for d, o, t, n in rows
    ]


@router.get(
    "/compliance/counters",
    response_model=list[CounterRead],
    summary="Year-to-date individuals exported per exporter (Asia/Shanghai year) against the legal thresholds",
)
def exporter_counters(request: Request, principal: Auditor) -> list[CounterRead]:
    year = counters.counter_year(datetime.now(UTC))
    query = (
        sa.select(CountedSubject.exporter_id, CountedSubject.basis, CountedSubject.kind, sa.func.count())
        .where(CountedSubject.counter_year == year)
        .group_by(CountedSubject.exporter_id, CountedSubject.basis, CountedSubject.kind)
    )
    with request.app.state.sessionmaker() as session:
        totals: dict[tuple[str, str], dict[str, int]] = {}
        for exporter_id, basis, kind, n in session.execute(query):
            totals.setdefault((exporter_id, basis), {"pi": 0, "spi": 0})[kind] = int(n)
        names = dict(session.execute(sa.select(Organization.id, Organization.name)).all())
    result = []
    for (exporter_id, basis), counts in sorted(totals.items()):
        nxt = {k: next((t for t in THRESHOLDS[k] if counts[k] < t), None) for k in THRESHOLDS}
        result.append(
            CounterRead(
                exporter_org_id=exporter_id,
                exporter=names.get(exporter_id),
                year=year,
                basis=basis,
                pi_individuals=counts["pi"],
                spi_individuals=counts["spi"],
                thresholds={k: list(v) for k, v in THRESHOLDS.items()},
                next_threshold=nxt,
                share_of_next={k: (counts[k] / t if t else None) for k, t in nxt.items()},
            )
        )
    return result


@router.get(
    "/compliance/mechanisms/expiring",
    response_model=list[ExpiringRead],
    summary="Assessments and certifications expiring within the next N working days (default 60)",
)
def expiring_mechanisms(
    request: Request, principal: Auditor, working_days: Annotated[int, Query(ge=1, le=500)] = 60
) -> list[ExpiringRead]:
    today = datetime.now(UTC).date()
    horizon = add_working_days(today, working_days)
    with request.app.state.sessionmaker() as session:
        rows = session.scalars(sa.select(MechanismEvidence)).all()
    result = []
    for row in rows:
        valid_to = valid_until(
            Evidence(kind=row.kind, reference=row.reference, issued=row.issued, valid_to=row.valid_to)
        )
        if valid_to is None or not today <= valid_to <= horizon:
            continue
        result.append(
            ExpiringRead(
                id=row.id,
                exporter_org_id=row.exporter_org_id,
                recipient_org_id=row.recipient_org_id,
                kind=row.kind,
                reference=row.reference,
                valid_to=valid_to,
                working_days_left=working_days_between(today, valid_to),
            )
        )
    return sorted(result, key=lambda r: r.valid_to)
