"""SQL of access: requests, grants and mechanism evidence, each readable by a principal.

The visibility rule of access is written once, in :func:`readable_by`: a compliance officer
reads everything; anyone else reads only what their organisation is a party to.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session

from gbadz.access.models import AccessRequest, Grant, MechanismEvidence, Obligation
from gbadz.audit import AuditEvent
from gbadz.catalog.models import Dataset
from gbadz.identity.models import Organization
from gbadz.identity.tokens import Principal


def sees_everything(principal: Principal) -> bool:
    """Compliance officers oversee every party's requests, grants and mechanisms."""
    return principal.role == "compliance_officer"


def is_party(principal: Principal, *org_ids: str | None) -> bool:
    """The Python twin of :func:`readable_by`, for a row already loaded."""
    return sees_everything(principal) or principal.org_id in org_ids


def readable_by(principal: Principal, *parties: InstrumentedAttribute[str | None]) -> sa.ColumnElement[bool]:
    """Rows whose ``parties`` columns name the principal's organisation (all rows for an officer)."""
    if sees_everything(principal):
        return sa.true()
    return sa.or_(*(column == principal.org_id for column in parties))


def organisation(session: Session, org_id: str | None) -> Organization | None:
    return session.get(Organization, org_id) if org_id else None


def request_for(
    session: Session, principal: Principal, request_id: str, *, lock: bool = False
) -> AccessRequest | None:
    query = sa.select(AccessRequest).where(
        AccessRequest.id == request_id,
        readable_by(principal, AccessRequest.requester_org_id, AccessRequest.provider_org_id),
    )
    return session.scalar(query.with_for_update() if lock else query)


def requests_for(
    session: Session, principal: Principal, state: str | None, limit: int
) -> list[AccessRequest]:
    query = (
        sa.select(AccessRequest)
        .where(readable_by(principal, AccessRequest.requester_org_id, AccessRequest.provider_org_id))
        .order_by(AccessRequest.created_at.desc(), AccessRequest.id)
        .limit(limit)
    )
    if state:
        query = query.where(AccessRequest.state == state)
    return list(session.scalars(query))


def grant_id_of(session: Session, request_id: str) -> str | None:
    return session.scalar(sa.select(Grant.id).where(Grant.request_id == request_id))


def request_events(session: Session, request_id: str) -> Sequence[AuditEvent]:
    """The state changes of one request, oldest first (its audit events)."""
    return session.scalars(
        sa.select(AuditEvent)
        .where(
            AuditEvent.subject_type == "access_request",
            AuditEvent.subject_id == request_id,
            AuditEvent.action.startswith("access_request.", autoescape=True),
        )
        .order_by(AuditEvent.id)
    ).all()


@dataclass(frozen=True)
class GrantFilters:
    """Narrowing a grant list (each optional; all given must hold)."""

    status: str | None = None  # active | suspended | expired | revoked, as Grant.status() says
    dataset_id: str | None = None
    grantee_org_id: str | None = None
    kind: str | None = None  # copy | analysis
    expires_before: datetime | None = None


def _status_clause(status: str, now: datetime) -> sa.ColumnElement[bool]:
    """SQL twin of :meth:`Grant.status`."""
    live = sa.and_(Grant.revoked_at.is_(None), Grant.expires_at > now)
    return {
        "revoked": Grant.revoked_at.is_not(None),
        "expired": sa.and_(Grant.revoked_at.is_(None), Grant.expires_at <= now),
        "suspended": sa.and_(live, Grant.suspended_at.is_not(None)),
        "active": sa.and_(live, Grant.suspended_at.is_(None)),
    }[status]


def grants_for(
    session: Session,
    principal: Principal,
    limit: int,
    *,
    suspended: bool = False,
    filters: GrantFilters | None = None,
    now: datetime | None = None,
) -> list[Grant]:
    query = sa.select(Grant).where(readable_by(principal, Grant.grantee_org_id, Grant.provider_org_id))
    if suspended:  # the review items: suspended, not revoked (expiry is shown by status)
        query = query.where(Grant.suspended_at.is_not(None), Grant.revoked_at.is_(None))
    if filters is not None:
        if filters.status is not None:
            query = query.where(_status_clause(filters.status, now or datetime.now(UTC)))
        if filters.dataset_id is not None:
            query = query.where(Grant.dataset_id == filters.dataset_id)
        if filters.grantee_org_id is not None:
            query = query.where(Grant.grantee_org_id == filters.grantee_org_id)
        if filters.kind is not None:
            query = query.where(Grant.kind == filters.kind)
        if filters.expires_before is not None:
            query = query.where(Grant.expires_at < filters.expires_before)
    return list(session.scalars(query.order_by(Grant.granted_at.desc(), Grant.id).limit(limit)))


def grant_for(session: Session, principal: Principal, grant_id: str, *, lock: bool = False) -> Grant | None:
    query = sa.select(Grant).where(
        Grant.id == grant_id, readable_by(principal, Grant.grantee_org_id, Grant.provider_org_id)
    )
    return session.scalar(query.with_for_update() if lock else query)


def evidence_between(session: Session, exporter: str | None, recipient: str) -> Sequence[MechanismEvidence]:
    if exporter is None:
        return []
    return session.scalars(
        sa.select(MechanismEvidence).where(
            MechanismEvidence.exporter_org_id == exporter,
            MechanismEvidence.recipient_org_id == recipient,
            MechanismEvidence.withdrawn_at.is_(None),
        )
    ).all()


def evidence_exists(session: Session, kind: str, reference: str) -> bool:
    return (
        session.scalar(
            sa.select(MechanismEvidence.id).where(
                MechanismEvidence.kind == kind,
                MechanismEvidence.reference == reference,
                MechanismEvidence.withdrawn_at.is_(None),
            )
        )
        is not None
    )


def evidence_for(session: Session, principal: Principal, exporter: str | None) -> list[MechanismEvidence]:
    query = (
        sa.select(MechanismEvidence)
        .where(readable_by(principal, MechanismEvidence.exporter_org_id, MechanismEvidence.recipient_org_id))
        .order_by(MechanismEvidence.recorded_at.desc())
    )
    if exporter:
        query = query.where(MechanismEvidence.exporter_org_id == exporter)
    return list(session.scalars(query))


def reserved(
    session: Session, exporter_id: str, now: datetime, exclude_grant: str | None = None
) -> tuple[int, int]:
    """Individuals reserved by the exporter's live, approved, not yet delivered grants (whatever
    year they were approved in: they count in the year they are delivered)."""
    stmt = sa.select(
        sa.func.coalesce(sa.func.sum(Grant.reserved_pi), 0),
        sa.func.coalesce(sa.func.sum(Grant.reserved_spi), 0),
    ).where(
        Grant.provider_org_id == exporter_id,
        Grant.revoked_at.is_(None),
        Grant.expires_at > now,
        Grant.reserved_pi > 0,
    )
    if exclude_grant is not None:
        stmt = stmt.where(Grant.id != exclude_grant)
    pi, spi = session.execute(stmt).one()
    return int(pi), int(spi)


def live_grants_of(session: Session, dataset_id: str, now: datetime) -> list[Grant]:
    """The dataset's grants that can still transfer data (not revoked, expired or suspended), locked."""
    query = (
        sa.select(Grant)
        .where(
            Grant.dataset_id == dataset_id,
            Grant.revoked_at.is_(None),
            Grant.suspended_at.is_(None),
            Grant.expires_at > now,
        )
        .with_for_update()
    )
    return list(session.scalars(query))


def obligations_for(
    session: Session,
    principal: Principal,
    state: str | None,
    overdue_on: date | None,
    limit: int,
    grant_id: str | None = None,
) -> list[Obligation]:
    query = (
        sa.select(Obligation)
        .order_by(Obligation.due_on.asc().nulls_last(), Obligation.created_at)
        .limit(limit)
    )
    if not sees_everything(principal):
        query = query.where(Obligation.owner_org_id == principal.org_id)
    if grant_id is not None:
        query = query.where(Obligation.grant_id == grant_id)
    if state is not None:
        query = query.where(Obligation.state == state)
    if overdue_on is not None:
        query = query.where(Obligation.state == "open", Obligation.due_on < overdue_on)
    return list(session.scalars(query))


def obligation_for(
    session: Session, principal: Principal, obligation_id: str, *, lock: bool = False
) -> Obligation | None:
    query = sa.select(Obligation).where(Obligation.id == obligation_id)
    if not sees_everything(principal):
        query = query.where(Obligation.owner_org_id == principal.org_id)
    return session.scalar(query.with_for_update() if lock else query)


def obligations_of(session: Session, grant_id: str, kind: str | None = None) -> list[Obligation]:
    query = sa.select(Obligation).where(Obligation.grant_id == grant_id).order_by(Obligation.created_at)
    if kind is not None:
        query = query.where(Obligation.kind == kind)
    return list(session.scalars(query))


def open_preconditions(session: Session, grant_id: str) -> list[Obligation]:
    return list(
        session.scalars(
            sa.select(Obligation).where(
                Obligation.grant_id == grant_id, Obligation.precondition.is_(True), Obligation.state == "open"
            )
        )
    )


def open_precondition_kinds(session: Session, grant_ids: set[str]) -> dict[str, list[str]]:
    """The kinds of each grant's open preconditions, in one query (a page of grants)."""
    if not grant_ids:
        return {}
    rows = session.execute(
        sa.select(Obligation.grant_id, Obligation.kind)
        .where(
            Obligation.grant_id.in_(grant_ids),
            Obligation.precondition.is_(True),
            Obligation.state == "open",
        )
        .order_by(Obligation.kind)
    )
    found: dict[str, list[str]] = {}
    for grant_id, kind in rows:
        found.setdefault(grant_id, []).append(kind)
    return found


def current_versions(
    session: Session, dataset_ids: set[str], visible: sa.ColumnElement[bool] | None
) -> dict[str, int | None]:
    """The published version of each dataset the ``visible`` clause admits (None: every one)."""
    if not dataset_ids:
        return {}
    query = sa.select(Dataset.id, Dataset.current_version).where(Dataset.id.in_(dataset_ids))
    if visible is not None:
        query = query.where(visible)
    return {row.id: row.current_version for row in session.execute(query)}


def ended_grants_with_copies(session: Session, now: datetime, limit: int) -> list[Grant]:
    """Grants that ended (revoked or expired) whose delivery copies are not deleted yet, locked."""
    query = (
        sa.select(Grant)
        .where(
            Grant.copies_deleted_at.is_(None), sa.or_(Grant.revoked_at.is_not(None), Grant.expires_at <= now)
        )
        .order_by(Grant.expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.scalars(query))


def grants_between(session: Session, exporter: str, recipient: str) -> list[Grant]:
    return list(
        session.scalars(
            sa.select(Grant).where(Grant.provider_org_id == exporter, Grant.grantee_org_id == recipient)
        )
    )


def successor_of(session: Session, evidence_id: str) -> MechanismEvidence | None:
    """The item that amended ``evidence_id`` (its ``supersedes``), if any."""
    return session.scalar(sa.select(MechanismEvidence).where(MechanismEvidence.supersedes == evidence_id))


def organisations(session: Session, org_ids: set[str]) -> dict[str, Organization]:
    """Organisations by id (the parties a list of requests or grants names), in one query."""
    if not org_ids:
        return {}
    rows = session.scalars(sa.select(Organization).where(Organization.id.in_(sorted(org_ids))))
    return {org.id: org for org in rows}


def running_grants_of(session: Session, dataset_id: str, now: datetime) -> list[Grant]:
    """Grants on a dataset that still run: not revoked, not expired (suspended ones included)."""
    return list(
        session.scalars(
            sa.select(Grant)
            .where(Grant.dataset_id == dataset_id, Grant.revoked_at.is_(None), Grant.expires_at > now)
            .order_by(Grant.granted_at)
        )
    )


def open_requests_of(session: Session, dataset_id: str) -> int:
    return int(
        session.scalar(
            sa.select(sa.func.count())
            .select_from(AccessRequest)
            .where(
                AccessRequest.dataset_id == dataset_id,
                AccessRequest.state.in_(("under_provider_review", "under_compliance_review")),
            )
        )
        or 0
    )
