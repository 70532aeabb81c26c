"""The embedded ingest worker: it claims queued uploads once, runs them through the real DAG in a
child process, and stores the DAG's task states and the outcome with the run (issue #19)."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz import db
from gbadz.app import create_app
from gbadz.audit import AuditEvent
from gbadz.catalog.models import Dataset, IngestionRun
from gbadz.catalog.service import stored_contract
from gbadz.config import DatabaseSettings, Settings, settings_environment
from gbadz.ingest import pipeline, samples, worker
from gbadz.ingest.runner import default_dags_folder
from gbadz.ingest.validate import validate_file
from tests.conftest import REPO, run_cli
from tests.datasets import YAML, Party, sign_off

CSV = {"Content-Type": "text/csv"}


@pytest.fixture
def app(settings: Settings, fresh_database_url: str) -> FastAPI:
    """The API over a database of its own: a worker drains every queued upload it finds."""
    own = settings.model_copy(update={"db": DatabaseSettings(url=fresh_database_url)})
    engine = db.create_engine(own.db)
    db.upgrade(engine)
    engine.dispose()
    return create_app(own)


def _csv(rows: int, corrupt: bool = False) -> bytes:
    table = samples.generate("mo-tourism-visitor-arrivals", rows)
    if corrupt:
        table = samples.corrupt(table, "mo-tourism-visitor-arrivals")
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def _register(http: TestClient, app: FastAPI, provider: Party, key_prefix: str) -> str:
    doc = yaml.safe_load((REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text())
    doc["id"] = f"{key_prefix.strip('/')}-wk"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    response = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider.headers | YAML
    )
    assert 201 == response.status_code, response.text
    sign_off(http, app, str(doc["id"]))
    return str(doc["id"])


def _upload(http: TestClient, provider: Party, dataset: str, body: bytes) -> dict[str, Any]:
    response = http.post(f"/api/v1/datasets/{dataset}/uploads", content=body, headers=provider.headers | CSV)
    assert 202 == response.status_code, response.text
    return dict(response.json())


def _run(http: TestClient, party: Party, dataset: str, run_id: int) -> Any:
    return http.get(f"/api/v1/datasets/{dataset}/ingestion-runs/{run_id}", headers=party.headers)


class TestClaim:
    def test_a_queued_upload_is_claimed_by_one_worker_only(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Two workers racing for one queued upload: the first claims it, the second gets nothing."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        queued = _upload(http, provider, dataset, _csv(50))
        sessions = app.state.sessionmaker
        first = worker.claim_next(sessions, "replica-a:1", stale_after_s=3600)
        second = worker.claim_next(sessions, "replica-b:2", stale_after_s=3600)
        assert (queued["id"], None) == (first, second)
        with sessions() as session:
            run = session.get(IngestionRun, queued["id"])
            assert run is not None
            assert ("running", "replica-a:1") == (run.status, run.claimed_by)
            started = session.scalars(
                sa.select(AuditEvent).where(
                    AuditEvent.action == "ingestion.started", AuditEvent.subject_id == dataset
                )
            ).all()
        assert [queued["id"]] == [e.details["run"] for e in started]
        # A DAG task that ends shows on the running run at once; a run no worker claimed shows nothing.
        worker.step_done(sessions, queued["id"], "land")
        assert {"land": "success"} == _run(http, provider, dataset, queued["id"]).json()["task_states"]
        # A worker that stops puts what it claimed back; another worker's claim is not touched.
        worker.release(sessions, queued["id"], "replica-b:2")
        assert "running" == _run(http, provider, dataset, queued["id"]).json()["status"]
        worker.release(sessions, queued["id"], "replica-a:1")
        assert "queued" == _run(http, provider, dataset, queued["id"]).json()["status"]
        worker.step_done(sessions, queued["id"], "validate")
        assert "validate" not in (_run(http, provider, dataset, queued["id"]).json()["task_states"] or {})
        # A run a lost replica left running past the timeout is claimed again.
        assert queued["id"] == worker.claim_next(sessions, "replica-a:1", stale_after_s=3600)
        assert queued["id"] == worker.claim_next(sessions, "replica-c:3", stale_after_s=0)
        worker.release(sessions, queued["id"], "replica-c:3")

    def test_a_run_is_read_only_by_its_provider(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Another provider, a consumer or a wrong run id cannot read a provider's ingestion run."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        queued = _upload(http, provider, dataset, _csv(20))
        assert 200 == _run(http, provider, dataset, queued["id"]).status_code
        assert 403 == _run(http, party("provider", "MO"), dataset, queued["id"]).status_code
        assert 403 == _run(http, party("consumer", "HK"), dataset, queued["id"]).status_code
        assert 404 == _run(http, provider, dataset, queued["id"] + 10_000).status_code
        assert 404 == _run(http, provider, "no-such-dataset", queued["id"]).status_code


class TestWorker:
    def _check(self, http: TestClient, provider: Party, dataset: str, good: int, bad: int) -> None:
        published = _run(http, provider, dataset, good).json()
        assert ("accepted", 1) == (published["status"], published["version"]), published
        assert "success" == published["task_states"]["publish"]
        assert "skipped" == published["task_states"]["quarantine"]
        assert [] == published["failed_checks"]
        rejected = _run(http, provider, dataset, bad).json()
        assert "rejected" == rejected["status"], rejected
        assert "success" == rejected["task_states"]["quarantine"]
        assert "arrivals" in {c["column"] for c in rejected["failed_checks"]}
        assert all(
            set(c) == {"rule", "column", "detail", "unexpected_count", "sample_rows"}
            for c in rejected["failed_checks"]
        )
        assert rejected["size"] > 0

    def test_inline_steps_publish_a_good_upload_and_reject_a_bad_one(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Inline, the worker runs the DAG's steps in its thread: version 1 published, the bad
        upload rejected with its failed checks (columns, counts, row numbers; never a value)."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        good = _upload(http, provider, dataset, _csv(500))
        bad = _upload(http, provider, dataset, _csv(500, corrupt=True))
        settings = app.state.settings
        context = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
        ingest = worker.IngestWorker(settings, app.state.sessionmaker, default_dags_folder(), context)
        assert 2 == ingest.drain()
        self._check(http, provider, dataset, good["id"], bad["id"])
        assert 0 == ingest.drain()

    @pytest.mark.e2e
    # The production lane: the inline and SQLite paths are covered beside it and by the demo.
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_the_dag_publishes_a_good_upload_and_rejects_a_bad_one(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """With the DAG, each upload runs in a child process through Airflow; the task states it
        reports are stored with the run beside the outcome."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        good = _upload(http, provider, dataset, _csv(500))
        bad = _upload(http, provider, dataset, _csv(500, corrupt=True))
        ingest = worker.IngestWorker(app.state.settings, app.state.sessionmaker, default_dags_folder())
        assert 2 == ingest.drain()
        self._check(http, provider, dataset, good["id"], bad["id"])


def _inline(app: FastAPI, name: str) -> worker.IngestWorker:
    settings = app.state.settings
    context = pipeline.IngestContext(settings, app.state.s3, app.state.keys, app.state.sessionmaker)
    ingest = worker.IngestWorker(settings, app.state.sessionmaker, default_dags_folder(), context)
    ingest.name = name
    return ingest


class TestOneDatasetAtATime:
    def test_two_workers_on_one_dataset_publish_one_readable_version_per_upload(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Two workers draining two uploads of one dataset at once: each upload becomes its own
        version, both read back intact (no 409 PublishedVersionAltered), none failed."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        uploads = [_upload(http, provider, dataset, _csv(rows)) for rows in (400, 401)]
        # While one run of the dataset is running, no worker claims the other.
        sessions = app.state.sessionmaker
        first = worker.claim_next(sessions, "replica-a:1", stale_after_s=3600)
        assert (uploads[0]["id"], None) == (first, worker.claim_next(sessions, "replica-b:2", 3600))
        worker.release(sessions, uploads[0]["id"], "replica-a:1")

        workers = [_inline(app, "replica-a:1"), _inline(app, "replica-b:2")]
        barrier = threading.Barrier(2)
        ran: list[int] = []

        def drain(ingest: worker.IngestWorker) -> None:
            barrier.wait()
            ran.append(ingest.drain())

        threads = [threading.Thread(target=drain, args=(w,)) for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        assert 2 == sum(ran)
        runs = [_run(http, provider, dataset, u["id"]).json() for u in uploads]
        assert ["accepted", "accepted"] == [r["status"] for r in runs], runs
        assert {1, 2} == {r["version"] for r in runs}
        for version in (1, 2):
            read = http.get(f"/api/v1/datasets/{dataset}/versions/{version}", headers=provider.headers)
            assert 200 == read.status_code, read.text

    def test_a_writer_that_lost_the_version_number_leaves_the_winner_intact(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str, tmp_path: Path
    ) -> None:
        """A publication racing for a number already registered writes under its own prefix, so
        the registered version's files are never overwritten; publish() then takes the next number."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        _upload(http, provider, dataset, _csv(300))
        assert 1 == _inline(app, "replica-a:1").drain()
        ctx = _inline(app, "x").context
        assert ctx is not None
        with ctx.sessions() as session:
            contract = stored_contract(session.get(Dataset, dataset))
            contract_sha = session.get(Dataset, dataset).contract_sha256
        source = tmp_path / "second.csv"
        source.write_bytes(_csv(310))
        landed = pipeline.land(ctx, contract, source)
        table, report = validate_file(contract, source, ctx.settings.ingest)
        assert table is not None
        protected_table, protected = pipeline.protect(ctx, contract, table)
        args = (ctx, contract, landed, protected_table, protected, report, contract_sha)
        with pytest.raises(sa.exc.IntegrityError):
            pipeline._publish_version(*args, 1, None, None, None)
        assert 200 == http.get(f"/api/v1/datasets/{dataset}/versions/1", headers=provider.headers).status_code
        assert 2 == pipeline.publish(*args).version
        assert 200 == http.get(f"/api/v1/datasets/{dataset}/versions/2", headers=provider.headers).status_code


class TestStaleClaim:
    def test_a_stale_claims_late_finish_does_not_overwrite_the_new_claimant(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """A run claimed again after its first worker went quiet belongs to the second worker:
        the first one's late progress, outcome and failure are refused."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        queued = _upload(http, provider, dataset, _csv(200))
        sessions = app.state.sessionmaker
        assert queued["id"] == worker.claim_next(sessions, "slow:1", stale_after_s=3600)
        assert queued["id"] == worker.claim_next(sessions, "fresh:2", stale_after_s=0)
        late = _inline(app, "slow:1")
        assert late.context is not None
        with pytest.raises(pipeline.ClaimLost):
            worker.run_inline(late.context, queued["id"], "slow:1")
        assert "running" == worker.finish(sessions, queued["id"], {"land": "failed"}, "timed out", "slow:1")
        assert not worker.heartbeat(sessions, queued["id"], "slow:1")
        assert worker.heartbeat(sessions, queued["id"], "fresh:2")
        run = _run(http, provider, dataset, queued["id"]).json()
        assert ("running", None) == (run["status"], run["version"])
        assert "failed" not in (run["task_states"] or {}).values()
        states = worker.run_inline(late.context, queued["id"], "fresh:2")
        assert "accepted" == worker.finish(sessions, queued["id"], states, None, "fresh:2")
        # The slow worker wakes up again: nothing it says changes the outcome.
        assert "accepted" == worker.finish(sessions, queued["id"], {}, "timed out", "slow:1")
        run = _run(http, provider, dataset, queued["id"]).json()
        assert ("accepted", 1, "success") == (run["status"], run["version"], run["task_states"]["publish"])
        assert 200 == http.get(f"/api/v1/datasets/{dataset}/versions/1", headers=provider.headers).status_code


class TestRequeue:
    def test_the_operator_requeues_a_failed_run_and_it_publishes(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str, tmp_path: Path
    ) -> None:
        """`gbadz ingest-requeue RUN` queues a failed run again (audited, the landed upload reused
        as it is); a run that is not failed, or no run, is refused in one line."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        queued = _upload(http, provider, dataset, _csv(120))
        sessions = app.state.sessionmaker
        assert queued["id"] == worker.claim_next(sessions, "lost:1", stale_after_s=3600)
        assert "failed" == worker.finish(sessions, queued["id"], {}, "timed out", "lost:1")
        landing_key = _landing_key(app, queued["id"])
        env = settings_environment(app.state.settings)
        again = run_cli(tmp_path, "ingest-requeue", str(queued["id"]), "--json", **env)
        assert 0 == again.returncode, again.stderr
        assert {"upload": queued["id"], "dataset": dataset, "status": "queued"} == json.loads(again.stdout)
        assert "queued" == _run(http, provider, dataset, queued["id"]).json()["status"]
        with sessions() as session:
            audited = session.scalars(
                sa.select(AuditEvent).where(AuditEvent.action == "ingestion.requeued")
            ).all()
        assert [(queued["id"], "cli:admin")] == [(e.details["run"], e.actor) for e in audited]
        assert 1 == _inline(app, "replica-a:1").drain()
        run = _run(http, provider, dataset, queued["id"]).json()
        assert ("accepted", 1) == (run["status"], run["version"])
        assert landing_key == _landing_key(app, queued["id"])
        refused = run_cli(tmp_path, "ingest-requeue", str(queued["id"]), **env)
        assert 1 == refused.returncode
        assert "is accepted: only a failed run can be queued again" in refused.stderr
        missing = run_cli(tmp_path, "ingest-requeue", str(queued["id"] + 10_000), **env)
        assert (1, True) == (missing.returncode, "no such run" in missing.stderr)


def _landing_key(app: FastAPI, run_id: int) -> str:
    with app.state.sessionmaker() as session:
        run = session.get(IngestionRun, run_id)
        assert run is not None
        return run.landing_key


class TestRowNumbers:
    def test_a_bad_first_data_row_is_reported_as_row_1(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], key_prefix: str
    ) -> None:
        """Failing rows are the file's data rows numbered from 1, the header row not counted."""
        provider = party("provider", "MO")
        dataset = _register(http, app, provider, key_prefix)
        header, first, *rest = _csv(30).decode().splitlines()
        columns = header.replace('"', "").split(",")
        cells = first.split(",")
        cells[columns.index("arrivals")] = "-5"
        body = "\n".join([header, ",".join(cells), *rest]).encode() + b"\n"
        bad = _upload(http, provider, dataset, body)
        assert 1 == _inline(app, "replica-a:1").drain()
        run = _run(http, provider, dataset, bad["id"]).json()
        assert "rejected" == run["status"], run
        [check] = [c for c in run["failed_checks"] if c["column"] == "arrivals"]
        assert [1] == check["sample_rows"]


class TestFailureReasons:
    def test_a_childs_last_line_keeps_no_quoted_value(self) -> None:
        """A library's message on the child's last line may quote a cell: the run's summary and its
        audit event keep the error, not the value (invariant 9)."""
        from gbadz.ingest.worker import _parse

        line = "pyarrow.lib.ArrowInvalid: Failed to parse string: 'Chan Tai-man 13912345678' as a scalar"
        result = _parse("not json", f"Traceback (most recent call last):\n{line}\n", 1)
        assert result.error is not None
        assert "ArrowInvalid" in result.error
        assert "Chan" not in result.error
        assert "13912345678" not in result.error
