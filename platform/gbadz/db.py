"""Engines, sessions and migrations for SQLite (embedded) and PostgreSQL (production).

One unit of work is one transaction, opened one way per context (ADR 0004):

- an API request: :func:`write_session` (``gbadz.deps.WriteSession`` in a route's signature)
  commits once when the route function returns, before the response is sent, and rolls back
  on any error; :func:`read_session` (``ReadSession``) only reads. The FastAPI aliases live in
  ``gbadz.deps`` so that the CLI, which imports this module, does not pay for FastAPI's
  import (about 0.3 s a command);
- a CLI command, an Airflow task or the demo: :func:`session_scope`;
- a background loop in the API process: :func:`gbadz.background.every` runs work that opens
  its own session;
- a use case that must be durable before it acts (a delivery's log entry before its URLs):
  the service takes the sessionmaker and uses :func:`session_scope`.

Services ``flush()``; they never ``commit()``. Route modules never open a transaction or
issue SQL (``tests/test_layers.py``).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from importlib import resources
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from fastapi.exceptions import RequestValidationError
from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from gbadz.config import DatabaseSettings
from gbadz.errors import ConfigurationError, DatabaseUnavailable

if TYPE_CHECKING:
    from alembic.config import Config

# Alembic is imported inside the functions that migrate: it costs about 0.5 s at start-up,
# which every CLI command and API worker would otherwise pay.


def normalise_url(url: str) -> str:
    """Use psycopg 3 for PostgreSQL whatever spelling the operator used."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def describe_url(url: str) -> str:
    """The URL with its password hidden, safe to print and log."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparseable database URL>"


def create_engine(settings: DatabaseSettings) -> Engine:
    if settings.url is None:
        raise ConfigurationError(
            "no database configured: set GBADZ_DB__URL or run `gbadz services up` for the embedded SQLite"
        )
    url = normalise_url(settings.url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ConfigurationError(f"GBADZ_DB__URL is not a database URL: {exc}") from None
    timeout = settings.connect_timeout_s
    if parsed.get_backend_name() == "sqlite":
        # More connections than the API's 40 worker threads: a request never waits for one.
        pool: dict[str, Any] = {}
        if parsed.database not in (None, "", ":memory:"):
            pool = {"pool_size": 10, "max_overflow": 40}
        engine = sa.create_engine(
            url, connect_args={"check_same_thread": False, "timeout": max(timeout, 5.0)}, **pool
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        url,
        pool_pre_ping=True,
        pool_size=10,
        max_overflow=20,
        connect_args={"connect_timeout": max(1, round(timeout))},
    )


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit at the end, roll back on error."""
    with factory.begin() as session:
        yield session


async def write_session(request: Request) -> AsyncIterator[Session]:
    """One request, one transaction (ADR 0004).

    An async dependency on purpose: the session connects lazily inside the route's worker
    thread, and commit/close run here on the event loop. A sync generator dependency would
    need a second worker thread to release its connection, and under load every worker can
    be waiting for a pooled connection that only such a release would free (a deadlock
    until the pool times out).
    """
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


async def read_session(request: Request) -> AsyncIterator[Session]:
    """A session for one request that only reads, released on the event loop (see ``write_session``)."""
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


def _alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("gbadz") / "migrations"))
    # ConfigParser interpolates "%": escape it (URLs carry percent-encoded options).
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(resources.files("gbadz") / "migrations"))
    head = script.get_current_head()
    if head is None:  # pragma: no cover - the package always ships migrations
        raise ConfigurationError("the gbadz package ships no migrations")
    return head


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with _connect(engine) as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str:
    """Apply migrations up to ``revision`` and return the revision the database is at."""
    from alembic import command

    cfg = _alembic_config(engine)
    with _connect(engine) as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine) or "base"


def downgrade(engine: Engine, revision: str = "base") -> None:
    from alembic import command

    cfg = _alembic_config(engine)
    with _connect(engine) as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


@contextmanager
def _connect(engine: Engine) -> Iterator[sa.Connection]:
    try:
        conn = engine.connect()
    except (OperationalError, DBAPIError) as exc:
        raise DatabaseUnavailable(_explain(engine, exc)) from None
    with conn:
        yield conn


def _explain(engine: Engine, exc: DBAPIError) -> str:
    reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
    where = describe_url(engine.url.render_as_string(hide_password=False))
    return (
        f"cannot connect to the database {where}: {reason}; "
        "check GBADZ_DB__URL and that the server is running"
    )


def check_database(engine: Engine) -> str:
    """Fail with :class:`DatabaseUnavailable` unless the database answers and its schema is current."""
    from alembic.runtime.migration import MigrationContext

    try:
        with _connect(engine) as conn:
            conn.execute(sa.text("SELECT 1"))
            current = MigrationContext.configure(conn).get_current_revision()
    except DBAPIError as exc:
        raise DatabaseUnavailable(_explain(engine, exc)) from None
    head = head_revision()
    if current != head:
        raise DatabaseUnavailable(
            f"database schema is at {current or 'no revision'}, expected {head}: run `gbadz db upgrade`"
        )
    return current


_BIND_SUFFIX = re.compile(r"_\d+$")


@event.listens_for(Engine, "before_cursor_execute")
def _refuse_nul(
    _conn: Any, _cursor: Any, _statement: str, parameters: Any, context: Any, executemany: bool
) -> None:
    """Refuse a NUL in any text bound to a statement, naming its column: PostgreSQL raised a DataError
    for it (a 500 on any route that stores or looks up such a value; found by tests/test_fuzz_api.py),
    and SQLite would keep what PostgreSQL refuses, so both refuse it here, before the statement runs."""
    rows = parameters if executemany else [parameters]
    positions = getattr(getattr(context, "compiled", None), "positiontup", None) or []
    for row in rows:
        items = row.items() if isinstance(row, dict) else zip(positions, row or (), strict=False)
        for name, value in items:
            if isinstance(value, str) and "\x00" in value:
                field = _BIND_SUFFIX.sub("", str(name)) or "value"
                reason = "text may not contain a NUL character (U+0000)"
                raise RequestValidationError([{"loc": [field], "msg": reason, "type": "string_nul"}])
