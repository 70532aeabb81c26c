"""The catalog database on both lanes: migrations, the audit table, clear connection errors."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gbadz import audit, db
from gbadz.config import DatabaseSettings
from gbadz.errors import ConfigurationError, DatabaseUnavailable
from gbadz.identity.models import Organization
from tests.api import Client, bearer, fetch_token, make_client
from tests.datasets import YAML, as_yaml, contract, org_name


class TestMigrations:
    def test_schema_is_at_head(self, engine: Engine) -> None:
        """After `upgrade`, the database is at the newest revision and readiness passes."""
        assert db.head_revision() == db.current_revision(engine)
        assert db.head_revision() == db.check_database(engine)

    def test_downgrade_and_upgrade_round_trip(self, fresh_database_url: str) -> None:
        """Every migration can be undone and re-applied (an empty database on the same lane)."""
        engine = db.create_engine(DatabaseSettings(url=fresh_database_url))
        assert db.current_revision(engine) is None
        db.upgrade(engine)
        db.downgrade(engine, "base")
        assert "audit_events" not in sa.inspect(engine).get_table_names()
        assert db.current_revision(engine) is None
        assert db.head_revision() == db.upgrade(engine)
        assert "audit_events" in sa.inspect(engine).get_table_names()
        engine.dispose()

    def test_unmigrated_database_is_not_ready(self, fresh_database_url: str) -> None:
        """A database without the schema is reported with the command that fixes it."""
        engine = db.create_engine(DatabaseSettings(url=fresh_database_url))
        with pytest.raises(DatabaseUnavailable, match="run `gbadz db upgrade`"):
            db.check_database(engine)
        engine.dispose()


class TestConnectionErrors:
    def test_unreachable_postgres(self) -> None:
        """An unreachable server is named (without its password) with the setting to fix."""
        engine = db.create_engine(
            DatabaseSettings(url="postgresql://gbadz:hunter2@127.0.0.1:1/gbadz", connect_timeout_s=2)
        )
        with pytest.raises(DatabaseUnavailable) as info:
            db.check_database(engine)
        message = info.value.detail
        assert "127.0.0.1:1" in message
        assert "GBADZ_DB__URL" in message
        assert "hunter2" not in message

    def test_sqlite_in_missing_directory(self) -> None:
        """A SQLite path that cannot be opened is a clear DatabaseUnavailable."""
        engine = db.create_engine(DatabaseSettings(url="sqlite:////nonexistent-dir/x/gbadz.db"))
        with pytest.raises(DatabaseUnavailable, match="unable to open database file"):
            db.check_database(engine)

    def test_no_url_configured(self) -> None:
        """No URL at all points the user at the setting and the embedded services."""
        with pytest.raises(ConfigurationError, match="GBADZ_DB__URL"):
            db.create_engine(DatabaseSettings(url=None))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # server sessions: PostgreSQL only
class TestDeadClients:
    def test_a_killed_client_waiting_on_a_lock_is_ended_while_the_lock_is_held(self, engine: Engine) -> None:
        """A process killed while its statement waits on a row lock (a replica queued at the
        transfer log's head) loses its server session within seconds, not when the lock frees."""
        url = engine.url.render_as_string(hide_password=False)
        waiter = (
            "import sys, sqlalchemy as sa\n"
            "from gbadz import db\n"
            "from gbadz.config import DatabaseSettings\n"
            "engine = db.create_engine(DatabaseSettings(url=sys.argv[1]))\n"
            "with engine.begin() as conn:\n"
            "    conn.execute(sa.text('UPDATE transfer_log_head SET size = size WHERE id = 1'))\n"
        )
        proc: subprocess.Popen[str] | None = None

        def backends() -> list[tuple[str, str | None]]:
            # The waiter's sessions, by the application name gbadz gives them (host/PID).
            assert proc is not None
            with engine.connect() as conn:
                return [
                    (row[0], row[1])
                    for row in conn.execute(
                        sa.text(
                            "SELECT state, wait_event_type FROM pg_stat_activity WHERE application_name LIKE :n"
                        ),
                        {"n": f"gbadz/%/{proc.pid}"},
                    )
                ]

        with engine.connect() as holder:
            holder.execute(sa.text("SELECT size FROM transfer_log_head WHERE id = 1 FOR UPDATE"))
            proc = subprocess.Popen(
                [sys.executable, "-c", waiter, url],
                env=os.environ | {"PYTHONPATH": "platform"},  # noqa: TID251 - PATH and friends
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                deadline = time.monotonic() + 60
                while [("active", "Lock")] != backends():
                    assert proc.poll() is None, proc.communicate()[1][-2000:]
                    assert time.monotonic() < deadline, "the waiter never queued"
                    time.sleep(0.1)
                proc.kill()
                proc.wait(10)
                deadline = time.monotonic() + 15
                while backends():
                    # Without the session settings the backend waits for the lock (forever here).
                    assert time.monotonic() < deadline, backends()
                    time.sleep(0.2)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
            holder.rollback()

    def test_what_the_url_sets_wins(self, engine: Engine) -> None:
        """An operator's ``options=-c name=value`` or ``application_name=`` in the URL is kept,
        not overwritten on connect; the other settings still apply."""
        query = dict(engine.url.query)
        query["options"] = f"{query.get('options', '')} -c client_connection_check_interval=5s".strip()
        query["application_name"] = "ops-tool"
        url = engine.url.set(query=query).render_as_string(hide_password=False)
        own = db.create_engine(DatabaseSettings(url=url))
        try:
            with own.connect() as conn:
                got = [
                    conn.execute(sa.text(f"SHOW {name}")).scalar_one()
                    for name in (
                        "client_connection_check_interval",
                        "application_name",
                        "tcp_keepalives_count",
                    )
                ]
        finally:
            own.dispose()
        assert ["5s", "ops-tool", "3"] == got

    def test_sessions_carry_the_dead_client_checks(self, engine: Engine) -> None:
        """Every pooled PostgreSQL session has the settings above, committed (not rolled back).
        Over TCP: PostgreSQL reports keepalives as 0 on a Unix socket, as the suite never uses."""
        with engine.connect() as conn:
            got = {name: conn.execute(sa.text(f"SHOW {name}")).scalar_one() for name in db.POSTGRES_SESSION}
        assert {
            "client_connection_check_interval": "2s",
            "tcp_keepalives_idle": "30",
            "tcp_keepalives_interval": "10",
            "tcp_keepalives_count": "3",
        } == got


class TestApplicationName:
    def test_the_application_name_fits_postgresql(self) -> None:
        """``gbadz/<host>/<pid>`` within PostgreSQL's 63 bytes, whatever the host's name."""
        name = db.application_name()
        assert name.startswith("gbadz/")
        assert name.endswith(f"/{os.getpid()}")
        assert len(name.encode()) <= 63


class TestAuditTrail:
    def test_record_and_read_back(self, session: Session) -> None:
        """An audit event is stored with its actor, action, subject, details and a UTC time."""
        before = datetime.now(UTC)
        audit.record(
            session,
            actor="org:sz-hospital",
            action="dataset.registered",
            subject_type="dataset",
            subject_id="ds-1",
            details={"version": 3, "note": "深圳"},
            request_id="req-1",
        )
        (event,) = audit.AuditRepository(session).for_subject("dataset", "ds-1")
        assert ("org:sz-hospital", "dataset.registered", {"version": 3, "note": "深圳"}, "req-1") == (
            event.actor,
            event.action,
            event.details,
            event.request_id,
        )
        assert event.occurred_at.tzinfo is not None
        assert before <= event.occurred_at <= datetime.now(UTC)

    def test_naive_datetimes_are_refused(self, session: Session) -> None:
        """A timestamp without a timezone cannot be stored (it would be ambiguous)."""
        event = audit.AuditEvent(
            actor="a",
            action="b",
            subject_type="c",
            subject_id="d",
            occurred_at=datetime(2026, 1, 1),  # noqa: DTZ001
        )
        session.add(event)
        with pytest.raises(sa.exc.StatementError, match="naive datetime"):
            session.flush()

    def test_detached_record_survives_rollback(self, engine: Engine) -> None:
        """A denial's audit event commits even when the request's own transaction rolls back."""
        factory = db.make_sessionmaker(engine)
        subject = f"denial-{datetime.now(UTC).timestamp()}"

        def denied_request() -> None:
            with db.session_scope(factory) as request_session:
                # The request looked things up, decided to deny, and records the denial detached.
                assert [] == audit.AuditRepository(request_session).for_subject("t", subject)
                audit.record_detached(
                    factory, actor="x", action="denied", subject_type="t", subject_id=subject
                )
                raise RuntimeError("request failed")

        with pytest.raises(RuntimeError):
            denied_request()
        with db.session_scope(factory) as check:
            actions = [e.action for e in audit.AuditRepository(check).for_subject("t", subject)]
        assert ["denied"] == actions

    def test_request_transaction_rolls_back_its_events(self, engine: Engine) -> None:
        """An event recorded in a failed request's transaction disappears with it."""
        factory = db.make_sessionmaker(engine)
        subject = f"rollback-{datetime.now(UTC).timestamp()}"

        def failed_request() -> None:
            with db.session_scope(factory) as request_session:
                audit.record(
                    request_session, actor="x", action="changed", subject_type="t", subject_id=subject
                )
                raise RuntimeError("request failed")

        with pytest.raises(RuntimeError):
            failed_request()
        with db.session_scope(factory) as check:
            assert [] == list(audit.AuditRepository(check).for_subject("t", subject))


class TestRequestTransaction:
    def test_a_write_whose_commit_fails_answers_an_error_not_success(
        self, app: FastAPI, clients: dict[str, Client]
    ) -> None:
        """The request's commit runs before the answer leaves: a failed commit is a 500, and nothing is kept."""
        http = TestClient(app, raise_server_exceptions=False)
        token = fetch_token(http, clients["admin"])
        name = f"commit-fails-{secrets.token_hex(4)}"

        def refuse(session: Session) -> None:
            if session.scalar(sa.select(Organization.id).where(Organization.name == name)) is not None:
                raise sa.exc.OperationalError("COMMIT", {}, Exception("disk full"))

        event.listen(Session, "before_commit", refuse)
        try:
            response = http.post(
                "/api/v1/organizations", json={"name": name, "jurisdiction": "HK"}, headers=bearer(token)
            )
        finally:
            event.remove(Session, "before_commit", refuse)
        assert 500 == response.status_code
        assert "InternalServerError" == response.json()["error"]
        with app.state.sessionmaker() as session:
            assert session.scalar(sa.select(Organization).where(Organization.name == name)) is None


class TestNulInText:
    @pytest.mark.parametrize(
        ("method", "url", "form", "field"),
        [
            ("GET", "/api/v1/datasets/a%00b", None, "id"),
        ],
    )
    def test_a_nul_is_refused_naming_the_value_on_both_databases(
        self,
        http: TestClient,
        clients: dict[str, Client],
        method: str,
        url: str,
        form: dict[str, str] | None,
        field: str,
    ) -> None:
        """Text with a NUL is 422 naming its column: PostgreSQL raised a DataError for it (a 500)."""
        headers = {} if form else bearer(fetch_token(http, clients["compliance_officer"]))
        response = http.request(method, url, data=form, headers=headers)
        assert 422 == response.status_code, response.text
        assert [
            {"loc": [field], "msg": "text may not contain a NUL character (U+0000)", "type": "string_nul"}
        ] == (response.json()["detail"])

    def test_a_nul_never_reaches_the_database_where_a_route_refuses_it_first(
        self, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """A client id no client can have is invalid_client; a filter with a control character is 422 naming it."""
        form = {"grant_type": "client_credentials", "client_id": "a\x00b", "client_secret": "x"}
        token = http.post("/oauth/token", data=form)
        assert (400, "invalid_client") == (token.status_code, token.json()["error"])
        headers = bearer(fetch_token(http, clients["compliance_officer"]))
        listed = http.get("/api/v1/transfers?dataset=a%00b", headers=headers)
        assert (422, ["query", "dataset"]) == (listed.status_code, listed.json()["detail"][0]["loc"])

    def test_nothing_is_written_when_one_value_holds_a_nul(
        self, app: FastAPI, http: TestClient, clients: dict[str, Client]
    ) -> None:
        """The refused statement never runs, and the request's transaction leaves no row behind."""
        prefix = f"nul-{secrets.token_hex(4)}"
        response = http.post(
            "/api/v1/organizations",
            json={"name": prefix + "\x00", "jurisdiction": "HK"},
            headers=bearer(fetch_token(http, clients["admin"])),
        )
        assert 422 == response.status_code, response.text
        assert "name" == response.json()["detail"][0]["loc"][-1]
        with app.state.sessionmaker() as session:
            stored = session.scalar(
                sa.select(sa.func.count())
                .select_from(Organization)
                .where(Organization.name.startswith(prefix))
            )
        assert 0 == stored

    def test_a_contract_with_a_nul_is_refused(self, app: FastAPI, http: TestClient) -> None:
        """A contract whose text holds a NUL (YAML's "\\0") is 422, not a PostgreSQL 500."""
        provider = make_client(app, "provider")
        doc = contract(f"t-{secrets.token_hex(5)}", org_name(app, provider.org_id), purpose_text="x\x00y")
        response = http.post(
            "/api/v1/datasets", content=as_yaml(doc), headers=bearer(fetch_token(http, provider)) | YAML
        )
        assert (422, "RequestValidationError") == (response.status_code, response.json()["error"]), (
            response.text
        )
