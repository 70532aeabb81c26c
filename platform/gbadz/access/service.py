"""Access requests, grants and mechanism evidence: the licence and the transfer engine together.

Every request is decided when it is made: the contract's licence (purposes, duration,
columns, onward transfer) and the transfer engine over facts the platform knows (origin,
destination, categories, the exporter's year-to-date counters, the recipient's GBA
registration). The decision, with its rules version and hash, is stored with the request
and copied into the grant. ``PROHIBITED`` can never be approved; only a request that both
the licence and the engine allow without review is approved automatically (ADR 0011).

Counters in a decision are *estimates*: the exporter's mechanism-basis count so far plus
every row of the current version as a distinct individual (an upper bound, so the estimate
errs towards the stricter outcome). Exact, de-duplicated counting happens on delivery.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from gbadz import audit
from gbadz.access import repository
from gbadz.access.models import AccessRequest, Grant, MechanismEvidence
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import get_visible, stored_contract
from gbadz.compliance import counters
from gbadz.contract import Contract
from gbadz.errors import (
    AccessRequestNotFound,
    BadRequest,
    ColumnNotInSchema,
    DatasetNotOpen,
    DuplicateMechanism,
    Forbidden,
    GrantAlreadyRevoked,
    GrantNotFound,
    MechanismNotOnFile,
    NotYourReviewStep,
    RequestNotUnderReview,
    TransferProhibited,
)
from gbadz.identity.service import Viewer
from gbadz.identity.tokens import Principal
from gbadz.law.engine import Decision, FactError, TransferFacts, decide, gba_sc_findings
from gbadz.law.evidence import Evidence, check_evidence, check_mechanisms, legal_date
from gbadz.law.rules import RuleSet, default_rules

REVIEW_OUTCOMES = ("GBA_SC", "SCC_OR_CERT", "ASSESSMENT", "HUMAN_REVIEW")


@dataclass(frozen=True)
class Ask:
    """What a requester asks for (the API body, validated)."""

    dataset_id: str
    purpose: str
    purpose_text: str
    columns: tuple[str, ...]
    duration_days: int
    destination: str | None
    onward_transfer: str  # none | within_gba | outside_gba
    gba_sc_opt_in: bool = True


@dataclass(frozen=True)
class Assessment:
    dataset: Dataset
    contract: Contract
    columns: tuple[str, ...]
    decision: Decision
    licence_findings: tuple[str, ...]  # why the licence refuses; empty when it allows
    granted_days: int
    evidence: dict[str, Any]


def _now() -> datetime:
    return datetime.now(UTC)


def now() -> datetime:
    """The service's clock (UTC); grants compare their expiry against it."""
    return _now()


def _evidence_on_file(session: Session, exporter: str | None, recipient: str) -> list[Evidence]:
    rows = repository.evidence_between(session, exporter, recipient)
    return [
        Evidence(
            kind=r.kind,
            reference=r.reference,
            issued=r.issued,
            valid_to=r.valid_to,
            effective_date=r.effective_date,
            filing_date=r.filing_date,
            purposes=tuple(r.purposes or ()),
        )
        for r in rows
    ]


def assess(
    session: Session, viewer: Viewer, ask: Ask, *, rules: RuleSet | None = None, at: datetime | None = None
) -> Assessment:
    """Decide what moving ``ask`` to the viewer's organisation would take (nothing is written)."""
    at = at or _now()
    rules = rules or default_rules()
    dataset = get_visible(session, viewer, ask.dataset_id)
    if dataset.status not in ("active", "deprecated"):
        raise DatasetNotOpen(
            f"dataset_id: the dataset is {dataset.status}; it takes no access requests", field="dataset_id"
        )
    contract = stored_contract(dataset)
    known = [p.name for p in contract.table.properties]
    unknown = [c for c in ask.columns if c not in known]
    if unknown:
        raise ColumnNotInSchema(
            f"columns: not in the dataset's schema: {', '.join(unknown)}", field="columns"
        )
    columns = tuple(ask.columns) or tuple(known)
    if len(set(columns)) != len(columns):
        raise ColumnNotInSchema("columns: a column is named twice", field="columns")
    recipient = repository.organisation(session, viewer.org_id)
    exporter = repository.organisation(session, dataset.provider_org_id)
    destination = ask.destination or viewer.jurisdiction
    has_pi = any(contract.facts(c).pi for c in columns)
    has_spi = any(contract.facts(c).spi for c in columns)
    pi_after = spi_after = 0
    if has_pi and exporter is not None:
        year = counters.counter_year(at, rules)
        rows = dataset.row_count or 0
        pi_after = counters.count(session, exporter.id, year, "mechanism", "pi") + rows
        spi_after = counters.count(session, exporter.id, year, "mechanism", "spi") + (rows if has_spi else 0)
    facts = TransferFacts(
        origin=dataset.origin,
        dest=destination,
        category=dataset.category,
        has_pi=has_pi,
        has_spi=has_spi,
        exporter_ciio=bool(exporter and exporter.ciio),
        pi_ytd_after=pi_after,
        spi_ytd_after=spi_after,
        recipient_gba_registered=bool(recipient and recipient.gba_registered),
        onward_outside_gba=ask.onward_transfer == "outside_gba",
        gba_sc_opt_in=ask.gba_sc_opt_in,
        purpose=ask.purpose,
        sector_overlay=contract.gbadz.sector_overlay,
    )
    try:
        decision = decide(facts, rules)
    except FactError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}", field=exc.field) from None
    licence = contract.gbadz.licence
    findings: list[str] = []
    if ask.purpose not in licence.permitted_purposes:
        findings.append(
            f"licence.permitted_purposes: the licence permits {', '.join(licence.permitted_purposes)}; "
            f"not {ask.purpose}"
        )
    if ask.onward_transfer != "none" and not licence.onward_transfer_allowed:
        findings.append("licence.onward_transfer_allowed: the licence forbids onward transfer")
    findings.extend(gba_sc_findings(decision, ask.onward_transfer == "outside_gba", rules))
    granted_days = min(ask.duration_days, licence.max_duration.days)
    check = check_evidence(
        decision,
        _evidence_on_file(session, exporter.id if exporter else None, viewer.org_id),
        legal_date(at, rules),
        rules,
    )
    evidence = {
        "status": check.status,
        "used": check.used.reference if check.used else None,
        "problems": list(check.problems),
        "warnings": list(check.warnings),
    }
    return Assessment(dataset, contract, columns, decision, tuple(findings), granted_days, evidence)


def _snapshot(assessment: Assessment) -> dict[str, Any]:
    return assessment.decision.as_dict() | {"evidence": assessment.evidence}


def _record(session: Session, actor: str, request: AccessRequest, action: str, **details: Any) -> None:
    audit.record(
        session,
        actor=actor,
        action=action,
        subject_type="access_request",
        subject_id=request.id,
        details={"state": request.state, "reason": request.reason, "decision": request.decision, **details},
    )


def _grant(session: Session, request: AccessRequest, at: datetime) -> Grant:
    grant = Grant(
        id=str(uuid.uuid4()),
        request_id=request.id,
        dataset_id=request.dataset_id,
        grantee_org_id=request.requester_org_id,
        provider_org_id=request.provider_org_id,
        purpose=request.purpose,
        columns=list(request.columns),
        decision=request.decision,
        granted_at=at,
        expires_at=at + timedelta(days=request.duration_days),
    )
    session.add(grant)
    return grant


def create_request(
    session: Session, viewer: Viewer, actor: str, ask: Ask, rules: RuleSet | None = None
) -> AccessRequest:
    at = _now()
    assessment = assess(session, viewer, ask, rules=rules, at=at)
    decision = assessment.decision
    request = AccessRequest(
        id=str(uuid.uuid4()),
        dataset_id=assessment.dataset.id,
        requester_org_id=viewer.org_id,
        provider_org_id=assessment.dataset.provider_org_id,
        requested_by=actor,
        purpose=ask.purpose,
        purpose_text=ask.purpose_text,
        columns=list(assessment.columns),
        destination=ask.destination or viewer.jurisdiction,
        onward_transfer=ask.onward_transfer,
        duration_days=assessment.granted_days,
        state="submitted",
        decision=_snapshot(assessment),
        licence_findings=list(assessment.licence_findings),
        created_at=at,
        updated_at=at,
    )
    session.add(request)
    session.flush()
    _record(session, actor, request, "access_request.submitted", requested_days=ask.duration_days)
    if assessment.licence_findings:
        request.state, request.reason = "rejected", "; ".join(assessment.licence_findings)
    elif decision.outcome == "PROHIBITED":
        request.state, request.reason = "rejected", f"{decision.rule_id}: {decision.legal_basis}"
    elif decision.allowed_without_review:
        request.state, request.reason = (
            "approved",
            f"approved automatically: {decision.rule_id} {decision.outcome}",
        )
        _grant(session, request, at)
    else:
        request.state = "under_provider_review"
    request.updated_at = at
    _record(session, "gbadz", request, f"access_request.{request.state}")
    session.flush()
    return request


def visible_request(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = repository.request_for(session, principal, request_id)
    if request is None:
        raise AccessRequestNotFound(f"no access request {request_id!r}")
    return request


def grant_id_of(session: Session, request: AccessRequest) -> str | None:
    """The grant an approved request produced (None before approval)."""
    return repository.grant_id_of(session, request.id)


def approve(
    session: Session,
    principal: Principal,
    actor: str,
    request_id: str,
    reason: str | None,
    rules: RuleSet | None = None,
) -> AccessRequest:
    request = _locked(session, principal, request_id)
    at = _now()
    outcome = request.decision.get("outcome")
    if request.state == "under_provider_review":
        if principal.org_id != request.provider_org_id:
            raise NotYourReviewStep("only the dataset's provider reviews this request now")
        if outcome in REVIEW_OUTCOMES:
            request.state = "under_compliance_review"
        else:
            request.state = "approved"
            _grant(session, request, at)
    elif request.state == "under_compliance_review":
        if not repository.sees_everything(principal):
            raise NotYourReviewStep("a compliance officer reviews this request now")
        _require_mechanism(session, request, at, rules or default_rules())
        request.state = "approved"
        _grant(session, request, at)
    else:
        raise RequestNotUnderReview(
            f"state: the request is {request.state}; only a request under review can be approved",
            field="state",
        )
    request.reason, request.updated_at = reason, at
    _record(session, actor, request, f"access_request.{request.state}")
    session.flush()
    return request


def _require_mechanism(session: Session, request: AccessRequest, at: datetime, rules: RuleSet) -> None:
    """A mechanism outcome is approved only with valid evidence on file, re-checked now."""
    if request.decision.get("outcome") == "PROHIBITED":  # pragma: no cover - never under review
        raise TransferProhibited("decision: a prohibited transfer can never be approved", field="decision")
    needed = request.decision.get("evidence_required") or []
    if not needed:
        return
    check = check_mechanisms(
        needed,
        request.purpose,
        _evidence_on_file(session, request.provider_org_id, request.requester_org_id),
        legal_date(at, rules),
        rules,
    )
    if check.status != "satisfied":
        raise MechanismNotOnFile(
            "evidence: " + "; ".join(check.problems or (f"no valid {' or '.join(needed)} on file",)),
            field="evidence",
        )
    request.decision = {
        **request.decision,
        "evidence": {
            "status": "satisfied",
            "used": check.used.reference if check.used else None,
            "problems": [],
            "warnings": list(check.warnings),
        },
    }


def reject(session: Session, principal: Principal, actor: str, request_id: str, reason: str) -> AccessRequest:
    request = _locked(session, principal, request_id)
    if request.state == "under_provider_review":
        if principal.org_id != request.provider_org_id:
            raise NotYourReviewStep("only the dataset's provider reviews this request now")
    elif request.state == "under_compliance_review":
        if not repository.sees_everything(principal):
            raise NotYourReviewStep("a compliance officer reviews this request now")
    else:
        raise RequestNotUnderReview(
            f"state: the request is {request.state}; only a request under review can be rejected",
            field="state",
        )
    request.state, request.reason, request.updated_at = "rejected", reason, _now()
    _record(session, actor, request, "access_request.rejected")
    return request


def _locked(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = repository.request_for(session, principal, request_id, lock=True)
    if request is None:
        raise AccessRequestNotFound(f"no access request {request_id!r}")
    return request


def list_requests(
    session: Session, principal: Principal, state: str | None, limit: int
) -> list[AccessRequest]:
    return repository.requests_for(session, principal, state, limit)


def list_grants(session: Session, principal: Principal, limit: int) -> list[Grant]:
    return repository.grants_for(session, principal, limit)


def revoke_grant(session: Session, principal: Principal, actor: str, grant_id: str, reason: str) -> Grant:
    grant = repository.grant_for(session, principal, grant_id, lock=True)
    if grant is None:
        raise GrantNotFound(f"no grant {grant_id!r}")
    if grant.revoked_at is not None:
        raise GrantAlreadyRevoked("state: the grant is already revoked", field="state")
    grant.revoked_at, grant.revoked_reason = _now(), reason
    audit.record(
        session,
        actor=actor,
        action="grant.revoked",
        subject_type="grant",
        subject_id=grant.id,
        details={"reason": reason, "request": grant.request_id, "decision": grant.decision},
    )
    return grant


def record_evidence(session: Session, principal: Principal, actor: str, **fields: Any) -> MechanismEvidence:
    exporter, recipient = fields["exporter_org_id"], fields["recipient_org_id"]
    for name, org_id in (("exporter_org_id", exporter), ("recipient_org_id", recipient)):
        if repository.organisation(session, org_id) is None:
            raise BadRequest(f"{name}: no organisation {org_id!r}", field=name)
    if not repository.is_party(principal, exporter):
        raise Forbidden("only the exporter or a compliance officer records its mechanisms")
    if repository.evidence_exists(session, fields["kind"], fields["reference"]):
        raise DuplicateMechanism(
            f"reference: {fields['kind']} {fields['reference']} is already on file", field="reference"
        )
    row = MechanismEvidence(id=str(uuid.uuid4()), recorded_by=actor, **fields)
    session.add(row)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="mechanism.recorded",
        subject_type="mechanism_evidence",
        subject_id=row.id,
        details={k: (v.isoformat() if isinstance(v, date) else v) for k, v in fields.items()},
    )
    return row


def list_evidence(session: Session, principal: Principal, exporter: str | None) -> list[MechanismEvidence]:
    return repository.evidence_for(session, principal, exporter)
