"""HTTP routes of access: transfer assessments, access requests, grants and mechanism evidence."""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as FastPath
from pydantic import AfterValidator

from gbadz import storage
from gbadz.access import service
from gbadz.access.determination import DeterminationIn
from gbadz.access.models import AccessRequest, Grant
from gbadz.access.schemas import (
    AccessRequestRead,
    AnalysisTerms,
    AssessmentAsk,
    AssessmentRead,
    DecisionRead,
    DeletionAttestation,
    EvidenceCreate,
    EvidenceRead,
    GrantRead,
    HistoryEntry,
    ObligationMet,
    ObligationRead,
    Rejection,
    RequestAsk,
    RetirementPreviewRead,
    Review,
    Withdrawal,
)
from gbadz.compliance import filing, filing_pdf
from gbadz.deps import S3, AppSettings, Keys, Log, ReadSession, Rules, WriteSession
from gbadz.errors import (
    AccessRequestNotFound,
    AnalysisNotOffered,
    BadRequest,
    ColumnNotAnalysable,
    ColumnNotInSchema,
    ColumnsNotNarrower,
    Conflict,
    DatasetNotFound,
    DatasetNotOpen,
    DeletionAlreadyAttested,
    DeterminationIncomplete,
    DuplicateMechanism,
    ExporterNotRegistered,
    Forbidden,
    FourEyes,
    GrantAlreadyRevoked,
    GrantInactive,
    GrantNotFound,
    GrantStillRunning,
    InsufficientScope,
    IntegrityCheckFailed,
    MechanismIncomplete,
    MechanismNotFound,
    MechanismNotOnFile,
    MechanismWithdrawn,
    NotYourReviewStep,
    ObligationAlreadyMet,
    ObligationIncomplete,
    ObligationNotFound,
    PayloadTooLarge,
    RequestNotUnderReview,
    StorageUnavailable,
    TransferProhibited,
    Unauthenticated,
    error_responses,
)
from gbadz.identity.auth import Authenticated, actor_of, require_scopes, viewer_of
from gbadz.identity.models import Organization
from gbadz.identity.tokens import Principal
from gbadz.log import get_logger
from gbadz.vocabulary import GrantKind

router = APIRouter(
    prefix="/api/v1", tags=["access"], responses=error_responses(Unauthenticated, InsufficientScope)
)

Reader = Annotated[Principal, Depends(require_scopes("catalog:read"))]
Requester = Annotated[Principal, Depends(require_scopes("access:request"))]
Reviewer = Annotated[Principal, Depends(require_scopes("access:review"))]
#: A record's id in a path: what the platform issues (UUIDs); anything else is 422, never a 500.
RecordId = Annotated[str, FastPath(max_length=64, pattern=r"^[A-Za-z0-9-]+$")]
log = get_logger("gbadz.access")
MAX_DOCUMENT_BYTES = 20 * 1024 * 1024
DOCUMENT_TYPES = ("application/pdf", "image/png", "image/jpeg")


def _utc_instant(value: dt.datetime) -> dt.datetime:
    """A query's instant in UTC (a date or a naive time is taken as UTC); one that UTC cannot
    hold (before year 1 or after year 9999 once converted) is refused as invalid, never a 500."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("out of range: in UTC the instant falls before year 1 or after year 9999") from None


#: An instant in a query, converted to UTC; out of range: 422 naming the parameter.
UTCInstant = Annotated[dt.datetime, AfterValidator(_utc_instant)]


def _request_read(
    request: AccessRequest,
    principal: Principal,
    grant_id: str | None = None,
    names: dict[str, Organization] | None = None,
) -> AccessRequestRead:
    read = AccessRequestRead.model_validate(request)
    # People's identities stay with the compliance office and their own organisation (invariant 9).
    read.reviews = service.reviews_as_seen_by(principal, request.reviews)
    read.findings = service.findings_as_seen_by(principal, request.findings)
    read.grant_id = grant_id
    if names is not None and request.requester_org_id in names:
        read.requester_name = names[request.requester_org_id].name
    return read


def _grant_reads(
    grants: list[Grant], session: ReadSession, request: Request, principal: Principal
) -> list[GrantRead]:
    """A page of grants as the caller may read them (a few queries for the whole page)."""
    names = service.organisations_named(session, {g.grantee_org_id for g in grants})
    versions = service.current_versions(session, principal, viewer_of(request, session, principal), grants)
    waiting = service.open_precondition_kinds(session, grants)
    return [
        _grant_read(g, session, principal, names, versions.get(g.id), waiting.get(g.id, [])) for g in grants
    ]


def _one_grant(grant: Grant, session: ReadSession, request: Request, principal: Principal) -> GrantRead:
    return _grant_reads([grant], session, request, principal)[0]


def _grant_read(
    grant: Grant,
    session: ReadSession,
    principal: Principal,
    names: dict[str, Organization],
    version: int | None,
    waiting: list[str],
) -> GrantRead:
    grantee = names.get(grant.grantee_org_id)
    status = grant.status(service.now())
    return GrantRead(
        grantee_name=grantee.name if grantee is not None else None,
        grantee_jurisdiction=grantee.jurisdiction if grantee is not None else None,
        id=grant.id,
        request_id=grant.request_id,
        dataset_id=grant.dataset_id,
        grantee_org_id=grant.grantee_org_id,
        provider_org_id=grant.provider_org_id,
        purpose=grant.purpose,
        kind="analysis" if grant.kind == "analysis" else "copy",
        analysis=_analysis_terms(session, grant),
        columns=grant.columns,
        status=status,
        granted_at=grant.granted_at,
        expires_at=grant.expires_at,
        revoked_at=grant.revoked_at,
        revoked_reason=grant.revoked_reason,
        suspended_at=grant.suspended_at,
        suspended_reason=grant.suspended_reason,
        outcome=str(grant.decision.get("outcome")),
        legal_basis=str(grant.decision.get("legal_basis")),
        rule_id=grant.decision.get("rule_id"),
        determination=service.determination_as_seen_by(principal, grant.determination),
        copies_deleted_at=grant.copies_deleted_at,
        deletion_attested_at=grant.deletion_attested_at,
        deletion_statement=grant.deletion_statement,
        current_version=version if status == "active" else None,
        open_preconditions=waiting,
        # A delivery would be refused (409 ObligationsOpen) while a precondition is open.
        deliverable=grant.kind != "analysis" and status == "active" and version is not None and not waiting,
    )


def _evidence_read(item: Any, session: ReadSession, principal: Principal) -> EvidenceRead:
    read = EvidenceRead.model_validate(item)
    read.version = service.version_of(session, item)
    # The other party reads who recorded it by role, not by username or client id (invariant 9).
    read.recorded_by = service.actor_as_seen_by(principal, item.recorded_by)
    return read


def _analysis_terms(session: ReadSession, grant: Grant) -> AnalysisTerms | None:
    terms = service.analysis_terms_of(session, grant)
    return AnalysisTerms.model_validate(terms) if terms is not None else None


@router.post(
    "/transfer-assessments",
    response_model=AssessmentRead,
    responses=error_responses(
        BadRequest,
        ColumnNotInSchema,
        ColumnNotAnalysable,
        AnalysisNotOffered,
        DatasetNotFound,
        DatasetNotOpen,
    ),
    summary="What would it take to move this dataset (these columns) to my organisation for this purpose?",
    description="Decides without creating a request: the transfer engine's outcome, legal basis, "
    "obligations and required evidence, whether that evidence is on file, and what the licence says.",
)
def transfer_assessment(
    body: AssessmentAsk, request: Request, principal: Reader, session: ReadSession, rules: Rules
) -> AssessmentRead:
    viewer = viewer_of(request, session, principal)
    ask = service.Ask(
        dataset_id=body.dataset_id,
        purpose=body.purpose,
        purpose_text="",
        columns=tuple(body.columns),
        duration_days=1,
        processing_location=body.processing_location,
        onward_transfer="outside_gba" if body.onward_outside_gba else "none",
        gba_sc_opt_in=body.gba_sc_opt_in,
        kind=body.kind,
    )
    result = service.assess(session, viewer, ask, rules=rules)  # advice: nothing is written
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
    responses=error_responses(
        BadRequest,
        ColumnNotInSchema,
        ColumnNotAnalysable,
        AnalysisNotOffered,
        DatasetNotFound,
        DatasetNotOpen,
        ExporterNotRegistered,
    ),
    summary="Ask for access: decided at once (approved, rejected, or sent to review), with its legal basis",
)
def create_access_request(
    dataset_id: str,
    body: RequestAsk,
    request: Request,
    principal: Requester,
    session: WriteSession,
    rules: Rules,
) -> AccessRequestRead:
    viewer = viewer_of(request, session, principal)
    ask = service.Ask(
        dataset_id=dataset_id,
        purpose=body.purpose,
        purpose_text=body.purpose_text,
        columns=tuple(body.columns),
        duration_days=body.duration_days,
        processing_location=body.processing_location,
        onward_transfer=body.onward_transfer,
        gba_sc_opt_in=body.gba_sc_opt_in,
        necessity_justification=body.necessity_justification,
        kind=body.kind,
    )
    created = service.create_request(session, viewer, actor_of(principal), ask, rules)
    return _request_read(created, principal, service.grant_id_of(session, created))


@router.get(
    "/access-requests",
    response_model=list[AccessRequestRead],
    summary="Requests you made, requests for your datasets, or (compliance officers) all; newest first",
)
def list_access_requests(
    principal: Authenticated,
    session: ReadSession,
    state: Annotated[
        Literal["under_provider_review", "under_compliance_review", "approved", "rejected", "withdrawn"]
        | None,
        Query(),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[AccessRequestRead]:
    found = service.list_requests(session, principal, state, limit)
    names = service.organisations_named(session, {r.requester_org_id for r in found})
    return [_request_read(r, principal, service.grant_id_of(session, r), names) for r in found]


@router.get(
    "/access-requests/{request_id}",
    response_model=AccessRequestRead,
    responses=error_responses(AccessRequestNotFound),
    summary="One access request with its decision and state",
)
def get_access_request(
    request_id: RecordId, principal: Authenticated, session: ReadSession
) -> AccessRequestRead:
    found = service.visible_request(session, principal, request_id)
    names = service.organisations_named(session, {found.requester_org_id})
    read = _request_read(found, principal, service.grant_id_of(session, found), names)
    read.history = [HistoryEntry.model_validate(h) for h in service.request_history(session, found)]
    return read


@router.post(
    "/access-requests/{request_id}/withdraw",
    response_model=AccessRequestRead,
    responses=error_responses(AccessRequestNotFound, RequestNotUnderReview),
    summary="Withdraw your organisation's request while it is not yet decided (reviewers can no longer act on it)",
)
def withdraw_access_request(
    request_id: RecordId, principal: Requester, session: WriteSession, body: Withdrawal | None = None
) -> AccessRequestRead:
    reason = body.reason if body else None
    return _request_read(
        service.withdraw_request(session, principal, actor_of(principal), request_id, reason), principal
    )


@router.post(
    "/access-requests/{request_id}/approve",
    response_model=AccessRequestRead,
    responses=error_responses(
        NotYourReviewStep,
        AccessRequestNotFound,
        RequestNotUnderReview,
        MechanismNotOnFile,
        TransferProhibited,
        DeterminationIncomplete,
        FourEyes,
        MechanismWithdrawn,
        ColumnsNotNarrower,
    ),
    summary="Approve at the current review step: the provider's, then the compliance officer's "
    "determination (basis, mechanism evidence, PIPIA, notice and consent, note)",
)
def approve_access_request(
    request_id: RecordId,
    body: Review,
    principal: Reviewer,
    session: WriteSession,
    rules: Rules,
    transfer_log: Log,
) -> AccessRequestRead:
    findings = service.Findings(**body.findings.model_dump()) if body.findings else None
    given = DeterminationIn(**body.determination.model_dump()) if body.determination else None
    approved = service.approve(
        session,
        principal,
        actor_of(principal),
        request_id,
        body.reason,
        rules,
        findings,
        given,
        transfer_log,
        columns=body.columns,
    )
    return _request_read(approved, principal, service.grant_id_of(session, approved))


@router.post(
    "/access-requests/{request_id}/reject",
    response_model=AccessRequestRead,
    responses=error_responses(NotYourReviewStep, AccessRequestNotFound, RequestNotUnderReview),
    summary="Reject at the current review step, with a reason",
)
def reject_access_request(
    request_id: RecordId, body: Rejection, principal: Reviewer, session: WriteSession
) -> AccessRequestRead:
    rejected = service.reject(session, principal, actor_of(principal), request_id, body.reason)
    return _request_read(rejected, principal)


@router.get(
    "/grants", response_model=list[GrantRead], summary="Grants you hold or gave (compliance officers: all)"
)
def list_grants(
    request: Request,
    principal: Authenticated,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    suspended: Annotated[
        bool,
        Query(description="only grants suspended because a transfer was decided stricter (review items)"),
    ] = False,
    status: Annotated[Literal["active", "suspended", "expired", "revoked"] | None, Query()] = None,
    dataset_id: Annotated[
        str | None,
        Query(max_length=100, description="only grants on this dataset (one you provide, hold or audit)"),
    ] = None,
    grantee_org_id: Annotated[str | None, Query(max_length=36)] = None,
    kind: Annotated[GrantKind | None, Query()] = None,
    expires_before: Annotated[
        UTCInstant | None, Query(description="only grants that end before this instant (ISO 8601)")
    ] = None,
) -> list[GrantRead]:
    filters = service.GrantFilters(status, dataset_id, grantee_org_id, kind, expires_before)
    grants = service.list_grants(session, principal, limit, suspended, filters)
    return _grant_reads(grants, session, request, principal)


@router.get(
    "/datasets/{dataset_id}/retirement-preview",
    response_model=RetirementPreviewRead,
    responses=error_responses(DatasetNotFound, StorageUnavailable),
    summary="What deprecating or retiring your dataset touches: live grants, waiting requests, copies",
)
def retirement_preview(
    dataset_id: str,
    request: Request,
    principal: Authenticated,
    session: ReadSession,
    s3: S3,
    settings: AppSettings,
) -> RetirementPreviewRead:
    # Any caller but the dataset's provider gets 404 (not 403): the preview is the provider's own.
    def copies(dataset: str) -> int:
        return storage.count_prefix(
            s3, settings.s3, settings.s3.delivery_bucket, storage.delivery_prefix(dataset)
        )

    viewer = viewer_of(request, session, principal)
    preview = service.retirement_preview(session, viewer, dataset_id, copies)
    return RetirementPreviewRead.model_validate(preview, from_attributes=True)


@router.post(
    "/grants/{grant_id}/revoke",
    response_model=GrantRead,
    responses=error_responses(GrantNotFound, GrantAlreadyRevoked),
    summary="Revoke a grant (its provider, its holder, or a compliance officer), with a reason",
)
def revoke_grant(
    grant_id: RecordId,
    body: Rejection,
    request: Request,
    principal: Authenticated,
    session: WriteSession,
    client: S3,
    settings: AppSettings,
    keys: Keys,
) -> GrantRead:
    grant = service.revoke_grant(session, principal, actor_of(principal), grant_id, body.reason)
    # The grant's delivery key goes first: whatever copy survives no longer decrypts (ADR 0018).
    service.destroy_delivery_key(session, keys, grant, actor_of(principal))
    _delete_copies(session, grant, client, settings)
    return _one_grant(grant, session, request, principal)


def _delete_copies(session: WriteSession, grant: Grant, client: S3, settings: AppSettings) -> None:
    """The grant ended: its delivery copies go now (on a storage failure, the sweeper retries)."""
    try:
        service.delete_copies(
            session,
            grant,
            lambda prefix: storage.delete_prefix(client, settings.s3, settings.s3.delivery_bucket, prefix),
        )
    except StorageUnavailable as exc:
        log.warning("grant copies not deleted yet", grant=grant.id, reason=exc.detail)


@router.get(
    "/grants/{grant_id}",
    response_model=GrantRead,
    responses=error_responses(GrantNotFound),
    summary="One grant: decision, determination, state, and its end (copies deleted, deletion attested)",
)
def get_grant(
    grant_id: RecordId, request: Request, principal: Authenticated, session: ReadSession
) -> GrantRead:
    return _one_grant(service.visible_grant(session, principal, grant_id), session, request, principal)


@router.post(
    "/grants/{grant_id}/deletion-attestation",
    response_model=GrantRead,
    responses=error_responses(GrantNotFound, Forbidden, GrantStillRunning, DeletionAlreadyAttested),
    summary="The grantee attests it deleted every copy after the grant ended",
)
def attest_deletion(
    grant_id: RecordId,
    body: DeletionAttestation,
    request: Request,
    principal: Authenticated,
    session: WriteSession,
) -> GrantRead:
    grant = service.attest_deletion(session, principal, actor_of(principal), grant_id, body.statement)
    return _one_grant(grant, session, request, principal)


@router.get(
    "/obligations",
    response_model=list[ObligationRead],
    summary="Obligations your organisation owes (compliance officers: all), by due date",
)
def list_obligations(
    principal: Authenticated,
    session: ReadSession,
    state: Annotated[Literal["open", "met"] | None, Query()] = None,
    overdue: Annotated[bool, Query(description="only open obligations past their due date")] = False,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
    grant_id: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[A-Za-z0-9-]+$", description="only the obligations of this grant"),
    ] = None,
) -> list[ObligationRead]:
    return _obligations(service.list_obligations(session, principal, state, overdue, limit, grant_id))


def _obligations(duties: list[Any]) -> list[ObligationRead]:
    today = service.legal_today()
    reads = []
    for duty in duties:
        read = ObligationRead.model_validate(duty)
        read.overdue = duty.state == "open" and duty.due_on is not None and duty.due_on < today
        reads.append(read)
    return reads


@router.post(
    "/obligations/{obligation_id}/met",
    response_model=ObligationRead,
    # 400: a recipient-deletion obligation is met by its attestation, not here.
    responses=error_responses(
        BadRequest, ObligationNotFound, Forbidden, ObligationAlreadyMet, ObligationIncomplete
    ),
    summary="Record that an obligation was met, naming the record (the owner, or a compliance officer)",
)
def meet_obligation(
    obligation_id: RecordId, body: ObligationMet, principal: Authenticated, session: WriteSession
) -> ObligationRead:
    duty = service.meet_obligation(
        session, principal, actor_of(principal), obligation_id, body.reference, body.date
    )
    return _obligations([duty])[0]


@router.post(
    "/grants/{grant_id}/redecide",
    response_model=GrantRead,
    responses=error_responses(
        NotYourReviewStep, GrantNotFound, GrantAlreadyRevoked, GrantInactive, DeterminationIncomplete
    ),
    summary="Decide a suspended grant again (compliance officers): it resumes only if no stricter now",
)
def redecide_grant(
    grant_id: RecordId,
    request: Request,
    principal: Reviewer,
    session: WriteSession,
    rules: Rules,
    body: Review | None = None,
) -> GrantRead:
    findings = service.Findings(**body.findings.model_dump()) if body and body.findings else None
    grant = service.decide_grant_again(session, principal, actor_of(principal), grant_id, rules, findings)
    return _one_grant(grant, session, request, principal)


@router.post(
    "/mechanisms",
    status_code=201,
    response_model=EvidenceRead,
    responses=error_responses(BadRequest, Forbidden, DuplicateMechanism, MechanismIncomplete),
    summary="Record a filed mechanism (GBA SC, SCC, certification, CAC assessment) for an exporter -> recipient pair",
)
def record_mechanism(body: EvidenceCreate, principal: Reviewer, session: WriteSession) -> EvidenceRead:
    row = service.record_evidence(session, principal, actor_of(principal), **body.model_dump())
    return _evidence_read(row, session, principal)


@router.post(
    "/mechanisms/{evidence_id}/amend",
    status_code=201,
    response_model=EvidenceRead,
    responses=error_responses(
        BadRequest, MechanismNotFound, MechanismWithdrawn, MechanismIncomplete, DuplicateMechanism
    ),
    summary="Correct a mechanism: a new version supersedes it (the old one is kept, withdrawn)",
)
def amend_mechanism(
    evidence_id: RecordId, body: EvidenceCreate, principal: Reviewer, session: WriteSession
) -> EvidenceRead:
    row = service.amend_evidence(session, principal, actor_of(principal), evidence_id, **body.model_dump())
    return _evidence_read(row, session, principal)


@router.post(
    "/mechanisms/{evidence_id}/withdraw",
    response_model=EvidenceRead,
    responses=error_responses(MechanismNotFound, MechanismWithdrawn, Forbidden),
    summary="Withdraw a mechanism (kept, never used again; grants relying on it stop at their next transfer)",
)
def withdraw_mechanism(
    evidence_id: RecordId, body: Rejection, principal: Reviewer, session: WriteSession
) -> EvidenceRead:
    row = service.withdraw_evidence(session, principal, actor_of(principal), evidence_id, body.reason)
    return _evidence_read(row, session, principal)


@router.put(
    "/mechanisms/{evidence_id}/document",
    response_model=EvidenceRead,
    responses=error_responses(
        BadRequest, MechanismNotFound, MechanismWithdrawn, DuplicateMechanism, PayloadTooLarge
    ),
    summary="Upload the filed document itself (PDF or image; kept in the object-locked bucket with its SHA-256)",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in DOCUMENT_TYPES},
        }
    },
)
async def upload_mechanism_document(
    evidence_id: RecordId,
    request: Request,
    principal: Reviewer,
    session: WriteSession,
    client: S3,
    settings: AppSettings,
) -> EvidenceRead:
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type not in DOCUMENT_TYPES:
        raise BadRequest(
            f"document: send the file as one of {', '.join(DOCUMENT_TYPES)} (Content-Type)", field="document"
        )
    data = bytearray()
    async for chunk in request.stream():
        data.extend(chunk)
        if len(data) > MAX_DOCUMENT_BYTES:
            raise PayloadTooLarge(
                f"document: larger than {MAX_DOCUMENT_BYTES // (1024 * 1024)} MiB", field="document"
            )
    if not data:
        raise BadRequest("document: the body is empty", field="document")
    store = storage.ObjectStore(client, settings.s3)
    row = service.attach_document(
        session,
        principal,
        actor_of(principal),
        evidence_id,
        bytes(data),
        content_type,
        store,
        settings.s3.landing_bucket,
    )
    return _evidence_read(row, session, principal)


@router.get(
    "/mechanisms/{evidence_id}/filing-package",
    responses={
        200: {"content": {"application/json": {}, "application/pdf": {}}},
        **error_responses(MechanismNotFound, Conflict),
    },
    response_class=Response,
    summary="The filing annex of a GBA or national standard contract (parties, purposes, categories, "
    "individuals, storage, onward recipients, PIPIA), as JSON or a bilingual PDF",
)
def filing_package(
    evidence_id: RecordId,
    principal: Authenticated,
    session: ReadSession,
    rules: Rules,
    format: Annotated[Literal["json", "pdf"], Query()] = "json",
) -> Response:
    found = filing.package(session, principal, evidence_id, rules)
    if format == "pdf":
        return Response(
            filing_pdf.render_pdf(found),
            media_type="application/pdf",
            headers={
                "Content-Disposition": f'attachment; filename="filing-{evidence_id[:8]}.pdf"',
                "Cache-Control": "no-store",
            },
        )
    return Response(
        json.dumps(found, ensure_ascii=False),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/mechanisms/{evidence_id}/document",
    responses={
        200: {"content": {t: {} for t in DOCUMENT_TYPES}},
        # 400: the stored document no longer matches its recorded SHA-256; 503: storage is down.
        **error_responses(MechanismNotFound, IntegrityCheckFailed, StorageUnavailable),
    },
    response_class=Response,
    summary="The filed document, checked against its recorded SHA-256",
)
def get_mechanism_document(
    evidence_id: RecordId, principal: Authenticated, session: ReadSession, client: S3, settings: AppSettings
) -> Response:
    store = storage.ObjectStore(client, settings.s3)
    item, data = service.evidence_document(session, principal, evidence_id, store, settings.s3.landing_bucket)
    return Response(
        data,
        media_type=item.document_type or "application/octet-stream",
        headers={"X-Content-SHA256": item.document_sha256 or "", "Cache-Control": "no-store"},
    )


@router.get(
    "/mechanisms",
    response_model=list[EvidenceRead],
    summary="Mechanisms on file (yours, or all for compliance officers)",
)
def list_mechanisms(
    principal: Authenticated,
    session: ReadSession,
    exporter: Annotated[str | None, Query(max_length=36)] = None,
) -> list[EvidenceRead]:
    return [
        _evidence_read(r, session, principal) for r in service.list_evidence(session, principal, exporter)
    ]


__all__ = ["router"]
