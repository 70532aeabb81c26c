"""The compliance officer's API: transfers with their legal bases, counters against the thresholds,
mechanisms about to expire, and the transfer log's checkpoints and proofs (scope ``transfers:audit``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Response

from gbadz.compliance import service
from gbadz.compliance.repository import TransferFilter
from gbadz.compliance.schemas import CounterRead, ExpiringRead, Parties, RouteDay, TransferRow
from gbadz.deps import Log, ReadSession, Rules, Sessions
from gbadz.errors import BadRequest, InsufficientScope, Unauthenticated, error_responses
from gbadz.identity.auth import actor_of, require_scopes
from gbadz.identity.tokens import Principal
from gbadz.translog import service as translog
from gbadz.translog.schemas import CheckpointRead, ConsistencyRead, EntryRead, VerificationRead
from gbadz.translog.service import LogEntryNotFound, NoCoveringCheckpoint
from gbadz.vocabulary import Jurisdiction, Outcome

# Filters are compared with values inside the signed entries: no control characters (a NUL
# cannot even be bound on PostgreSQL).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"

router = APIRouter(
    prefix="/api/v1", tags=["compliance"], responses=error_responses(Unauthenticated, InsufficientScope)
)
TransferMode = Literal["download", "delta_sharing_query", "reissue", "release"]
Auditor = Annotated[Principal, Depends(require_scopes("transfers:audit"))]
# Log positions are BIGINT columns: a larger number overflowed the database driver (a 500).
LAST_POSITION = 2**63 - 1
# format=csv answers the same rows as a spreadsheet.
CSV: dict[int | str, dict[str, Any]] = {200: {"content": {"text/csv": {"schema": {"type": "string"}}}}}


def _utc_holds(moment: datetime) -> bool:
    """Whether the instant exists in UTC (one near year 1 or 9999 in another offset may not)."""
    try:
        moment.astimezone(UTC)
    except OverflowError:
        return False
    return True


@router.get(
    "/transfers",
    response_model=list[TransferRow],
    responses=CSV | error_responses(BadRequest),
    summary="Transfers from the log, filtered; format=csv for a spreadsheet",
)
def list_transfers(
    principal: Auditor,
    session: ReadSession,
    exporter: Annotated[
        str | None, Query(max_length=36, pattern=PRINTABLE, description="exporter organisation id")
    ] = None,
    recipient: Annotated[
        str | None, Query(max_length=36, pattern=PRINTABLE, description="recipient organisation id")
    ] = None,
    origin: Annotated[Jurisdiction | None, Query()] = None,
    destination: Annotated[Jurisdiction | None, Query()] = None,
    outcome: Annotated[Outcome | None, Query()] = None,
    mechanism: Annotated[str | None, Query(max_length=32, pattern=PRINTABLE)] = None,
    dataset: Annotated[str | None, Query(max_length=100, pattern=PRINTABLE)] = None,
    transfer_mode: Annotated[
        TransferMode | None,
        Query(description="download, delta_sharing_query, reissue, or release (an analysis's DP aggregate)"),
    ] = None,
    since: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601 with a time zone")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and moment.tzinfo is None:
            raise BadRequest(f"{name}: give a time zone, e.g. 2026-11-01T00:00:00Z", field=name)
        if moment is not None and not _utc_holds(moment):  # valid ISO 8601, but not a 500
            raise BadRequest(
                f"{name}: out of range: in UTC the instant falls before year 1 or after year 9999", field=name
            )
    where = TransferFilter(
        exporter,
        recipient,
        origin,
        destination,
        outcome,
        mechanism,
        dataset,
        since,
        until,
        limit,
        transfer_mode,
    )
    return _rows(service.transfers(session, where), format)


@router.get(
    "/determinations",
    response_model=list[TransferRow],
    responses=CSV,
    summary="Compliance determinations from the transfer log (final basis, mechanism, PIPIA, approvers)",
)
def list_determinations(
    principal: Auditor,
    session: ReadSession,
    dataset: Annotated[str | None, Query(max_length=100)] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    format: Annotated[Literal["json", "csv"], Query()] = "json",
) -> Response:
    where = TransferFilter(dataset=dataset, limit=limit, kind="determination")
    return _rows(service.transfers(session, where), format)


def _rows(rows: list[TransferRow], format: str) -> Response:
    if format == "csv":
        return Response(
            service.transfers_csv(rows),
            media_type="text/csv",
            headers={
                "Content-Disposition": 'attachment; filename="gbadz-transfers.csv"',
                "Cache-Control": "no-store",
            },
        )
    body = [row.model_dump(mode="json") for row in rows]
    return Response(
        json.dumps(body, ensure_ascii=False),
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


@router.get(
    "/compliance/parties",
    response_model=Parties,
    summary="Exporters and recipients that appear in the transfer log (for filters), by name",
)
def log_parties(principal: Auditor, session: ReadSession) -> Parties:
    return service.parties(session)


@router.get(
    "/compliance/transfers-by-route",
    response_model=list[RouteDay],
    summary="Transfers per route (origin -> destination) per UTC day over the last N days",
)
def transfers_by_route(
    principal: Auditor, session: ReadSession, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> list[RouteDay]:
    return service.transfers_by_route(session, days)


@router.get(
    "/compliance/counters",
    response_model=list[CounterRead],
    summary="Year-to-date individuals exported per exporter (Asia/Shanghai year) against the legal thresholds",
)
def exporter_counters(principal: Auditor, session: ReadSession, rules: Rules) -> list[CounterRead]:
    return service.exporter_counters(session, rules)


@router.get(
    "/compliance/mechanisms/expiring",
    response_model=list[ExpiringRead],
    summary="Assessments and certifications expiring within the next N working days (default: the rules' window)",
)
def expiring_mechanisms(
    principal: Auditor,
    session: ReadSession,
    rules: Rules,
    working_days: Annotated[
        int | None, Query(ge=1, le=500, description="default: the rules' extension window (60 working days)")
    ] = None,
) -> list[ExpiringRead]:
    return service.expiring_mechanisms(session, rules, working_days)


@router.get(
    "/transfer-log/checkpoint",
    response_model=CheckpointRead,
    tags=["transfer log"],
    summary="The latest signed checkpoint (tree size, root hash, time); fresh=true signs one for the current size",
)
def get_checkpoint(
    principal: Auditor, sessions: Sessions, log: Log, fresh: Annotated[bool, Query()] = False
) -> CheckpointRead:
    return translog.current_checkpoint(sessions, log, fresh=fresh)


@router.post(
    "/transfer-log/verifications",
    response_model=VerificationRead,
    tags=["transfer log"],
    summary="Export the whole log and verify it as `gbadz audit verify` would, against the platform's own keys",
)
def verify_transfer_log(principal: Auditor, sessions: Sessions, log: Log) -> VerificationRead:
    return translog.verify(sessions, log, actor_of(principal))


@router.get(
    "/transfer-log/entries/{index}",
    response_model=EntryRead,
    tags=["transfer log"],
    responses=error_responses(LogEntryNotFound, NoCoveringCheckpoint),
    summary="One transfer-log entry with its inclusion proof in a signed checkpoint",
)
def get_entry(
    index: Annotated[int, Path(ge=0, le=LAST_POSITION)],
    principal: Auditor,
    sessions: Sessions,
    log: Log,
    tree_size: Annotated[
        int | None, Query(ge=1, le=LAST_POSITION, description="default: the latest checkpoint")
    ] = None,
) -> EntryRead:
    return translog.entry_with_proof(sessions, log, index, tree_size)


@router.get(
    "/transfer-log/consistency",
    response_model=ConsistencyRead,
    tags=["transfer log"],
    responses=error_responses(BadRequest),
    summary="Proof that the log of `from` entries is a prefix of the log of `to` entries (both signed checkpoints)",
)
def get_consistency(
    principal: Auditor,
    sessions: Sessions,
    log: Log,
    first: Annotated[int, Query(alias="from", ge=1, le=LAST_POSITION)],
    second: Annotated[int, Query(alias="to", ge=1, le=LAST_POSITION)],
) -> ConsistencyRead:
    return translog.consistency(sessions, log, first, second)
