"""HTTP routes of the catalog: search, dataset and version reads, provider actions and uploads."""

from __future__ import annotations

import contextlib
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import RootModel
from starlette.concurrency import run_in_threadpool

from gbadz import storage
from gbadz.catalog import integrity, reads, schemas, service, views
from gbadz.catalog.search import SearchQuery
from gbadz.contract import MAX_CONTRACT_BYTES
from gbadz.deps import S3, AppSettings, Keys, OnReclassified, ReadSession, Sessions, WriteSession
from gbadz.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    InsufficientScope,
    NotFound,
    PayloadTooLarge,
    PreconditionFailed,
    StorageUnavailable,
    Unauthenticated,
    Unprocessable,
    UnsupportedMediaType,
    error_responses,
)
from gbadz.identity.auth import actor_of, require_scopes, viewer_of
from gbadz.identity.tokens import Principal
from gbadz.ingest import pipeline, uploads
from gbadz.vocabulary import Category, Jurisdiction, Purpose

router = APIRouter(
    prefix="/api/v1", tags=["catalog"], responses=error_responses(Unauthenticated, InsufficientScope)
)

Reader = Annotated[Principal, Depends(require_scopes(reads.READ_SCOPE))]
Publisher = Annotated[Principal, Depends(require_scopes("datasets:publish"))]
Auditor = Annotated[Principal, Depends(require_scopes("transfers:audit"))]


def _read_path(request: Request) -> reads.ReadPath:
    """What the read routes use, built once by ``create_app``.

    A plain call rather than four dependencies: FastAPI's dependency resolution costs about
    a tenth of get-by-id's throughput on the fast path (bench_catalog.py).
    """
    path: reads.ReadPath = request.app.state.catalog_read_path
    return path


Origin = Jurisdiction
Status = Literal["proposed", "draft", "active", "deprecated", "retired"]
MAX_Q = 200
UPLOAD_TYPES = {
    "text/csv": ".csv",
    "application/vnd.apache.parquet": ".parquet",
    "application/x-parquet": ".parquet",
}
CONTRACT_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "application/json")
CONTRACT_BODY = {
    "requestBody": {
        "required": True,
        "description": "An ODCS v3 data contract with the gbadz block (YAML, or the same as JSON)",
        "content": {t: {"schema": {"type": "string"}} for t in CONTRACT_TYPES},
    }
}
UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "description": "The file to ingest, streamed (never buffered whole in memory)",
        "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in UPLOAD_TYPES},
    }
}


@router.get(
    "/datasets",
    response_model=schemas.DatasetPage,
    responses=error_responses(BadRequest),
    summary="Search the catalog: full text, filters, sorting and cursor pagination",
    description=(
        "Only datasets the caller may see are listed and counted. `q` matches words (and word "
        "prefixes) in titles, tags, column names and descriptions; every word must match. "
        "Relevance ranks name matches above tags, columns and descriptions and does not shift "
        "as other datasets are published, so cursors stay valid while paging."
    ),
)
async def list_datasets(
    request: Request,
    principal: Reader,
    q: Annotated[str | None, Query(max_length=MAX_Q, examples=["visitor arrivals"])] = None,
    provider: Annotated[str | None, Query(max_length=300, description="organisation id or name")] = None,
    origin: Annotated[list[Origin] | None, Query(description="origin jurisdiction(s)")] = None,
    category: Annotated[list[Category] | None, Query()] = None,
    has_pi: Annotated[bool | None, Query(description="contains personal information")] = None,
    purpose: Annotated[Purpose | None, Query(description="the licence permits this purpose")] = None,
    updated_since: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    status: Annotated[list[Status] | None, Query(description="default: active and deprecated")] = None,
    sort: Annotated[
        Literal["relevance", "name", "-updated"] | None,
        Query(description="default: relevance with q, else most recently updated first"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> Response:
    if updated_since is not None and updated_since.tzinfo is None:
        raise BadRequest("updated_since: give a time zone, e.g. 2026-11-01T00:00:00Z", field="updated_since")
    query = SearchQuery(
        q=q,
        provider=provider,
        origin=tuple(origin or ()),
        category=tuple(category or ()),
        has_pi=has_pi,
        purpose=purpose,
        updated_since=updated_since,
        status=tuple(status or ()),
        sort=sort,
        limit=limit,
        cursor=cursor,
    )
    headers = {"Cache-Control": "private, no-cache", "Vary": "Authorization"}
    found = await _read_path(request).search(principal.org_id, query)
    body = found if isinstance(found, bytes) else views.page_json(found)
    return Response(body, media_type="application/json", headers=headers)


@router.get(
    "/datasets/{dataset_id}",
    response_model=schemas.DatasetDetail,
    responses={
        304: {"description": "Not Modified (If-None-Match matched the ETag)"},
        **error_responses(NotFound),
    },
    summary="A dataset: description, schema with classifications, licence, latest version and quality",
)
async def get_dataset(
    dataset_id: str,
    request: Request,
    principal: Reader,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    body, etag, contract_etag = await _read_path(request).dataset(principal.org_id, dataset_id)
    return views.detail_response(body, etag, contract_etag, if_none_match)


@router.get(
    "/datasets/{dataset_id}/versions",
    response_model=list[schemas.VersionSummary],
    responses={
        304: {"description": "Not Modified (If-None-Match matched the ETag)"},
        **error_responses(NotFound),
    },
    summary="A dataset's published versions, newest first",
)
def list_versions(
    dataset_id: str,
    request: Request,
    principal: Reader,
    session: ReadSession,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    summaries = reads.version_list(session, viewer_of(request, session, principal), dataset_id)
    body = RootModel[list[schemas.VersionSummary]](summaries)
    return views.cached_json(body, if_none_match, "private, no-cache")


@router.get(
    "/datasets/{dataset_id}/versions/{version}",
    response_model=schemas.VersionDetail,
    responses={
        304: {"description": "Not Modified"},
        **error_responses(NotFound, integrity.PublishedVersionAltered, StorageUnavailable),
    },
    summary="One published version: its manifest (files, hashes, protected columns) and quality report",
)
def get_version(
    dataset_id: str,
    version: Annotated[int, PathParam(ge=1, le=2_000_000_000)],
    request: Request,
    principal: Reader,
    session: ReadSession,
    s3: S3,
    settings: AppSettings,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    viewer = viewer_of(request, session, principal)
    body = reads.version_detail(session, s3, settings, viewer, dataset_id, version)
    # A published version never changes; only whether the caller may see it can.
    return views.cached_json(body, if_none_match, "private, max-age=300")


def _contract_body(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in CONTRACT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: send the contract as {' or '.join(CONTRACT_TYPES)}, not {kind or 'nothing'}",
            field="Content-Type",
        )


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: over the {limit:,}-byte limit for a contract", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/datasets",
    status_code=201,
    response_model=schemas.DatasetDetail,
    # 422: a contract value the database cannot hold (a NUL character); see gbadz.db._refuse_nul.
    responses=error_responses(
        BadRequest, Forbidden, Conflict, PayloadTooLarge, UnsupportedMediaType, Unprocessable
    ),
    summary="Register a dataset by its data contract (providers)",
    openapi_extra=CONTRACT_BODY,
)
async def register_dataset(request: Request, principal: Publisher, session: WriteSession) -> Response:
    _contract_body(request)
    raw = await _read_limited(request, MAX_CONTRACT_BYTES)

    def work() -> tuple[str, tuple[bytes, str, str]]:
        dataset = service.register_contract(
            session, org_id=principal.org_id, actor=actor_of(principal), raw=raw
        )
        return dataset.id, reads.provider_detail(session, dataset)

    dataset_id, rendered = await run_in_threadpool(work)
    response = _provider_response(rendered)
    response.status_code = 201
    response.headers["Location"] = f"/api/v1/datasets/{dataset_id}"
    return response


@router.put(
    "/datasets/{dataset_id}",
    response_model=schemas.DatasetDetail,
    responses=error_responses(
        BadRequest, Forbidden, NotFound, Conflict, PreconditionFailed, PayloadTooLarge, UnsupportedMediaType
    ),
    summary="Replace a dataset's contract with a newer version (providers; If-Match optional)",
    openapi_extra=CONTRACT_BODY,
)
async def update_dataset(
    dataset_id: str,
    request: Request,
    principal: Publisher,
    session: WriteSession,
    on_reclassified: OnReclassified,
    if_match: Annotated[str | None, Header(description="X-Contract-ETag of the contract you changed")] = None,
) -> Response:
    _contract_body(request)
    raw = await _read_limited(request, MAX_CONTRACT_BYTES)

    def work() -> tuple[bytes, str, str]:
        viewer = viewer_of(request, session, principal)
        dataset, _ = service.update_contract(
            session,
            viewer,
            actor=actor_of(principal),
            dataset_id=dataset_id,
            raw=raw,
            if_match=if_match,
            on_reclassified=on_reclassified,
        )
        return reads.provider_detail(session, dataset)

    return _provider_response(await run_in_threadpool(work))


@router.post(
    "/datasets/{dataset_id}/deprecate",
    response_model=schemas.DatasetSummary,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Deprecate a dataset: still listed and readable, marked as going away (providers)",
)
def deprecate_dataset(
    dataset_id: str, body: schemas.Reason, request: Request, principal: Publisher, session: WriteSession
) -> schemas.DatasetSummary:
    viewer = viewer_of(request, session, principal)
    dataset = service.deprecate(
        session, viewer, actor=actor_of(principal), dataset_id=dataset_id, reason=body.reason
    )
    return views.summary_of(dataset)


@router.post(
    "/datasets/{dataset_id}/retire",
    response_model=schemas.DatasetSummary,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Retire a dataset: delisted, its keys destroyed and every delivered copy deleted (providers)",
)
def retire_dataset(
    dataset_id: str,
    body: schemas.Reason,
    request: Request,
    principal: Publisher,
    session: WriteSession,
    keys: Keys,
    s3: S3,
    settings: AppSettings,
) -> schemas.DatasetSummary:
    viewer = viewer_of(request, session, principal)

    def delete_copies(dataset: str) -> int:
        return storage.delete_prefix(
            s3, settings.s3, settings.s3.delivery_bucket, storage.delivery_prefix(dataset)
        )

    dataset = service.retire(
        session,
        keys,
        viewer,
        actor=actor_of(principal),
        dataset_id=dataset_id,
        reason=body.reason,
        deliveries=delete_copies,
    )
    return views.summary_of(dataset)


@router.get(
    "/datasets/{dataset_id}/ingestion-runs",
    response_model=list[schemas.IngestionRunRead],
    responses=error_responses(Forbidden, NotFound),
    summary="Ingestion runs of a dataset, newest first, with why rejected uploads failed (providers)",
)
def list_ingestion_runs(
    dataset_id: str,
    request: Request,
    principal: Publisher,
    session: ReadSession,
    response: Response,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[schemas.IngestionRunRead]:
    runs = reads.ingestion_runs(session, viewer_of(request, session, principal), dataset_id, limit)
    response.headers["Cache-Control"] = "no-store"
    return runs


@router.get(
    "/datasets/{dataset_id}/ingestion-runs/{run_id}",
    response_model=schemas.IngestionRunDetail,
    responses=error_responses(Forbidden, NotFound),
    summary="One ingestion run: its state, the DAG's task states, and the checks it failed (providers)",
)
def get_ingestion_run(
    dataset_id: str,
    run_id: Annotated[int, PathParam(ge=1, le=2**62)],
    request: Request,
    principal: Publisher,
    session: ReadSession,
    response: Response,
) -> schemas.IngestionRunDetail:
    run = reads.ingestion_run(session, viewer_of(request, session, principal), dataset_id, run_id)
    response.headers["Cache-Control"] = "no-store"
    return run


@router.post(
    "/datasets/{dataset_id}/uploads",
    status_code=202,
    response_model=schemas.UploadAccepted,
    responses=error_responses(
        BadRequest, Forbidden, NotFound, Conflict, PayloadTooLarge, UnsupportedMediaType, StorageUnavailable
    ),
    summary="Upload a file for ingestion (providers): streamed, kept encrypted and immutable, queued for the DAG",
    openapi_extra=UPLOAD_BODY,
)
async def upload(
    dataset_id: str,
    request: Request,
    principal: Publisher,
    sessions: Sessions,
    settings: AppSettings,
    s3: S3,
    keys: Keys,
) -> schemas.UploadAccepted:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    suffix = UPLOAD_TYPES.get(kind)
    if suffix is None:
        raise UnsupportedMediaType(
            f"Content-Type: send {' or '.join(UPLOAD_TYPES)}, not {kind or 'nothing'}", field="Content-Type"
        )
    limit = settings.api.max_upload_bytes

    await run_in_threadpool(
        reads.check_uploadable, sessions, _read_path(request).viewers, principal.org_id, dataset_id
    )
    fd, name = tempfile.mkstemp(prefix="gbadz-upload-", suffix=suffix)
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body: over the {limit:,}-byte upload limit", field="body")
                out.write(chunk)
        if size == 0:
            raise BadRequest("body: the upload is empty", field="body")
        ctx = pipeline.IngestContext(settings, s3, keys, sessions)
        accepted = await run_in_threadpool(
            lambda: uploads.land_upload(
                ctx, dataset_id=dataset_id, path=path, size=size, actor=actor_of(principal)
            )
        )
        airflow = request.app.state.airflow
        if airflow is not None:
            # Landed and queued: a healthy Airflow starts the run now; otherwise the upload stays
            # queued with the reason and the worker loop triggers it later (ADR 0026).
            accepted = await run_in_threadpool(uploads.trigger_upload, ctx, airflow, accepted)
        return accepted
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _provider_response(rendered: tuple[bytes, str, str]) -> Response:
    body, etag, contract_etag = rendered
    return Response(
        body,
        media_type="application/json",
        headers={"ETag": etag, "X-Contract-ETag": contract_etag, "Cache-Control": "no-store"},
    )


@router.get(
    "/classification-reviews",
    response_model=list[schemas.ClassificationItem],
    responses=error_responses(Forbidden),
    summary="Datasets waiting for a listing review of their classification (compliance officers)",
)
def list_classification_reviews(
    principal: Auditor,
    session: ReadSession,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    dataset: Annotated[str | None, Query(max_length=100)] = None,
) -> list[schemas.ClassificationItem]:
    return [
        views.classification_item(d)
        for d in service.pending_classifications(session, limit, dataset_id=dataset)
    ]


@router.post(
    "/datasets/{dataset_id}/classification-review",
    response_model=schemas.ClassificationItem,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Sign off (or return) a dataset's classification: only then do other organisations see it",
)
def review_classification(
    dataset_id: str, body: schemas.ClassificationReview, principal: Auditor, session: WriteSession
) -> schemas.ClassificationItem:
    dataset = service.review_classification(
        session,
        officer_role=principal.role,
        officer_org_id=principal.org_id,
        contract_sha256=body.contract_sha256,
        actor=actor_of(principal),
        dataset_id=dataset_id,
        approve=body.approve,
        note=body.note,
    )
    return views.classification_item(dataset)
