"""HTTP routes of identity: who am I, organisations and clients (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Request
from fastapi import Path as FastPath

from gbadz.deps import ReadSession, WriteSession
from gbadz.errors import BadRequest, Conflict, InsufficientScope, NotFound, Unauthenticated, error_responses
from gbadz.identity import service
from gbadz.identity.auth import Admin, Authenticated, actor_of, describe
from gbadz.identity.models import OAuthClient
from gbadz.identity.schemas import ClientCreate, ClientRead, Me, OrganizationCreate, OrganizationRead
from gbadz.identity.scopes import ROLE_SCOPES

# Client ids are ``gbz_`` and hex (the console's own has a name): anything else — a NUL byte,
# a pasted secret, 10 KB — is 422 before it reaches the database.
ClientId = Annotated[str, FastPath(max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]

router = APIRouter(
    prefix="/api/v1", tags=["identity"], responses=error_responses(Unauthenticated, InsufficientScope)
)


def _client_read(client: OAuthClient, secret: str | None = None) -> ClientRead:
    return ClientRead(
        client_id=client.client_id,
        org_id=client.org_id,
        role=client.role,
        auth_method=client.auth_method,
        scopes=sorted(ROLE_SCOPES[client.role]),
        created_at=client.created_at,
        revoked_at=client.revoked_at,
        client_secret=secret,
    )


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
    "/clients",
    response_model=ClientRead,
    status_code=201,
    responses=error_responses(BadRequest, NotFound),
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
