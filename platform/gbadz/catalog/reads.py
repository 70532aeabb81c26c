"""Read use cases of the catalog behind the API's fast paths: search and a dataset's page.

The in-process index answers most reads on the event loop; when it cannot (not current, or
the caller's organisation not yet known), these run in a worker thread with a session of
their own, and a rendered page is put back into the index's cache.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from minio import Minio
from sqlalchemy.orm import Session, sessionmaker

from gbadz import storage
from gbadz.catalog import integrity, repository, schemas, service, views
from gbadz.catalog.index import CatalogIndex
from gbadz.catalog.models import Dataset
from gbadz.catalog.search import CatalogSearch, Page, SearchQuery
from gbadz.config import Settings
from gbadz.errors import DatasetNotFound, NotFound, StorageUnavailable
from gbadz.identity.service import Viewer, Viewers

#: What reading the catalog takes: the API's read routes require it, and so does the console
#: when it searches as the signed-in person.
READ_SCOPE = "catalog:read"


@dataclass(frozen=True)
class ReadPath:
    """What the catalog's read routes need, built once per app."""

    sessions: sessionmaker[Session]
    viewers: Viewers
    index: CatalogIndex | None  # None when the API reads through the database engines
    engine: CatalogSearch

    async def search(self, org_id: str, query: SearchQuery) -> Page | bytes:
        """One page of search results as callers of ``org_id`` may see it: the index's page,
        found on the event loop when the index is current and the organisation known, else
        :func:`search_json`'s JSON from a worker thread.

        The search API (``GET /api/v1/datasets``) answers with this, and so does the console's
        catalog page after authorising the person's token the same way (ADR 0013 amendment).
        """
        snapshot = self.index.ready() if self.index is not None else None
        viewer = self.viewers.known(org_id)
        if snapshot is not None and viewer is not None:
            return snapshot.search(viewer, query)
        search = functools.partial(
            search_json, self.sessions, self.viewers, org_id, query, index=self.index, engine=self.engine
        )
        return await anyio.to_thread.run_sync(search)

    async def dataset(self, org_id: str, dataset_id: str) -> tuple[bytes, str, str]:
        """A dataset's page as callers of ``org_id`` may see it (body, ETag, contract ETag):
        the index's rendered page when it holds one, else :func:`detail` in a worker thread.
        :class:`DatasetNotFound` when it is hidden or missing.

        The API's ``GET /api/v1/datasets/{id}`` answers with this, and so does the console's
        dataset page after authorising the person's token the same way."""
        snapshot = self.index.ready() if self.index is not None else None
        viewer = self.viewers.known(org_id)
        if snapshot is not None and viewer is not None:
            # Fast path: the index knows the caller may see it and holds its rendered page.
            ordinal = snapshot.can_see(viewer, dataset_id)
            if ordinal is None:
                raise DatasetNotFound(f"no dataset {dataset_id!r}")
            owner = snapshot.rows[ordinal]["provider"]["org_id"] == org_id
            cached = snapshot.bodies.get((dataset_id, owner))
            if cached is not None:
                return cached
        read = functools.partial(detail, self.sessions, self.viewers, org_id, dataset_id, self.index)
        return await anyio.to_thread.run_sync(read)


class VersionNotFound(NotFound):
    """The dataset has no published version with this number."""


def search_json(
    sessions: sessionmaker[Session],
    viewers: Viewers,
    org_id: str,
    query: SearchQuery,
    *,
    index: CatalogIndex | None,
    engine: CatalogSearch,
) -> bytes:
    """One page of search results as JSON, from the index when given, else from the database."""
    with sessions() as session:
        viewer = viewers.of(session, org_id)
        if index is not None:
            return views.page_json(index.current().search(viewer, query))
        page = engine.search(session, viewer, query)
        result = schemas.DatasetPage(
            items=[views.summary_of(d, score) for d, score in page.items],
            total=page.total,
            next_cursor=page.next_cursor,
            sort=page.sort,
        )
        return result.model_dump_json().encode()


def detail(
    sessions: sessionmaker[Session],
    viewers: Viewers,
    org_id: str,
    dataset_id: str,
    index: CatalogIndex | None,
) -> tuple[bytes, str, str]:
    """Read the dataset and render its page (body, ETag, contract ETag); cache it in the index."""
    snapshot = index.current() if index is not None else None
    with sessions() as session:
        viewer = viewers.of(session, org_id)
        dataset = service.get_visible(session, viewer, dataset_id)
        owner = dataset.provider_org_id == viewer.org_id
        body = (
            views.detail_of(dataset, repository.latest_version(session, dataset), owner)
            .model_dump_json()
            .encode()
        )
        rendered = (body, views.etag(body), service.contract_etag(dataset))
    if snapshot is not None and snapshot.can_see(viewer, dataset_id) is not None:
        snapshot.bodies[dataset_id, owner] = rendered
    return rendered


def provider_detail(session: Session, dataset: Dataset) -> tuple[bytes, str, str]:
    """The provider's view of its dataset (contract included): body, ETag, contract ETag."""
    body = (
        views.detail_of(dataset, repository.latest_version(session, dataset), owner=True)
        .model_dump_json()
        .encode()
    )
    return body, views.etag(body), service.contract_etag(dataset)


def version_list(session: Session, viewer: Viewer, dataset_id: str) -> list[schemas.VersionSummary]:
    service.get_visible(session, viewer, dataset_id)
    return [views.version_summary(v) for v in repository.versions(session, dataset_id)]


def version_detail(
    session: Session, client: Minio, settings: Settings, viewer: Viewer, dataset_id: str, number: int
) -> schemas.VersionDetail:
    service.get_visible(session, viewer, dataset_id)
    row = repository.version(session, dataset_id, number)
    if row is None:
        raise VersionNotFound(f"dataset {dataset_id!r} has no version {number}")
    try:
        manifest = integrity.manifest(
            storage.ObjectStore(client, settings.s3).get_bytes(settings.s3.curated_bucket, row.manifest_key),
            dataset_id=dataset_id,
            version=number,
            key=row.manifest_key,
            expected=row.manifest_sha256,
        )
    except storage.S3_ERRORS as exc:
        raise StorageUnavailable(storage.explain(settings.s3, exc)) from None
    return schemas.VersionDetail(
        **views.version_summary(row).model_dump(),
        dataset_id=dataset_id,
        manifest=manifest,
        quality_report=row.quality,
    )


def ingestion_runs(
    session: Session, viewer: Viewer, dataset_id: str, limit: int
) -> list[schemas.IngestionRunRead]:
    service.get_owned(session, viewer, dataset_id)
    return [
        schemas.IngestionRunRead.model_validate(r)
        for r in repository.ingestion_runs(session, dataset_id, limit)
    ]


class RunNotFound(NotFound):
    """The dataset has no ingestion run with this id."""


def ingestion_run(
    session: Session, viewer: Viewer, dataset_id: str, run_id: int
) -> schemas.IngestionRunDetail:
    """One run of the provider's dataset with the checks it failed: rule, column, counts and
    row numbers from the report, never a sampled value (issue #19)."""
    service.get_owned(session, viewer, dataset_id)
    run = repository.ingestion_run(session, dataset_id, run_id)
    if run is None:
        raise RunNotFound(f"dataset {dataset_id} has no ingestion run {run_id}")
    detail = schemas.IngestionRunDetail.model_validate(run)
    report: dict[str, Any] = run.report or {}
    size = report.get("size")
    detail.size = size if isinstance(size, int) else None
    results = report.get("results")
    if isinstance(results, list):
        detail.rows = report.get("rows") if isinstance(report.get("rows"), int) else None
        detail.checks_run = len(results)
        detail.failed_checks = [
            schemas.FailedCheck(
                rule=str(r.get("rule") or ""),
                column=r.get("column"),
                detail=r.get("detail"),
                unexpected_count=r.get("unexpected_count"),
                sample_rows=[int(n) for n in (r.get("sample_rows") or [])[:20]],
            )
            for r in results
            if isinstance(r, dict) and not r.get("success")
        ]
    return detail


def check_uploadable(sessions: sessionmaker[Session], viewers: Viewers, org_id: str, dataset_id: str) -> None:
    """Before a byte of an upload is read: the caller provides the dataset and it still takes uploads."""
    with sessions() as session:
        service.check_uploadable(session, viewers.of(session, org_id), dataset_id)
