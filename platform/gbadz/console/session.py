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
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import ORMExecuteState, Session, sessionmaker

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


@dataclass(frozen=True, slots=True)
class _Live:
    signed: Signed
    read_at: float  # monotonic
    expires_at: datetime
    touch_by: datetime  # when the row's last_seen_at must be written again


class LiveSessions:
    """Sessions just read from the database and found live, in this process's memory, by id hash.

    A page asks for its session on every request; reading it (session, person, organisation in
    one transaction, in a worker thread) cost about as much as the API call the page makes
    (issue #19). A session read less than ``ttl_s`` ago is taken from here, unless it has expired
    or its row is due to be touched (``TOUCH_EVERY_S``), which only the database read does.

    What ends a session ends it here too: sign-out forgets it at once; a commit through
    :meth:`watch`'s sessionmaker that changes or deletes a person or a console session (disabling
    a person, closing sessions) forgets every session at once; a change made by another process
    (another replica, the CLI) is seen within ``ttl_s``, which the app sets to the revocation
    refresher's interval: a disabled person's console session ends when their tokens do.
    """

    LIMIT = 10_000
    CHANGED = "console_sessions_changed"  # session.info flag, set at flush, acted on at commit

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self._live: dict[str, _Live] = {}
        self._lock = threading.Lock()
        # When something was last forgotten: a read that started before it may have seen the
        # row as it was, so what it found is not kept (a sign-out racing a page's read).
        self._forgot_at = -1e9
        self._rereading: set[str] = set()

    def get(self, id_hash: str) -> Signed | None:
        live = self._live.get(id_hash)
        if live is None:
            return None
        if time.monotonic() - live.read_at >= self.ttl_s or datetime.now(UTC) >= min(
            live.expires_at, live.touch_by
        ):
            with self._lock:  # due for a read, not ended: reads under way may still be kept
                if self._live.get(id_hash) is live:
                    del self._live[id_hash]
            return None
        return live.signed

    def due(self, id_hash: str) -> bool:
        """Whether a remembered session is past half its time here and nobody re-reads it yet:
        the caller re-reads it in the background (and says so by being told True once), so that
        pages keep finding it in memory instead of all waiting for a read when it runs out."""
        live = self._live.get(id_hash)
        if live is None or time.monotonic() - live.read_at < self.ttl_s / 2:
            return False
        with self._lock:
            if id_hash in self._rereading:
                return False
            self._rereading.add(id_hash)
        return True

    def reread(self, id_hash: str) -> None:
        """A background re-read finished (whatever it found)."""
        with self._lock:
            self._rereading.discard(id_hash)

    def put(self, signed: Signed, read_at: float, expires_at: datetime, last_seen_at: datetime) -> None:
        touch_by = last_seen_at + timedelta(seconds=TOUCH_EVERY_S)
        with self._lock:
            if read_at <= self._forgot_at:
                return
            if len(self._live) >= self.LIMIT:
                self._live.clear()
            self._live[signed.id_hash] = _Live(signed, read_at, expires_at, touch_by)

    def forget(self, id_hash: str) -> None:
        with self._lock:
            self._forgot_at = time.monotonic()
            self._live.pop(id_hash, None)

    def clear(self) -> None:
        with self._lock:
            self._forgot_at = time.monotonic()
            self._live.clear()

    def forget_person(self, user_id: str) -> None:
        with self._lock:
            self._forgot_at = time.monotonic()
            for id_hash in [h for h, live in self._live.items() if live.signed.person.id == user_id]:
                del self._live[id_hash]

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Forget what a transaction of ``sessions`` changed or deleted when it commits: a console
        session (by its id), a person (their sessions), or, for a bulk UPDATE or DELETE of either
        table, every session."""

        def changed(session: Session) -> set[tuple[str, str]]:
            marks: set[tuple[str, str]] = session.info.setdefault(self.CHANGED, set())
            return marks

        def after_flush(session: Session, _context: object) -> None:
            for obj in (*session.dirty, *session.deleted):
                if isinstance(obj, ConsoleSession):
                    changed(session).add(("session", obj.id_hash))
                elif isinstance(obj, User):
                    changed(session).add(("person", obj.id))

        def do_orm_execute(state: ORMExecuteState) -> None:
            if (state.is_update or state.is_delete) and any(
                m.class_ in (User, ConsoleSession) for m in state.all_mappers
            ):
                changed(state.session).add(("all", ""))

        def after_commit(session: Session) -> None:
            for kind, key in session.info.pop(self.CHANGED, ()):
                if kind == "all":
                    self.clear()
                elif kind == "person":
                    self.forget_person(key)
                else:
                    self.forget(key)

        def after_soft_rollback(session: Session, _previous: object) -> None:
            session.info.pop(self.CHANGED, None)

        sa.event.listen(sessions, "after_flush", after_flush)
        sa.event.listen(sessions, "do_orm_execute", do_orm_execute)
        sa.event.listen(sessions, "after_commit", after_commit)
        sa.event.listen(sessions, "after_soft_rollback", after_soft_rollback)


def remembered(live: LiveSessions, value: str | None) -> Signed | None:
    """The session of this cookie value if it was read and found live moments ago (no database)."""
    if not value or len(value) > 100:
        return None
    return live.get(digest(value))


def load(
    sessions: sessionmaker[Session],
    settings: ConsoleSettings,
    value: str | None,
    live: LiveSessions | None = None,
) -> Signed | None:
    """The live session of this cookie value, or None (an ended session's row is deleted).

    With ``live``, the session read is kept there for :func:`remembered`."""
    if not value or len(value) > 100:
        return None
    id_hash = digest(value)
    read_at = time.monotonic()
    now = datetime.now(UTC)
    with sessions.begin() as session:
        row = session.get(ConsoleSession, id_hash)
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
        signed = Signed(row.id_hash, person, row.csrf_token)
        expires_at, last_seen_at = row.expires_at, row.last_seen_at
    if live is not None:
        live.put(signed, read_at, expires_at, last_seen_at)
    return signed


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
