"""HTTP routes of the catalog: search, dataset and version reads, provider actions and uploads."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi import Path as PathParam
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from gbadz import storage
from gbadz.catalog import schemas, service
from gbadz.catalog.index import CatalogIndex
from gbadz.catalog.models import Dataset, DatasetVersion, IngestionRun
from gbadz.catalog.search import CatalogSearch, Page, SearchQuery
from gbadz.db import ReadSession, WriteSession
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
    UnsupportedMediaType,
    error_responses,
)
from gbadz.identity.auth import actor_of, require_scopes, viewer_of
from gbadz.identity.service import Viewer
from gbadz.identity.tokens import Principal
from gbadz.vocabulary import JURISDICTIONS, PURPOSES

router = APIRouter(
    prefix="/api/v1", tags=["catalog"], responses=error_responses(Unauthenticated, InsufficientScope)
)

Reader = Annotated[Principal, Depends(require_scopes("catalog:read"))]
Publisher = Annotated[Principal, Depends(require_scopes("datasets:publish"))]
Origin = Literal[JURISDICTIONS]  # type: ignore[valid-type]
Purpose = Literal[PURPOSES]  # type: ignore[valid-type]
Category = Literal["general", "important", "core"]
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


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def _cached_json(
    model: Any, if_none_match: str | None, cache_control: str, extra: dict[str, str] | None = None
) -> Response:
    body = model.model_dump_json().encode()
    etag = _etag(body)
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": "Authorization", **(extra or {})}
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def summary_of(dataset: Dataset, score: int | None = None) -> schemas.DatasetSummary:
    return schemas.DatasetSummary(
        id=dataset.id,
        name=dataset.name,
        provider=schemas.ProviderRef(name=dataset.provider_name, org_id=dataset.provider_org_id),
        origin=dataset.origin,
        category=dataset.category,
        has_pi=dataset.has_pi,
        has_spi=dataset.has_spi,
        status=dataset.status,
        tags=list(dataset.tags or []),
        summary=dataset.summary,
        licence_purposes=dataset.purposes.split(),
        current_version=dataset.current_version,
        row_count=dataset.row_count,
        published_at=dataset.published_at,
        updated_at=dataset.updated_at,
        score=score,
    )


def _quality(report: dict[str, Any]) -> schemas.QualitySummary:
    results = report.get("results") or []
    failed = [r for r in results if not r.get("success")]
    return schemas.QualitySummary(
        success=bool(report.get("success")),
        evaluated=len(results),
        failed=len(failed),
        failed_checks=[f"{r.get('column') or '(table)'}: {r.get('rule')}" for r in failed],
    )


def _version_summary(version: DatasetVersion) -> schemas.VersionSummary:
    return schemas.VersionSummary(
        version=version.version,
        row_count=version.row_count,
        contract_version=version.contract_version,
        source_sha256=version.source_sha256,
        published_at=version.published_at,
        quality=_quality(version.quality),
    )


def detail_of(dataset: Dataset, latest: DatasetVersion | None, owner: bool) -> schemas.DatasetDetail:
    contract = service.stored_contract(dataset)
    columns = []
    for prop in contract.table.properties:
        facts = contract.facts(prop.name)
        classification = "spi" if facts.spi else "pi" if facts.pi else "general"
        columns.append(
            schemas.ColumnRead(
                name=prop.name,
                type=prop.logicalType,
                description=prop.description,
                required=prop.required,
                unique=prop.unique,
                classification=classification,
                spi_category=facts.spi,
                protection=facts.protection or "none",
                subject_identifier=facts.subject_identifier,
                tags=prop.tags,
                # Sample values are metadata too: never for personal columns (ADR 0010).
                examples=None if facts.pi else prop.examples,
            )
        )
    licence = contract.gbadz.licence
    description = contract.description
    return schemas.DatasetDetail(
        **summary_of(dataset).model_dump(),
        description={
            "purpose": description.purpose if description else None,
            "usage": description.usage if description else None,
            "limitations": description.limitations if description else None,
            "table": contract.table.description,
        },
        sector_overlay=contract.gbadz.sector_overlay,
        columns=columns,
        licence=schemas.LicenceRead(
            permitted_purposes=list(licence.permitted_purposes),
            max_grant_duration=licence.max_grant_duration,
            onward_transfer_allowed=licence.onward_transfer_allowed,
            attribution=licence.attribution,
        ),
        contract_version=contract.version,
        contract_sha256=dataset.contract_sha256,
        latest=_version_summary(latest) if latest is not None else None,
        freshness=schemas.Freshness(
            latest_version_published_at=dataset.published_at, contract_updated_at=dataset.updated_at
        ),
        contract=dataset.contract if owner else None,
    )


def _latest(session: Session, dataset: Dataset) -> DatasetVersion | None:
    if dataset.current_version is None:
        return None
    return session.scalar(
        sa.select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset.id, DatasetVersion.version == dataset.current_version
        )
    )


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
        raise BadRequest("updated_since: give a time zone, e.g. 2026-11-01T00:00:00Z")
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
    index: CatalogIndex = request.app.state.catalog_index
    snapshot = index.ready() if request.app.state.settings.api.catalog_search == "index" else None
    jurisdiction = request.app.state.org_jurisdictions.get(principal.org_id)
    if snapshot is not None and jurisdiction is not None:
        # Fast path, on the event loop: the index is current and the caller's organisation known.
        page = snapshot.search(Viewer(principal.org_id, jurisdiction), query)
        return Response(_page_json(page), media_type="application/json", headers=headers)
    body = await run_in_threadpool(_search_slow, request, principal, query)
    return Response(body, media_type="application/json", headers=headers)


def _page_json(page: Page) -> bytes:
    items = []
    for row, score in page.items:
        item = dict(row)
        for key in ("published_at", "updated_at"):
            if item[key] is not None:
                item[key] = item[key].isoformat().replace("+00:00", "Z")
        item["score"] = score
        items.append(item)
    document = {"items": items, "total": page.total, "next_cursor": page.next_cursor, "sort": page.sort}
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _search_slow(request: Request, principal: Principal, query: SearchQuery) -> bytes:
    with request.app.state.sessionmaker() as session:
        viewer = viewer_of(request, session, principal)
        if request.app.state.settings.api.catalog_search == "index":
            return _page_json(request.app.state.catalog_index.current().search(viewer, query))
        search: CatalogSearch = request.app.state.catalog_search
        page = search.search(session, viewer, query)
        result = schemas.DatasetPage(
            items=[summary_of(d, score) for d, score in page.items],
            total=page.total,
            next_cursor=page.next_cursor,
            sort=page.sort,
        )
        return result.model_dump_json().encode()


def _detail_response(body: bytes, etag: str, contract_etag: str, if_none_match: str | None) -> Response:
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Vary": "Authorization",
        "X-Contract-ETag": contract_etag,
    }
    if _matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def _render_detail(request: Request, principal: Principal, dataset_id: str) -> tuple[bytes, str, str]:
    """Read the dataset from the database and render its page (the slow path, cached by the index)."""
    index: CatalogIndex = request.app.state.catalog_index
    snapshot = index.current() if request.app.state.settings.api.catalog_search == "index" else None
    with request.app.state.sessionmaker() as session:
        viewer = viewer_of(request, session, principal)
        dataset = service.get_visible(session, viewer, dataset_id)
        owner = dataset.provider_org_id == viewer.org_id
        body = detail_of(dataset, _latest(session, dataset), owner).model_dump_json().encode()
        rendered = (body, _etag(body), service.contract_etag(dataset))
    if snapshot is not None and snapshot.can_see(viewer, dataset_id) is not None:
        snapshot.bodies[dataset_id, owner] = rendered
    return rendered


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
    # Fast path: the index knows the caller may see it and holds its rendered page.
    index: CatalogIndex = request.app.state.catalog_index
    snapshot = index.ready() if request.app.state.settings.api.catalog_search == "index" else None
    jurisdiction = request.app.state.org_jurisdictions.get(principal.org_id)
    if snapshot is not None and jurisdiction is not None:
        viewer = Viewer(principal.org_id, jurisdiction)
        ordinal = snapshot.can_see(viewer, dataset_id)
        if ordinal is None:
            raise NotFound(f"no dataset {dataset_id!r}")
        owner = snapshot.rows[ordinal]["provider"]["org_id"] == principal.org_id
        cached = snapshot.bodies.get((dataset_id, owner))
        if cached is not None:
            body, etag, contract_etag = cached
            return _detail_response(body, etag, contract_etag, if_none_match)
    body, etag, contract_etag = await run_in_threadpool(_render_detail, request, principal, dataset_id)
    return _detail_response(body, etag, contract_etag, if_none_match)


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
    viewer = viewer_of(request, session, principal)
    service.get_visible(session, viewer, dataset_id)
    versions = session.scalars(
        sa.select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version.desc())
    ).all()
    from pydantic import RootModel

    body = RootModel[list[schemas.VersionSummary]]([_version_summary(v) for v in versions])
    return _cached_json(body, if_none_match, "private, no-cache")


@router.get(
    "/datasets/{dataset_id}/versions/{version}",
    response_model=schemas.VersionDetail,
    responses={304: {"description": "Not Modified"}, **error_responses(NotFound, StorageUnavailable)},
    summary="One published version: its manifest (files, hashes, protected columns) and quality report",
)
def get_version(
    dataset_id: str,
    version: Annotated[int, PathParam(ge=1, le=2_000_000_000)],
    request: Request,
    principal: Reader,
    session: ReadSession,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    viewer = viewer_of(request, session, principal)
    service.get_visible(session, viewer, dataset_id)
    row = session.scalar(
        sa.select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == version
        )
    )
    if row is None:
        raise NotFound(f"dataset {dataset_id!r} has no version {version}")
    settings = request.app.state.settings
    try:
        manifest = json.loads(
            storage.ObjectStore(request.app.state.s3, settings.s3).get_bytes(
                settings.s3.curated_bucket, row.manifest_key
            )
        )
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(settings.s3, exc)) from None
    body = schemas.VersionDetail(
        **_version_summary(row).model_dump(),
        dataset_id=dataset_id,
        manifest=manifest,
        quality_report=row.quality,
    )
    # A published version never changes; only whether the caller may see it can.
    return _cached_json(body, if_none_match, "private, max-age=300")


def _contract_body(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in CONTRACT_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type: send the contract as {' or '.join(CONTRACT_TYPES)}, not {kind or 'nothing'}"
        )


async def _read_limited(request: Request, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body: over the {limit:,}-byte limit for a contract")
        chunks.append(chunk)
    return b"".join(chunks)


def _provider_detail(session: Session, dataset: Dataset) -> Response:
    body = detail_of(dataset, _latest(session, dataset), owner=True).model_dump_json().encode()
    return Response(
        body,
        media_type="application/json",
        headers={
            "ETag": _etag(body),
            "X-Contract-ETag": service.contract_etag(dataset),
            "Cache-Control": "no-store",
        },
    )


@router.post(
    "/datasets",
    status_code=201,
    response_model=schemas.DatasetDetail,
    responses=error_responses(BadRequest, Forbidden, Conflict, PayloadTooLarge, UnsupportedMediaType),
    summary="Register a dataset by its data contract (providers)",
    openapi_extra=CONTRACT_BODY,
)
async def register_dataset(request: Request, principal: Publisher) -> Response:
    from gbadz.contract import MAX_CONTRACT_BYTES

    _contract_body(request)
    raw = await _read_limited(request, MAX_CONTRACT_BYTES)

    def work() -> Response:
        with request.app.state.sessionmaker.begin() as session:
            dataset = service.register_contract(
                session, org_id=principal.org_id, actor=actor_of(principal), raw=raw
            )
            response = _provider_detail(session, dataset)
        response.status_code = 201
        response.headers["Location"] = f"/api/v1/datasets/{dataset.id}"
        return response

    return await run_in_threadpool(work)


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
    if_match: Annotated[str | None, Header(description="X-Contract-ETag of the contract you changed")] = None,
) -> Response:
    from gbadz.contract import MAX_CONTRACT_BYTES

    _contract_body(request)
    raw = await _read_limited(request, MAX_CONTRACT_BYTES)

    def work() -> Response:
        with request.app.state.sessionmaker.begin() as session:
            viewer = viewer_of(request, session, principal)
            dataset, _ = service.update_contract(
                session, viewer, actor=actor_of(principal), dataset_id=dataset_id, raw=raw, if_match=if_match
            )
            return _provider_detail(session, dataset)

    return await run_in_threadpool(work)


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
    return summary_of(dataset)


@router.post(
    "/datasets/{dataset_id}/retire",
    response_model=schemas.DatasetSummary,
    responses=error_responses(Forbidden, NotFound, Conflict),
    summary="Retire a dataset: delisted and its keys destroyed, so no copy can be decrypted (providers)",
)
def retire_dataset(
    dataset_id: str, body: schemas.Reason, request: Request, principal: Publisher, session: WriteSession
) -> schemas.DatasetSummary:
    viewer = viewer_of(request, session, principal)
    dataset = service.begin_retire(session, viewer, dataset_id=dataset_id)
    # Crypto-shredding happens before the status commits: if the commit then fails, the
    # keys are gone anyway and retrying finishes the job (destroying twice is harmless).
    destroyed = request.app.state.keys.destroy_dataset(dataset_id)
    service.finish_retire(
        session, dataset, actor=actor_of(principal), reason=body.reason, keys_destroyed=destroyed
    )
    return summary_of(dataset)


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
    viewer = viewer_of(request, session, principal)
    service.get_owned(session, viewer, dataset_id)
    runs = session.scalars(
        sa.select(IngestionRun)
        .where(IngestionRun.dataset_id == dataset_id)
        .order_by(IngestionRun.id.desc())
        .limit(limit)
    ).all()
    response.headers["Cache-Control"] = "no-store"
    return [schemas.IngestionRunRead.model_validate(r) for r in runs]


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
async def upload(dataset_id: str, request: Request, principal: Publisher) -> schemas.UploadAccepted:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    suffix = UPLOAD_TYPES.get(kind)
    if suffix is None:
        raise UnsupportedMediaType(f"Content-Type: send {' or '.join(UPLOAD_TYPES)}, not {kind or 'nothing'}")
    settings = request.app.state.settings
    limit = settings.api.max_upload_bytes

    def check() -> None:
        with request.app.state.sessionmaker() as session:
            dataset = service.get_owned(session, viewer_of(request, session, principal), dataset_id)
            if dataset.status == "retired":
                raise Conflict("status: the dataset is retired; it takes no new uploads")

    await run_in_threadpool(check)
    fd, name = tempfile.mkstemp(prefix="gbadz-upload-", suffix=suffix)
    path = Path(name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as out:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body: over the {limit:,}-byte upload limit")
                out.write(chunk)
        if size == 0:
            raise BadRequest("body: the upload is empty")
        return await run_in_threadpool(_land_upload, request, principal, dataset_id, path, size)
    finally:
        with contextlib.suppress(OSError):
            path.unlink()


def _land_upload(
    request: Request, principal: Principal, dataset_id: str, path: Path, size: int
) -> schemas.UploadAccepted:
    from gbadz import audit
    from gbadz.ingest import pipeline

    app = request.app
    with app.state.sessionmaker() as session:
        dataset = session.get(Dataset, dataset_id)
        assert dataset is not None
        contract = service.stored_contract(dataset)
    ctx = pipeline.IngestContext(app.state.settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    landed = pipeline.land(ctx, contract, path)
    with app.state.sessionmaker.begin() as session:
        run = IngestionRun(
            dataset_id=dataset_id,
            source_sha256=landed.sha256,
            landing_key=landed.key,
            status="queued",
            summary=f"{size:,} bytes landed; waiting for the ingest DAG",
            report={"suffix": landed.suffix, "size": size},
            submitted_by=actor_of(principal),
        )
        session.add(run)
        session.flush()
        audit.record(
            session,
            actor=actor_of(principal),
            action="ingestion.queued",
            subject_type="dataset",
            subject_id=dataset_id,
            details={"run": run.id, "source_sha256": landed.sha256, "size": size},
        )
        return schemas.UploadAccepted(**schemas.IngestionRunRead.model_validate(run).model_dump(), size=size)
