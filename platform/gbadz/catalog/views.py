"""How the catalog shows a dataset: summaries, details, version summaries and cached JSON bodies.

Presentation only (no SQL): the routes and the read use cases both render with these.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from fastapi import Response

from gbadz.catalog import schemas, service
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.catalog.search import Page


def etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


def cached_json(
    model: Any, if_none_match: str | None, cache_control: str, extra: dict[str, str] | None = None
) -> Response:
    body = model.model_dump_json().encode()
    tag = etag(body)
    headers = {"ETag": tag, "Cache-Control": cache_control, "Vary": "Authorization", **(extra or {})}
    if matches(if_none_match, tag):
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


def quality(report: dict[str, Any]) -> schemas.QualitySummary:
    results = report.get("results") or []
    failed = [r for r in results if not r.get("success")]
    return schemas.QualitySummary(
        success=bool(report.get("success")),
        evaluated=len(results),
        failed=len(failed),
        failed_checks=[f"{r.get('column') or '(table)'}: {r.get('rule')}" for r in failed],
    )


def version_summary(version: DatasetVersion) -> schemas.VersionSummary:
    return schemas.VersionSummary(
        version=version.version,
        row_count=version.row_count,
        contract_version=version.contract_version,
        source_sha256=version.source_sha256,
        published_at=version.published_at,
        quality=quality(version.quality),
    )


def detail_of(dataset: Dataset, latest: DatasetVersion | None, owner: bool) -> schemas.DatasetDetail:
    contract = service.stored_contract(dataset)
    columns = []
    for prop in contract.table.properties:
        facts = contract.facts(prop.name)
        legal = contract.classification(prop.name)  # as the law sees it: overlay and fail-closed
        classification = "spi" if legal.spi else "pi" if legal.pi else "general"
        columns.append(
            schemas.ColumnRead(
                name=prop.name,
                type=prop.logicalType,
                description=prop.description,
                required=prop.required,
                unique=prop.unique,
                classification=classification,
                spi_category=legal.spi,
                classified_by=legal.why,
                not_sensitive_because=facts.not_sensitive_because,
                protection=facts.protection or "none",
                subject_identifier=facts.subject_identifier,
                tags=prop.tags,
                # Sample values are metadata too: never for personal columns (ADR 0010).
                examples=None if legal.pi else prop.examples,
            )
        )
    licence = contract.gbadz.licence
    compute = contract.gbadz.compute
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
        compute=schemas.ComputeOffer(
            mode=compute.mode,
            dimensions=list(compute.dimensions) if compute.mode != "none" else [],
            measures=list(compute.measures) if compute.mode != "none" else [],
        ),
        contract_version=contract.version,
        contract_sha256=dataset.contract_sha256,
        latest=version_summary(latest) if latest is not None else None,
        freshness=schemas.Freshness(
            latest_version_published_at=dataset.published_at, contract_updated_at=dataset.updated_at
        ),
        contract=dataset.contract if owner else None,
        classification_state=dataset.classification_state,
        classification_review=dataset.classification_review,
    )


def page_json(page: Page) -> bytes:
    return json.dumps(page_document(page), ensure_ascii=False, separators=(",", ":")).encode()


def page_document(page: Page) -> dict[str, Any]:
    """A page of search results as the API answers it (``page_json`` is this, as JSON)."""
    items = []
    for row, score in page.items:
        item = dict(row)
        for key in ("published_at", "updated_at"):
            if item[key] is not None:
                item[key] = item[key].isoformat().replace("+00:00", "Z")
        item["score"] = score
        items.append(item)
    return {"items": items, "total": page.total, "next_cursor": page.next_cursor, "sort": page.sort}


def detail_response(body: bytes, etag: str, contract_etag: str, if_none_match: str | None) -> Response:
    headers = {
        "ETag": etag,
        "Cache-Control": "private, no-cache",
        "Vary": "Authorization",
        "X-Contract-ETag": contract_etag,
    }
    if matches(if_none_match, etag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type="application/json", headers=headers)


def classification_item(dataset: Dataset) -> schemas.ClassificationItem:
    """What a compliance officer signs off in a listing review."""
    contract = service.stored_contract(dataset)
    g = contract.gbadz
    return schemas.ClassificationItem(
        id=dataset.id,
        name=dataset.name,
        provider=schemas.ProviderRef(name=dataset.provider_name, org_id=dataset.provider_org_id),
        origin=dataset.origin,
        category=dataset.category,
        sector_overlay=g.sector_overlay,
        status=dataset.status,
        classification_state=dataset.classification_state,
        classification_review=dataset.classification_review,
        contract_sha256=dataset.contract_sha256,
        contract_version=contract.version,
        columns=detail_of(dataset, None, owner=False).columns,
        provenance=g.provenance.model_dump(),
        anonymisation=g.anonymisation.model_dump() if g.anonymisation else None,
        minors=g.minors.model_dump() if g.minors else None,
    )
