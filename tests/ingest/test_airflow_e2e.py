"""Uploads trigger a REAL Airflow 3 (ADR 0026): api-server + scheduler (LocalExecutor) +
dag-processor started for this module on loopback, the repo's DAG, this module's gbadz database,
S3 and keyring. Nothing is mocked: an upload through the HTTP API becomes one Airflow run with
the deterministic id, publishes one version, and the provider sees Airflow's task states.

The faults (a worker killed mid-ingest, the api-server down when an upload arrives) are tested in
the production shape, CeleryExecutor, in tests/cluster; the latency of Airflow against
``dag.test()`` is measured by bench/bench_cluster.py, not here."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import db
from gbadz.app import create_app
from gbadz.catalog.models import DatasetVersion, IngestionRun
from gbadz.config import DatabaseSettings, IngestSettings, S3Settings, Settings, settings_environment
from gbadz.embedded import free_loopback_ports
from gbadz.ingest import trigger
from gbadz.ingest.airflow import AirflowClient, AirflowUnavailable, dag_run_id
from tests.conftest import lane_settings
from tests.datasets import Party
from tests.ingest import airflow_server
from tests.ingest.test_trigger import airflow_settings, csv_bytes, register, run_of, upload

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(900),
    # One lane: the deployment's (Airflow's tasks and the API write one PostgreSQL database).
    pytest.mark.parametrize("database_url", ["postgresql"], indirect=True),
]


@pytest.fixture(scope="module")
def base_settings(
    database_url: str, s3_settings: S3Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Settings]:
    """A gbadz database (a schema of its own), home and keyring shared by the app and Airflow's tasks."""
    base = database_url.split("?", 1)[0]
    plain = db.normalise_url(base).replace("postgresql+psycopg://", "postgresql://")
    schema = f"gbadz_airflow_{secrets.token_hex(4)}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = f"{base}?options=-csearch_path%3D{schema}"
    engine = db.create_engine(DatabaseSettings(url=url))
    db.upgrade(engine)
    engine.dispose()
    try:
        yield lane_settings(url, s3_settings, tmp_path_factory.mktemp("gbadz-home"))
    finally:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(scope="module")
def airflow(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[airflow_server.AirflowServer]:
    server = airflow_server.start(tmp_path_factory.mktemp("airflow"), settings_environment(base_settings))
    try:
        yield server
    finally:
        server.stop_all()


def _settings(
    base: Settings, airflow: airflow_server.AirflowServer, *, worker: bool = True, url: str | None = None
) -> Settings:
    return base.model_copy(
        update={
            "ingest": IngestSettings(worker=worker, worker_mode="airflow", worker_interval_s=0.5),
            "airflow": airflow_settings(
                url or airflow.url, password=airflow.password, retry_min_s=1, retry_max_s=5
            ).model_copy(update={"username": airflow.username}),
        }
    )


@pytest.fixture
def app(base_settings: Settings, airflow: airflow_server.AirflowServer) -> FastAPI:
    """The API in worker mode airflow, its loop running every 0.5 s (the TestClient starts it)."""
    return create_app(_settings(base_settings, airflow))


def wait_for(
    what: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], timeout_s: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    seen = what()
    while not done(seen):
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s:.0f} s: {seen}")
        time.sleep(0.5)
        seen = what()
    return seen


def versions(app: FastAPI, dataset: str) -> list[int]:
    with app.state.sessionmaker() as session:
        return list(
            session.scalars(sa.select(DatasetVersion.version).where(DatasetVersion.dataset_id == dataset))
        )


def runs_named(airflow: airflow_server.AirflowServer, upload_id: int) -> list[dict[str, Any]]:
    return [r for r in airflow.dag_runs() if (r.get("conf") or {}).get("upload") == upload_id]  # type: ignore[union-attr]


class TestThroughAirflow:
    def test_an_upload_runs_in_airflow_and_the_provider_sees_its_tasks(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """Upload through the API: one Airflow run with the deterministic id and exactly gbadz's conf
        (query parameters and headers that look like conf are ignored), one version published, and
        the provider's API and console show Airflow's state and task states."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        body = csv_bytes(300)
        started = time.monotonic()
        queued = upload(
            http, provider, dataset, body, query="?upload=1&conf=%7B%22contract%22%3A%22%2Fetc%2Fpasswd%22%7D"
        )
        expected_id = dag_run_id(queued["id"], queued["source_sha256"])
        assert (expected_id, "running", None) == (
            queued["airflow_run_id"],
            queued["status"],
            queued["trigger_error"],
        )
        done = wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["status"] not in ("queued", "running") and r["airflow_state"] == "success",
        )
        latency = time.monotonic() - started
        assert ("accepted", 1) == (done["status"], done["version"]), done
        assert {
            "land": "success",
            "validate": "success",
            "route": "success",
            "publish": "success",
            "quarantine": "skipped",
        } == done["task_states"]
        [airflow_run] = runs_named(airflow, queued["id"])
        assert (expected_id, {"upload": queued["id"]}) == (airflow_run["dag_run_id"], airflow_run["conf"])
        assert [1] == versions(app, dataset)
        (airflow.home / "latency.txt").write_text(f"{latency:.1f}\n")
        print(f"upload -> published through Airflow (LocalExecutor): {latency:.1f} s")  # noqa: T201 - the measurement

    def test_a_second_trigger_and_a_replay_start_nothing_twice(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """The same upload triggered again (two loops, a replayed trigger): Airflow answers 409 and
        keeps one run; a DAG run made by hand for the upload under another id is refused at land.
        One version either way."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(120))
        done = wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["status"] == "accepted" and r["airflow_state"] == "success",
        )
        client: AirflowClient = app.state.airflow
        again = client.trigger(done["airflow_run_id"], {"upload": queued["id"]})
        assert not again.created
        loops = [trigger.AirflowTrigger(app.state.settings, app.state.sessionmaker, client) for _ in range(2)]
        assert [0, 0] == [loop.drain() for loop in loops]
        replay = f"replay-{secrets.token_hex(4)}"
        client.trigger(replay, {"upload": queued["id"]})
        land = wait_for(
            lambda: {
                "state": (client.run_state(replay) or trigger.RunState(replay, "none", {})).tasks.get("land")
            },
            lambda s: s["state"] in ("up_for_retry", "failed"),
        )
        assert land["state"] in ("up_for_retry", "failed")
        assert 1 == len(
            [r for r in runs_named(airflow, queued["id"]) if r["dag_run_id"] == done["airflow_run_id"]]
        )
        after = run_of(http, provider, dataset, queued["id"])
        assert ("accepted", 1, done["airflow_run_id"]) == (
            after["status"],
            after["version"],
            after["airflow_run_id"],
        )
        assert [1] == versions(app, dataset)

    def test_a_provider_cannot_trigger_another_providers_upload(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """Another provider uploading to a dataset it does not provide is refused before a byte is
        landed: no run, no Airflow trigger. gbadz offers no route that triggers a given run."""
        owner = party("provider", "MO")
        dataset = register(http, app, owner, key_prefix)
        intruder = party("provider", "MO")
        before = len(airflow.dag_runs())
        response = http.post(
            f"/api/v1/datasets/{dataset}/uploads",
            content=csv_bytes(10),
            headers=intruder.headers | {"Content-Type": "text/csv"},
        )
        assert response.status_code in (403, 404), response.text
        with app.state.sessionmaker() as session:
            assert 0 == session.scalar(
                sa.select(sa.func.count()).select_from(IngestionRun).where(IngestionRun.dataset_id == dataset)
            )
        assert before == len(airflow.dag_runs())
        paths = {route.path for route in app.routes}  # type: ignore[attr-defined]
        assert not [p for p in paths if "trigger" in p or "dagRuns" in p]


class TestAirflowUnreachable:
    def test_an_upload_waits_for_airflow_then_is_triggered_once(
        self,
        base_settings: Settings,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """Uploaded through a replica whose Airflow address is dead: 202 and queued with the reason.
        Airflow reachable again (the loops of two replicas): triggered once, one run, one version."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        dead = f"http://127.0.0.1:{free_loopback_ports(1)['0']}"
        stranded = create_app(_settings(base_settings, airflow, worker=False, url=dead))
        with TestClient(stranded) as other:
            queued = upload(other, provider, dataset, csv_bytes(150))
        assert ("queued", "Airflow is unreachable (ConnectError)") == (
            queued["status"],
            queued["trigger_error"],
        )
        assert airflow.password not in str(queued)
        # Its backoff (1 s) passes; the running replica's loop (and a second one here) triggers it.
        time.sleep(1.2)
        second = trigger.AirflowTrigger(app.state.settings, app.state.sessionmaker, app.state.airflow)
        second.drain()
        done = wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["status"] == "accepted" and r["airflow_state"] == "success",
        )
        assert done["airflow_run_id"] == queued["airflow_run_id"]
        assert 1 == len(runs_named(airflow, queued["id"]))
        assert [1] == versions(app, dataset)

    def test_wrong_credentials_are_named_without_the_secret(
        self, airflow: airflow_server.AirflowServer
    ) -> None:
        """Airflow refuses a wrong password: the reason says so (401) and carries no secret."""
        wrong = "not-the-password-" + secrets.token_hex(8)
        client = AirflowClient(
            airflow_settings(airflow.url, password=wrong).model_copy(update={"username": airflow.username})
        )
        try:
            with pytest.raises(AirflowUnavailable) as caught:
                client.trigger("gbadz-upload-0-deadbeef", {"upload": 0})
        finally:
            client.close()
        assert "Airflow refused the credentials of GBADZ_AIRFLOW__USERNAME (401)" == caught.value.reason
        assert wrong not in str(caught.value)
