"""Two API replicas, one PostgreSQL database, one S3 server (issue #17, ADR 0027).

Two real ``gbadz serve`` processes (uvicorn, distinct loopback ports) share the suite's
PostgreSQL schema and SeaweedFS; no balancer sits in front: each test talks to both, as the
party who would gain from a replica deciding alone. Both replicas trust 127.0.0.1 as their
proxy, so a test names the client address it stands for in ``X-Forwarded-For`` (what a load
balancer does) and its guesses do not count against the suite's own requests.
"""

from __future__ import annotations

import json
import random
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from gbadz import db
from gbadz.config import ApiSettings, DatabaseSettings, S3Settings, Settings
from gbadz.translog.log import TransferLog, export, verify_export
from gbadz.translog.models import LogEntry
from tests.api import Client, basic, bearer, free_port, make_client
from tests.conftest import cli_env, lane_settings
from tests.datasets import YAML, Party, as_yaml, contract, sign_off, token
from tests.delivery.test_delivery import _grant, published  # noqa: F401 - the shared fixture

pytestmark = [
    pytest.mark.e2e,
    # Replicas share state through PostgreSQL (SQLite is the one-process embedded mode).
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]

LIMIT = 5  # failed client authentications per address per window
DELIVERY_LIMIT = 3  # URL issuances per grant per window
REVOCATION_BOUND_S = 1.0  # RevocationView.refresh_s: another replica refuses within this
CATALOG_BOUND_S = 1.0  # CatalogIndex.refresh_s
MARGIN_S = 2.0  # a shared 2-core machine: scheduling noise on top of the bound


@dataclass
class Replica:
    base: str
    process: subprocess.Popen[bytes]

    def url(self, path: str) -> str:
        return self.base + path


def _env(settings: Settings, database_url: str, s3: S3Settings, issuer: str) -> dict[str, str]:
    return cli_env(
        settings.home,
        GBADZ_ENV="test",
        GBADZ_LOG_LEVEL="WARNING",
        GBADZ_API__ACCESS_LOG="false",
        GBADZ_DB__URL=database_url,
        GBADZ_S3__ENDPOINT_URL=s3.endpoint_url or "",
        GBADZ_S3__ACCESS_KEY=s3.access_key or "",
        GBADZ_S3__SECRET_KEY=s3.secret_key.get_secret_value() if s3.secret_key else "",
        GBADZ_S3__LANDING_BUCKET=s3.landing_bucket,
        GBADZ_S3__CURATED_BUCKET=s3.curated_bucket,
        GBADZ_S3__DELIVERY_BUCKET=s3.delivery_bucket,
        GBADZ_S3__LANDING_RETENTION_DAYS=str(s3.landing_retention_days),
        GBADZ_CRYPTO__PASSPHRASE="the test suite's keyring passphrase",
        GBADZ_CRYPTO__SCRYPT_LOG2_N="10",
        GBADZ_OAUTH__ISSUER=issuer,  # one public address, as behind a balancer
        GBADZ_OAUTH__FAILED_AUTH_LIMIT=str(LIMIT),
        GBADZ_API__TRUSTED_PROXIES='["127.0.0.1/32"]',
        GBADZ_API__DELIVERY_LIMIT=str(DELIVERY_LIMIT),
    )


@contextmanager
def serving(env: dict[str, str], port: int, log: Path) -> Iterator[Replica]:
    """``gbadz serve`` on 127.0.0.1:``port``; stopped by its PID at the end (SIGINT, then SIGKILL)."""
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gbadz", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    replica = Replica(f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(replica.url("/healthz"), timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail("gbadz serve did not start: " + log.read_text(errors="replace")[-2000:])
            time.sleep(0.1)
        yield replica
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@dataclass
class Pair:
    a: Replica
    b: Replica
    settings: Settings
    env: dict[str, str]
    ports: tuple[int, int]
    engine: Engine


@pytest.fixture(scope="module")
def own_database(database_url: str) -> Iterator[str]:
    """A PostgreSQL schema of the replicas' own, migrated: the lane's schema also holds the
    checkpoints of other tests' keyrings, which the replicas' log export could not verify."""
    base = database_url.split("?", 1)[0]
    plain = db.normalise_url(base).replace("postgresql+psycopg://", "postgresql://")
    schema = f"gbadz_replicas_{secrets.token_hex(4)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"
    try:
        migrated = db.create_engine(DatabaseSettings(url=url))
        db.upgrade(migrated)
        migrated.dispose()
        yield url
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def pair(
    own_database: str, s3_settings: S3Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    """Replicas A and B of ``gbadz serve`` on one database, one S3 server and one keyring."""
    database_url = own_database
    home = tmp_path_factory.mktemp("replicas")
    ports = (free_port(), free_port())
    issuer = f"http://127.0.0.1:{ports[0]}"
    settings = lane_settings(database_url, s3_settings, home / "home")
    settings = settings.model_copy(
        update={
            "oauth": settings.oauth.model_copy(update={"issuer": issuer, "failed_auth_limit": LIMIT}),
            "api": ApiSettings(trusted_proxies=["127.0.0.1/32"], delivery_limit=DELIVERY_LIMIT),
        }
    )
    env = _env(settings, database_url, s3_settings, issuer)
    engine = db.create_engine(DatabaseSettings(url=database_url))
    try:
        with serving(env, ports[0], home / "a.log") as a, serving(env, ports[1], home / "b.log") as b:
            yield Pair(a, b, settings, env, ports, engine)
    finally:
        engine.dispose()


@pytest.fixture
def settings(pair: Pair) -> Settings:
    """The replicas' settings: fixtures that seed data in-process (``app``, ``party``) use them."""
    return pair.settings


def _as(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def _token_status(replica: Replica, client: Client, address: str) -> int:
    response = httpx.post(
        replica.url("/oauth/token"),
        data={"grant_type": "client_credentials"},
        headers=basic(client) | _as(address),
        timeout=30,
    )
    return response.status_code


def _wrong(client: Client) -> Client:
    return Client(client.client_id, "a-guess-" + secrets.token_hex(4), client.org_id, client.role)


def _within(seconds: float, check: Callable[[], bool]) -> float:
    """Poll ``check`` until it holds; return how long it took (fails the test after ``seconds``)."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < seconds, f"still not so after {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


class TestFailedAuthenticationLimit:
    def test_guesses_alternated_between_replicas_stop_at_one_limit(self, pair: Pair, app: FastAPI) -> None:
        """A secret guesser alternating A and B is refused after the same 5 failures as on one replica."""
        victim = make_client(app, "consumer")
        replicas = [pair.a, pair.b] * 5
        statuses = [_token_status(r, _wrong(victim), "203.0.113.10") for r in replicas]
        assert [401] * LIMIT + [429] * (len(replicas) - LIMIT) == statuses
        # The right secret from the guesser's address is held back too, on both; the owner elsewhere is not.
        assert 429 == _token_status(pair.b, victim, "203.0.113.10")
        assert 200 == _token_status(pair.a, victim, "198.51.100.10")

    def test_a_burst_of_guesses_on_both_replicas_checks_no_more_than_the_limit(
        self, pair: Pair, app: FastAPI
    ) -> None:
        """20 guesses sent at once, half to each replica: at most 5 are checked, the rest get 429."""
        victim = make_client(app, "consumer")
        replicas = [pair.a, pair.b] * 10
        with ThreadPoolExecutor(len(replicas)) as pool:
            statuses = list(pool.map(lambda r: _token_status(r, _wrong(victim), "203.0.113.11"), replicas))
        assert LIMIT == statuses.count(401), statuses
        assert len(replicas) - LIMIT == statuses.count(429), statuses

    def test_successes_are_not_counted(self, pair: Pair, app: FastAPI) -> None:
        """Right secrets, many of them on both replicas, never lock their owner out."""
        owner = make_client(app, "consumer")
        statuses = [_token_status(r, owner, "198.51.100.12") for r in [pair.a, pair.b] * (LIMIT + 2)]
        assert {200} == set(statuses)


class TestRevocation:
    def test_a_token_revoked_on_a_is_refused_on_b(self, pair: Pair, app: FastAPI) -> None:
        """A token its client revokes through A stops working on B within the revocation bound."""
        client = make_client(app, "consumer")
        issued = httpx.post(
            pair.a.url("/oauth/token"), data={"grant_type": "client_credentials"}, headers=basic(client)
        ).json()["access_token"]
        assert 200 == httpx.get(pair.b.url("/api/v1/me"), headers=bearer(issued)).status_code
        revoked = httpx.post(pair.a.url("/oauth/revoke"), data={"token": issued}, headers=basic(client))
        assert 200 == revoked.status_code
        assert 401 == httpx.get(pair.a.url("/api/v1/me"), headers=bearer(issued)).status_code  # at once on A
        took = _within(
            REVOCATION_BOUND_S + MARGIN_S,
            lambda: httpx.get(pair.b.url("/api/v1/me"), headers=bearer(issued)).status_code == 401,
        )
        assert took <= REVOCATION_BOUND_S + MARGIN_S

    def test_a_client_disabled_on_a_is_refused_on_b(self, pair: Pair, app: FastAPI) -> None:
        """An administrator revokes a client through A: B refuses its token and its secret."""
        admin = make_client(app, "admin")
        victim = make_client(app, "consumer")
        admin_token = fetch_token_from(pair.a, admin)
        held = fetch_token_from(pair.b, victim)
        assert 200 == httpx.get(pair.b.url("/api/v1/me"), headers=bearer(held)).status_code
        answer = httpx.post(
            pair.a.url(f"/api/v1/clients/{victim.client_id}/revoke"), headers=bearer(admin_token)
        )
        assert 200 == answer.status_code, answer.text
        # Its secret is refused by B at once (client authentication reads the database).
        assert 401 == _token_status(pair.b, victim, "198.51.100.13")
        _within(
            REVOCATION_BOUND_S + MARGIN_S,
            lambda: httpx.get(pair.b.url("/api/v1/me"), headers=bearer(held)).status_code == 401,
        )


def fetch_token_from(replica: Replica, client: Client) -> str:
    response = httpx.post(
        replica.url("/oauth/token"), data={"grant_type": "client_credentials"}, headers=basic(client)
    )
    assert 200 == response.status_code, response.text
    return str(response.json()["access_token"])


class TestCatalog:
    def test_a_dataset_published_and_retired_via_a_is_found_then_gone_on_b(
        self, pair: Pair, app: FastAPI, http: TestClient, party: Callable[..., Party]
    ) -> None:
        """Registered and signed off through A, B's search finds it; retired through A, B's search
        and B's get-by-id no longer show it (within the catalog bound)."""
        provider = party("provider", "HK")
        consumer = party("consumer", "HK")
        word = token()
        dataset_id = f"t-{secrets.token_hex(5)}"
        doc = contract(dataset_id, provider.org_name, tags=(word,))
        created = httpx.post(
            pair.a.url("/api/v1/datasets"), content=as_yaml(doc), headers=provider.headers | YAML
        )
        assert 201 == created.status_code, created.text
        sign_off(http, app, dataset_id)

        def found_on_b() -> bool:
            page = httpx.get(pair.b.url(f"/api/v1/datasets?q={word}"), headers=consumer.headers).json()
            return [dataset_id] == [item["id"] for item in page["items"]]

        _within(CATALOG_BOUND_S + MARGIN_S, found_on_b)
        retired = httpx.post(
            pair.a.url(f"/api/v1/datasets/{dataset_id}/retire"),
            json={"reason": "superseded by a newer survey"},
            headers=provider.headers,
        )
        assert 200 == retired.status_code, retired.text
        _within(CATALOG_BOUND_S + MARGIN_S, lambda: not found_on_b())
        gone = httpx.get(pair.b.url(f"/api/v1/datasets/{dataset_id}"), headers=consumer.headers)
        assert 404 == gone.status_code


def _deliver(replica: Replica, grant: str, consumer: Party, key: str | None = None) -> httpx.Response:
    headers = consumer.headers | ({"Idempotency-Key": key} if key else {})
    return httpx.post(replica.url(f"/api/v1/grants/{grant}/deliveries"), headers=headers, timeout=120)


def _entries(engine: Engine, grant: str) -> list[tuple[int, str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(LogEntry.index, LogEntry.kind, LogEntry.entry)
            .where(LogEntry.grant_id == grant)
            .order_by(LogEntry.index)
        ).all()
    return [(index, kind, json.loads(entry)) for index, kind, entry in rows if kind != "determination"]


def _log_verifies(app: FastAPI, tmp_path: Path) -> None:
    target = tmp_path / "log.jsonl"
    with app.state.sessionmaker.begin() as session:
        log = TransferLog(app.state.keys)
        log.checkpoint(session)
        export(session, log, target)
    verdict = verify_export(target)
    assert verdict.ok, verdict.problem


class TestDelivery:
    def test_concurrent_deliveries_of_one_grant_on_a_and_b_are_one_transfer(
        self,
        pair: Pair,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
    ) -> None:
        """Six clicks at once, three on each replica: one logged transfer, one copy, the same URLs."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        replicas = [pair.a, pair.b] * 3
        with ThreadPoolExecutor(len(replicas)) as pool:
            answers = list(pool.map(lambda r: _deliver(r, grant, consumer), replicas))
        assert {201} == {a.status_code for a in answers}, [a.text for a in answers]
        assert 1 == len({a.json()["transfer_id"] for a in answers})
        assert 1 == [a.json()["reused"] for a in answers].count(False)
        assert ["download"] == [kind for _, kind, _ in _entries(pair.engine, grant)]

    def test_reissues_on_both_replicas_respect_the_per_grant_limit(
        self,
        pair: Pair,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
    ) -> None:
        """After one delivery, six reissues sent at once to A and B: only the limit's worth is issued."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        assert 201 == _deliver(pair.a, grant, consumer, "k1").status_code
        replicas = [pair.a, pair.b] * 3
        with ThreadPoolExecutor(len(replicas)) as pool:
            answers = list(pool.map(lambda r: _deliver(r, grant, consumer, "k1"), replicas))
        statuses = sorted(a.status_code for a in answers)
        assert [201] * (DELIVERY_LIMIT - 1) + [429] * (len(replicas) - DELIVERY_LIMIT + 1) == statuses
        kinds = [kind for _, kind, _ in _entries(pair.engine, grant)]
        assert ["download"] + ["reissue"] * (DELIVERY_LIMIT - 1) == kinds

    def test_the_same_idempotency_key_on_a_then_b_is_the_same_logged_transfer(
        self,
        pair: Pair,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        tmp_path: Path,
    ) -> None:
        """A grantee retrying on B with A's Idempotency-Key gets A's transfer, and the log verifies."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        first = _deliver(pair.a, grant, consumer, "retry-me")
        assert 201 == first.status_code, first.text
        again = _deliver(pair.b, grant, consumer, "retry-me")
        assert 201 == again.status_code, again.text
        assert first.json()["transfer_id"] == again.json()["transfer_id"]
        assert first.json()["log_index"] == again.json()["log_index"]
        downloads = [e for _, kind, e in _entries(pair.engine, grant) if kind == "download"]
        assert [first.json()["transfer_id"]] == [e["transfer_id"] for e in downloads]
        _log_verifies(app, tmp_path)

    def test_a_replica_killed_mid_delivery_then_a_retry_on_b_is_one_transfer(
        self,
        pair: Pair,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        published: tuple[Party, str],  # noqa: F811 - the fixture imported above
        tmp_path: Path,
    ) -> None:
        """A third replica is SIGKILLed while it delivers; the grantee's retry on B with the same
        Idempotency-Key gets the one logged transfer (A's if it was logged, else a new one)."""
        _, dataset = published
        consumer = party("consumer", "HK")
        grant = _grant(http, consumer, dataset)
        port = free_port()
        with serving(pair.env, port, tmp_path / "c.log") as c, ThreadPoolExecutor(1) as pool:
            pending = pool.submit(_deliver_or_none, c, grant, consumer, "crash")
            time.sleep(random.uniform(0.05, 0.6))
            c.process.send_signal(signal.SIGKILL)
            c.process.wait(10)
            pending.result(timeout=60)
        retried = _deliver(pair.b, grant, consumer, "crash")
        assert 201 == retried.status_code, retried.text
        downloads = [e for _, kind, e in _entries(pair.engine, grant) if kind == "download"]
        assert [retried.json()["transfer_id"]] == [e["transfer_id"] for e in downloads]
        _log_verifies(app, tmp_path)


def _deliver_or_none(replica: Replica, grant: str, consumer: Party, key: str) -> httpx.Response | None:
    try:
        return _deliver(replica, grant, consumer, key)
    except httpx.HTTPError:
        return None  # the replica died before it answered
