"""Browser sessions of the console, kept server-side.

The cookie holds 256 random bits; the database holds their SHA-256, the person's id and the
CSRF token of the session, nothing a reader of the database file could replay (issue #20 item
7). The person's access token is never stored: each API process mints one from the live
session when it first needs it and keeps it in memory (:class:`SessionTokens`) until shortly
before it expires. A session ends at ``session_ttl_s`` after sign-in, after ``idle_ttl_s``
unused, at sign-out, or at once when the person's account is disabled.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
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
NO_TOKEN_EXPIRY = datetime.min.replace(tzinfo=UTC)


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
    """A signed-in browser, as a page handler sees it (``token`` is filled from :class:`SessionTokens`)."""

    id_hash: str
    person: Person
    csrf: str
    token: str = ""
    token_expires_at: datetime = NO_TOKEN_EXPIRY


class SessionTokens:
    """Access tokens of live sessions, in this process's memory only, by the session's id hash.

    Only consulted after the session row was loaded and found live, so a session closed or
    expired on any replica gets no token here. Bounded: when full, it forgets everything and
    tokens are minted again (about 0.4 ms each).
    """

    LIMIT = 10_000
    MARGIN = timedelta(seconds=60)

    def __init__(self) -> None:
        self._tokens: dict[str, tuple[str, datetime]] = {}
        self._lock = threading.Lock()

    def get(self, id_hash: str) -> tuple[str, datetime] | None:
        entry = self._tokens.get(id_hash)
        if entry is None or entry[1] - datetime.now(UTC) < self.MARGIN:
            return None
        return entry

    def put(self, id_hash: str, token: str, expires_in: int) -> tuple[str, datetime]:
        entry = (token, datetime.now(UTC) + timedelta(seconds=expires_in))
        with self._lock:
            if len(self._tokens) >= self.LIMIT:
                self._tokens.clear()
            self._tokens[id_hash] = entry
        return entry

    def forget(self, id_hash: str) -> None:
        with self._lock:
            self._tokens.pop(id_hash, None)


def open_session(sessions: sessionmaker[Session], settings: ConsoleSettings, user_id: str) -> str:
    value = secrets.token_urlsafe(32)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        session.execute(sa.delete(ConsoleSession).where(ConsoleSession.expires_at < now))
        session.add(
            ConsoleSession(
                id_hash=digest(value),
                user_id=user_id,
                csrf_token=secrets.token_urlsafe(32),
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
        org = session.get(Organization, user.org_id) if user is not None else None
        if (
            row.expires_at <= now
            or idle
            or user is None
            or user.disabled_at is not None
            or org is None
            or org.disabled_at is not None  # its people's sessions end with it (issue #19)
        ):
            session.delete(row)
            return None
        if now - row.last_seen_at > timedelta(seconds=TOUCH_EVERY_S):
            row.last_seen_at = now
        person = Person(
            id=user.id,
            username=user.username,
            display_name=user.display_name,
            org_id=user.org_id,
            org_name=org.name,
            role=user.role,
        )
        return Signed(row.id_hash, person, row.csrf_token)


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
