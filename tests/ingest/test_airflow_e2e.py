"""Uploads trigger a REAL Airflow 3 (ADR 0026): api-server + scheduler (LocalExecutor) +
dag-processor started for this module on loopback, the repo's DAG, this module's gbadz database,
S3 and keyring. Nothing is mocked: an upload through the HTTP API becomes one Airflow run with
the deterministic id, publishes one version, and the provider sees Airflow's task states."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
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
def app(
    request: pytest.FixtureRequest, base_settings: Settings, airflow: airflow_server.AirflowServer
) -> FastAPI:
    """The API in worker mode airflow, its loop running every 0.5 s (the TestClient starts it); for
    the latency measurement without the loop (the upload route triggers; the tasks store the
    outcome), so the embedded worker's upload there is not triggered in Airflow too."""
    measuring = request.cls is not None and request.cls.__name__ == "TestLatency"
    return create_app(_settings(base_settings, airflow, worker=not measuring))


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

    def test_the_api_server_down_when_an_upload_arrives(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """Airflow's api-server stopped when the upload arrives: queued with the reason; started
        again on its port, the loop triggers the upload and it publishes once."""
        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        airflow.stop("api-server")
        try:
            queued = upload(http, provider, dataset, csv_bytes(90))
            assert "queued" == queued["status"]
            assert queued["trigger_error"] in (
                "Airflow is unreachable (ConnectError)",
                "Airflow did not answer in time",
            )
        finally:
            airflow.start_api_server()
            airflow.wait_healthy()
        done = wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["status"] == "accepted" and r["airflow_state"] == "success",
        )
        assert done["trigger_attempts"] >= 2
        assert 1 == len(runs_named(airflow, queued["id"]))
        assert [1] == versions(app, dataset)


class TestLatency:
    def test_airflow_and_the_embedded_dag_mode_on_the_same_sample(
        self,
        base_settings: Settings,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """The measurement: one 300-row upload from POST to published through Airflow (LocalExecutor),
        then another through the embedded worker's dag mode (a child process running dag.test(), its
        metadata database migrated beforehand as `gbadz serve` leaves it), on the same machine."""
        from gbadz.config import airflow_environment, child_environment
        from gbadz.ingest import worker
        from gbadz.ingest.runner import default_dags_folder, ensure_metadata_db

        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        started = time.monotonic()
        queued = upload(http, provider, dataset, csv_bytes(300, seed=2))
        wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["status"] == "accepted",
        )
        through_airflow = time.monotonic() - started

        embedded = base_settings.model_copy(
            update={"ingest": IngestSettings(worker=False, worker_mode="dag")}
        )
        ensure_metadata_db(child_environment(embedded) | airflow_environment(embedded, default_dags_folder()))
        local = create_app(embedded)
        with TestClient(local) as client:
            started = time.monotonic()
            queued = upload(client, provider, dataset, csv_bytes(300, seed=3))
            assert 1 == worker.IngestWorker(embedded, local.state.sessionmaker, default_dags_folder()).drain()
            through_dag = time.monotonic() - started
            done = run_of(client, provider, dataset, queued["id"])
        assert ("accepted", None) == (done["status"], done["airflow_run_id"])
        print(  # noqa: T201 - the measurement
            f"upload -> published: Airflow (LocalExecutor) {through_airflow:.1f} s, embedded dag mode {through_dag:.1f} s"
        )


def _descends_from(pid: int, ancestor: int) -> bool:
    """Whether ``pid`` is a descendant of ``ancestor`` (read from /proc): only what we started is killed."""
    seen = 0
    while pid > 1 and seen < 64:
        if pid == ancestor:
            return True
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return False
        pid = int(stat.rsplit(")", 1)[1].split()[1])
        seen += 1
    return False


class TestWorkerKilled:
    def test_a_task_killed_mid_ingest_is_retried_and_publishes_once(
        self,
        app: FastAPI,
        http: TestClient,
        party: Callable[..., Party],
        key_prefix: str,
        airflow: airflow_server.AirflowServer,
    ) -> None:
        """The process running an ingest task is killed (SIGKILL) while it works: Airflow retries the
        task under the same DAG run, the claim lets the retry run, exactly one version is published
        and the landed upload is intact."""
        import os
        import signal

        provider = party("provider", "MO")
        dataset = register(http, app, provider, key_prefix)
        queued = upload(http, provider, dataset, csv_bytes(2000))
        client: AirflowClient = app.state.airflow
        scheduler = airflow.processes["scheduler"].pid
        path = f"/api/v2/dags/{airflow_server.DAG_ID}/dagRuns/{queued['airflow_run_id']}/taskInstances"

        def victim() -> dict[str, Any]:
            try:
                listed = airflow.get(path).json().get("task_instances", [])
            except httpx.HTTPError:  # the api-server is slow under load: ask again
                return {}
            for ti in listed:
                if ti["task_id"] in ("validate", "publish") and ti["state"] == "running" and ti.get("pid"):
                    return dict(ti)
            return {}

        target = wait_for(victim, lambda ti: bool(ti), timeout_s=300)
        pid = int(target["pid"])
        assert _descends_from(pid, scheduler), "the task's process is not one this test started"
        os.kill(pid, signal.SIGKILL)
        done = wait_for(
            lambda: run_of(http, provider, dataset, queued["id"]),
            lambda r: r["airflow_state"] in ("success", "failed"),
            timeout_s=600,
        )
        assert ("accepted", 1, "success") == (done["status"], done["version"], done["airflow_state"]), done
        retried = [
            ti for ti in airflow.get(path).json()["task_instances"] if ti["task_id"] == target["task_id"]
        ]
        assert retried[0]["try_number"] >= 2, retried
        assert [1] == versions(app, dataset)
        assert queued["landing_key"] == done["landing_key"]
        assert client.run_state(queued["airflow_run_id"]) is not None
