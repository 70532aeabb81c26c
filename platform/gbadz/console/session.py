"""Browser sessions of the console, kept server-side.

The cookie holds 256 random bits; the database holds their SHA-256, the person's id, the
CSRF token of the session and the person's current access token. A session ends at
``session_ttl_s`` after sign-in, after ``idle_ttl_s`` unused, at sign-out, or at once when
the person's account is disabled.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit
from gbadz.config import ConsoleSettings
from gbadz.console.models import ConsoleSession, PendingLogin
from gbadz.identity import people
from gbadz.identity.models import Organization, User

SESSION_COOKIE = "__Host-gbadz_session"
LOGIN_COOKIE = "__Host-gbadz_login"
LOGIN_TTL_S = 600
TOUCH_EVERY_S = 60


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def pkce_pair() -> tuple[str, str]:
    """A PKCE code verifier (43 characters) and its S256 challenge (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(32)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def safe_next(path: str | None) -> str:
    """A local path to return to after sign-in; anything else goes to the console's home."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/console/"
    return path[:500]


def start_login(sessions: sessionmaker[Session], next_path: str) -> tuple[str, str]:
    """Remember a sign-in: returns (state, code_challenge)."""
    state = secrets.token_urlsafe(32)
    verifier, challenge = pkce_pair()
    now = datetime.now(UTC)
    with sessions.begin() as session:
        session.execute(sa.delete(PendingLogin).where(PendingLogin.expires_at < now))
        session.add(
            PendingLogin(
                state_hash=digest(state),
                code_verifier=verifier,
                next_path=safe_next(next_path),
                expires_at=now + timedelta(seconds=LOGIN_TTL_S),
            )
        )
    return state, challenge


def take_login(sessions: sessionmaker[Session], state: str) -> PendingLogin | None:
    """The sign-in this state belongs to, consumed (a state works once)."""
    with sessions.begin() as session:
        row = session.get(PendingLogin, digest(state))
        if row is None:
            return None
        session.delete(row)
        session.flush()
        session.expunge(row)
    return row if row.expires_at > datetime.now(UTC) else None


@dataclass(frozen=True)
class Person:
    id: str
    username: str
    display_name: str
    org_id: str
    org_name: str
    role: str


@dataclass(frozen=True)
class Signed:
    """A signed-in browser, as a page handler sees it."""

    id_hash: str
    person: Person
    csrf: str
    token: str
    token_expires_at: datetime


def open_session(
    sessions: sessionmaker[Session], settings: ConsoleSettings, user_id: str, token: str, expires_in: int
) -> str:
    value = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        session.execute(sa.delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(
            ConsoleSession(
                id_hash=digest(value),
                user_id=user_id,
                csrf_token=secrets.token_urlsafe(32),
                access_token=token,
                token_expires_at=now + timedelta(seconds=expires_in),
                created_at=now,
                last_seen_at=now,
                expires_at=now + timedelta(seconds=settings.session_ttl_s),
            )
        )
    return value


def load(sessions: sessionmaker[Session], settings: ConsoleSettings, value: str | None) -> Signed | None:
    if not value or len(value) > 100:
        return None
    now = datetime.now(UTC)
    with sessions.begin() as session:
        row = session.get(ConsoleSession, digest(value))
        if row is None:
            return None
        user = session.get(User, row.user_id)
        idle = now - row.last_seen_at > timedelta(seconds=settings.idle_ttl_s)
        if row.expires_at <= now or idle or user is None or user.disabled_at is not None:
            session.delete(row)
            return None
        if now - row.last_seen_at > timedelta(seconds=TOUCH_EVERY_S):
            row.last_seen_at = now
        org = session.get(Organization, user.org_id)
        person = Person(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            org_id=user.org_id,
            org_name=org.name if org else user.org_id,
            role=user.role,
        )
        return Signed(row.id_hash, person, row.csrf_token, row.access_token, row.token_expires_at)


def replace_token(sessions: sessionmaker[Session], id_hash: str, token: str, expires_in: int) -> None:
    with sessions.begin() as session:
        row = session.get(ConsoleSession, id_hash)
        if row is not None:
            row.access_token = token
            row.token_expires_at = datetime.now(UTC) + timedelta(seconds=expires_in)


def close(sessions: sessionmaker[Session], id_hash: str, person: Person) -> None:
    with sessions.begin() as session:
        session.execute(sa.delete(ConsoleSession).where(ConsoleSession.id_hash == id_hash))
        audit.record(
            session,
            actor=f"user:{person.username}",
            action="user.signed_out",
            subject_type="user",
            subject_id=person.id,
        )


def user_id(sessions: sessionmaker[Session], subject: str) -> str:
    """The signed-in person's id for a token subject ``user:<name>``."""
    with sessions() as session:
        return str(people.id_of(session, subject))
