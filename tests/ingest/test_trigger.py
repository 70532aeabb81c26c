"""Uploads trigger Airflow (ADR 0026), without an Airflow: an unreachable api-server keeps the
upload queued with the reason and backs off, the claim is taken once, a retried task publishes
one version, and no secret reaches a response, a log line or the audit trail. The paths through a
real Airflow are in ``test_airflow_e2e.py``."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from structlog.testing import capture_logs

from gbadz import db
from gbadz.app import create_app
from gbadz.audit import AuditEvent
from gbadz.catalog.models import DatasetVersion, IngestionRun
from gbadz.config import (
    AirflowSettings,
    DatabaseSettings,
    IngestSettings,
    Settings,
    get_settings,
    settings_environment,
)
from gbadz.embedded import free_loopback_ports
from gbadz.ingest import samples, tasks, trigger, worker
from gbadz.ingest.airflow import AirflowClient, AirflowUnavailable, RunState, dag_run_id
from tests.conftest import REPO
from tests.datasets import YAML, Party, sign_off

CSV = {"Content-Type": "text/csv"}
SECRET = "airflow-Pa55word-that-must-never-show"


def airflow_settings(url: str, password: str = SECRET, **kwargs: Any) -> AirflowSettings:
    return AirflowSettings(url=url, username="gbadz", password=SecretStr(password), **kwargs)


@pytest.fixture
def app(settings: Settings, fresh_database_url: str) -> FastAPI:
    """worker_mode airflow, pointed at a loopback port where nothing listens; the loop is off (the
    tests drive it)."""
    dead = free_loopback_ports(1)["0"]
    own = settings.model_copy(
        update={
            "db": DatabaseSettings(url=fresh_database_url),
            "ingest": IngestSettings(worker=False, worker_mode="airflow"),
            "airflow": airflow_settings(
                f"http://127.0.0.1:{dead}", retry_min_s=30, timeout_s=2, trigger_timeout_s=1
            ),
        }
    )
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    return create_app(own)


def csv_bytes(rows: int, corrupt: bool = False, seed: int = 0) -> bytes:
    table = samples.generate("mo-tourism-visitor-arrivals", rows + seed)
    if corrupt:
        table = samples.corrupt(table, "mo-tourism-visitor-arrivals")
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def register(http: TestClient, app: FastAPI, provider: Party, key_prefix: str) -> str:
    doc = yaml.safe_load((REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text())
    doc["id"] = f"{key_prefix.strip('/')}-af"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    response = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider.headers | YAML
    )
    assert 201 == response.status_code, response.text
    sign_off(http, app, str(doc["id"]))
    return str(doc["id"])


def upload(http: TestClient, provider: Party, dataset: str, body: bytes, query: str = "") -> dict[str, Any]:
    response = http.post(
        f"/api/v1/datasets/{dataset}/uploads{query}", content=body, headers=provider.headers | CSV
    )
    assert 202 == response.status_code, response.text
    return dict(response.json())


def run_of(http: TestClient, party: Party, dataset: str, run_id: int) -> dict[str, Any]:
    response = http.get(f"/api/v1/datasets/{dataset}/ingestion-runs/{run_id}", headers=party.headers)
    assert 200 == response.status_code, response.text
    return dict(response.json())


class TestUnreachable:
    def test_the_upload_is_accepted_and_stays_queued_with_the_reason(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Airflow unreachable when the upload arrives: 202, the run queued with the reason, its
        deterministic Airflow run id and the time of the next try; no secret or address anywhere."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        with capture_logs() as logs:
            queued = upload(http, provider, dataset, csv_bytes(40))
        assert "queued" == queued["status"]
        assert "Airflow is unreachable (ConnectError)" == queued["trigger_error"]
        assert (1, dag_run_id(queued["id"], queued["source_sha256"])) == (
            queued["trigger_attempts"],
            queued["airflow_run_id"],
        )
        assert queued["next_trigger_at"] is not None
        assert "Airflow could not start it" in queued["summary"]
        port = str(app.state.settings.airflow.url.rsplit(":", 1)[1])
        assert port not in queued["trigger_error"] + queued["summary"]
        listed = http.get(f"/api/v1/datasets/{dataset}/ingestion-runs", headers=provider.headers).text
        with app.state.sessionmaker() as session:
            audited = [
                (e.action, str(e.details))
                for e in session.scalars(sa.select(AuditEvent).where(AuditEvent.subject_id == dataset))
            ]
        assert "ingestion.trigger_deferred" in {action for action, _ in audited}
        assert any("airflow trigger deferred" == e["event"] for e in logs)
        for text in (str(queued), listed, str(logs), str(audited)):
            assert SECRET not in text

    def test_the_loop_waits_for_the_backoff_then_tries_again(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """A failed trigger is tried again only once its backoff has passed, doubling up to the cap."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(30))
        settings, sessions = app.state.settings, app.state.sessionmaker
        loop = trigger.AirflowTrigger(settings, sessions, app.state.airflow)
        assert 0 == loop.drain()
        assert 1 == run_of(http, provider, dataset, queued["id"])["trigger_attempts"]
        with sessions.begin() as session:
            session.get(IngestionRun, queued["id"]).next_trigger_at = datetime.now(UTC) - timedelta(seconds=1)
        assert 0 == loop.drain()
        again = run_of(http, provider, dataset, queued["id"])
        assert (2, "queued") == (again["trigger_attempts"], again["status"])
        assert again["airflow_run_id"] == queued["airflow_run_id"]
        assert [30.0, 60.0, 120.0, 240.0, 300.0] == [trigger.backoff_s(settings, n) for n in range(1, 6)]


class TestClaim:
    def test_two_replicas_never_trigger_one_upload_twice(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Two replicas racing for one queued upload: one claims it for Airflow, the other gets
        nothing; a run Airflow holds is never taken over by an embedded worker for being quiet."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(20))
        sessions = app.state.sessionmaker
        with sessions.begin() as session:
            session.get(IngestionRun, queued["id"]).next_trigger_at = None
        first = trigger.claim(sessions, 3600)
        assert first is not None
        assert first.run_id == queued["id"]
        assert trigger.claim(sessions, 3600) is None
        assert worker.claim_next(sessions, "embedded:1", stale_after_s=0) is None
        row = run_of(http, provider, dataset, queued["id"])
        assert ("running", queued["airflow_run_id"]) == (row["status"], row["airflow_run_id"])


class TestSync:
    def test_a_failed_airflow_run_fails_the_upload_naming_the_task(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Airflow's run ended failed before the tasks stored an outcome: the run is failed, the
        summary names the task, the task states are Airflow's, the landed upload is kept."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(20))
        sessions = app.state.sessionmaker
        with sessions.begin() as session:
            session.get(IngestionRun, queued["id"]).next_trigger_at = None
        claimed = trigger.claim(sessions, 3600)
        assert claimed is not None
        tasks_seen = {"land": "success", "validate": "failed", "route": "upstream_failed"}
        trigger._apply(
            sessions,
            claimed.run_id,
            claimed.airflow_run_id,
            RunState(claimed.airflow_run_id, "running", {"land": "success"}),
        )
        assert "running" == run_of(http, provider, dataset, queued["id"])["status"]
        trigger._apply(
            sessions,
            claimed.run_id,
            claimed.airflow_run_id,
            RunState(claimed.airflow_run_id, "failed", tasks_seen),
        )
        row = run_of(http, provider, dataset, queued["id"])
        assert ("failed", "failed", tasks_seen) == (row["status"], row["airflow_state"], row["task_states"])
        assert "failed at task validate" in row["summary"]
        assert queued["landing_key"] == row["landing_key"]

    def test_a_run_airflow_never_received_is_queued_again(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """A replica that stopped between the claim and the call: Airflow still has no such run well
        after the claim, so the upload goes back to the queue under the same Airflow run id."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(20))
        sessions = app.state.sessionmaker
        with sessions.begin() as session:
            session.get(IngestionRun, queued["id"]).next_trigger_at = None
        claimed = trigger.claim(sessions, 3600)
        assert claimed is not None
        # Within the grace, the trigger may still be on its way: nothing changes.
        trigger._apply(sessions, claimed.run_id, claimed.airflow_run_id, None, grace_s=60)
        assert "running" == run_of(http, provider, dataset, queued["id"])["status"]
        trigger._apply(sessions, claimed.run_id, claimed.airflow_run_id, None, grace_s=0)
        row = run_of(http, provider, dataset, queued["id"])
        assert ("queued", claimed.airflow_run_id) == (row["status"], row["airflow_run_id"])


@pytest.fixture
def task_env(app: FastAPI, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The DAG's task functions read their settings from the environment, as under Airflow."""
    for key, value in settings_environment(app.state.settings).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


class TestRetriedTasks:
    def test_publish_run_twice_publishes_one_version(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str, task_env: None
    ) -> None:
        """Airflow retries publish after its first try died having registered the version: the retry
        finds the version and returns it; one version, the run accepted once."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(60))
        landed = tasks.land_upload(queued["id"], dag_run_id=queued["airflow_run_id"])
        validation = tasks.validate(landed)
        first = tasks.publish(landed, validation)
        retried = tasks.publish(landed, validation)
        assert (first["version"], True) == (retried["version"], retried["reused"])
        with app.state.sessionmaker() as session:
            versions = session.scalars(
                sa.select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset)
            ).all()
        assert [1] == list(versions)
        assert ("accepted", 1) == tuple(
            run_of(http, provider, dataset, queued["id"])[k] for k in ("status", "version")
        )

    def test_quarantine_run_twice_is_not_an_error(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str, task_env: None
    ) -> None:
        """A retried quarantine whose first try stored the rejection returns the same report key."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(60, corrupt=True))
        landed = tasks.land_upload(queued["id"], dag_run_id=queued["airflow_run_id"])
        validation = tasks.validate(landed)
        assert not validation["success"]
        assert tasks.quarantine(landed, validation) == tasks.quarantine(landed, validation)
        assert "rejected" == run_of(http, provider, dataset, queued["id"])["status"]

    def test_another_airflow_run_naming_the_upload_is_refused(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str, task_env: None
    ) -> None:
        """A DAG run gbadz did not trigger for this upload (a replay with another run id) is refused
        at its first task; the run gbadz triggered is accepted there."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(20))
        with pytest.raises(ValueError, match="ingested by another Airflow run"):
            tasks.land_upload(queued["id"], dag_run_id="manual__2026-12-03T00:00:00+00:00")
        landed = tasks.land_upload(queued["id"], dag_run_id=queued["airflow_run_id"])
        assert trigger.claim_of(queued["airflow_run_id"]) == landed["claim"]


class TestClient_:
    def test_wrong_address_is_reported_without_secret_or_address(self) -> None:
        """The client's errors carry our reason only: no password, no host or port."""
        port = free_loopback_ports(1)["0"]
        client = AirflowClient(airflow_settings(f"http://127.0.0.1:{port}", timeout_s=1))
        try:
            with pytest.raises(AirflowUnavailable) as caught:
                client.trigger("gbadz-upload-1-00", {"upload": 1})
        finally:
            client.close()
        assert "Airflow is unreachable (ConnectError)" == caught.value.reason
        assert str(port) not in str(caught.value)
        assert SECRET not in str(caught.value)

    def test_a_url_with_credentials_is_refused(self) -> None:
        """GBADZ_AIRFLOW__URL must not carry credentials (they would end up in logs)."""
        with pytest.raises(ValueError, match="must not carry credentials"):
            AirflowSettings(url="http://user:pw@127.0.0.1:8080")

    def test_airflow_mode_without_settings_is_a_configuration_error(self, settings: Settings) -> None:
        """worker_mode airflow without the Airflow settings: create_app names what to set."""
        from gbadz.errors import ConfigurationError

        broken = settings.model_copy(update={"ingest": IngestSettings(worker_mode="airflow")})
        with pytest.raises(ConfigurationError, match="GBADZ_AIRFLOW__URL"):
            create_app(broken)
