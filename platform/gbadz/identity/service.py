"""Use cases of identity: organisations and their OAuth clients (admin operations, audited)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz import audit
from gbadz.errors import BadRequest, Conflict, NotFound, Unprocessable
from gbadz.identity.models import OAuthClient, Organization, User
from gbadz.identity.scopes import ROLE_SCOPES, check_role
from gbadz.models import utcnow
from gbadz.vocabulary import REGIME_OF, check_jurisdiction

AUTH_METHODS = ("client_secret", "private_key_jwt")


def hash_secret(salt: str, secret: str) -> str:
    # Client secrets are 256-bit random values, so a salted SHA-256 resists offline guessing
    # as well as a slow KDF would, and keeps the token endpoint fast.
    return hashlib.sha256(f"{salt}:{secret}".encode()).hexdigest()


def secret_matches(client: OAuthClient, secret: str) -> bool:
    if client.secret_salt is None or client.secret_hash is None:
        return False
    return hmac.compare_digest(client.secret_hash, hash_secret(client.secret_salt, secret))


def create_organization(
    session: Session,
    *,
    actor: str,
    name: str,
    jurisdiction: str,
    registration_no: str | None = None,
    gba_registered: bool = False,
    ciio: bool = False,
    operator: bool = False,
) -> Organization:
    name = name.strip()
    if not name or len(name) > 300:
        raise BadRequest("name: must be 1-300 characters", field="name")
    try:
        check_jurisdiction(jurisdiction)
    except ValueError as exc:
        raise BadRequest(f"jurisdiction: {exc}", field="jurisdiction") from None
    if session.scalar(sa.select(Organization.id).where(Organization.name == name)):
        raise Conflict(f"an organisation named {name!r} already exists")
    org = Organization(
        id=str(uuid.uuid4()),
        name=name,
        jurisdiction=jurisdiction,
        registration_no=registration_no,
        gba_registered=gba_registered,
        ciio=ciio,
        operator=operator,
    )
    session.add(org)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="organization.created",
        subject_type="organization",
        subject_id=org.id,
        details={
            "name": name,
            "jurisdiction": jurisdiction,
            "gba_registered": gba_registered,
            "ciio": ciio,
            "operator": operator,
        },
    )
    return org


def list_organizations(session: Session) -> Sequence[Organization]:
    return session.scalars(sa.select(Organization).order_by(Organization.name)).all()


def get_organization(session: Session, org_id: str) -> Organization:
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound(f"organisation {org_id} not found")
    return org


def active_organization(session: Session, org_id: str, field: str = "org_id") -> Organization:
    """The organisation, for adding a client or a person to it: missing is 404, disabled is 409."""
    org = get_organization(session, org_id)
    if org.disabled_at is not None:
        raise Conflict(f"{field}: organisation {org_id} is disabled", field=field)
    return org


def disable_organization(session: Session, *, actor: str, actor_org_id: str, org_id: str) -> Organization:
    """Disable an organisation: its people and clients stop working at once (the resource server's
    revocation view reads ``disabled_at``); its grants, datasets and records are left as they are.

    An administrator cannot disable their own organisation (nobody would be left to undo it)."""
    org = get_organization(session, org_id)
    if org.disabled_at is not None:
        raise Conflict(f"organisation {org_id} was already disabled at {org.disabled_at.isoformat()}")
    if org.id == actor_org_id:
        raise Conflict("org_id: an administrator cannot disable their own organisation", field="org_id")
    keep_an_administrator(session, without_org=org.id)
    org.disabled_at = utcnow()
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="organization.disabled",
        subject_type="organization",
        subject_id=org.id,
    )
    return org


def active_administrators(
    session: Session, *, without_org: str | None = None, without_user: str | None = None
) -> int:
    """Active administrator people of active operator organisations (leaving one out, if asked)."""
    query = (
        sa.select(sa.func.count())
        .select_from(User)
        .join(Organization, Organization.id == User.org_id)
        .where(
            User.role == "admin",
            User.disabled_at.is_(None),
            Organization.operator.is_(True),
            Organization.disabled_at.is_(None),
        )
    )
    if without_org is not None:
        query = query.where(Organization.id != without_org)
    if without_user is not None:
        query = query.where(User.id != without_user)
    return int(session.scalar(query) or 0)


def keep_an_administrator(
    session: Session, *, without_org: str | None = None, without_user: str | None = None
) -> None:
    """Refuse (409) a disable that would leave no active administrator person of an operator
    organisation: nobody could then sign in to undo it."""
    if active_administrators(session) and not active_administrators(
        session, without_org=without_org, without_user=without_user
    ):
        field = "org_id" if without_org is not None else "user_id"
        raise Conflict(
            f"{field}: this would leave no active administrator of the operator organisation; "
            "make another administrator first",
            field=field,
        )


def disabled_organizations(session: Session) -> frozenset[str]:
    return frozenset(session.scalars(sa.select(Organization.id).where(Organization.disabled_at.is_not(None))))


def list_clients(session: Session, org_id: str | None = None) -> Sequence[OAuthClient]:
    query = sa.select(OAuthClient).order_by(OAuthClient.created_at.desc(), OAuthClient.client_id)
    if org_id is not None:
        query = query.where(OAuthClient.org_id == org_id)
    return session.scalars(query).all()


@dataclass(frozen=True)
class IssuedClient:
    client: OAuthClient
    client_secret: str | None


def create_client(
    session: Session,
    *,
    actor: str,
    org_id: str,
    role: str,
    auth_method: str = "client_secret",
    jwks: dict[str, Any] | None = None,
    name: str | None = None,
) -> IssuedClient:
    try:
        check_role(role)
    except ValueError as exc:
        raise BadRequest(f"role: {exc}", field="role") from None
    if auth_method not in AUTH_METHODS:
        raise BadRequest(f"auth_method: use one of {', '.join(AUTH_METHODS)}", field="auth_method")
    if auth_method == "private_key_jwt" and not (
        jwks and isinstance(jwks.get("keys"), list) and jwks["keys"]
    ):
        raise BadRequest(
            "jwks: private_key_jwt clients must register a JWKS with at least one public key", field="jwks"
        )
    if jwks and any("d" in key for key in jwks.get("keys", [])):
        raise BadRequest("jwks: register public keys only (a key with 'd' is a private key)", field="jwks")
    if jwks:
        from joserfc.errors import JoseError
        from joserfc.jwk import KeySet

        try:
            KeySet.import_key_set(jwks)  # type: ignore[arg-type]
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise BadRequest(f"jwks: not a usable JSON Web Key Set ({exc})", field="jwks") from None
    label = (name or "").strip() or None
    if label is not None and len(label) > 100:
        raise BadRequest("name: at most 100 characters", field="name")
    org = active_organization(session, org_id)
    if role == "admin" and not org.operator:
        raise Unprocessable(
            "role: only clients of the zone's operator organisation may be administrators", field="role"
        )
    client_id = "gbz_" + secrets.token_hex(12)
    secret = salt = digest = None
    if auth_method == "client_secret":
        secret = secrets.token_urlsafe(32)
        salt = secrets.token_hex(16)
        digest = hash_secret(salt, secret)
    client = OAuthClient(
        client_id=client_id,
        org_id=org.id,
        role=role,
        name=label,
        auth_method=auth_method,
        secret_salt=salt,
        secret_hash=digest,
        jwks=jwks if auth_method == "private_key_jwt" else None,
    )
    session.add(client)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="client.created",
        subject_type="oauth_client",
        subject_id=client_id,
        details={
            "org_id": org.id,
            "role": role,
            "auth_method": auth_method,
            "scopes": sorted(ROLE_SCOPES[role]),
        },
    )
    return IssuedClient(client, secret)


def revoke_client(session: Session, *, actor: str, client_id: str) -> OAuthClient:
    client = session.get(OAuthClient, client_id)
    if client is None:
        raise NotFound(f"client {client_id} not found")
    if client.revoked_at is not None:
        raise Conflict(f"client {client_id} was already revoked at {client.revoked_at.isoformat()}")
    client.revoked_at = utcnow()
    session.flush()
    audit.record(
        session, actor=actor, action="client.revoked", subject_type="oauth_client", subject_id=client_id
    )
    return client


@dataclass(frozen=True)
class Viewer:
    """Whoever reads the catalog or asks for data: their organisation and its registered jurisdiction."""

    org_id: str
    jurisdiction: str  # OTHER for organisations we do not know (e.g. an external issuer's)

    @property
    def regime(self) -> str:
        return REGIME_OF.get(self.jurisdiction, "elsewhere")


def viewer_for(session: Session, org_id: str) -> Viewer:
    org = session.get(Organization, org_id)
    return Viewer(org_id, org.jurisdiction if org is not None else "OTHER")


class Viewers:
    """Each calling organisation's registered jurisdiction, cached: an organisation never changes jurisdiction."""

    LIMIT = 100_000

    def __init__(self) -> None:
        self._jurisdictions: dict[str, str] = {}

    def known(self, org_id: str) -> Viewer | None:
        jurisdiction = self._jurisdictions.get(org_id)
        return Viewer(org_id, jurisdiction) if jurisdiction is not None else None

    def of(self, session: Session, org_id: str) -> Viewer:
        viewer = self.known(org_id)
        if viewer is None:
            viewer = viewer_for(session, org_id)
            if len(self._jurisdictions) > self.LIMIT:
                self._jurisdictions.clear()
            self._jurisdictions[org_id] = viewer.jurisdiction
        return viewer
