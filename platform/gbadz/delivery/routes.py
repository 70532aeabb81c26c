"""HTTP routes of delivery: a grant's copy, logged, then handed out as short-lived URLs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from gbadz.catalog.integrity import PublishedVersionAltered
from gbadz.delivery import service
from gbadz.deps import S3, AppSettings, Keys, Log, Rules, Sessions
from gbadz.errors import (
    DatasetRetired,
    GrantInactive,
    GrantNotFound,
    InsufficientScope,
    NoPublishedVersion,
    NotFound,
    StorageUnavailable,
    Unauthenticated,
    WrongGrantKind,
    error_responses,
)
from gbadz.identity.auth import actor_of, require_scopes
from gbadz.identity.tokens import Principal

router = APIRouter(prefix="/api/v1", responses=error_responses(Unauthenticated, InsufficientScope))

Requester = Annotated[Principal, Depends(require_scopes("access:request"))]


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


@router.post(
    "/grants/{grant_id}/deliveries",
    status_code=201,
    response_model=DeliveryRead,
    tags=["delivery"],
    responses=error_responses(
        GrantNotFound,
        GrantInactive,
        WrongGrantKind,
        DatasetRetired,
        NoPublishedVersion,
        service.CopyAltered,
        PublishedVersionAltered,
        service.DeliveryRateLimited,
        StorageUnavailable,
    ),
    summary="Materialise the grant's copy of the current version and get short-lived download URLs",
    description="An analysis grant gets no copy (409 WrongGrantKind). "
    "The transfer is written to the transfer log and committed before any URL is returned. "
    "Retrying with the same Idempotency-Key returns the same logged delivery with fresh URLs (a logged "
    "reissue). Asking again while the latest URLs have half their life left returns that transfer and "
    "the same URLs (nothing new is logged or stored). Issuances per grant are limited (429, Retry-After). "
    "A stored copy that no longer matches the log is refused (409 CopyAltered).",
)
async def create_delivery(
    grant_id: str,
    principal: Requester,
    sessions: Sessions,
    s3: S3,
    settings: AppSettings,
    keys: Keys,
    log: Log,
    rules: Rules,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> DeliveryRead:
    def work() -> DeliveryRead:
        handed = service.deliver_and_presign(
            sessions,
            client=s3,
            settings=settings,
            keys=keys,
            log=log,
            grant_id=grant_id,
            org_id=principal.org_id,
            actor=actor_of(principal),
            idempotency_key=idempotency_key,
            rules=rules,
        )
        delivery, links = handed.delivery, handed.links
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


@router.api_route(
    "/delivery-files/{ticket}",
    methods=["GET", "HEAD"],
    tags=["delivery"],
    responses=error_responses(
        NotFound, GrantInactive, DatasetRetired, service.CopyAltered, StorageUnavailable
    ),
    summary="Download a delivered file (the URL a delivery or Delta Sharing query handed out)",
    description="The URL is a signed, short-lived ticket for one file of one grant's delivery. The stored "
    "copy is encrypted under the grant's key; it is decrypted here while the grant is active, and only if "
    "it is the very file the transfer log names. Range requests are answered (206).",
)
async def delivery_file(
    ticket: Annotated[str, Path(max_length=4096)],
    sessions: Sessions,
    s3: S3,
    settings: AppSettings,
    keys: Keys,
    request: Request,
    range_: Annotated[str | None, Header(alias="range", max_length=200)] = None,
) -> Response:
    head = request.method == "HEAD"
    served = await run_in_threadpool(
        lambda: service.serve_file(
            sessions,
            client=s3,
            settings=settings,
            keys=keys,
            ticket_text=ticket,
            range_header=range_,
            head=head,
        )
    )
    if served.body is None:
        return Response(status_code=served.status, headers=served.headers)
    return StreamingResponse(served.body, status_code=served.status, headers=served.headers)
