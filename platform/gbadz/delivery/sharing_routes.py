"""HTTP routes of the Delta Sharing protocol (the open ``delta-sharing`` client reads grants unchanged)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gbadz.access.models import Grant
from gbadz.catalog.integrity import PublishedVersionAltered
from gbadz.delivery import service, sharing
from gbadz.delivery.sharing import SCHEMA, SharingError, check_table, share_name
from gbadz.deps import S3, AppSettings, Keys, Log, Rules, Sessions
from gbadz.errors import (
    Gone,
    GrantInactive,
    InsufficientScope,
    NotFound,
    Unauthenticated,
    WrongGrantKind,
    error_responses,
)
from gbadz.identity.auth import require_scopes
from gbadz.identity.tokens import Principal

# Every route reads a sharing token first: 401 without a valid one, 410 once its grant ended.
router = APIRouter(
    prefix="/delta-sharing",
    tags=["delta sharing"],
    include_in_schema=True,
    responses=error_responses(SharingError, GrantInactive),
)


def recipient(sessions: Sessions, keys: Keys, authorization: Annotated[str | None, Header()] = None) -> Grant:
    """The grant behind the bearer token, if it is still active (else 401/410)."""
    return sharing.recipient_grant(sessions, keys, authorization)


Recipient = Annotated[Grant, Depends(recipient)]
NDJSON: dict[int | str, dict[str, Any]] = {
    200: {"description": "Newline-delimited JSON actions", "content": {"application/x-ndjson": {}}}
}


def _ndjson(lines: Iterator[dict[str, Any]] | list[dict[str, Any]], version: int) -> Response:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return Response(body, media_type="application/x-ndjson", headers={"delta-table-version": str(version)})


@router.get("/shares", summary="The shares this token can read: one, its grant")
def list_shares(grant: Recipient) -> JSONResponse:
    return JSONResponse({"items": [{"name": share_name(grant.id), "id": grant.id}]})


@router.get("/shares/{share}", responses=error_responses(NotFound))
def get_share(share: str, grant: Recipient) -> JSONResponse:
    check_table(grant, share)
    return JSONResponse({"share": {"name": share, "id": grant.id}})


@router.get("/shares/{share}/schemas", responses=error_responses(NotFound))
def list_schemas(share: str, grant: Recipient) -> JSONResponse:
    check_table(grant, share)
    return JSONResponse({"items": [{"name": SCHEMA, "share": share}]})


@router.get("/shares/{share}/schemas/{schema}/tables", responses=error_responses(NotFound))
def list_tables(share: str, schema: str, grant: Recipient) -> JSONResponse:
    check_table(grant, share, schema)
    return JSONResponse({"items": [{"name": grant.dataset_id, "schema": SCHEMA, "share": share}]})


@router.get("/shares/{share}/all-tables", responses=error_responses(NotFound))
def list_all_tables(share: str, grant: Recipient) -> JSONResponse:
    check_table(grant, share)
    return JSONResponse({"items": [{"name": grant.dataset_id, "schema": SCHEMA, "share": share}]})


@router.get(
    "/shares/{share}/schemas/{schema}/tables/{table}/version",
    response_class=Response,
    responses={
        200: {"description": "No body: the version is in the delta-table-version header"},
        **error_responses(NotFound),
    },
)
def table_version(share: str, schema: str, table: str, grant: Recipient, sessions: Sessions) -> Response:
    check_table(grant, share, schema, table)
    _, version = sharing.table_metadata(sessions, grant)
    return Response(status_code=200, headers={"delta-table-version": str(version)})


@router.get(
    "/shares/{share}/schemas/{schema}/tables/{table}/metadata",
    response_class=Response,
    responses=NDJSON | error_responses(NotFound),
)
def table_metadata(share: str, schema: str, table: str, grant: Recipient, sessions: Sessions) -> Response:
    check_table(grant, share, schema, table)
    metadata, version = sharing.table_metadata(sessions, grant)
    return _ndjson([{"protocol": {"minReaderVersion": 1}}, {"metaData": metadata}], version)


@router.post(
    "/shares/{share}/schemas/{schema}/tables/{table}/query",
    response_class=Response,
    responses=NDJSON
    | error_responses(
        NotFound, Gone, service.CopyAltered, PublishedVersionAltered, service.DeliveryRateLimited
    ),
)
async def query_table(
    share: str,
    schema: str,
    table: str,
    grant: Recipient,
    sessions: Sessions,
    s3: S3,
    settings: AppSettings,
    keys: Keys,
    log: Log,
    rules: Rules,
) -> Response:
    check_table(grant, share, schema, table)
    lines, version = await run_in_threadpool(
        lambda: sharing.query(
            sessions, client=s3, settings=settings, keys=keys, log=log, rules=rules, grant=grant
        )
    )
    return _ndjson(lines, version)


profile_router = APIRouter(
    prefix="/api/v1", tags=["delivery"], responses=error_responses(Unauthenticated, InsufficientScope)
)


@profile_router.get(
    "/grants/{grant_id}/sharing-profile",
    responses=error_responses(NotFound, Gone, WrongGrantKind),
    summary="The Delta Sharing profile file for a grant (open it with the delta-sharing client)",
)
def sharing_profile(
    grant_id: str,
    sessions: Sessions,
    keys: Keys,
    settings: AppSettings,
    principal: Annotated[Principal, Depends(require_scopes("access:request"))],
) -> JSONResponse:
    body = sharing.profile(sessions, keys, settings.oauth.issuer, principal.org_id, grant_id)
    return JSONResponse(body, headers={"Cache-Control": "no-store"})
