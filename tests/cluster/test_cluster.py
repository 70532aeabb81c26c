"""`gbadz cluster up|down|status`: a production-shaped zone on loopback, end to end (ADR 0025).

One cluster for the module (SeaweedFS master, four volume servers in two racks, filer, S3;
two PostgreSQL databases of its own; Airflow with a Celery worker on the shared Redis; two API
replicas), started by the CLI in a temporary GBADZ_HOME and stopped by it at the end.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import yaml

from gbadz import db, storage
from gbadz.cluster import env as cenv
from gbadz.cluster import procs
from gbadz.cluster.manager import Cluster
from gbadz.identity import service
from gbadz.ingest import samples
from tests.conftest import REPO, SUITE, run_cli

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]

CONTRACT = "hk-logistics-deliveries"
GRANTED = ["delivery_id", "recipient_id", "recipient_phone", "address", "district"]
CSV = {"Content-Type": "text/csv"}
YAML = {"Content-Type": "application/yaml"}
#: What a single upload's DAG run may take on a busy 2-core machine (GX and Airflow imports).
DAG_TIMEOUT_S = 420


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
        assert 0 == started.returncode, started.stderr[-3000:]
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
    client = httpx.Client(base_url=cenv.airflow_url(state), timeout=30)
    token = client.post("/auth/token", json={"username": "gbadz", "password": login["gbadz"]})
    assert 201 == token.status_code, token.text
    client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
    return client


def _trigger(airflow: httpx.Client, upload: int) -> tuple[str, str, float]:
    """Trigger the ingest DAG for one upload; wait for its end; return run id, state and seconds."""
    began = time.monotonic()
    run = airflow.post(
        "/api/v2/dags/gbadz_ingest/dagRuns", json={"logical_date": None, "conf": {"upload": upload}}
    )
    assert 200 == run.status_code, run.text
    run_id = run.json()["dag_run_id"]
    state = "queued"
    while time.monotonic() - began < DAG_TIMEOUT_S:
        try:
            state = airflow.get(f"/api/v2/dags/gbadz_ingest/dagRuns/{run_id}").json()["state"]
        except httpx.TimeoutException:
            # The one api-server worker can stall for 30 s on a saturated machine: ask again.
            continue
        if state in {"success", "failed"}:
            break
        time.sleep(0.5)
    return run_id, state, time.monotonic() - began


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
    run_id: str
    dag_state: str


@pytest.fixture(scope="module")
def world(up: Up) -> World:
    """A provider registers the logistics contract and uploads through replica A; the test
    triggers the ingest DAG through Airflow's REST API and waits for its end."""
    a = httpx.Client(base_url=up.url("a"), timeout=60)
    provider = _party(up, "provider", "HK", a)
    officer = _party(up, "compliance_officer", "CN-SZ", a)
    doc = yaml.safe_load((REPO / "contracts" / f"{CONTRACT}.yaml").read_text())
    doc["id"] = f"c{secrets.token_hex(4)}-deliveries"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    registered = a.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider.headers | YAML
    )
    assert 201 == registered.status_code, registered.text
    [review] = a.get(f"/api/v1/classification-reviews?dataset={doc['id']}", headers=officer.headers).json()
    signed = a.post(
        f"/api/v1/datasets/{doc['id']}/classification-review",
        json={
            "approve": True,
            "note": "every column classified as the data shows",
            "contract_sha256": review["contract_sha256"],
        },
        headers=officer.headers,
    )
    assert 200 == signed.status_code, signed.text
    uploaded = a.post(
        f"/api/v1/datasets/{doc['id']}/uploads", content=_csv(2_000), headers=provider.headers | CSV
    )
    assert 202 == uploaded.status_code, uploaded.text
    run_id, state, seconds = _trigger(_airflow(up), uploaded.json()["id"])
    up.measured["trigger_to_success_s"] = round(seconds, 1)
    return World(provider, officer, str(doc["id"]), uploaded.json()["id"], run_id, state)


def _grant_and_deliver(api: httpx.Client, consumer: Party, dataset: str) -> dict[str, Any]:
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
    delivered = api.post(f"/api/v1/grants/{asked.json()['grant_id']}/deliveries", headers=consumer.headers)
    assert 201 == delivered.status_code, delivered.text
    body: dict[str, Any] = delivered.json()
    [link] = body["files"]
    table = pq.read_table(io.BytesIO(httpx.get(link["url"], timeout=60).content))
    assert (GRANTED, 2_000) == (table.column_names, table.num_rows)
    return body


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

    def test_both_replicas_are_ready(self, up: Up) -> None:
        """Both API replicas answer /readyz."""
        for replica in ("a", "b"):
            assert 200 == httpx.get(f"{up.url(replica)}/readyz", timeout=10).status_code

    def test_upload_runs_on_the_celery_worker_and_is_delivered_through_the_other_replica(
        self, up: Up, world: World
    ) -> None:
        """An upload through replica A is ingested by the Celery worker, read and delivered through
        replica B, and its transfer is in a log that verifies."""
        assert "success" == world.dag_state, world.run_id
        airflow = _airflow(up)
        tasks = airflow.get(f"/api/v2/dags/gbadz_ingest/dagRuns/{world.run_id}/taskInstances").json()
        states = {t["task_id"]: t for t in tasks["task_instances"]}
        assert "success" == states["publish"]["state"]
        for task in ("land", "validate", "route", "publish"):
            # Run by a Celery worker of this cluster: its queue, a worker's host name.
            assert up.state.celery_queue == states[task]["queue"]
            assert states[task]["hostname"]
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
        verified = b.post("/api/v1/transfer-log/verifications", headers=world.officer.headers)
        assert 200 == verified.status_code, verified.text
        assert verified.json()["ok"], verified.json()

    def test_a_volume_server_down_keeps_reads_and_uploads(self, up: Up, world: World) -> None:
        """With one volume server killed, published data is still delivered and a new upload still lands."""
        victim = up.state.procs["volume-r1a"]
        assert procs.is_ours(victim.pid, victim.start_ticks)
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while procs.is_ours(victim.pid, victim.start_ticks) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not procs.is_ours(victim.pid, victim.start_ticks)
        b = httpx.Client(base_url=up.url("b"), timeout=120)
        consumer = _party(up, "consumer", "HK", b)
        _grant_and_deliver(b, consumer, world.dataset)
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
