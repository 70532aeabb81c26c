"""The Delta Sharing protocol over active grants, so the open ``delta-sharing`` client reads them unchanged.

Each grant is one share (``grant-<id>``) with one schema (``default``) and one table (the
dataset id). Its recipient token is a signed statement ``{grant, exp}`` (Ed25519, keyring key
``delta-sharing``), checked on every call together with the grant's current status, so
revoking or expiring the grant ends access at once. Every ``query`` is a transfer: the
grant's copy of the current version is materialised (or the one already delivered for that
version reused), a transfer-log entry is committed, and only then are the presigned file
URLs written into the NDJSON answer (path-style against the configured S3 endpoint; the
reference server's MinIO problem, delta-sharing #753, does not arise).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gbadz.access.models import Grant
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import stored_contract
from gbadz.crypto.keys import KeyProvider
from gbadz.crypto.signing import Signer, verify
from gbadz.delivery import service
from gbadz.errors import GbadzError, Gone, NotFound, error_responses
from gbadz.identity.auth import require_scopes
from gbadz.identity.tokens import Principal

SIGNING_KEY = "delta-sharing"
SCHEMA = "default"
MAX_TOKEN_LIFETIME = timedelta(days=30)
SPARK_TYPES = {
    "string": "string",
    "integer": "long",
    "number": "double",
    "boolean": "boolean",
    "date": "date",
    "timestamp": "timestamp",
}


class SharingError(GbadzError):
    status_code = 401


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(keys: KeyProvider, grant: Grant, now: datetime) -> tuple[str, datetime]:
    expires = min(grant.expires_at, now + MAX_TOKEN_LIFETIME)
    claims = json.dumps({"grant": grant.id, "exp": int(expires.timestamp())}, separators=(",", ":")).encode()
    signature = Signer(keys, SIGNING_KEY).sign(claims)
    return f"gbzds.{_b64(claims)}.{_b64(signature.signature)}", expires


def grant_of_token(keys: KeyProvider, token: str) -> str:
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != "gbzds":
        raise SharingError("the bearer token is not a gbadz sharing token")
    try:
        claims_raw, signature = _unb64(parts[1]), _unb64(parts[2])
        claims = json.loads(claims_raw)
    except (ValueError, TypeError):
        raise SharingError("the bearer token is malformed") from None
    info = [k for k in keys.public_keys() if k.name == SIGNING_KEY]
    retired = [k for k, _ in keys.retired_public_keys(SIGNING_KEY)]
    if not any(verify(k.public_key, claims_raw, signature) for k in [*info, *retired]):
        raise SharingError("the bearer token's signature does not verify")
    if not isinstance(claims, dict) or int(claims.get("exp", 0)) < datetime.now(UTC).timestamp():
        raise SharingError("the bearer token expired; download a new sharing profile")
    return str(claims["grant"])


def share_name(grant_id: str) -> str:
    return f"grant-{grant_id}"


router = APIRouter(prefix="/delta-sharing", tags=["delta sharing"], include_in_schema=True)


def recipient(request: Request, authorization: Annotated[str | None, Header()] = None) -> Grant:
    """The grant behind the bearer token, if it is still active (else 401/410)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SharingError("a bearer token from the grant's sharing profile is required")
    grant_id = grant_of_token(request.app.state.keys, token.strip())
    with request.app.state.sessionmaker() as session:
        grant: Grant | None = session.get(Grant, grant_id)
        if grant is None:
            raise SharingError("the grant behind this token no longer exists")
        status = grant.status(datetime.now(UTC))
        if status != "active":
            raise Gone(f"grant: the grant is {status}; nothing more can be shared")
        session.expunge(grant)
        return grant


Recipient = Annotated[Grant, Depends(recipient)]


def _table_of(grant: Grant, share: str, schema: str | None = None, table: str | None = None) -> None:
    if share != share_name(grant.id) or (schema is not None and schema != SCHEMA):
        raise NotFound(f"no share {share!r}" if share != share_name(grant.id) else f"no schema {schema!r}")
    if table is not None and table != grant.dataset_id:
        raise NotFound(f"no table {table!r}")


def _ndjson(lines: Iterator[dict[str, Any]] | list[dict[str, Any]], version: int) -> Response:
    body = "".join(json.dumps(line) + "\n" for line in lines)
    return Response(body, media_type="application/x-ndjson", headers={"delta-table-version": str(version)})


def _metadata(request: Request, grant: Grant) -> tuple[dict[str, Any], int]:
    with request.app.state.sessionmaker() as session:
        dataset = session.get(Dataset, grant.dataset_id)
        if dataset is None or dataset.current_version is None:
            raise NotFound(f"no published version of {grant.dataset_id!r}")
        contract = stored_contract(dataset)
        types = {p.name: p.logicalType for p in contract.table.properties}
        masked = {c for c in grant.columns if (contract.facts(c).protection or "") in service.MASKS}
        columns = [c for c in grant.columns if contract.facts(c).protection != "drop_on_export"]
        fields = [
            {
                "name": c,
                "type": "string" if c in masked else SPARK_TYPES[types[c]],
                "nullable": True,
                "metadata": {},
            }
            for c in columns
        ]
        metadata = {
            "id": f"{grant.id}-v{dataset.current_version}",
            "name": dataset.id,
            "description": dataset.name,
            "format": {"provider": "parquet"},
            "schemaString": json.dumps({"type": "struct", "fields": fields}),
            "partitionColumns": [],
            "configuration": {},
        }
        return metadata, int(dataset.current_version)


@router.get("/shares", summary="The shares this token can read: one, its grant")
def list_shares(grant: Recipient) -> JSONResponse:
    return JSONResponse({"items": [{"name": share_name(grant.id), "id": grant.id}]})


@router.get("/shares/{share}", responses=error_responses(NotFound))
def get_share(share: str, grant: Recipient) -> JSONResponse:
    _table_of(grant, share)
    return JSONResponse({"share": {"name": share, "id": grant.id}})


@router.get("/shares/{share}/schemas", responses=error_responses(NotFound))
def list_schemas(share: str, grant: Recipient) -> JSONResponse:
    _table_of(grant, share)
    return JSONResponse({"items": [{"name": SCHEMA, "share": share}]})


@router.get("/shares/{share}/schemas/{schema}/tables", responses=error_responses(NotFound))
def list_tables(share: str, schema: str, grant: Recipient) -> JSONResponse:
    _table_of(grant, share, schema)
    return JSONResponse({"items": [{"name": grant.dataset_id, "schema": SCHEMA, "share": share}]})


@router.get("/shares/{share}/all-tables", responses=error_responses(NotFound))
def list_all_tables(share: str, grant: Recipient) -> JSONResponse:
    _table_of(grant, share)
    return JSONResponse({"items": [{"name": grant.dataset_id, "schema": SCHEMA, "share": share}]})


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/version", responses=error_responses(NotFound))
def table_version(share: str, schema: str, table: str, grant: Recipient, request: Request) -> Response:
    _table_of(grant, share, schema, table)
    _, version = _metadata(request, grant)
    return Response(status_code=200, headers={"delta-table-version": str(version)})


@router.get("/shares/{share}/schemas/{schema}/tables/{table}/metadata", responses=error_responses(NotFound))
def table_metadata(share: str, schema: str, table: str, grant: Recipient, request: Request) -> Response:
    _table_of(grant, share, schema, table)
    metadata, version = _metadata(request, grant)
    return _ndjson([{"protocol": {"minReaderVersion": 1}}, {"metaData": metadata}], version)


@router.post(
    "/shares/{share}/schemas/{schema}/tables/{table}/query", responses=error_responses(NotFound, Gone)
)
async def query_table(share: str, schema: str, table: str, grant: Recipient, request: Request) -> Response:
    _table_of(grant, share, schema, table)
    app = request.app
    settings = app.state.settings

    def work() -> Response:
        metadata, version = _metadata(request, grant)
        with app.state.sessionmaker.begin() as session:
            delivery = service.deliver(
                session,
                client=app.state.s3,
                settings=settings,
                keys=app.state.keys,
                log=app.state.transfer_log,
                grant_id=grant.id,
                org_id=grant.grantee_org_id,
                actor=f"delta-sharing:{grant.grantee_org_id}",
                mode="delta_sharing_query",
                reuse_files=True,
            )
        if delivery.appended is not None:
            app.state.transfer_log.committed(delivery.appended)
        ttl = timedelta(seconds=settings.api.delivery_url_ttl_s)
        links = service.presign(app.state.s3, settings, delivery, ttl)
        expires_ms = int((datetime.now(UTC) + ttl).timestamp() * 1000)
        lines: list[dict[str, Any]] = [{"protocol": {"minReaderVersion": 1}}, {"metaData": metadata}]
        for link, file in zip(links, delivery.files, strict=True):
            lines.append(
                {
                    "file": {
                        "url": link["url"],
                        "id": file.sha256,
                        "partitionValues": {},
                        "size": file.size,
                        "stats": json.dumps({"numRecords": file.rows}),
                        "expirationTimestamp": expires_ms,
                    }
                }
            )
        return _ndjson(lines, version)

    return await run_in_threadpool(work)


profile_router = APIRouter(prefix="/api/v1", tags=["delivery"])


@profile_router.get(
    "/grants/{grant_id}/sharing-profile",
    responses=error_responses(NotFound, Gone),
    summary="The Delta Sharing profile file for a grant (open it with the delta-sharing client)",
)
def sharing_profile(
    grant_id: str,
    request: Request,
    principal: Annotated[Principal, Depends(require_scopes("access:request"))],
) -> JSONResponse:
    now = datetime.now(UTC)
    with request.app.state.sessionmaker() as session:
        grant = session.get(Grant, grant_id)
        if grant is None or grant.grantee_org_id != principal.org_id:
            raise NotFound(f"no grant {grant_id!r}")
        status = grant.status(now)
        if status != "active":
            raise Gone(f"grant: the grant is {status}; no sharing profile")
        token, expires = issue_token(request.app.state.keys, grant, now)
    endpoint = request.app.state.settings.oauth.issuer.rstrip("/") + "/delta-sharing"
    return JSONResponse(
        {
            "shareCredentialsVersion": 1,
            "endpoint": endpoint,
            "bearerToken": token,
            "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "share": share_name(grant.id),
            "schema": SCHEMA,
            "table": grant.dataset_id,
        },
        headers={"Cache-Control": "no-store"},
    )
