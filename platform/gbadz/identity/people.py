"""People who sign in to the console: accounts with Argon2id password hashes (admin operations, audited)."""

from __future__ import annotations

import functools
import re
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.orm import Session

from gbadz import audit
from gbadz.errors import BadRequest, Conflict, NotFound
from gbadz.identity.models import Organization, User
from gbadz.identity.service import active_organization, keep_an_administrator
from gbadz.models import utcnow

USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{2,63}$")
PEOPLE_ROLES = ("provider", "consumer", "compliance_officer", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 256
# Argon2id with the library's RFC 9106 "low memory" profile defaults (64 MiB, 3 passes).
_hasher = PasswordHasher()


@functools.cache
def _dummy_hash() -> str:
    """Verified when the username is unknown, so a miss costs what a wrong password costs."""
    return _hasher.hash("gbadz-dummy-password-for-timing")


def normalise_username(username: str) -> str:
    return username.strip().lower()


def create_user(
    session: Session,
    *,
    actor: str,
    org_id: str,
    username: str,
    display_name: str,
    role: str,
    password: str,
) -> User:
    name = normalise_username(username)
    if not USERNAME.match(name):
        raise BadRequest(
            "username: 3-64 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
            field="username",
        )
    display = display_name.strip()
    if not display or len(display) > 200:
        raise BadRequest("display_name: must be 1-200 characters", field="display_name")
    if role not in PEOPLE_ROLES:
        raise BadRequest(f"role: people sign in as one of {', '.join(PEOPLE_ROLES)}", field="role")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise BadRequest(f"password: must be {MIN_PASSWORD}-{MAX_PASSWORD} characters", field="password")
    org = active_organization(session, org_id)
    if role == "admin" and not org.operator:
        raise BadRequest(
            "role: only people of the zone's operator organisation may be administrators", field="role"
        )
    if session.scalar(sa.select(User.id).where(User.username == name)):
        raise Conflict(f"a user named {name!r} already exists")
    user = User(
        id=str(uuid.uuid4()),
        username=name,
        display_name=display,
        org_id=org.id,
        role=role,
        password_hash=_hasher.hash(password),
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="user.created",
        subject_type="user",
        subject_id=user.id,
        details={"username": name, "org_id": org.id, "role": role},
    )
    return user


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this username and password, else None (same cost either way)."""
    if len(password) > MAX_PASSWORD:
        return None
    user = session.scalar(sa.select(User).where(User.username == normalise_username(username)))
    try:
        _hasher.verify(user.password_hash if user else _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled_at is not None:
        return None
    org = session.get(Organization, user.org_id)
    if org is None or org.disabled_at is not None:
        return None
    return user


def list_users(session: Session, org_id: str | None = None) -> Sequence[User]:
    query = sa.select(User).order_by(User.username)
    if org_id is not None:
        query = query.where(User.org_id == org_id)
    return session.scalars(query).all()


def disable_user(session: Session, *, actor: str, username: str) -> User:
    user = session.scalar(sa.select(User).where(User.username == normalise_username(username)))
    if user is None:
        raise NotFound(f"no user named {username!r}")
    if user.disabled_at is None:
        keep_an_administrator(session, without_user=user.id)
        user.disabled_at = utcnow()
        audit.record(session, actor=actor, action="user.disabled", subject_type="user", subject_id=user.id)
    return user


def disable_person(session: Session, *, actor: str, actor_subject: str, user_id: str) -> User:
    """Disable a person by id (the API's way): 404 if there is none, 409 if already disabled or
    if it is the caller (an administrator who locks themselves out cannot undo it)."""
    user = session.get(User, user_id)
    if user is None:
        raise NotFound(f"person {user_id} not found")
    if user.disabled_at is not None:
        raise Conflict(f"person {user_id} was already disabled at {user.disabled_at.isoformat()}")
    if actor_subject == f"user:{user.username}":
        raise Conflict("an administrator cannot disable their own account")
    keep_an_administrator(session, without_user=user.id)
    user.disabled_at = utcnow()
    session.flush()
    audit.record(session, actor=actor, action="user.disabled", subject_type="user", subject_id=user.id)
    return user


def id_of(session: Session, subject: str) -> str | None:
    """The person's id for a token subject ``user:<name>`` (None if there is no such person)."""
    return session.scalar(sa.select(User.id).where(User.username == subject.removeprefix("user:")))
