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
from datetime import UTC, datetime, timedelta
from typing import Any

from minio import Minio
from sqlalchemy.orm import Session, sessionmaker

from gbadz.access.models import Grant
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import stored_contract
from gbadz.config import Settings
from gbadz.crypto.keys import KeyProvider
from gbadz.crypto.signing import Signer, verify
from gbadz.delivery import repository, service
from gbadz.errors import GbadzError, GrantInactive, GrantNotFound, NotFound
from gbadz.identity.models import Organization
from gbadz.law.rules import RuleSet
from gbadz.translog.log import TransferLog

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


def recipient_grant(sessions: sessionmaker[Session], keys: KeyProvider, authorization: str | None) -> Grant:
    """The grant behind a sharing bearer token, if it is still active (else 401/410)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise SharingError("a bearer token from the grant's sharing profile is required")
    grant_id = grant_of_token(keys, token.strip())
    with sessions() as session:
        grant: Grant | None = repository.grant(session, grant_id)
        if grant is None:
            raise SharingError("the grant behind this token no longer exists")
        if grant.kind != "copy":  # no profile is issued for one; an analysis grant is never a share
            raise NotFound(f"no share {share_name(grant.id)!r}: an analysis grant is not shared")
        status = grant.status(datetime.now(UTC))
        if status != "active":
            raise GrantInactive(f"grant: the grant is {status}; nothing more can be shared", field="grant")
        # A disabled organisation's tokens stop, its sharing tokens included; the grant itself
        # is left as it is (issue #19, ADR 0023).
        recipient = session.get(Organization, grant.grantee_org_id)
        if recipient is None or recipient.disabled_at is not None:
            raise SharingError("the recipient organisation is disabled")
        session.expunge(grant)
        return grant


def check_table(grant: Grant, share: str, schema: str | None = None, table: str | None = None) -> None:
    if share != share_name(grant.id) or (schema is not None and schema != SCHEMA):
        raise NotFound(f"no share {share!r}" if share != share_name(grant.id) else f"no schema {schema!r}")
    if table is not None and table != grant.dataset_id:
        raise NotFound(f"no table {table!r}")


def table_metadata(sessions: sessionmaker[Session], grant: Grant) -> tuple[dict[str, Any], int]:
    """The Delta table metadata of the grant's view of the dataset, and the current version."""
    with sessions() as session:
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


def query(
    sessions: sessionmaker[Session],
    *,
    client: Minio,
    settings: Settings,
    keys: KeyProvider,
    log: TransferLog,
    rules: RuleSet,
    grant: Grant,
) -> tuple[list[dict[str, Any]], int]:
    """A table query: a logged transfer of the grant's copy, answered as Delta Sharing NDJSON lines."""
    metadata, version = table_metadata(sessions, grant)
    handed = service.deliver_and_presign(
        sessions,
        client=client,
        settings=settings,
        keys=keys,
        log=log,
        grant_id=grant.id,
        org_id=grant.grantee_org_id,
        actor=f"delta-sharing:{grant.grantee_org_id}",
        mode="delta_sharing_query",
        reuse_files=True,
        rules=rules,
    )
    lines: list[dict[str, Any]] = [{"protocol": {"minReaderVersion": 1}}, {"metaData": metadata}]
    for link, file in zip(handed.links, handed.delivery.files, strict=True):
        # The URLs never outlive the grant (presign caps them at its end).
        expires_ms = int(datetime.fromisoformat(link["expires_at"]).timestamp() * 1000)
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
    return lines, version


def profile(
    sessions: sessionmaker[Session], keys: KeyProvider, issuer: str, org_id: str, grant_id: str
) -> dict[str, Any]:
    """The Delta Sharing profile file of a grant the organisation holds."""
    now = datetime.now(UTC)
    with sessions() as session:
        grant = repository.held_grant(session, grant_id, org_id)
        if grant is None:
            raise GrantNotFound(f"no grant {grant_id!r}")
        service.refuse_analysis_grant(grant)
        status = grant.status(now)
        if status != "active":
            raise GrantInactive(f"grant: the grant is {status}; no sharing profile", field="grant")
        token, expires = issue_token(keys, grant, now)
    return {
        "shareCredentialsVersion": 1,
        "endpoint": issuer.rstrip("/") + "/delta-sharing",
        "bearerToken": token,
        "expirationTime": expires.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "share": share_name(grant.id),
        "schema": SCHEMA,
        "table": grant.dataset_id,
    }
