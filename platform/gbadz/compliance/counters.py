"""Year-to-date counters of individuals exported, per exporter (crossborder-rules.md §1.4).

Counts are de-duplicated natural persons since 1 January of the exporter's current year in
the rules' time zone (Asia/Shanghai), kept separately for the mechanism basis (which the Art.7/8 thresholds test)
and the exempt basis (Arts.3-5(3); shown to reviewers, not tested against thresholds [U]).
Counting is an insert of (exporter, year, basis, kind, subject) rows that ignores rows
already present, so a delivery counted twice, or two deliveries racing with overlapping
people, never count anyone twice; ``before`` and ``after`` are read in the same
transaction as the insert.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gbadz.catalog.models import VersionSubject
from gbadz.compliance.models import CountedSubject, CountedVersion, CounterTotal
from gbadz.law.rules import RuleSet, default_rules
from gbadz.models import utcnow

BASES = ("mechanism", "exempt")
BATCH = 5_000


def counter_year(at: datetime, rules: RuleSet | None = None) -> int:
    """The counting year of an instant: counters reset at midnight on 1 January in the rules' time zone."""
    if at.tzinfo is None:
        raise ValueError("counter_year needs a timezone-aware time")
    return at.astimezone((rules or default_rules()).zone).year


@dataclass(frozen=True)
class CounterSnapshot:
    exporter_id: str
    year: int
    basis: str
    pi_before: int
    pi_after: int
    spi_before: int
    spi_after: int


def count(session: Session, exporter_id: str, year: int, basis: str, kind: str) -> int:
    """The counter's size, from its running total (one row, whatever the number of people)."""
    stmt = sa.select(CounterTotal.individuals).where(
        CounterTotal.exporter_id == exporter_id,
        CounterTotal.counter_year == year,
        CounterTotal.basis == basis,
        CounterTotal.kind == kind,
    )
    return int(session.scalar(stmt) or 0)


def _insert_ignore(session: Session, table: type[Any]) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    return sqlite.insert(table).on_conflict_do_nothing()


def _locked_total(session: Session, exporter_id: str, year: int, basis: str, kind: str) -> CounterTotal:
    """The counter's total row, created if new and locked: deliveries of one exporter's counter
    add to it one after the other, so the total always equals the rows counted."""
    key = {"exporter_id": exporter_id, "counter_year": year, "basis": basis, "kind": kind}
    session.execute(_insert_ignore(session, CounterTotal).values(**key, individuals=0))
    total = session.scalars(
        sa.select(CounterTotal).filter_by(**key).with_for_update().execution_options(populate_existing=True)
    ).one()
    return total


def lock_totals(session: Session, exporter_id: str, year: int) -> None:
    """Lock the exporter's counters of ``year`` for this transaction (PostgreSQL row locks).

    Not on SQLite: taking its one write lock here would stop every other writer for the whole
    delivery; SQLite refuses the second of two racing writers at its first write instead."""
    if session.get_bind().dialect.name != "postgresql":
        return
    for basis in BASES:
        for kind in ("pi", "spi"):
            _locked_total(session, exporter_id, year, basis, kind)


def _exact(session: Session, exporter_id: str, year: int, basis: str, kind: str) -> int:
    stmt = sa.select(sa.func.count()).where(
        CountedSubject.exporter_id == exporter_id,
        CountedSubject.counter_year == year,
        CountedSubject.basis == basis,
        CountedSubject.kind == kind,
    )
    return int(session.scalar(stmt) or 0)


def version_counted(
    session: Session, exporter_id: str, year: int, basis: str, dataset_id: str, version: int
) -> bool:
    """Whether this version's individuals were already counted (a re-delivery adds nobody)."""
    return session.get(CountedVersion, (exporter_id, year, basis, dataset_id, version)) is not None


def _insert_ignoring_duplicates(session: Session, rows: list[dict[str, object]]) -> None:
    dialect = session.get_bind().dialect.name
    table = CountedSubject
    stmt: sa.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(table).on_conflict_do_nothing()
    elif dialect == "sqlite":
        stmt = sqlite.insert(table).on_conflict_do_nothing()
    else:  # pragma: no cover - gbadz supports SQLite and PostgreSQL
        raise NotImplementedError(dialect)
    for start in range(0, len(rows), BATCH):
        session.execute(stmt, rows[start : start + BATCH])


def record(
    session: Session,
    *,
    exporter_id: str,
    basis: str,
    subjects: Iterable[str],
    sensitive_subjects: Iterable[str] = (),
    at: datetime | None = None,
    rules: RuleSet | None = None,
) -> CounterSnapshot:
    """Count the individuals of one completed transfer; return the counters before and after."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}")
    when = at or datetime.now(UTC)
    year = counter_year(when, rules)
    totals = {kind: _locked_total(session, exporter_id, year, basis, kind) for kind in ("pi", "spi")}
    pi_before, spi_before = totals["pi"].individuals, totals["spi"].individuals
    now = utcnow()
    for kind, people in (("pi", set(subjects)), ("spi", set(sensitive_subjects))):
        rows: list[dict[str, object]] = [
            {
                "exporter_id": exporter_id,
                "counter_year": year,
                "basis": basis,
                "kind": kind,
                "subject": s,
                "first_counted_at": now,
            }
            for s in people
        ]
        if rows:
            _insert_ignoring_duplicates(session, rows)
        totals[kind].individuals = _exact(session, exporter_id, year, basis, kind)
    session.flush()
    return CounterSnapshot(
        exporter_id=exporter_id,
        year=year,
        basis=basis,
        pi_before=pi_before,
        pi_after=count(session, exporter_id, year, basis, "pi"),
        spi_before=spi_before,
        spi_after=count(session, exporter_id, year, basis, "spi"),
    )


def would_be(
    session: Session,
    *,
    exporter_id: str,
    subjects: Iterable[str],
    sensitive_subjects: Iterable[str] = (),
    at: datetime | None = None,
    rules: RuleSet | None = None,
) -> tuple[int, int]:
    """The mechanism-basis counters if these individuals were exported now (for deciding first)."""
    year = counter_year(at or datetime.now(UTC), rules)
    counts = []
    for kind, people in (("pi", set(subjects)), ("spi", set(sensitive_subjects))):
        already = 0
        listed = list(people)
        for start in range(0, len(listed), BATCH):
            already += int(
                session.scalar(
                    sa.select(sa.func.count()).where(
                        CountedSubject.exporter_id == exporter_id,
                        CountedSubject.counter_year == year,
                        CountedSubject.basis == "mechanism",
                        CountedSubject.kind == kind,
                        CountedSubject.subject.in_(listed[start : start + BATCH]),
                    )
                )
                or 0
            )
        counts.append(count(session, exporter_id, year, "mechanism", kind) + len(people) - already)
    return counts[0], counts[1]


def _version_people(dataset_id: str, version: int, sensitive_only: bool) -> sa.Select[Any]:
    stmt = sa.select(VersionSubject.subject).where(
        VersionSubject.dataset_id == dataset_id, VersionSubject.version == version
    )
    return stmt.where(VersionSubject.sensitive.is_(True)) if sensitive_only else stmt


def would_be_version(
    session: Session,
    *,
    exporter_id: str,
    dataset_id: str,
    version: int,
    all_sensitive: bool,
    at: datetime,
    rules: RuleSet | None = None,
) -> tuple[int, int]:
    """The mechanism-basis counters if this version's individuals were exported now: exact,
    de-duplicated against everyone counted before (one anti-join in the database)."""
    year = counter_year(at, rules)
    result = []
    for kind, sensitive_only in (("pi", False), ("spi", not all_sensitive)):
        people = _version_people(dataset_id, version, sensitive_only).subquery()
        new = (
            sa.select(sa.func.count())
            .select_from(people)
            .where(
                ~sa.exists().where(
                    CountedSubject.exporter_id == exporter_id,
                    CountedSubject.counter_year == year,
                    CountedSubject.basis == "mechanism",
                    CountedSubject.kind == kind,
                    CountedSubject.subject == people.c.subject,
                )
            )
        )
        result.append(count(session, exporter_id, year, "mechanism", kind) + int(session.scalar(new) or 0))
    return result[0], result[1]


def record_version(
    session: Session,
    *,
    exporter_id: str,
    dataset_id: str,
    version: int,
    basis: str,
    all_sensitive: bool,
    at: datetime,
    rules: RuleSet | None = None,
) -> CounterSnapshot:
    """Count the individuals of one delivered version (its exporter-keyed subjects), in SQL."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {', '.join(BASES)}")
    year = counter_year(at, rules)
    totals = {kind: _locked_total(session, exporter_id, year, basis, kind) for kind in ("pi", "spi")}
    pi_before, spi_before = totals["pi"].individuals, totals["spi"].individuals
    dialect = session.get_bind().dialect.name
    now = utcnow()
    for kind, sensitive_only in (("pi", False), ("spi", not all_sensitive)):
        people = _version_people(dataset_id, version, sensitive_only).subquery()
        source = sa.select(
            sa.literal(exporter_id),
            sa.literal(year),
            sa.literal(basis),
            sa.literal(kind),
            people.c.subject,
            sa.literal(now, CountedSubject.first_counted_at.type),
        )
        names = ["exporter_id", "counter_year", "basis", "kind", "subject", "first_counted_at"]
        if dialect == "postgresql":  # rowcount is not reported here: count what RETURNING gives back
            added = (
                postgresql.insert(CountedSubject)
                .from_select(names, source)
                .on_conflict_do_nothing()
                .returning(CountedSubject.subject)
                .cte("added")
            )
            inserted = session.scalar(sa.select(sa.func.count()).select_from(added))
        else:  # SQLite cannot parse ON CONFLICT after INSERT ... SELECT without a WHERE; OR IGNORE is the same
            stmt = sa.insert(CountedSubject).prefix_with("OR IGNORE").from_select(names, source)
            inserted = session.execute(stmt).rowcount  # type: ignore[attr-defined]
        totals[kind].individuals += max(int(inserted or 0), 0)
    # The version's people are counted; its sensitive ones too, all of them or by the row.
    for marker in (basis, f"{basis}:spi") if all_sensitive else (basis,):
        session.execute(
            _insert_ignore(session, CountedVersion).values(
                exporter_id=exporter_id,
                counter_year=year,
                basis=marker,
                dataset_id=dataset_id,
                version=version,
            )
        )
    session.flush()
    return CounterSnapshot(
        exporter_id=exporter_id,
        year=year,
        basis=basis,
        pi_before=pi_before,
        pi_after=count(session, exporter_id, year, basis, "pi"),
        spi_before=spi_before,
        spi_after=count(session, exporter_id, year, basis, "spi"),
    )
