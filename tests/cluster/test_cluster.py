"""`gbadz cluster up|down|status`: a production-shaped zone on loopback, end to end (ADR 0025).

One cluster for the module (SeaweedFS master, four volume servers in two racks, filer, S3;
two PostgreSQL databases of its own; Airflow with a Celery worker on the shared Redis; two API
replicas), started by the CLI in a temporary GBADZ_HOME and stopped by it at the end.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import secrets
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
import yaml

from gbadz import db, storage
from gbadz.catalog.models import Dataset
from gbadz.catalog.service import stored_contract
from gbadz.cluster import env as cenv
from gbadz.cluster import procs
from gbadz.cluster.manager import Cluster
from gbadz.embedded import pid_alive
from gbadz.errors import BadRequest
from gbadz.identity import service
from gbadz.ingest import pipeline, samples
from tests.conftest import REPO, SUITE, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CONTRACT = "hk-logistics-deliveries"
GRANTED = ["delivery_id", "recipient_id", "recipient_phone", "address", "district"]
CSV = {"Content-Type": "text/csv"}
YAML = {"Content-Type": "application/yaml"}
#: What a single upload's DAG run may take on a busy 2-core machine (GX and Airflow imports).
DAG_TIMEOUT_S = 420
#: Rows of the upload whose Celery worker is killed: its validate task runs for seconds.
BIG_ROWS = 100_000


@dataclass
class Up:
    home: Path
    name: str
    cluster: Cluster
    status: dict[str, Any]
    outputs: list[str]
    seconds: float
    secret_values: list[str]
    measured: dict[str, float] = field(default_factory=dict)

    @property
    def state(self) -> Any:
        return self.cluster.home.load()

    def url(self, replica: str) -> str:
        return cenv.replica_url(self.state, replica)


def _postgres_admin_url() -> str:
    if SUITE.postgres_url is None:
        if SUITE.require_postgres:
            pytest.fail("GBADZ_TEST_REQUIRE_POSTGRES=1 but GBADZ_TEST_POSTGRES_URL is not set")
        pytest.skip("the cluster needs PostgreSQL: set GBADZ_TEST_POSTGRES_URL")
    return SUITE.postgres_url.split("?", 1)[0].replace("postgresql+psycopg://", "postgresql://")


def _log_tail(message: str, lines: int = 30) -> str:
    """The end of the log file a failed `cluster up` names (the folder is purged after)."""
    import re

    found = re.search(r"see (/\S+\.log)", message)
    if found is None or not Path(found[1]).is_file():
        return ""
    return f"\n--- end of {found[1]}:\n" + "\n".join(
        Path(found[1]).read_text(errors="replace").splitlines()[-lines:]
    )


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Up]:
    """The module's cluster, brought up by `gbadz cluster up` and purged by `down --purge` after."""
    home = tmp_path_factory.mktemp("cluster-home")
    name = "t" + secrets.token_hex(5)
    began = time.monotonic()
    started = run_cli(
        home, "cluster", "up", "--name", name, "--json", "--timeout", "600",
        "--postgres", _postgres_admin_url(), timeout=900,
    )  # fmt: skip
    seconds = time.monotonic() - began
    cluster = Cluster(home, name)
    try:
        assert 0 == started.returncode, started.stderr[-3000:] + _log_tail(started.stderr)
        payload = json.loads(started.stdout)
        result = Up(
            home=home,
            name=name,
            cluster=cluster,
            status=payload,
            outputs=[started.stdout, started.stderr],
            seconds=seconds,
            secret_values=cluster.secrets().values(),
        )
        yield result
        artifacts = REPO / "test-artifacts"
        artifacts.mkdir(exist_ok=True)
        (artifacts / "cluster-measurements.json").write_text(json.dumps(result.measured, indent=2))
    finally:
        run_cli(home, "cluster", "down", "--name", name, "--purge", timeout=300)


# -- parties and Airflow -----------------------------------------------------------------------
@dataclass
class Party:
    client_id: str
    client_secret: str
    org_id: str
    org_name: str
    headers: dict[str, str] = field(default_factory=dict)


def _party(up: Up, role: str, jurisdiction: str, api: httpx.Client) -> Party:
    """An organisation and OAuth client made as `gbadz orgs create` / `clients create` would, with a token."""
    engine = db.create_engine(up.cluster.settings().db)
    try:
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            org = service.create_organization(
                session, actor="test", name=f"{role}-{secrets.token_hex(4)}", jurisdiction=jurisdiction
            )
            issued = service.create_client(
                session, actor="test", org_id=org.id, role=role, auth_method="client_secret"
            )
            assert issued.client_secret is not None
            party = Party(issued.client.client_id, issued.client_secret, org.id, org.name)
    finally:
        engine.dispose()
    token = api.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(party.client_id, party.client_secret),
    )
    assert 200 == token.status_code, token.text
    party.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return party


def _airflow(up: Up) -> httpx.Client:
    """Airflow's REST API, signed in as the cluster's gbadz user (password from its 0600 file)."""
    state = up.state
    login = json.loads(Path(up.status["airflow_login"]["password_file"]).read_text())
    client = httpx.Client(base_url=cenv.airflow_url(state), timeout=90)
    token = client.post("/auth/token", json={"username": "gbadz", "password": login["gbadz"]})
    assert 201 == token.status_code, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _csv(rows: int) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(samples.generate(CONTRACT, rows), sink)
    return sink.getvalue()


@dataclass
class World:
    provider: Party
    officer: Party
    dataset: str
    upload: int
    run: dict[str, Any]
    seconds: float


def _register(up: Up, api: httpx.Client, provider: Party, officer: Party) -> str:
    """The logistics contract registered by ``provider`` under a new id, its classification signed."""
    doc = yaml.safe_load((REPO / "contracts" / f"{CONTRACT}.yaml").read_text())
    doc["id"] = f"c{secrets.token_hex(4)}-deliveries"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    registered = api.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider.headers | YAML
    )
    assert 201 == registered.status_code, registered.text
    [review] = api.get(f"/api/v1/classification-reviews?dataset={doc['id']}", headers=officer.headers).json()
    signed = api.post(
        f"/api/v1/datasets/{doc['id']}/classification-review",
        json={
            "approve": True,
            "note": "every column classified as the data shows",
            "contract_sha256": review["contract_sha256"],
        },
        headers=officer.headers,
    )
    assert 200 == signed.status_code, signed.text
    return str(doc["id"])


def _run(api: httpx.Client, provider: Party, dataset: str, run_id: int) -> dict[str, Any]:
    got = api.get(f"/api/v1/datasets/{dataset}/ingestion-runs/{run_id}", headers=provider.headers)
    assert 200 == got.status_code, got.text
    body: dict[str, Any] = got.json()
    return body


def _wait_published(
    api: httpx.Client, provider: Party, dataset: str, run_id: int, timeout_s: float = DAG_TIMEOUT_S
) -> dict[str, Any]:
    """Poll the provider's view of the run until it is accepted and its Airflow run succeeded."""
    deadline = time.monotonic() + timeout_s
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = _run(api, provider, dataset, run_id)
        if run["status"] in {"rejected", "failed"}:
            break
        if run["status"] == "accepted" and run["airflow_state"] == "success":
            return run
        time.sleep(1)
    pytest.fail(
        f"upload {run_id} was not published through Airflow within {timeout_s:.0f} s: "
        f"status {run.get('status')}, Airflow state {run.get('airflow_state')}, "
        f"tasks {run.get('task_states')}, summary {run.get('summary')!r}"
    )


def _airflow_runs_of(airflow: httpx.Client, upload: int) -> list[dict[str, Any]]:
    """Every Airflow run of the ingest DAG whose conf names this upload."""
    listed = airflow.get("/api/v2/dags/gbadz_ingest/dagRuns", params={"limit": 100})
    assert 200 == listed.status_code, listed.text
    return [r for r in listed.json()["dag_runs"] if (r.get("conf") or {}).get("upload") == upload]


def _task(airflow: httpx.Client, dag_run_id: str, task_id: str) -> dict[str, Any]:
    got = airflow.get(f"/api/v2/dags/gbadz_ingest/dagRuns/{dag_run_id}/taskInstances/{task_id}")
    assert 200 == got.status_code, got.text
    body: dict[str, Any] = got.json()
    return body


def _versions_of(up: Up, dataset: str) -> list[tuple[int, str]]:
    """(version, source SHA-256) of every published version of ``dataset``, read from the database."""
    from gbadz.catalog.models import DatasetVersion

    engine = db.create_engine(up.cluster.settings().db)
    try:
        with db.make_sessionmaker(engine)() as session:
            rows = session.execute(
                sa.select(DatasetVersion.version, DatasetVersion.source_sha256)
                .where(DatasetVersion.dataset_id == dataset)
                .order_by(DatasetVersion.version)
            ).all()
            return [(int(v), str(h)) for v, h in rows]
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def world(up: Up) -> World:
    """A provider registers the logistics contract and uploads through replica A; nobody triggers
    anything: replica A's worker triggers the Airflow run, and the test waits for it to publish."""
    a = httpx.Client(base_url=up.url("a"), timeout=60)
    provider = _party(up, "provider", "HK", a)
    officer = _party(up, "compliance_officer", "CN-SZ", a)
    dataset = _register(up, a, provider, officer)
    began = time.monotonic()
    uploaded = a.post(
        f"/api/v1/datasets/{dataset}/uploads", content=_csv(2_000), headers=provider.headers | CSV
    )
    assert 202 == uploaded.status_code, uploaded.text
    run = _wait_published(a, provider, dataset, uploaded.json()["id"])
    seconds = time.monotonic() - began
    up.measured["upload_to_published_s"] = round(seconds, 1)
    return World(provider, officer, dataset, uploaded.json()["id"], run, seconds)


def _grant(api: httpx.Client, consumer: Party, dataset: str) -> str:
    """An approved grant of ``consumer`` on ``dataset`` (the exempt purpose: approved at once)."""
    asked = api.post(
        f"/api/v1/datasets/{dataset}/access-requests",
        json={
            "purpose": "trade_transport_academic_mfg_marketing",
            "purpose_text": "Last-mile route optimisation",
            "columns": GRANTED,
        },
        headers=consumer.headers,
    )
    assert 201 == asked.status_code, asked.text
    assert "approved" == asked.json()["state"], asked.json()
    return str(asked.json()["grant_id"])


def _grant_and_deliver(
    api: httpx.Client, consumer: Party, dataset: str, rows: int | None = 2_000
) -> dict[str, Any]:
    delivered = api.post(
        f"/api/v1/grants/{_grant(api, consumer, dataset)}/deliveries", headers=consumer.headers
    )
    assert 201 == delivered.status_code, delivered.text
    body: dict[str, Any] = delivered.json()
    [link] = body["files"]
    table = pq.read_table(io.BytesIO(httpx.get(link["url"], timeout=60).content))
    assert GRANTED == table.column_names
    if rows is not None:
        assert rows == table.num_rows
    return body


def _verify_log(api: httpx.Client, officer: Party) -> None:
    """The officer has a checkpoint signed for the log's current size (the replicas sign one every
    60 s), then verifies the whole log through ``api``."""
    signed = api.get("/api/v1/transfer-log/checkpoint", params={"fresh": "true"}, headers=officer.headers)
    assert 200 == signed.status_code, signed.text
    verified = api.post("/api/v1/transfer-log/verifications", headers=officer.headers)
    assert 200 == verified.status_code, verified.text
    assert verified.json()["ok"], verified.json()


def _tree(pid: int) -> list[int]:
    """The cluster process ``pid``, its process group and every descendant."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid, *procs.group_members(pid, procs.start_ticks(pid))]
    while todo:
        current = todo.pop()
        if current not in tree:
            tree.append(current)
            todo += children.get(current, [])
    return tree


def _kill_tree(pid: int, sig: signal.Signals = signal.SIGKILL, timeout_s: float = 30) -> list[int]:
    """Signal the cluster process ``pid``, its process group and every descendant (Airflow runs
    each task in a process group of its own, under the worker's), as a lost machine would; wait
    until all are gone (SIGKILL after ``timeout_s``); the PIDs signalled."""
    tree = _tree(pid)
    for member in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, sig)
    deadline = time.monotonic() + timeout_s
    while any(pid_alive(p) for p in tree):
        if time.monotonic() > deadline:
            for member in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(member, signal.SIGKILL)
            deadline = time.monotonic() + 10
        time.sleep(0.1)
    return tree


def _replica_a_up(up: Up) -> None:
    """Start replica A if an earlier test killed it and failed before bringing it back: one
    failure is reported once, not again by every test after it."""
    a = up.state.procs["api-a"]
    if not procs.is_ours(a.pid, a.start_ticks):
        up.cluster.start_part("api-a", timeout_s=180)


def _cluster_pids(state: Any) -> list[int]:
    """Every live process of the cluster whose processes ``state`` recorded."""
    pids: list[int] = []
    for proc in state.procs.values():
        pids += procs.group_members(proc.pid, proc.start_ticks)
    return pids


# -- tests -------------------------------------------------------------------------------------
class TestCluster:
    """In file order on one worker (one class: pytest-xdist's loadscope keeps it together)."""

    def test_up_is_healthy_idempotent_and_prints_no_secret(self, up: Up) -> None:
        """Every part is healthy; a second `up` says it is already up; no secret is ever printed."""
        assert up.status["up"], [p for p in up.status["parts"] if not p["healthy"]]
        assert {"master", "volume-r1a", "volume-r1b", "volume-r2a", "volume-r2b", "filer", "s3"} <= {
            p["name"] for p in up.status["parts"]
        }
        up.measured["up_to_healthy_s"] = round(up.status["seconds"], 1)
        again = run_cli(up.home, "cluster", "up", "--name", up.name, timeout=300)
        assert 0 == again.returncode, again.stderr
        assert f"cluster {up.name} is already up" in again.stdout
        status = run_cli(up.home, "cluster", "status", "--name", up.name, timeout=120)
        assert 0 == status.returncode, status.stderr
        assert "airflow-passwords.json" in status.stdout  # where the Airflow login is
        up.measured["rss_mib"] = round(up.cluster.status()["rss_bytes"] / 2**20)
        printed = "\n".join([*up.outputs, again.stdout, again.stderr, status.stdout, status.stderr])
        for value in up.secret_values:
            assert value not in printed

    def test_every_process_listens_on_loopback_only(self, up: Up) -> None:
        """Every listening socket of every cluster process is on 127.0.0.1, and every recorded port listens."""
        bound = procs.listening(_cluster_pids(up.state))
        assert bound
        assert {"127.0.0.1"} == {address for address, _, _ in bound}
        assert set(up.state.ports.values()) <= {port for _, port, _ in bound}

    def test_start_part_refuses_a_running_or_unknown_part(self, up: Up) -> None:
        """Starting one part alone refuses a part that runs, or one the cluster does not have, by name."""
        with pytest.raises(BadRequest, match="master: already running"):
            up.cluster.start_part("master")
        with pytest.raises(BadRequest, match="volume-r9z: not a part of cluster"):
            up.cluster.start_part("volume-r9z")

    def test_both_replicas_are_ready(self, up: Up) -> None:
        """Both API replicas answer /readyz."""
        for replica in ("a", "b"):
            assert 200 == httpx.get(f"{up.url(replica)}/readyz", timeout=10).status_code

    def test_upload_is_triggered_by_itself_runs_on_a_celery_worker_and_is_delivered_through_b(
        self, up: Up, world: World
    ) -> None:
        """An upload through replica A triggers its Airflow run by itself (the provider sees the run
        id, its state and task states through A), runs on the cluster's Celery worker, and is read
        and delivered through replica B with its transfer in a log that verifies."""
        run = world.run
        assert run["airflow_run_id"].startswith(f"gbadz-upload-{world.upload}-"), run
        assert ("accepted", "success", 1) == (run["status"], run["airflow_state"], run["version"])
        assert {
            "land": "success",
            "validate": "success",
            "route": "success",
            "publish": "success",
        }.items() <= (run["task_states"] or {}).items(), run["task_states"]
        airflow = _airflow(up)
        # The replica's worker triggered it once, with its own id: no other run names the upload.
        assert [run["airflow_run_id"]] == [r["dag_run_id"] for r in _airflow_runs_of(airflow, world.upload)]
        tasks = airflow.get(f"/api/v2/dags/gbadz_ingest/dagRuns/{run['airflow_run_id']}/taskInstances").json()
        states = {t["task_id"]: t for t in tasks["task_instances"]}
        worker_log = Path(up.state.procs["worker-1"].log_file).read_text(errors="replace")
        for task in ("land", "validate", "route", "publish"):
            # Run by a Celery worker of this cluster: its queue, a worker's host name.
            assert up.state.celery_queue == states[task]["queue"]
            assert states[task]["hostname"]
        # The CeleryExecutor handed the workloads to this cluster's worker, which ran them.
        assert "Executing workload in Celery" in worker_log
        assert run["airflow_run_id"] in worker_log
        # Task logs are in the cluster's S3 (remote logging), not only on the worker's disk.
        # The worker uploads a task's log once the task has ended, which may be after the run.
        s3 = storage.make_client(up.cluster.s3_settings(up.state, up.cluster.secrets()))
        deadline = time.monotonic() + 60
        logged: list[str] = []
        while time.monotonic() < deadline and not any("task_id=publish" in key for key in logged):
            time.sleep(0.5)
            logged = [
                str(o.object_name) for o in s3.list_objects(cenv.LOGS_BUCKET, prefix="tasks/", recursive=True)
            ]
        assert any("task_id=publish" in key for key in logged), logged[:5]

        b = httpx.Client(base_url=up.url("b"), timeout=60)
        consumer = _party(up, "consumer", "HK", b)
        detail = b.get(f"/api/v1/datasets/{world.dataset}", headers=consumer.headers)
        assert 200 == detail.status_code, detail.text
        assert (1, 2_000) == (detail.json()["current_version"], detail.json()["row_count"])
        delivery = _grant_and_deliver(b, consumer, world.dataset)
        entry = b.get(f"/api/v1/transfer-log/entries/{delivery['log_index']}", headers=world.officer.headers)
        assert 200 == entry.status_code, entry.text
        assert delivery["transfer_id"] == entry.json()["entry"]["transfer_id"]
        _verify_log(b, world.officer)

    def test_a_celery_worker_killed_mid_ingest_is_retried_and_publishes_once(
        self, up: Up, world: World
    ) -> None:
        """A Celery worker SIGKILLed while a task of an upload runs: Airflow notices the missing
        heartbeat and retries the task on the restarted worker; exactly one version is published
        and the raw upload in the landing bucket still decrypts to the uploaded bytes."""
        a = httpx.Client(base_url=up.url("a"), timeout=120)
        dataset = _register(up, a, world.provider, world.officer)
        body = _csv(BIG_ROWS)
        uploaded = a.post(
            f"/api/v1/datasets/{dataset}/uploads", content=body, headers=world.provider.headers | CSV
        )
        assert 202 == uploaded.status_code, uploaded.text
        upload = uploaded.json()["id"]
        airflow = _airflow(up)
        # Wait for the run's validate task (seconds of work on this file) to be running.
        deadline = time.monotonic() + DAG_TIMEOUT_S
        dag_run_id = None
        while time.monotonic() < deadline:
            dag_run_id = _run(a, world.provider, dataset, upload)["airflow_run_id"]
            if dag_run_id and _task(airflow, dag_run_id, "validate")["state"] == "running":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"upload {upload}: its validate task was not running within {DAG_TIMEOUT_S} s")
        worker = up.state.procs["worker-1"]
        assert procs.is_ours(worker.pid, worker.start_ticks)
        killed = _kill_tree(worker.pid)
        assert not procs.is_ours(worker.pid, worker.start_ticks)
        assert killed
        began = time.monotonic()
        up.cluster.start_part("worker-1", timeout_s=300)
        up.measured["worker_restart_s"] = round(time.monotonic() - began, 1)
        run = _wait_published(a, world.provider, dataset, upload)
        up.measured["worker_kill_to_published_s"] = round(time.monotonic() - began, 1)
        validate = _task(airflow, dag_run_id, "validate")
        # The killed try failed for want of a heartbeat; a later try succeeded.
        assert ("success", True) == (validate["state"], validate["try_number"] >= 2), validate
        assert [dag_run_id] == [r["dag_run_id"] for r in _airflow_runs_of(airflow, upload)]
        sha = hashlib.sha256(body).hexdigest()
        assert sha == run["source_sha256"]
        assert [(1, sha)] == _versions_of(up, dataset)
        assert 1 == run["version"]
        # The raw upload is untouched: one object version, and it decrypts to the very bytes sent.
        ctx = pipeline.IngestContext.from_settings(up.cluster.settings())
        landing = up.cluster.settings().s3.landing_bucket
        versions = list(ctx.client.list_objects(landing, prefix=run["landing_key"], include_version=True))
        assert [run["landing_key"]] == [o.object_name for o in versions]
        with ctx.sessions() as session:
            registered = session.get(Dataset, dataset)
            assert registered is not None
            contract = stored_contract(registered)
        landed = pipeline.Landed(key=run["landing_key"], sha256=sha, size=len(body), suffix=".csv")
        with tempfile.TemporaryDirectory() as tmp:
            raw = pipeline.fetch_raw(ctx, contract, landed, Path(tmp))
            assert sha == hashlib.sha256(raw.read_bytes()).hexdigest()

    def test_an_upload_while_airflow_is_down_is_triggered_once_it_is_back(self, up: Up, world: World) -> None:
        """With Airflow's api-server stopped, an upload is accepted and queued with a reason that
        names no secret; once the api-server is back it is triggered exactly once and published."""
        api_server = up.state.procs["airflow-api"]
        assert procs.is_ours(api_server.pid, api_server.start_ticks)
        _kill_tree(api_server.pid, signal.SIGTERM)
        a = httpx.Client(base_url=up.url("a"), timeout=120)
        uploaded = a.post(
            f"/api/v1/datasets/{world.dataset}/uploads",
            content=_csv(300),
            headers=world.provider.headers | CSV,
        )
        assert 202 == uploaded.status_code, uploaded.text
        queued = uploaded.json()
        assert "queued" == queued["status"], queued
        assert queued["trigger_error"], queued
        assert queued["next_trigger_at"], queued
        shown = json.dumps(_run(a, world.provider, world.dataset, queued["id"]))
        for value in [*up.secret_values, cenv.airflow_url(up.state), str(up.state.ports["airflow"])]:
            assert value not in shown
        began = time.monotonic()
        up.cluster.start_part("airflow-api", timeout_s=300)
        up.measured["api_server_restart_s"] = round(time.monotonic() - began, 1)
        run = _wait_published(a, world.provider, world.dataset, queued["id"])
        up.measured["api_server_back_to_published_s"] = round(time.monotonic() - began, 1)
        assert 2 <= run["trigger_attempts"], run
        assert [run["airflow_run_id"]] == [
            r["dag_run_id"] for r in _airflow_runs_of(_airflow(up), queued["id"])
        ]
        assert run["trigger_error"] is None, run

    def test_a_volume_server_down_keeps_reads_and_uploads(self, up: Up, world: World) -> None:
        """With one volume server killed, published data is still delivered and a new upload still
        lands; the volume server then comes back alone and the upload publishes (waited for here:
        a version published later would change what the next tests deliver)."""
        victim = up.state.procs["volume-r1a"]
        assert procs.is_ours(victim.pid, victim.start_ticks)
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while procs.is_ours(victim.pid, victim.start_ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs.is_ours(victim.pid, victim.start_ticks)
        b = httpx.Client(base_url=up.url("b"), timeout=120)
        consumer = _party(up, "consumer", "HK", b)
        _grant_and_deliver(b, consumer, world.dataset, rows=None)
        a = httpx.Client(base_url=up.url("a"), timeout=120)
        began = time.monotonic()
        landed = a.post(
            f"/api/v1/datasets/{world.dataset}/uploads",
            content=_csv(500),
            headers=world.provider.headers | CSV,
        )
        up.measured["upload_with_a_volume_down_s"] = round(time.monotonic() - began, 1)
        assert 202 == landed.status_code, landed.text
        status = up.cluster.status()
        [volume] = [p for p in status["parts"] if p["name"] == "volume-r1a"]
        assert not volume["alive"]
        assert not status["up"]
        began = time.monotonic()
        up.cluster.start_part("volume-r1a", timeout_s=120)
        up.measured["volume_restart_s"] = round(time.monotonic() - began, 1)
        assert up.cluster.status()["up"]
        run = _wait_published(a, world.provider, world.dataset, landed.json()["id"])
        assert run["version"] is not None, run

    def test_a_replica_killed_before_its_delivery_commits_logs_nothing_and_b_delivers_once(
        self, up: Up, world: World
    ) -> None:
        """Replica A SIGKILLed in the middle of a delivery (held at its transfer-log append by a
        lock the test takes on the log's head row): nothing of it is logged, and the grantee's
        retry on B with the same Idempotency-Key makes the one logged transfer; A comes back."""
        from gbadz.translog.models import LogEntry

        _replica_a_up(up)
        a = httpx.Client(base_url=up.url("a"), timeout=120)
        b = httpx.Client(base_url=up.url("b"), timeout=120)
        consumer = _party(up, "consumer", "HK", a)
        grant = _grant(a, consumer, world.dataset)
        key = f"k-{secrets.token_hex(8)}"
        scoped = f"{grant}:{key}"
        engine = db.create_engine(up.cluster.settings().db)
        answer: dict[str, Any] = {}

        def deliver() -> None:
            try:
                got = a.post(
                    f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": key}
                )
                answer["status"] = got.status_code
            except httpx.HTTPError as exc:
                answer["error"] = type(exc).__name__

        replica = up.state.procs["api-a"]
        # Replica A's sessions, by the application name gbadz gives each (host/PID).
        names = [f"%/{pid}" for pid in _tree(replica.pid)]
        sender = threading.Thread(target=deliver, daemon=True)

        def a_backends() -> list[tuple[Any, ...]]:
            # A transaction of its own each time: pg_stat_activity is a snapshot taken at its
            # first read in a transaction, so a loop in one transaction sees the same rows forever.
            with engine.connect() as conn:
                return [
                    tuple(row)
                    for row in conn.execute(
                        sa.text(
                            "SELECT pid, state, wait_event_type, left(query, 60) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND application_name LIKE ANY(:names)"
                        ),
                        {"names": names},
                    )
                ]

        try:
            with engine.connect() as holder:
                # Appends are serialised by an UPDATE of the head row: holding it keeps A's
                # delivery in flight, materialised and uncommitted, for as long as the test wants.
                holder.execute(sa.text("SELECT size FROM transfer_log_head WHERE id = 1 FOR UPDATE"))
                sender.start()
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    if [row for row in a_backends() if row[2] == "Lock" and "transfer_log_head" in row[3]]:
                        break
                    time.sleep(0.1)
                else:
                    pytest.fail("replica A's delivery did not reach its transfer-log append within 120 s")
                _kill_tree(replica.pid)
                # A's sessions end while the head row is still held: the server checks its clients
                # during a statement (gbadz.db.POSTGRES_SESSION), so a dead replica does not take
                # the head row when the lock frees.
                deadline = time.monotonic() + 30
                while left := a_backends():
                    assert time.monotonic() < deadline, f"replica A's sessions outlive it by 30 s: {left}"
                    time.sleep(0.2)
                holder.rollback()
            sender.join(30)
            assert not sender.is_alive()
            assert "status" not in answer, answer  # A never answered
            with engine.connect() as conn:
                assert (
                    []
                    == conn.execute(sa.select(LogEntry.index).where(LogEntry.idempotency_key == scoped)).all()
                )
            retried = b.post(
                f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": key}
            )
            assert 201 == retried.status_code, retried.text
            with engine.connect() as conn:
                [(index, entry)] = conn.execute(
                    sa.select(LogEntry.index, LogEntry.entry).where(LogEntry.idempotency_key == scoped)
                ).all()
        finally:
            engine.dispose()
        body = retried.json()
        assert (False, index, json.loads(entry)["transfer_id"]) == (
            body["reused"],
            body["log_index"],
            body["transfer_id"],
        )
        _verify_log(b, world.officer)
        began = time.monotonic()
        up.cluster.start_part("api-a", timeout_s=180)
        up.measured["replica_restart_before_commit_s"] = round(time.monotonic() - began, 1)

    def test_a_replica_killed_mid_delivery_the_retry_on_the_other_gets_the_same_transfer(
        self, up: Up, world: World
    ) -> None:
        """Replica A SIGKILLed while it delivers (as soon as its transfer-log entry is in the
        database): the grantee's retry on B with the same Idempotency-Key gets that logged
        transfer, the log holds one entry for the key and verifies; A comes back."""
        from gbadz.translog.models import LogEntry

        _replica_a_up(up)
        a = httpx.Client(base_url=up.url("a"), timeout=120)
        b = httpx.Client(base_url=up.url("b"), timeout=120)
        consumer = _party(up, "consumer", "HK", a)
        grant = _grant(a, consumer, world.dataset)
        key = f"k-{secrets.token_hex(8)}"
        scoped = f"{grant}:{key}"
        engine = db.create_engine(up.cluster.settings().db)
        answer: dict[str, Any] = {}

        def deliver() -> None:
            try:
                got = a.post(
                    f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": key}
                )
                answer["status"] = got.status_code
            except httpx.HTTPError as exc:
                answer["error"] = type(exc).__name__

        replica = up.state.procs["api-a"]
        sender = threading.Thread(target=deliver, daemon=True)
        try:
            sender.start()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.execute(
                        sa.select(LogEntry.index).where(LogEntry.idempotency_key == scoped)
                    ).first():
                        break
                time.sleep(0.02)
            else:
                pytest.fail("replica A wrote no transfer-log entry for the delivery within 120 s")
            _kill_tree(replica.pid)
            sender.join(30)
            assert not sender.is_alive()
            retried = b.post(
                f"/api/v1/grants/{grant}/deliveries", headers=consumer.headers | {"Idempotency-Key": key}
            )
            assert 201 == retried.status_code, retried.text
            with engine.connect() as conn:
                [(index, entry)] = conn.execute(
                    sa.select(LogEntry.index, LogEntry.entry).where(LogEntry.idempotency_key == scoped)
                ).all()
        finally:
            engine.dispose()
        body = retried.json()
        assert (True, index, json.loads(entry)["transfer_id"]) == (
            body["reused"],
            body["log_index"],
            body["transfer_id"],
        )
        up.measured["replica_a_answered_before_kill"] = float("status" in answer)
        # The URL names replica A (it stands in for the load balancer's address): the balancer
        # would send the download to B while A is down, and B serves the same signed ticket.
        [link] = body["files"]
        ticket = urlsplit(link["url"])
        table = pq.read_table(io.BytesIO(b.get(f"{ticket.path}?{ticket.query}".rstrip("?")).content))
        assert GRANTED == table.column_names
        _verify_log(b, world.officer)
        began = time.monotonic()
        up.cluster.start_part("api-a", timeout_s=180)
        up.measured["replica_restart_s"] = round(time.monotonic() - began, 1)
        assert 200 == httpx.get(f"{up.url('a')}/readyz", timeout=10).status_code

    def test_down_leaves_no_process_and_no_port_and_no_secret_in_logs(self, up: Up) -> None:
        """`down` stops every process the cluster started and frees every port; its logs hold no secret."""
        state = up.state
        stopped = run_cli(up.home, "cluster", "down", "--name", up.name, "--json", timeout=300)
        assert 0 == stopped.returncode, stopped.stderr
        assert not _cluster_pids(state)
        assert all(0 == proc.pid for proc in up.state.procs.values())
        assert not procs.marked(state.cluster_id)
        listening = {
            int(line.split()[1].split(":")[1], 16)
            for table in ("tcp", "tcp6")
            for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]
            if line.split()[3] == "0A"
        }
        assert not listening & set(state.ports.values())
        # The data is kept: a purge is a separate choice.
        assert up.cluster.home.state_path.is_file()
        for value in up.secret_values:
            found = subprocess.run(
                [
                    "grep",
                    "-rlF",
                    value,
                    str(up.cluster.home.logs_dir),
                    str(up.cluster.home.airflow_home / "logs"),
                ],
                check=False,
                capture_output=True,
                text=True,
            )
            assert "" == found.stdout, "a secret is in " + found.stdout
