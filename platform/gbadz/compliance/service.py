"""Compliance reports: the transfer log as rows and CSV, counters against the rules' thresholds,
mechanisms about to expire, the parties in the log.

Thresholds, validity periods and the counting time zone come from the loaded rules
(:class:`gbadz.law.rules.RuleSet`), never from constants here.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from gbadz.compliance import counters, repository
from gbadz.compliance.repository import TransferFilter
from gbadz.compliance.schemas import CounterRead, ExpiringRead, Parties, Party, RouteDay, TransferRow
from gbadz.law.evidence import Evidence, add_working_days, legal_date, valid_until, working_days_between
from gbadz.law.rules import RuleSet

CSV_FIELDS = (
    "index",
    "ts_utc",
    "transfer_id",
    "transfer_mode",
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
    # v2 entries (issue #16); empty for v1 entries.
    "entry_version",
    "reviewed_rule_id",
    "mechanism_reference",
    "mechanism_authority",
    "mechanism_effective_date",
    "mechanism_filing_date",
    "sector_approval",
    "approvers",
    "pipia_reference",
    "pipia_date",
    "consent",
    "onward_transfer",
    "storage_location_at_recipient",
    "retention_at_recipient",
    # Aggregate releases (compute-to-data, issue #18); empty for copies.
    "release_epsilon",
    "query_sha256",
    "result_sha256",
)


def _flat(index: int, entry: dict[str, Any]) -> dict[str, Any]:
    row = {k: entry.get(k) for k in CSV_FIELDS}
    row["index"] = index
    row["exporter"] = (entry.get("exporter") or {}).get("name")
    row["recipient"] = (entry.get("recipient") or {}).get("name")
    row["entry_version"] = entry.get("entry_version", 1)
    determination = entry.get("determination") or {}
    row["reviewed_rule_id"] = (entry.get("reviewed") or determination.get("reviewed") or {}).get("rule_id")
    mechanism = entry.get("mechanism_evidence") or {}
    row["mechanism_reference"] = mechanism.get("reference") or mechanism.get("used")
    row["mechanism_authority"] = mechanism.get("authority")
    row["mechanism_effective_date"] = mechanism.get("effective_date")
    row["mechanism_filing_date"] = mechanism.get("filing_date")
    sector = entry.get("sector_approval") or {}
    row["sector_approval"] = sector.get("reference")
    row["approvers"] = "; ".join(
        f"{a.get('step')}: {a.get('by')} at {a.get('at')}" for a in entry.get("approvers") or []
    )
    release = entry.get("release") or {}
    row["release_epsilon"], row["query_sha256"] = release.get("epsilon"), release.get("query_sha256")
    pipia = entry.get("pipia") or {}
    row["pipia_reference"], row["pipia_date"] = pipia.get("reference"), pipia.get("date")
    consent = entry.get("consent") or {}
    row["consent"] = consent.get("reference") or (
        f"not required: {consent['not_required_reason']}" if consent.get("not_required_reason") else None
    )
    return row


def transfers(session: Session, where: TransferFilter) -> list[TransferRow]:
    return [
        TransferRow(index=i, kind=k, logged_at=t, entry=e)
        for i, k, t, e in repository.transfers(session, where)
    ]


def transfers_csv(rows: list[TransferRow]) -> str:
    sink = io.StringIO()
    writer = csv.DictWriter(sink, fieldnames=CSV_FIELDS)
    writer.writeheader()
    for row in rows:
        writer.writerow(_flat(row.index, row.entry))
    return sink.getvalue()


def parties(session: Session) -> Parties:
    names = repository.organisation_names(session)
    found = {
        side: sorted(
            (Party(org_id=i, name=names.get(i)) for i in ids), key=lambda p: (p.name or p.org_id).lower()
        )
        for side, ids in repository.logged_parties(session).items()
    }
    return Parties(**found)


def transfers_by_route(session: Session, days: int) -> list[RouteDay]:
    since = datetime.now(UTC) - timedelta(days=days)
    return [
        RouteDay(day=d, origin=o or "?", destination=t or "?", transfers=n)
        for d, o, t, n in repository.transfers_per_day(session, since)
    ]


def exporter_counters(session: Session, rules: RuleSet, at: datetime | None = None) -> list[CounterRead]:
    """Year-to-date individuals per exporter and basis, each against the rules' thresholds; beside
    them, per exporter, the year's aggregate releases and the ε they spent (basis ``none``: a
    release counts nobody)."""
    year = counters.counter_year(at or datetime.now(UTC), rules)
    lines = rules.threshold_lines()
    names = repository.organisation_names(session)
    rows = dict(repository.counts_by_exporter(session, year))
    released = repository.releases_by_exporter(session, year)
    for exporter_id in released:
        rows.setdefault((exporter_id, "none"), {"pi": 0, "spi": 0})
    result = []
    for (exporter_id, basis), counts in sorted(rows.items()):
        nxt = {k: next((t for t in lines[k] if counts[k] < t), None) for k in lines}
        releases, epsilon = released.get(exporter_id, (0, 0.0)) if basis == "none" else (0, 0.0)
        result.append(
            CounterRead(
                exporter_org_id=exporter_id,
                exporter=names.get(exporter_id),
                year=year,
                basis=basis,
                pi_individuals=counts["pi"],
                spi_individuals=counts["spi"],
                thresholds={k: list(v) for k, v in lines.items()},
                next_threshold=nxt,
                share_of_next={k: (counts[k] / t if t else None) for k, t in nxt.items()},
                releases=releases,
                epsilon_spent=round(epsilon, 12),
            )
        )
    return result


def expiring_mechanisms(
    session: Session, rules: RuleSet, working_days: int | None = None
) -> list[ExpiringRead]:
    """Assessments and certifications whose validity ends within ``working_days`` (default: the rules'
    extension window), dates in the rules' time zone."""
    if working_days is None:
        working_days = rules.validity["expiry_warning_working_days"]
    today = legal_date(datetime.now(UTC), rules)
    horizon = add_working_days(today, working_days)
    result = []
    for row in repository.mechanisms(session):
        valid_to = valid_until(
            Evidence(kind=row.kind, reference=row.reference, issued=row.issued, valid_to=row.valid_to), rules
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
