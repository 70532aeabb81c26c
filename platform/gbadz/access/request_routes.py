"""HTTP routes of access: transfer assessments, access requests, grants and mechanism evidence."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from gbadz.access import requests as service
from gbadz.access.auth import Authenticated, actor_of, require_scopes
from gbadz.access.identity import JURISDICTIONS
from gbadz.access.models import AccessRequest, Grant, MechanismEvidence
from gbadz.access.routes import WriteSession
from gbadz.access.tokens import Principal
from gbadz.access.transfer import EVIDENCE_KINDS, PURPOSES
from gbadz.catalog.routes import viewer_of
from gbadz.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientScope,
    NotFound,
    Unauthenticated,
    error_responses,
)

router = APIRouter(
    prefix="/api/v1", tags=["access"], responses=error_responses(Unauthenticated, InsufficientScope)
)

Reader = Annotated[Principal, Depends(require_scopes("catalog:read"))]
Requester = Annotated[Principal, Depends(require_scopes("access:request"))]
Reviewer = Annotated[Principal, Depends(require_scopes("access:review"))]
Purpose = Literal[PURPOSES]  # type: ignore[valid-type]
Jurisdiction = Literal[JURISDICTIONS]  # type: ignore[valid-type]
Onward = Literal["none", "within_gba", "outside_gba"]


class AssessmentAsk(BaseModel):
    """§7.1 facts the caller supplies; the rest (origin, category, counters, registration) the platform knows."""

    model_config = ConfigDict(extra="forbid")

    dataset_id: str = Field(max_length=100, examples=["sz-hospital-outpatient-visits"])
    columns: list[str] = Field(default_factory=list, max_length=500, description="default: every column")
    purpose: Purpose = Field(examples=["trade_transport_academic_mfg_marketing"])
    dest: Jurisdiction | None = Field(default=None, description="default: your organisation's jurisdiction")
    onward_outside_gba: bool = False
    gba_sc_opt_in: bool = True


class RequestAsk(BaseModel):
    model_config = ConfigDict(extra="forbid")

    purpose: Purpose
    purpose_text: str = Field(
        min_length=10, max_length=2000, examples=["Route planning model for cold-chain deliveries"]
    )
    columns: list[str] = Field(default_factory=list, max_length=500, description="default: every column")
    duration_days: int = Field(
        default=90, ge=1, le=service.MAX_DURATION_DAYS, description="capped by the licence"
    )
    destination: Jurisdiction | None = Field(
        default=None, description="default: your organisation's jurisdiction"
    )
    onward_transfer: Onward = "none"
    gba_sc_opt_in: bool = True


class DecisionRead(BaseModel):
    outcome: str
    rule_id: str
    legal_basis: str
    obligations: list[str]
    evidence_required: list[str]
    note: str | None
    alternatives: list[dict[str, str]]
    rules_version: str
    rules_hash: str
    evidence: dict[str, Any]
    facts: dict[str, Any]


class AssessmentRead(BaseModel):
    dataset_id: str
    columns: list[str]
    decision: DecisionRead
    licence_allows: bool
    licence_findings: list[str]
    granted_days: int = Field(description="the duration a request would get (capped by the licence)")
    auto_approvable: bool


class AccessRequestRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    dataset_id: str
    requester_org_id: str
    provider_org_id: str | None
    purpose: str
    purpose_text: str
    columns: list[str]
    destination: str
    onward_transfer: str
    duration_days: int
    state: Literal["submitted", "under_provider_review", "under_compliance_review", "approved", "rejected"]
    decision: DecisionRead
    licence_findings: list[str]
    reason: str | None
    created_at: datetime
    updated_at: datetime
    grant_id: str | None = None


class GrantRead(BaseModel):
    id: str
    request_id: str
    dataset_id: str
    grantee_org_id: str
    provider_org_id: str | None
    purpose: str
    columns: list[str]
    status: Literal["active", "expired", "revoked"]
    granted_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_reason: str | None
    outcome: str
    legal_basis: str


class Review(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(default=None, max_length=2000)


class Rejection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=2000)


class EvidenceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    exporter_org_id: str = Field(max_length=36)
    recipient_org_id: str = Field(max_length=36)
    kind: Literal[EVIDENCE_KINDS]  # type: ignore[valid-type]
    reference: str = Field(min_length=3, max_length=200, examples=["GBA-SC-440300-2026-0012"])
    issued: date | None = None
    valid_to: date | None = None
    effective_date: date | None = None
    filing_date: date | None = None
    purposes: list[Purpose] = Field(default_factory=list, description="empty: any purpose")


class EvidenceRead(EvidenceCreate):
    model_config = ConfigDict(from_attributes=True, extra="ignore")

    id: str
    recorded_by: str
    recorded_at: datetime


def _request_read(request: AccessRequest, grant_id: str | None = None) -> AccessRequestRead:
    read = AccessRequestRead.model_validate(request)
    read.grant_id = grant_id
    return read


def _grant_id(session: Any, request: AccessRequest) -> str | None:
    import sqlalchemy as sa

    return session.scalar(sa.select(Grant.id).where(Grant.request_id == request.id))  # type: ignore[no-any-return]


def _grant_read(grant: Grant) -> GrantRead:
    return GrantRead(
        id=grant.id,
        request_id=grant.request_id,
        dataset_id=grant.dataset_id,
        grantee_org_id=grant.grantee_org_id,
        provider_org_id=grant.provider_org_id,
        purpose=grant.purpose,
        columns=grant.columns,
        status=grant.status(service._now()),
        granted_at=grant.granted_at,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        revoked_reason=grant.revoked_reason,
        outcome=str(grant.decision.get("outcome")),
        legal_basis=str(grant.decision.get("legal_basis")),
    )


@router.post(
    "/transfer-assessments",
    response_model=AssessmentRead,
    responses=error_responses(BadRequest, NotFound, Conflict),
    summary="What would it take to move this dataset (these columns) to my organisation for this purpose?",
    description="Decides without creating a request: the transfer engine's outcome, legal basis, "
    "obligations and required evidence, whether that evidence is on file, and what the licence says.",
)
def transfer_assessment(
    body: AssessmentAsk, request: Request, principal: Reader, session: WriteSession
) -> AssessmentRead:
    viewer = viewer_of(request, session, principal)
    ask = service.Ask(
        dataset_id=body.dataset_id,
        purpose=body.purpose,
        purpose_text="",
        columns=tuple(body.columns),
        duration_days=1,
        destination=body.dest,
        onward_transfer="outside_gba" if body.onward_outside_gba else "none",
        gba_sc_opt_in=body.gba_sc_opt_in,
    )
    result = service.assess(session, viewer, ask)
    session.rollback()  # nothing to write: an assessment is advice
    return AssessmentRead(
        dataset_id=result.dataset.id,
        columns=list(result.columns),
        decision=DecisionRead(**(result.decision.as_dict() | {"evidence": result.evidence})),
        licence_allows=not result.licence_findings,
        licence_findings=list(result.licence_findings),
        granted_days=result.contract.gbadz.licence.max_duration.days,
        auto_approvable=not result.licence_findings and result.decision.allowed_without_review,
    )


@router.post(
    "/datasets/{dataset_id}/access-requests",
    status_code=201,
    response_model=AccessRequestRead,
    responses=error_responses(BadRequest, NotFound, Conflict),
    summary="Ask for access: decided at once (approved, rejected, or sent to review), with its legal basis",
)
def create_access_request(
    dataset_id: str, body: RequestAsk, request: Request, principal: Requester, session: WriteSession
) -> AccessRequestRead:
    viewer = viewer_of(request, session, principal)
    ask = service.Ask(
        dataset_id=dataset_id,
        purpose=body.purpose,
        purpose_text=body.purpose_text,
        columns=tuple(body.columns),
        duration_days=body.duration_days,
        destination=body.destination,
        onward_transfer=body.onward_transfer,
        gba_sc_opt_in=body.gba_sc_opt_in,
    )
    created = service.create_request(session, viewer, actor_of(principal), ask)
    session.flush()
    return _request_read(created, _grant_id(session, created))


@router.get(
    "/access-requests",
    response_model=list[AccessRequestRead],
    summary="Requests you made, requests for your datasets, or (compliance officers) all; newest first",
)
def list_access_requests(
    principal: Authenticated,
    session: WriteSession,
    state: Annotated[
        Literal["under_provider_review", "under_compliance_review", "approved", "rejected"] | None, Query()
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AccessRequestRead]:
    return [
        _request_read(r, _grant_id(session, r))
        for r in service.list_requests(session, principal, state, limit)
    ]


@router.get(
    "/access-requests/{request_id}",
    response_model=AccessRequestRead,
    responses=error_responses(NotFound),
    summary="One access request with its decision and state",
)
def get_access_request(request_id: str, principal: Authenticated, session: WriteSession) -> AccessRequestRead:
    found = service.visible_request(session, principal, request_id)
    return _request_read(found, _grant_id(session, found))


@router.post(
    "/access-requests/{request_id}/approve",
    response_model=AccessRequestRead,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Approve at the current review step (provider, then compliance officer when required)",
)
def approve_access_request(
    request_id: str, body: Review, principal: Reviewer, session: WriteSession
) -> AccessRequestRead:
    approved = service.approve(session, principal, actor_of(principal), request_id, body.reason)
    session.flush()
    return _request_read(approved, _grant_id(session, approved))


@router.post(
    "/access-requests/{request_id}/reject",
    response_model=AccessRequestRead,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Reject at the current review step, with a reason",
)
def reject_access_request(
    request_id: str, body: Rejection, principal: Reviewer, session: WriteSession
) -> AccessRequestRead:
    return _request_read(service.reject(session, principal, actor_of(principal), request_id, body.reason))


@router.get(
    "/grants", response_model=list[GrantRead], summary="Grants you hold or gave (compliance officers: all)"
)
def list_grants(
    principal: Authenticated, session: WriteSession, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[GrantRead]:
    return [_grant_read(g) for g in service.list_grants(session, principal, limit)]


@router.post(
    "/grants/{grant_id}/revoke",
    response_model=GrantRead,
    responses=error_responses(NotFound, Conflict),
    summary="Revoke a grant (its provider, its holder, or a compliance officer), with a reason",
)
def revoke_grant(
    grant_id: str, body: Rejection, principal: Authenticated, session: WriteSession
) -> GrantRead:
    return _grant_read(service.revoke_grant(session, principal, actor_of(principal), grant_id, body.reason))


@router.post(
    "/mechanisms",
    status_code=201,
    response_model=EvidenceRead,
    responses=error_responses(BadRequest, Forbidden, Conflict),
    summary="Record a filed mechanism (GBA SC, SCC, certification, CAC assessment) for an exporter -> recipient pair",
)
def record_mechanism(body: EvidenceCreate, principal: Reviewer, session: WriteSession) -> EvidenceRead:
    row = service.record_evidence(session, principal, actor_of(principal), **body.model_dump())
    return EvidenceRead.model_validate(row)


@router.get(
    "/mechanisms",
    response_model=list[EvidenceRead],
    summary="Mechanisms on file (yours, or all for compliance officers)",
)
def list_mechanisms(
    principal: Authenticated,
    session: WriteSession,
    exporter: Annotated[str | None, Query(max_length=36)] = None,
) -> list[EvidenceRead]:
    return [EvidenceRead.model_validate(r) for r in service.list_evidence(session, principal, exporter)]


__all__ = ["MechanismEvidence", "router"]
