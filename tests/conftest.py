"""Session fixtures: a real SeaweedFS S3 server and real databases (SQLite and PostgreSQL).

Nothing here is mocked. The PostgreSQL lane runs whenever ``GBADZ_TEST_POSTGRES_URL`` is
set; with ``GBADZ_TEST_REQUIRE_POSTGRES=1`` (``make test`` and CI) a missing or
unreachable PostgreSQL fails the suite instead of skipping the lane.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from gbadz import db, storage
from gbadz.config import CryptoSettings, DatabaseSettings, S3Settings, Settings, SuiteSettings
from gbadz.embedded import EmbeddedServices
from tests.api import app, clients, http, live_server  # noqa: F401 - shared API fixtures
from tests.datasets import party, publish  # noqa: F401 - shared dataset fixtures

SUITE = SuiteSettings()
REPO = Path(__file__).resolve().parents[1]
TEST_BUCKETS = {
    "landing_bucket": "test-landing",
    "curated_bucket": "test-curated",
    "delivery_bucket": "test-delivery",
}
#: What the suite's landing bucket keeps every version for (COMPLIANCE mode: nobody can delete
#: one sooner). A day, not the default ten years, for an external MinIO the suite is pointed at.
TEST_LANDING_RETENTION_DAYS = 1
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _guard_s3(settings: S3Settings) -> None:
    """Polar's guards: tests only ever touch a loopback server and buckets named test-*."""
    host = urlsplit(settings.endpoint_url or "").hostname or ""
    if host not in LOOPBACK:
        pytest.fail(f"refusing to run tests against non-loopback S3 endpoint {settings.endpoint_url}")
    for bucket in settings.buckets:
        if not bucket.startswith("test-"):
            pytest.fail(f"refusing to use bucket {bucket!r} in tests: test buckets start with 'test-'")


@pytest.fixture(scope="session")
def s3_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Settings]:
    """A real S3 server: SeaweedFS started here, or an external MinIO on loopback."""
    if SUITE.s3_endpoint:
        settings = S3Settings(
            endpoint_url=SUITE.s3_endpoint,
            access_key=SUITE.s3_access_key,
            secret_key=SUITE.s3_secret_key,
            landing_retention_days=TEST_LANDING_RETENTION_DAYS,
            **TEST_BUCKETS,
        )
        _guard_s3(settings)
        storage.ensure_buckets(storage.make_client(settings), settings)
        yield settings
        return
    services = EmbeddedServices(
        tmp_path_factory.mktemp("s3"),
        bucket_settings=S3Settings(landing_retention_days=TEST_LANDING_RETENTION_DAYS, **TEST_BUCKETS),
        preferred_s3_port=None,
    )
    state, _ = services.up(with_database=False)
    assert state.s3 is not None
    settings = services.s3_settings(state.s3)
    _guard_s3(settings)
    try:
        yield settings
    finally:
        services.down()


def _postgres_url() -> str | None:
    url = SUITE.postgres_url
    if url is None:
        if SUITE.require_postgres:
            pytest.fail("GBADZ_TEST_REQUIRE_POSTGRES=1 but GBADZ_TEST_POSTGRES_URL is not set")
        pytest.skip("PostgreSQL lane skipped: set GBADZ_TEST_POSTGRES_URL to run it")
    return url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Each lane's database: a SQLite file, or a throwaway schema in the test PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'gbadz.db'}"
        return
    base = _postgres_url()
    assert base is not None
    schema = f"gbadz_test_{secrets.token_hex(4)}"
    plain = db.normalise_url(base).replace("postgresql+psycopg://", "postgresql://")
    try:
        with psycopg.connect(plain, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL lane: cannot connect to {db.describe_url(base)}: {exc}")
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database on the same lane as ``database_url``: a new file or a new schema."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    base = database_url.split("?", 1)[0]
    plain = db.normalise_url(base).replace("postgresql+psycopg://", "postgresql://")
    schema = f"gbadz_fresh_{secrets.token_hex(4)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the lane's database with every migration applied."""
    eng = db.create_engine(DatabaseSettings(url=database_url))
    db.upgrade(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session inside an outer transaction that is rolled back after the test."""
    with engine.connect() as conn:
        outer = conn.begin()
        sess = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield sess
        finally:
            sess.close()
            outer.rollback()


def lane_settings(database_url: str, s3_settings: S3Settings, home: Path) -> Settings:
    """Settings for a lane's migrated database and the real S3 server, with a home of their own."""
    return Settings(
        env="test",
        home=home,
        db=DatabaseSettings(url=database_url),
        s3=s3_settings,
        crypto=CryptoSettings(passphrase=SecretStr("the test suite's keyring passphrase"), scrypt_log2_n=10),
    )


@pytest.fixture
def settings(database_url: str, engine: Engine, s3_settings: S3Settings, tmp_path: Path) -> Settings:
    """Settings for the lane's migrated database and the real S3 server."""
    return lane_settings(database_url, s3_settings, tmp_path / "home")


@pytest.fixture
def key_prefix() -> str:
    """A bucket key prefix of the test's own."""
    return f"t-{secrets.token_hex(6)}/"


def count_rows(engine: Engine, table: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one())  # noqa: S608 - test helper, fixed names


def cli_env(home: Path, **overrides: str) -> dict[str, str]:
    """The environment for a `gbadz` subprocess: no inherited GBADZ_* settings, a home of its own."""
    inherited = {
        k: v
        for k, v in os.environ.items()  # noqa: TID251 - the subprocess needs PATH, HOME and friends
        if not k.startswith("GBADZ_")
    }
    return inherited | {"GBADZ_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"} | overrides


def run_cli(home: Path, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gbadz", *args],
        env=cli_env(home, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        check=False,
    )


def wrong_secret(settings: S3Settings) -> S3Settings:
    return settings.model_copy(update={"secret_key": SecretStr("definitely-not-the-secret")})


@pytest.fixture(autouse=True)
def _fresh_failure_counts(request: pytest.FixtureRequest) -> None:
    """Failed authentications are counted in the database (shared by replicas, ADR 0021), and every
    TestClient calls from the same address: each test starts with no failures counted."""
    if "engine" not in request.fixturenames:
        return
    eng: Engine = request.getfixturevalue("engine")
    with eng.begin() as conn:
        conn.execute(sa.text("DELETE FROM auth_failures"))
