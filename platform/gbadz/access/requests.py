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

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz import audit
from gbadz.access import counters
from gbadz.access.identity import GBA9_CITIES
from gbadz.access.models import AccessRequest, Grant, MechanismEvidence, Organization
from gbadz.access.tokens import Principal
from gbadz.access.transfer import (
    Decision,
    Evidence,
    FactError,
    TransferFacts,
    check_evidence,
    check_mechanisms,
    decide,
)
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import Viewer, can_see, stored_contract
from gbadz.errors import BadRequest, Conflict, Forbidden, NotFound
from gbadz.ingest.contract import Contract

GBA = frozenset((*GBA9_CITIES, "HK", "MO"))
REVIEW_OUTCOMES = ("GBA_SC", "SCC_OR_CERT", "ASSESSMENT", "HUMAN_REVIEW")
OPEN_STATES = ("under_provider_review", "under_compliance_review")
MAX_DURATION_DAYS = 3660


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


def _org(session: Session, org_id: str) -> Organization | None:
    return session.get(Organization, org_id)


def _evidence_on_file(session: Session, exporter: str | None, recipient: str) -> list[Evidence]:
    if exporter is None:
        return []
    rows = session.scalars(
        sa.select(MechanismEvidence).where(
            MechanismEvidence.exporter_org_id == exporter, MechanismEvidence.recipient_org_id == recipient
        )
    ).all()
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


def assess(session: Session, viewer: Viewer, ask: Ask, *, at: datetime | None = None) -> Assessment:
    """Decide what moving ``ask`` to the viewer's organisation would take (nothing is written)."""
    at = at or _now()
    dataset = session.get(Dataset, ask.dataset_id)
    if dataset is None or not can_see(dataset, viewer):
        raise NotFound(f"no dataset {ask.dataset_id!r}")
    if dataset.status not in ("active", "deprecated"):
        raise Conflict(f"dataset_id: the dataset is {dataset.status}; it takes no access requests")
    contract = stored_contract(dataset)
    known = [p.name for p in contract.table.properties]
    unknown = [c for c in ask.columns if c not in known]
    if unknown:
        raise BadRequest(f"columns: not in the dataset's schema: {', '.join(unknown)}")
    columns = tuple(ask.columns) or tuple(known)
    if len(set(columns)) != len(columns):
        raise BadRequest("columns: a column is named twice")
    recipient = _org(session, viewer.org_id)
    exporter = _org(session, dataset.provider_org_id) if dataset.provider_org_id else None
    destination = ask.destination or viewer.jurisdiction
    has_pi = any(contract.facts(c).pi for c in columns)
    has_spi = any(contract.facts(c).spi for c in columns)
    pi_after = spi_after = 0
    if has_pi and exporter is not None:
        year = counters.counter_year(at)
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
        decision = decide(facts)
    except FactError as exc:
        raise BadRequest(f"{exc.field}: {exc.reason}") from None
    licence = contract.gbadz.licence
    findings: list[str] = []
    if ask.purpose not in licence.permitted_purposes:
        findings.append(
            f"licence.permitted_purposes: the licence permits {', '.join(licence.permitted_purposes)}; "
            f"not {ask.purpose}"
        )
    if ask.onward_transfer != "none" and not licence.onward_transfer_allowed:
        findings.append("licence.onward_transfer_allowed: the licence forbids onward transfer")
    if ask.onward_transfer == "outside_gba" and decision.outcome == "GBA_SC":
        findings.append("GBA standard contract: onward transfer outside the Greater Bay Area is not allowed")
    if destination not in GBA and dataset.origin in GBA and decision.outcome == "GBA_SC":
        findings.append("GBA standard contract: the recipient must be inside the Greater Bay Area")
    granted_days = min(ask.duration_days, licence.max_duration.days)
    check = check_evidence(
        decision,
        _evidence_on_file(session, exporter.id if exporter else None, viewer.org_id),
        at.date(),
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


def create_request(session: Session, viewer: Viewer, actor: str, ask: Ask) -> AccessRequest:
    at = _now()
    assessment = assess(session, viewer, ask, at=at)
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
    return request


def visible_request(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = session.get(AccessRequest, request_id)
    if request is None or not _may_see(principal, request):
        raise NotFound(f"no access request {request_id!r}")
    return request


def _may_see(principal: Principal, request: AccessRequest) -> bool:
    if principal.role == "compliance_officer":
        return True
    return principal.org_id in (request.requester_org_id, request.provider_org_id)


def approve(
    session: Session, principal: Principal, actor: str, request_id: str, reason: str | None
) -> AccessRequest:
    request = _locked(session, principal, request_id)
    at = _now()
    outcome = request.decision.get("outcome")
    if request.state == "under_provider_review":
        if principal.org_id != request.provider_org_id:
            raise Forbidden("only the dataset's provider reviews this request now")
        if outcome in REVIEW_OUTCOMES:
            request.state = "under_compliance_review"
        else:
            request.state = "approved"
            _grant(session, request, at)
    elif request.state == "under_compliance_review":
        if principal.role != "compliance_officer":
            raise Forbidden("a compliance officer reviews this request now")
        _require_mechanism(session, request, at)
        request.state = "approved"
        _grant(session, request, at)
    else:
        raise Conflict(f"state: the request is {request.state}; only a request under review can be approved")
    request.reason, request.updated_at = reason, at
    _record(session, actor, request, f"access_request.{request.state}")
    return request


def _require_mechanism(session: Session, request: AccessRequest, at: datetime) -> None:
    """A mechanism outcome is approved only with valid evidence on file, re-checked now."""
    if request.decision.get("outcome") == "PROHIBITED":  # pragma: no cover - never under review
        raise Conflict("decision: a prohibited transfer can never be approved")
    needed = request.decision.get("evidence_required") or []
    if not needed:
        return
    check = check_mechanisms(
        needed,
        request.purpose,
        _evidence_on_file(session, request.provider_org_id, request.requester_org_id),
        at.date(),
    )
    if check.status != "satisfied":
        raise Conflict(
            "evidence: " + "; ".join(check.problems or (f"no valid {' or '.join(needed)} on file",))
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
            raise Forbidden("only the dataset's provider reviews this request now")
    elif request.state == "under_compliance_review":
        if principal.role != "compliance_officer":
            raise Forbidden("a compliance officer reviews this request now")
    else:
        raise Conflict(f"state: the request is {request.state}; only a request under review can be rejected")
    request.state, request.reason, request.updated_at = "rejected", reason, _now()
    _record(session, actor, request, "access_request.rejected")
    return request


def _locked(session: Session, principal: Principal, request_id: str) -> AccessRequest:
    request = session.scalar(sa.select(AccessRequest).where(AccessRequest.id == request_id).with_for_update())
    if request is None or not _may_see(principal, request):
        raise NotFound(f"no access request {request_id!r}")
    return request


def list_requests(
    session: Session, principal: Principal, state: str | None, limit: int
) -> list[AccessRequest]:
    query = sa.select(AccessRequest).order_by(AccessRequest.created_at.desc(), AccessRequest.id).limit(limit)
    if principal.role != "compliance_officer":
        query = query.where(
            sa.or_(
                AccessRequest.requester_org_id == principal.org_id,
                AccessRequest.provider_org_id == principal.org_id,
            )
        )
    if state:
        query = query.where(AccessRequest.state == state)
    return list(session.scalars(query))


def list_grants(session: Session, principal: Principal, limit: int) -> list[Grant]:
    query = sa.select(Grant).order_by(Grant.granted_at.desc(), Grant.id).limit(limit)
    if principal.role != "compliance_officer":
        query = query.where(
            sa.or_(Grant.grantee_org_id == principal.org_id, Grant.provider_org_id == principal.org_id)
        )
    return list(session.scalars(query))


def revoke_grant(session: Session, principal: Principal, actor: str, grant_id: str, reason: str) -> Grant:
    grant = session.scalar(sa.select(Grant).where(Grant.id == grant_id).with_for_update())
    allowed = grant is not None and (
        principal.role == "compliance_officer"
        or principal.org_id in (grant.provider_org_id, grant.grantee_org_id)
    )
    if grant is None or not allowed:
        raise NotFound(f"no grant {grant_id!r}")
    if grant.revoked_at is not None:
        raise Conflict("state: the grant is already revoked")
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
        if _org(session, org_id) is None:
            raise BadRequest(f"{name}: no organisation {org_id!r}")
    if principal.role != "compliance_officer" and principal.org_id != exporter:
        raise Forbidden("only the exporter or a compliance officer records its mechanisms")
    duplicate = session.scalar(
        sa.select(MechanismEvidence.id).where(
            MechanismEvidence.kind == fields["kind"], MechanismEvidence.reference == fields["reference"]
        )
    )
    if duplicate is not None:
        raise Conflict(f"reference: {fields['kind']} {fields['reference']} is already on file")
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
    query = sa.select(MechanismEvidence).order_by(MechanismEvidence.recorded_at.desc())
    if principal.role != "compliance_officer":
        query = query.where(
            sa.or_(
                MechanismEvidence.exporter_org_id == principal.org_id,
                MechanismEvidence.recipient_org_id == principal.org_id,
            )
        )
    if exporter:
        query = query.where(MechanismEvidence.exporter_org_id == exporter)
    return list(session.scalars(query))
