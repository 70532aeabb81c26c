"""HTTP routes of compute-to-data: what a grant may ask, estimates, analyses and their releases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from starlette.concurrency import run_in_threadpool

from gbadz.analysis import query, service
from gbadz.analysis.models import Analysis
from gbadz.analysis.schemas import (
    AnalysisAsk,
    AnalysisRead,
    AnalysisSpecRead,
    BudgetRead,
    EstimateRead,
    ReleaseRead,
)
from gbadz.catalog.integrity import PublishedVersionAltered
from gbadz.deps import S3, AppSettings, Keys, Log, ReadSession, Rules, Sessions
from gbadz.errors import (
    DatasetRetired,
    GrantInactive,
    GrantNotFound,
    GrantSuspended,
    InsufficientScope,
    NoPublishedVersion,
    StorageUnavailable,
    Unauthenticated,
    WrongGrantKind,
    error_responses,
)
from gbadz.identity.auth import actor_of, require_scopes
from gbadz.identity.tokens import Principal

router = APIRouter(
    prefix="/api/v1", tags=["analysis"], responses=error_responses(Unauthenticated, InsufficientScope)
)
Requester = Annotated[Principal, Depends(require_scopes("access:request"))]
GrantID = Annotated[str, Path(max_length=36)]
GRANT_ERRORS = (GrantNotFound, WrongGrantKind, GrantInactive, GrantSuspended, DatasetRetired)


def _read(found: Analysis) -> AnalysisRead:
    return AnalysisRead.model_validate(found, from_attributes=True)


@router.get(
    "/grants/{grant_id}/analysis",
    response_model=AnalysisSpecRead,
    responses=error_responses(*GRANT_ERRORS, NoPublishedVersion, service.NoAnalyses),
    summary="What an analysis grant may ask (dimensions, measures, bounds, privacy unit) and its budget",
)
def get_analysis_spec(
    grant_id: GrantID, principal: Requester, session: ReadSession, settings: AppSettings
) -> AnalysisSpecRead:
    found = service.overview(session, settings, grant_id, principal.org_id)
    return AnalysisSpecRead(
        grant_id=found.grant_id,
        dataset_id=found.dataset_id,
        spec=found.spec,
        budget=BudgetRead(**found.budget.as_dict()),
    )


@router.post(
    "/grants/{grant_id}/analyses/estimate",
    response_model=EstimateRead,
    responses=error_responses(
        *GRANT_ERRORS, NoPublishedVersion, service.NoAnalyses, query.QueryRefused, service.EpsilonRefused
    ),
    summary="The noise (accuracy at 95%) and the budget a query would spend, without spending it",
)
def estimate_analysis(
    grant_id: GrantID, body: AnalysisAsk, principal: Requester, session: ReadSession, settings: AppSettings
) -> EstimateRead:
    found = service.estimate(session, settings, grant_id, principal.org_id, body.sql, body.epsilon)
    return EstimateRead(
        plan=found.plan,
        epsilon=found.epsilon,
        delta=found.delta,
        accuracy=found.accuracy,
        details=found.details,
        budget=BudgetRead(**found.budget.as_dict()),
        budget_after=BudgetRead(**found.budget_after.as_dict()),
        fits=found.fits,
    )


@router.post(
    "/grants/{grant_id}/analyses",
    status_code=201,
    response_model=ReleaseRead,
    responses=error_responses(
        *GRANT_ERRORS,
        NoPublishedVersion,
        service.NoAnalyses,
        query.QueryRefused,
        service.EpsilonRefused,
        service.BudgetExhausted,
        service.TooLargeForSync,
        service.AnalysisRateLimited,
        service.AnalysisInProgress,
        service.AnalysisFailed,
        service.AnalysisStopped,
        service.IdempotencyKeyReused,
        service.ComputeUnavailable,
        PublishedVersionAltered,
        StorageUnavailable,
    ),
    summary="Run an analysis inside the zone and release its differentially private result",
    description="The query is validated, the transfer decided again, and the budget charged (committed) "
    "before any row is read; the result and its transfer-log entry commit before the answer. A failure "
    "after the charge refunds it. Retrying with the same Idempotency-Key returns the same release "
    "(no second charge, no second log entry). Exhausted budget: 409 saying what is left.",
)
async def create_analysis(
    grant_id: GrantID,
    body: AnalysisAsk,
    principal: Requester,
    sessions: Sessions,
    s3: S3,
    settings: AppSettings,
    keys: Keys,
    log: Log,
    rules: Rules,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> ReleaseRead:
    def work() -> ReleaseRead:
        ran = service.run(
            sessions,
            client=s3,
            settings=settings,
            keys=keys,
            log=log,
            grant_id=grant_id,
            org_id=principal.org_id,
            actor=actor_of(principal),
            sql=body.sql,
            epsilon=body.epsilon,
            idempotency_key=idempotency_key,
            rules=rules,
        )
        return ReleaseRead(
            **_read(ran.analysis).model_dump(), budget=BudgetRead(**ran.budget.as_dict()), reused=ran.reused
        )

    # The sandbox and storage block: a worker thread, never the event loop.
    return await run_in_threadpool(work)


@router.get(
    "/grants/{grant_id}/analyses",
    response_model=list[AnalysisRead],
    responses=error_responses(GrantNotFound, WrongGrantKind),
    summary="The grant's analyses, newest first",
)
def list_analyses(
    grant_id: GrantID,
    principal: Requester,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AnalysisRead]:
    return [_read(a) for a in service.analyses(session, grant_id, principal.org_id, limit)]


@router.get(
    "/grants/{grant_id}/analyses/{analysis_id}",
    response_model=AnalysisRead,
    responses=error_responses(GrantNotFound, WrongGrantKind, service.AnalysisNotFound),
    summary="One analysis of the grant: its state, and its release if it was released",
)
def get_analysis(
    grant_id: GrantID,
    analysis_id: Annotated[str, Path(max_length=36)],
    principal: Requester,
    session: ReadSession,
) -> AnalysisRead:
    found, _ = service.analysis(session, grant_id, principal.org_id, analysis_id)
    return _read(found)
