"""Mechanism evidence (crossborder-rules.md §7.3): is a filed contract, certificate or approval valid today?

Validity periods and the filing deadline come from the rules; working days are Monday to
Friday (public holidays are not modelled [U], which errs towards stricter).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gbadz.law.engine import Decision
from gbadz.law.rules import RuleSet, default_rules


@dataclass(frozen=True, slots=True)
class Evidence:
    """A mechanism on file for one exporter and recipient pair (the registry's v2 item)."""

    kind: str  # ASSESSMENT | SCC | CERT | GBA_SC | SECTOR | AUTHORISATION
    reference: str  # approval no. / filing no. / certificate no.
    issued: date | None = None  # assessment or certificate issue date
    valid_to: date | None = None  # explicit end of validity (extensions included)
    effective_date: date | None = None  # contract effective date (SCC, GBA SC)
    filing_date: date | None = None  # when the contract was filed
    purposes: tuple[str, ...] = ()  # purposes the mechanism covers; empty means any
    id: str | None = None
    variant: str | None = None  # GBA_SC_HK | GBA_SC_MO | ... (vocabulary.EvidenceVariant)
    sector: str | None = None  # the sector a SECTOR approval is for
    dataset_ids: tuple[str, ...] = ()  # datasets it covers; empty means any of the exporter's
    spi_categories: tuple[str, ...] | None = None  # sensitive categories covered; None: not stated
    approved_individuals: int | None = None  # the volume approved (an assessment's scope)
    recorded_by: str | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """What a transfer carries, for the scope checks of §7.3 (volume, categories, datasets, variant)."""

    dataset_id: str | None = None
    spi_categories: tuple[str, ...] = ()
    individuals: int | None = None
    sector: str | None = None
    gba_sc_variant: str | None = None  # HK | MO: the contract the parties' regions call for


@dataclass(frozen=True, slots=True)
class EvidenceCheck:
    status: str  # not_required | satisfied | missing | expired | late_filing | out_of_scope
    used: Evidence | None
    problems: tuple[str, ...]
    warnings: tuple[str, ...]


def legal_date(at: datetime, rules: RuleSet | None = None) -> date:
    """The calendar date of an instant in the rules' time zone (Beijing time): validity and
    filing dates are judged on that calendar, not on UTC's (architecture.md invariant 7)."""
    if at.tzinfo is None:
        raise ValueError("legal_date needs a timezone-aware time")
    return at.astimezone((rules or default_rules()).zone).date()


def add_working_days(start: date, days: int) -> date:
    """Monday to Friday; public holidays are not modelled [U], which errs towards stricter."""
    current, added = start, 0
    while added < days:
        current += timedelta(days=1)
        if current.weekday() < 5:
            added += 1
    return current


def working_days_between(start: date, end: date) -> int:
    if end <= start:
        return 0
    return sum(1 for i in range(1, (end - start).days + 1) if (start + timedelta(days=i)).weekday() < 5)


def _years_after(start: date, years: int) -> date:
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February
        return start.replace(year=start.year + years, day=28)


def valid_until(item: Evidence, rules: RuleSet | None = None) -> date | None:
    """When an assessment or certification stops being valid: issue date + the rules' years
    (Provisions 2024 Art.9; Order 20), or an earlier stated end. A stated end beyond the legal
    term counts for nothing: an extension is a new approval, recorded by amending the item
    with the extension's own issue date and reference."""
    if item.kind not in ("ASSESSMENT", "CERT"):
        return item.valid_to
    if item.issued is None:  # recorded before issue dates were required (migration 0010)
        return item.valid_to
    validity = (rules or default_rules()).validity
    term = _years_after(
        item.issued, validity["assessment_years" if item.kind == "ASSESSMENT" else "certificate_years"]
    )
    return min(item.valid_to, term) if item.valid_to is not None else term


def _out_of_scope(item: Evidence, scope: Scope, rules: RuleSet) -> str | None:
    """Why the item does not cover this transfer (None when it does)."""
    name = f"{item.kind} {item.reference}"
    if item.dataset_ids and scope.dataset_id not in item.dataset_ids:
        return f"{name} does not cover dataset {scope.dataset_id}"
    if item.spi_categories is not None:
        missing = sorted(set(scope.spi_categories) - set(item.spi_categories))
        if missing:
            return f"{name} does not cover the sensitive categories {', '.join(missing)}"
    if item.kind == "SECTOR" and item.sector != scope.sector:
        return f"{name} is a {item.sector} approval, not a {scope.sector} one"
    if (
        item.kind == "GBA_SC"
        and scope.gba_sc_variant
        and item.variant not in (None, f"GBA_SC_{scope.gba_sc_variant}")
    ):
        return f"{name} is the {item.variant} contract; these parties need GBA_SC_{scope.gba_sc_variant}"
    if item.kind == "ASSESSMENT" and item.approved_individuals is not None and scope.individuals is not None:
        margin = rules.validity["assessment_volume_margin_percent"]
        ceiling = item.approved_individuals * (100 + margin) // 100
        if scope.individuals > ceiling:
            return (
                f"{name} approved {item.approved_individuals:,} individuals; {scope.individuals:,} is more than "
                f"{margin}% above it: apply for a new assessment"
            )
    return None


def _check_one(
    item: Evidence, purpose: str, today: date, rules: RuleSet, scope: Scope | None = None
) -> tuple[str, list[str], list[str]]:
    validity = rules.validity
    problems: list[str] = []
    warnings: list[str] = []
    if item.purposes and purpose not in item.purposes:
        return "out_of_scope", [f"{item.kind} {item.reference} does not cover purpose {purpose}"], []
    if scope is not None:
        why = _out_of_scope(item, scope, rules)
        if why is not None:
            return "out_of_scope", [why], []
    if item.kind in ("SECTOR", "AUTHORISATION"):
        if item.issued is None:
            return "missing", [f"{item.kind} {item.reference} has no issue date"], []
        if item.issued > today:
            return "missing", [f"{item.kind} {item.reference} is dated in the future"], []
        if item.valid_to is not None and today > item.valid_to:
            return "expired", [f"{item.kind} {item.reference} expired on {item.valid_to.isoformat()}"], []
        return "satisfied", problems, warnings
    if item.kind in ("ASSESSMENT", "CERT"):
        valid_to = valid_until(item, rules)
        if valid_to is None:
            return "missing", [f"{item.kind} {item.reference} has no issue date or validity"], []
        if today > valid_to:
            return "expired", [f"{item.kind} {item.reference} expired on {valid_to.isoformat()}"], []
        left = working_days_between(today, valid_to)
        if left <= validity["expiry_warning_working_days"]:
            warnings.append(
                f"{item.kind} {item.reference} expires on {valid_to.isoformat()} ({left} working days): apply for extension"
            )
        return "satisfied", problems, warnings
    # SCC and GBA SC: a filing number, filed within 10 working days of the contract's effect.
    if not item.reference or item.filing_date is None or item.effective_date is None:
        return "missing", [f"{item.kind} needs a filing number, an effective date and a filing date"], []
    deadline = add_working_days(item.effective_date, validity["filing_working_days"])
    if item.filing_date > deadline:
        return (
            "late_filing",
            [
                f"{item.kind} {item.reference} was filed on {item.filing_date.isoformat()}, after the deadline "
                f"{deadline.isoformat()} ({validity['filing_working_days']} working days from {item.effective_date.isoformat()})"
            ],
            [],
        )
    if item.filing_date > today:
        return "missing", [f"{item.kind} {item.reference} is dated to be filed in the future"], []
    return "satisfied", problems, warnings


def check_evidence(
    decision: Decision,
    evidence: Sequence[Evidence],
    today: date,
    rules: RuleSet | None = None,
    scope: Scope | None = None,
) -> EvidenceCheck:
    """Does the evidence on file satisfy the mechanism the decision requires, today?"""
    return check_mechanisms(
        decision.evidence_required, str(decision.facts.get("purpose", "other")), evidence, today, rules, scope
    )


def check_mechanisms(
    needed: Sequence[str],
    purpose: str,
    evidence: Sequence[Evidence],
    today: date,
    rules: RuleSet | None = None,
    scope: Scope | None = None,
) -> EvidenceCheck:
    """Does the evidence on file hold one valid mechanism of the ``needed`` kinds for ``purpose``, today?"""
    rules = rules or default_rules()
    if not needed:
        return EvidenceCheck("not_required", None, (), ())
    best_status, best_problems = (
        "missing",
        [f"no {' or '.join(needed)} on file for this exporter and recipient"],
    )
    order = ["missing", "out_of_scope", "late_filing", "expired"]
    for item in evidence:
        if item.kind not in needed:
            continue
        status, problems, warnings = _check_one(item, purpose, today, rules, scope)
        if status == "satisfied":
            return EvidenceCheck("satisfied", item, (), tuple(warnings))
        if order.index(status) >= order.index(best_status):
            best_status, best_problems = status, problems
    return EvidenceCheck(best_status, None, tuple(best_problems), ())
