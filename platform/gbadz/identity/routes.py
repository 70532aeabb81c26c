"""HTTP routes of identity: who am I, organisations and clients (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi import Path as FastPath

from gbadz.deps import ReadSession, WriteSession
from gbadz.errors import (
    BadRequest,
    Conflict,
    InsufficientScope,
    NotFound,
    Unauthenticated,
    Unprocessable,
    error_responses,
)
from gbadz.identity import people, service
from gbadz.identity.auth import Admin, Authenticated, actor_of, describe
from gbadz.identity.models import OAuthClient
from gbadz.identity.schemas import (
    ClientCreate,
    ClientRead,
    ClientSummary,
    Me,
    OrganizationCreate,
    OrganizationRead,
    PersonCreate,
    PersonRead,
)
from gbadz.identity.scopes import ROLE_SCOPES

# Client ids are ``gbz_`` and hex (the console's own has a name): anything else — a NUL byte,
# a pasted secret, 10 KB — is 422 before it reaches the database.
ClientId = Annotated[str, FastPath(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
#: Organisations and people have UUIDs.
RecordId = Annotated[str, FastPath(max_length=36, pattern=r"^[A-Za-z0-9-]+$")]
OrgFilter = Annotated[
    str | None, Query(max_length=36, pattern=r"^[A-Za-z0-9-]+$", description="only this organisation's")
]

router = APIRouter(
    prefix="/api/v1", tags=["identity"], responses=error_responses(Unauthenticated, InsufficientScope)
)


def _client_summary(client: OAuthClient) -> ClientSummary:
    return ClientSummary(
        client_id=client.client_id,
        org_id=client.org_id,
        role=client.role,
        name=client.name,
        auth_method=client.auth_method,
        scopes=sorted(ROLE_SCOPES[client.role]),
        created_at=client.created_at,
        revoked_at=client.revoked_at,
    )


def _client_read(client: OAuthClient, secret: str | None = None) -> ClientRead:
    return ClientRead(**_client_summary(client).model_dump(), client_secret=secret)


@router.get("/me", response_model=Me, summary="The calling principal")
async def me(principal: Authenticated) -> Me:
    return Me(**describe(principal))


@router.get("/organizations", response_model=list[OrganizationRead], summary="List organisations (admin)")
def list_organizations(principal: Admin, session: ReadSession) -> list[OrganizationRead]:
    return [OrganizationRead.model_validate(o) for o in service.list_organizations(session)]


@router.post(
    "/organizations",
    response_model=OrganizationRead,
    status_code=201,
    responses=error_responses(BadRequest, Conflict),
    summary="Register an organisation (admin)",
)
def create_organization(
    body: OrganizationCreate, principal: Admin, session: WriteSession
) -> OrganizationRead:
    org = service.create_organization(session, actor=actor_of(principal), **body.model_dump())
    return OrganizationRead.model_validate(org)


@router.post(
    "/organizations/{org_id}/disable",
    response_model=OrganizationRead,
    responses=error_responses(NotFound, Conflict),
    summary="Disable an organisation: its people and clients stop working at once (admin)",
)
def disable_organization(
    org_id: RecordId, principal: Admin, session: WriteSession, request: Request
) -> OrganizationRead:
    """Its tokens are refused from the next request; its grants, datasets and records stay."""
    org = service.disable_organization(
        session, actor=actor_of(principal), actor_org_id=principal.org_id, org_id=org_id
    )
    request.app.state.authenticator.revocations.invalidate()
    return OrganizationRead.model_validate(org)


@router.get(
    "/clients", response_model=list[ClientSummary], summary="List OAuth clients, never their secrets (admin)"
)
def list_clients(principal: Admin, session: ReadSession, org_id: OrgFilter = None) -> list[ClientSummary]:
    return [_client_summary(c) for c in service.list_clients(session, org_id)]


@router.post(
    "/clients",
    response_model=ClientRead,
    status_code=201,
    # 422: an administrator client for an organisation other than the zone's operator.
    responses=error_responses(BadRequest, NotFound, Conflict, Unprocessable),
    summary="Register an OAuth client for an organisation (admin); the secret is shown once",
)
def create_client(body: ClientCreate, principal: Admin, session: WriteSession) -> ClientRead:
    issued = service.create_client(session, actor=actor_of(principal), **body.model_dump())
    return _client_read(issued.client, issued.client_secret)


@router.post(
    "/clients/{client_id}/revoke",
    response_model=ClientRead,
    responses=error_responses(NotFound, Conflict),
    summary="Revoke a client: its credentials and every token it holds stop working (admin)",
)
def revoke_client(
    client_id: ClientId, principal: Admin, session: WriteSession, request: Request
) -> ClientRead:
    revoked = service.revoke_client(session, actor=actor_of(principal), client_id=client_id)
    request.app.state.authenticator.revocations.invalidate()
    return _client_read(revoked)


@router.get(
    "/people", response_model=list[PersonRead], summary="List people who sign in to the console (admin)"
)
def list_people(principal: Admin, session: ReadSession, org_id: OrgFilter = None) -> list[PersonRead]:
    return [PersonRead.model_validate(u) for u in people.list_users(session, org_id)]


@router.post(
    "/people",
    response_model=PersonRead,
    status_code=201,
    responses=error_responses(BadRequest, NotFound, Conflict),
    summary="Create a person with a first password the administrator sets (admin)",
)
def create_person(body: PersonCreate, principal: Admin, session: WriteSession) -> PersonRead:
    """The password is hashed (Argon2id) and never stored, logged, audited or sent back."""
    user = people.create_user(session, actor=actor_of(principal), **body.model_dump())
    return PersonRead.model_validate(user)


@router.post(
    "/people/{person_id}/disable",
    response_model=PersonRead,
    responses=error_responses(NotFound, Conflict),
    summary="Disable a person: their sessions and tokens stop working at once (admin)",
)
def disable_person(
    person_id: RecordId, principal: Admin, session: WriteSession, request: Request
) -> PersonRead:
    user = people.disable_person(
        session, actor=actor_of(principal), actor_subject=principal.subject, user_id=person_id
    )
    request.app.state.authenticator.revocations.invalidate()
    return PersonRead.model_validate(user)
