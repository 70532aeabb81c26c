"""HTTP routes of delivery and of the transfer log (compliance)."""

from __future__ import annotations

import base64
import json
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gbadz.delivery import service
from gbadz.errors import (
    BadRequest,
    Conflict,
    Gone,
    InsufficientScope,
    NotFound,
    StorageUnavailable,
    Unauthenticated,
    error_responses,
)
from gbadz.identity.auth import actor_of, require_scopes
from gbadz.identity.tokens import Principal
from gbadz.translog.log import TransferLog
from gbadz.translog.models import Checkpoint, LogEntry

router = APIRouter(prefix="/api/v1", responses=error_responses(Unauthenticated, InsufficientScope))

Requester = Annotated[Principal, Depends(require_scopes("access:request"))]
Auditor = Annotated[Principal, Depends(require_scopes("transfers:audit"))]


class FileLink(BaseModel):
    url: str = Field(description="presigned GET URL; dies at expires_at")
    key: str
    size: int
    sha256: str
    rows: int
    expires_at: str


class DeliveryRead(BaseModel):
    transfer_id: str
    log_index: int = Field(description="the transfer-log entry recording this transfer")
    grant_id: str
    dataset_id: str
    version: int
    columns: list[str]
    files: list[FileLink]
    reused: bool = Field(description="true when an Idempotency-Key matched an earlier, logged delivery")


class CheckpointRead(BaseModel):
    tree_size: int
    root_hash: str
    note: str
    key_id: str
    signature: str
    signed_at: str
    public_keys: list[dict[str, str]]


class EntryRead(BaseModel):
    index: int
    kind: str
    entry: dict[str, Any]
    leaf_hash: str
    tree_size: int
    root_hash: str
    inclusion_proof: list[str] = Field(description="RFC 6962 audit path, base64, leaf to root")


class ConsistencyRead(BaseModel):
    first: int
    second: int
    first_root: str
    second_root: str
    proof: list[str]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


@router.post(
    "/grants/{grant_id}/deliveries",
    status_code=201,
    response_model=DeliveryRead,
    tags=["delivery"],
    responses=error_responses(NotFound, Gone, Conflict, StorageUnavailable),
    summary="Materialise the grant's copy of the current version and get short-lived download URLs",
    description="The transfer is written to the transfer log and committed before any URL is returned. "
    "Retrying with the same Idempotency-Key returns the same logged delivery with fresh URLs.",
)
async def create_delivery(
    grant_id: str,
    request: Request,
    principal: Requester,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> DeliveryRead:
    app = request.app
    settings = app.state.settings

    def work() -> DeliveryRead:
        with app.state.sessionmaker.begin() as session:
            delivery = service.deliver(
                session,
                client=app.state.s3,
                settings=settings,
                keys=app.state.keys,
                log=app.state.transfer_log,
                grant_id=grant_id,
                org_id=principal.org_id,
                actor=actor_of(principal),
                idempotency_key=idempotency_key,
            )
        if delivery.appended is not None:
            app.state.transfer_log.committed(delivery.appended)
        links = service.presign(
            app.state.s3, settings, delivery, timedelta(seconds=settings.api.delivery_url_ttl_s)
        )
        return DeliveryRead(
            transfer_id=delivery.transfer_id,
            log_index=delivery.log_index,
            grant_id=delivery.grant_id,
            dataset_id=delivery.dataset_id,
            version=delivery.version,
            columns=delivery.columns,
            files=[FileLink(**link) for link in links],
            reused=delivery.reused,
        )

    return await run_in_threadpool(work)


def _checkpoint_read(log: TransferLog, cp: Checkpoint) -> CheckpointRead:
    return CheckpointRead(
        tree_size=cp.tree_size,
        root_hash=cp.root_hash,
        note=cp.note,
        key_id=cp.key_id,
        signature=cp.signature,
        signed_at=cp.signed_at.isoformat(),
        public_keys=log.public_keys(),
    )


@router.get(
    "/transfer-log/checkpoint",
    response_model=CheckpointRead,
    tags=["transfer log"],
    summary="The latest signed checkpoint (tree size, root hash, time); fresh=true signs one for the current size",
)
def get_checkpoint(
    request: Request, principal: Auditor, fresh: Annotated[bool, Query()] = False
) -> CheckpointRead:
    log: TransferLog = request.app.state.transfer_log
    with request.app.state.sessionmaker.begin() as session:
        cp = log.latest_checkpoint(session)
        if fresh or cp is None or cp.tree_size < log.sync(session):
            cp = log.checkpoint(session)
        return _checkpoint_read(log, cp)


class VerificationRead(BaseModel):
    ok: bool = Field(description="every entry, every checkpoint root and signature, and their chain verified")
    entries: int
    checkpoints: int
    problem: str | None
    first_bad_index: int | None
    trusted_key_ids: list[str] = Field(description="the platform keys the signatures were checked against")
    checkpoint: CheckpointRead | None = Field(description="the latest signed checkpoint")


@router.post(
    "/transfer-log/verifications",
    response_model=VerificationRead,
    tags=["transfer log"],
    summary="Export the whole log and verify it as `gbadz audit verify` would, against the platform's own keys",
)
def verify_transfer_log(request: Request, principal: Auditor) -> VerificationRead:
    import tempfile
    from pathlib import Path

    from gbadz import audit
    from gbadz.translog.log import export, verify_export

    log: TransferLog = request.app.state.transfer_log
    keys = log.public_keys()
    with tempfile.TemporaryDirectory(prefix="gbadz-verify-") as tmp:
        target = Path(tmp) / "log.jsonl"
        with request.app.state.sessionmaker() as session:
            export(session, log, target)
            latest = log.latest_checkpoint(session)
            checkpoint = _checkpoint_read(log, latest) if latest is not None else None
        verdict = verify_export(target, [base64.b64decode(k["public_key"]) for k in keys])
    with request.app.state.sessionmaker.begin() as session:
        audit.record(
            session,
            actor=actor_of(principal),
            action="transfer_log.verified",
            subject_type="transfer_log",
            subject_id=str(verdict.entries),
            details={
                "ok": verdict.ok,
                "problem": verdict.problem,
                "first_bad_index": verdict.first_bad_index,
            },
        )
    return VerificationRead(
        ok=verdict.ok,
        entries=verdict.entries,
        checkpoints=verdict.checkpoints,
        problem=verdict.problem,
        first_bad_index=verdict.first_bad_index,
        trusted_key_ids=[k["key_id"] for k in keys],
        checkpoint=checkpoint,
    )


@router.get(
    "/transfer-log/entries/{index}",
    response_model=EntryRead,
    tags=["transfer log"],
    responses=error_responses(NotFound, BadRequest),
    summary="One transfer-log entry with its inclusion proof in a signed checkpoint",
)
def get_entry(
    index: int,
    request: Request,
    principal: Auditor,
    tree_size: Annotated[int | None, Query(ge=1, description="default: the latest checkpoint")] = None,
) -> EntryRead:
    log: TransferLog = request.app.state.transfer_log
    with request.app.state.sessionmaker.begin() as session:
        row = session.get(LogEntry, index)
        if row is None:
            raise NotFound(f"no transfer-log entry {index}")
        cp = session.get(Checkpoint, tree_size) if tree_size else log.latest_checkpoint(session)
        if cp is None or cp.tree_size <= index:
            cp = log.checkpoint(session) if tree_size is None else None
        if cp is None:
            raise BadRequest(f"tree_size: no signed checkpoint of size {tree_size} covers entry {index}")
        log.sync(session)
        proof = log.tree.inclusion(index, cp.tree_size)
        return EntryRead(
            index=row.index,
            kind=row.kind,
            entry=json.loads(row.entry),
            leaf_hash=row.leaf_hash,
            tree_size=cp.tree_size,
            root_hash=cp.root_hash,
            inclusion_proof=[_b64(p) for p in proof],
        )


@router.get(
    "/transfer-log/consistency",
    response_model=ConsistencyRead,
    tags=["transfer log"],
    responses=error_responses(BadRequest),
    summary="Proof that the log of `from` entries is a prefix of the log of `to` entries (both signed checkpoints)",
)
def get_consistency(
    request: Request,
    principal: Auditor,
    first: Annotated[int, Query(alias="from", ge=1)],
    second: Annotated[int, Query(alias="to", ge=1)],
) -> ConsistencyRead:
    log: TransferLog = request.app.state.transfer_log
    if first > second:
        raise BadRequest("from: must not be greater than to")
    with request.app.state.sessionmaker() as session:
        old, new = session.get(Checkpoint, first), session.get(Checkpoint, second)
        if old is None or new is None:
            raise BadRequest("from/to: both must be sizes of signed checkpoints")
        log.sync(session)
        proof = log.tree.consistency(first, second)
        return ConsistencyRead(
            first=first,
            second=second,
            first_root=old.root_hash,
            second_root=new.root_hash,
            proof=[_b64(p) for p in proof],
        )
