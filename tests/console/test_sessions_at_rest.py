"""Issue #20 item 7: what a reader of the database file finds of signed-in people (nothing replayable)."""

from __future__ import annotations

import re
import secrets
import sqlite3
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import db
from gbadz.app import create_app
from gbadz.config import DatabaseSettings, OAuthSettings, Settings
from gbadz.console.session import SESSION_COOKIE, digest
from gbadz.identity import people
from tests.console.conftest import BASE
from tests.console.world import World

JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
SignedIn = Callable[[str], TestClient]


def _sqlite_path(app: FastAPI) -> Path | None:
    url = app.state.settings.db.url
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


class TestNothingReplayableAtRest:
    @pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # the embedded file is SQLite's
    def test_the_database_file_holds_no_bearer_token_or_session_id(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Read as a local attacker would (sqlite3 on the file, and its raw bytes): no JWT, no cookie value."""
        path = _sqlite_path(app)
        assert path is not None
        browser = signed_in("compliance_officer")
        assert 200 == browser.get("/console/compliance").status_code
        cookie = browser.cookies[SESSION_COOKIE]
        reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            dump = "\n".join(reader.iterdump()).encode()
            columns = [row[1] for row in reader.execute("PRAGMA table_info(console_sessions)")]
        finally:
            reader.close()
        assert [] == JWT.findall(dump)
        assert cookie.encode() not in dump
        assert digest(cookie).encode() in dump  # the session is there, by hash only
        assert "access_token" not in columns
        raw = b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())
        assert [] == JWT.findall(raw)
        assert cookie.encode() not in raw
        # ...and the session still works, minting its token in memory.
        assert 200 == browser.get("/console/compliance/transfers").status_code

    def test_a_token_is_minted_again_after_a_restart(
        self, app: FastAPI, world: World, signed_in: SignedIn
    ) -> None:
        """Another process (a replica, a restart) serves the same session with a token of its own."""
        browser = signed_in("consumer")
        assert 200 == browser.get("/console/catalog").status_code
        other = create_app(app.state.settings)
        with TestClient(other, base_url=BASE, follow_redirects=False) as replica:
            replica.cookies.set(SESSION_COOKIE, browser.cookies[SESSION_COOKIE])
            assert 200 == replica.get("/console/catalog").status_code


class TestUpgradeClosesStoredSessions:
    def test_sessions_holding_tokens_end_and_their_tokens_are_revoked(
        self, fresh_database_url: str, settings: Settings
    ) -> None:
        """Upgrading from 0010: stored sessions are closed (sign in again) and their tokens refused."""
        engine = db.create_engine(DatabaseSettings(url=fresh_database_url))
        db.upgrade(engine, "0010")
        upgraded = settings.model_copy(
            update={"db": DatabaseSettings(url=fresh_database_url), "oauth": OAuthSettings(issuer=BASE)}
        )
        app = create_app(upgraded)
        # Rows as 0010 stored them, in its own columns (the ORM's are the latest schema's).
        user_id, org_id = str(uuid.uuid4()), str(uuid.uuid4())
        with engine.begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO organizations (id, name, jurisdiction, gba_registered, ciio, created_at)"
                    " VALUES (:o, 'old-org', 'HK', false, false, :n)"
                ),
                {"o": org_id, "n": datetime.now(UTC)},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO users (id, username, display_name, org_id, role, password_hash, created_at)"
                    " VALUES (:u, 'officer.old', 'Old Officer', :o, 'compliance_officer', :p, :n)"
                ),
                {
                    "u": user_id,
                    "o": org_id,
                    "p": people._hasher.hash(secrets.token_urlsafe(16)),
                    "n": datetime.now(UTC),
                },
            )
        token = app.state.authorization_server.person_token_for("officer.old", org_id, "compliance_officer")
        cookie = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        with engine.begin() as conn:  # a session row as 0010 stored it: the bearer token in clear
            conn.execute(
                sa.text(
                    "INSERT INTO console_sessions (id_hash, user_id, csrf_token, access_token, token_expires_at,"
                    " created_at, last_seen_at, expires_at) VALUES (:h, :u, 'c', :t, :te, :n, :n, :e)"
                ),
                {
                    "h": digest(cookie),
                    "u": user_id,
                    "t": token["access_token"],
                    "te": now + timedelta(seconds=900),
                    "n": now,
                    "e": now + timedelta(hours=8),
                },
            )
        db.upgrade(engine)
        with engine.connect() as conn:
            assert 0 == conn.execute(sa.text("SELECT count(*) FROM console_sessions")).scalar_one()
        app = create_app(upgraded)
        with TestClient(app, base_url=BASE, follow_redirects=False) as browser:
            browser.cookies.set(SESSION_COOKIE, cookie)
            page = browser.get("/console/compliance")
            assert 303 == page.status_code, page.text
            assert page.headers["location"].startswith("/console/login")
            stolen = browser.get("/api/v1/me", headers={"Authorization": f"Bearer {token['access_token']}"})
            assert 401 == stolen.status_code
        engine.dispose()
