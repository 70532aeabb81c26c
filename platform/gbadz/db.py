"""Engines, sessions and migrations for SQLite (embedded) and PostgreSQL (production).

One unit of work is one transaction, opened one way per context (ADR 0004):

- an API request: :func:`write_session` (``gbadz.deps.WriteSession`` in a route's signature)
  commits once when the route function returns, before the response is sent, and rolls back
  on any error; :func:`read_session` (``ReadSession``) only reads. The FastAPI aliases live in
  ``gbadz.deps`` so that the CLI, which imports this module, does not pay for FastAPI's
  import (about 0.3 s a command);
- a CLI command, an Airflow task or the demo: :func:`session_scope`;
- a background loop in the API process: :func:`gbadz.background.every` runs work in a thread
  that opens its own session on the background engine (a pool of its own, see
  :func:`create_engine`);
- a use case that must be durable before it acts (a delivery's log entry before its URLs):
  the service takes the sessionmaker and uses :func:`session_scope`.

Services ``flush()``; they never ``commit()``. Route modules never open a transaction or
issue SQL (``tests/test_layers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import sqlalchemy as sa
from fastapi.exceptions import RequestValidationError
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import Request

from gbadz.config import DatabaseSettings
from gbadz.errors import ConfigurationError, DatabaseBusy, DatabaseUnavailable
from gbadz.log import get_logger

if TYPE_CHECKING:
    from alembic.config import Config

_log = get_logger(__name__)

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


def create_engine(settings: DatabaseSettings, *, background: bool = False) -> Engine:
    """An engine for API requests, CLI commands and tasks, or (``background``) a small one of its own.

    The request pool is sized by the settings and time-limited: a request that cannot get a
    connection within ``pool_timeout_s`` fails with :class:`DatabaseBusy` (503, Retry-After)
    instead of hanging. The background pool is separate so that the API's refreshers, sweeps
    and readiness checks are never starved by a burst of requests (issue #20, finding 3).
    """
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
    pool: dict[str, Any] = (
        {"pool_size": 2, "max_overflow": 4, "pool_timeout": 10.0}
        if background
        else {
            "pool_size": settings.pool_size,
            "max_overflow": settings.max_overflow,
            "pool_timeout": settings.pool_timeout_s,
        }
    )
    if parsed.get_backend_name() == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            pool = {}  # one connection per thread (SingletonThreadPool); nothing to size
        elif not parsed.database.startswith("file:"):
            private_sqlite_file(Path(parsed.database))
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": max(timeout, 5.0)},
            hide_parameters=True,
            **pool,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    engine = sa.create_engine(
        url,
        # A failing statement's error names the SQL, never the values bound to it: they can be a
        # client id with a pasted secret, a person's name or a token (issue #20 item 8).
        hide_parameters=True,
        pool_pre_ping=True,
        connect_args={"connect_timeout": max(1, round(timeout))},
        **pool,
    )
    event.listen(engine, "connect", _postgres_session(session_settings(parsed)))
    return engine


# A server backend learns that its client is gone only when it next reads from or writes to
# it: one waiting on a lock — a delivery queued at the transfer log's head row — would hold its
# place, and then the head row itself, until its statement ends; and a client lost with its
# machine (no FIN) is noticed after PostgreSQL's default two hours of TCP silence. Every
# replica's transfer-log append would queue behind it. So each session checks its client
# every 2 s while a statement runs, and probes a silent peer after 30 s (3 x 10 s), the
# server ending the session (and rolling its transaction back) when the client is gone.
POSTGRES_SESSION = {
    "client_connection_check_interval": "2s",
    "tcp_keepalives_idle": "30s",
    "tcp_keepalives_interval": "10s",
    "tcp_keepalives_count": "3",
}


def application_name() -> str:
    """How this process's sessions appear in ``pg_stat_activity``: ``gbadz/<host>/<pid>`` (a
    pod's name is its host), so that an operator can tell which replica, worker or command holds
    a lock. The host is shortened to keep the whole within PostgreSQL's 63 bytes."""
    pid = str(os.getpid())
    host = socket.gethostname().encode("ascii", "replace").decode()
    return f"gbadz/{host[: 63 - len('gbadz//') - len(pid)]}/{pid}"


def session_settings(url: URL) -> dict[str, str]:
    """What each session sets on connect: :data:`POSTGRES_SESSION` and the application name,
    less whatever the URL sets itself (``application_name=``, or ``options=-c name=value``):
    the operator's own value wins."""
    values = {**POSTGRES_SESSION, "application_name": application_name()}
    options = " ".join(str(v) for v in _as_list(url.query.get("options")))
    return {
        name: value
        for name, value in values.items()
        if name not in url.query and not re.search(rf"(^|\s)(-c\s*|--){name}\s*=", options)
    }


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else list(value) if isinstance(value, tuple) else [value]


def _postgres_session(values: dict[str, str]) -> Callable[[Any, Any], None]:
    """The connect listener setting ``values`` for the session (``set_config(..., false)``, kept
    by the commit), in one round trip. A server or proxy that refuses one of them (a platform
    without the client check, a pooler) still serves: each setting is then tried alone, and
    what is refused is logged once per engine, by name."""
    statement = "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in values)
    params = [part for pair in values.items() for part in pair]
    refused: set[str] = set()

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        if not values:
            return
        if _try_set(dbapi_connection, statement, params):
            return
        for name, value in values.items():
            accepted = _try_set(dbapi_connection, "SELECT set_config(%s, %s, false)", [name, value])
            if not accepted and name not in refused:
                refused.add(name)
                _log.warning("postgres_session_setting_refused", setting=name)

    return on_connect


def _try_set(dbapi_connection: Any, statement: str, params: list[str]) -> bool:
    import psycopg

    try:
        with dbapi_connection.cursor() as cursor:
            cursor.execute(statement, params)
        dbapi_connection.commit()
    except psycopg.Error:
        dbapi_connection.rollback()
        return False
    return True


SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_sqlite_file(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600), and tighten an existing one.

    The database holds password hashes, audit trails and personal metadata: another local
    user must not read it (issue #20 item 7). SQLite creates the -wal, -shm and -journal
    files with the database file's mode, so they follow; ones left by an older version are
    tightened here too. A path that cannot be created is left for SQLite to report on connect.
    """
    # Never open (and close) an existing database file here: closing any descriptor of a file
    # drops every POSIX lock this process holds on it, and SQLite's locks are POSIX locks — a
    # second engine on the same file (the app's background engine) corrupted the database.
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass
    except OSError:
        return
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        with contextlib.suppress(FileNotFoundError):
            if stat.S_IMODE(candidate.stat().st_mode) & 0o077:
                candidate.chmod(0o600)


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

    The route runs in a worker thread, where the session connects lazily. The commit and the
    close run in a thread too, never on the event loop (a commit waits on the database's
    locks and disk; issue #20, finding 3), and in a thread outside the request limiter: under
    load every request thread can be waiting for a pooled connection that only such a release
    frees, so a release must never wait for a request thread (FastAPI's own sync dependencies
    exit the same way). The request is first admitted (:func:`admitted`).
    """
    async with admitted(request):
        session: Session = request.app.state.sessionmaker()
        try:
            yield session
            if session.in_transaction():
                await _off_loop(session.commit)
        finally:
            await release(session)


async def read_session(request: Request) -> AsyncIterator[Session]:
    """A session for one request that only reads, released off the event loop (see ``write_session``)."""
    async with admitted(request):
        session: Session = request.app.state.sessionmaker()
        try:
            yield session
        finally:
            await release(session)


@asynccontextmanager
async def admitted(request: Request) -> AsyncIterator[None]:
    """Hold one of the app's request-session slots (``api.worker_threads`` of them) while inside.

    FastAPI releases a route's session only after the response is serialised, and for a sync
    route that is a second trip through the request threads: a session holds its connection
    while it queues again behind every request admitted after it. Unbounded, a burst of 64
    connections checked out more connections than the pool had and every request then
    waited out the pool timeout. Admitted sessions are at most the number of threads, and the
    pool holds that many plus one per thread (``Settings`` checks it), so a session always
    finds a connection. Requests beyond wait here, on the event loop, holding nothing; one
    that waits longer than the pool timeout is told to retry (503, Retry-After).
    """
    slots = _slots(request)
    timeout = request.app.state.settings.db.pool_timeout_s
    try:
        with anyio.fail_after(timeout):
            await slots.acquire()
    except TimeoutError:
        raise DatabaseBusy(
            "the server is busy: no database session became free in time; retry shortly",
            headers={"Retry-After": "1"},
        ) from None
    try:
        yield
    finally:
        slots.release()


#: What a request is told when no pooled connection became free within the pool timeout.
POOL_BUSY = "the server is busy: no database connection became free in time; retry shortly"


@contextmanager
def pool_busy_refused() -> Iterator[None]:
    """A pool timeout as the API's handler answers it (:class:`DatabaseBusy`: 503, Retry-After),
    for callers that answer without the app's exception handlers: the console's pages that read
    the catalog directly (ADR 0013) show it as a message instead of a JSON body."""
    try:
        yield
    except sa.exc.TimeoutError:
        raise DatabaseBusy(POOL_BUSY, headers={"Retry-After": "1"}) from None


def _slots(request: Request) -> anyio.Semaphore:
    # One semaphore per app and event loop (a test client runs a loop per `with` block).
    state = request.app.state
    loop = asyncio.get_running_loop()
    current: tuple[asyncio.AbstractEventLoop, anyio.Semaphore] | None = getattr(state, "session_slots", None)
    if current is None or current[0] is not loop:
        current = (loop, anyio.Semaphore(state.settings.api.worker_threads))
        state.session_slots = current
    return current[1]


async def release(session: Session) -> None:
    """Close ``session`` (rolling back what it did not commit) without blocking the event loop."""
    if not session.in_transaction():
        session.close()  # never connected: nothing reaches the database
        return
    # Shielded: a request cancelled by its client still gives its connection back.
    with anyio.CancelScope(shield=True):
        await _off_loop(session.close)


async def _off_loop(work: Callable[[], object]) -> None:
    # A limiter of its own per call: a release needs no second connection and must not queue
    # behind request threads (at most one such thread per connection in use).
    await anyio.to_thread.run_sync(work, limiter=anyio.CapacityLimiter(1))


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


#: PostgreSQL channels every API replica listens on (ADR 0027): a revocation (a token, a client,
#: a person, an organisation) or a catalog change, announced as its transaction commits.
REVOCATIONS_CHANNEL = "gbadz_revocations"
CATALOG_CHANNEL = "gbadz_catalog"


def notify(session: Session, channel: str) -> None:
    """Tell every replica listening on ``channel`` when this transaction commits (a ``NOTIFY``:
    PostgreSQL sends it at the commit, never after a rollback). Nothing on SQLite, which is
    the one-process mode: the process that wrote has invalidated its own caches."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(f"NOTIFY {channel}")


def listen_url(engine: Engine) -> str | None:
    """A libpq URL for a LISTEN connection of its own to ``engine``'s database (None: not PostgreSQL)."""
    if engine.dialect.name != "postgresql":
        return None
    url = engine.url.set(drivername="postgresql")
    if "application_name" not in url.query:  # named as the engine's sessions are
        url = url.update_query_dict({"application_name": application_name()})
    return url.render_as_string(hide_password=False)
