"""The cluster's ingest (ADR 0025/0026) against the embedded ``dag.test()`` path, same file, same run.

Brings its own cluster up on loopback (``gbadz.cluster``: SeaweedFS cluster, PostgreSQL databases of
its own, Airflow with the CeleryExecutor, two API replicas) and purges it at the end, then measures:

1. trigger-to-published latency of one 100,000-row upload: ``POST .../uploads`` through replica A
   (which triggers the Airflow run at once) until the provider sees the run accepted and Airflow's
   run ``success``; against ``gbadz ingest`` (one process, ``dag.test()``) on the same file, writing
   the same PostgreSQL and S3 (its Airflow metadata database migrated before the clock starts);
2. ingest throughput (rows/s) of four uploads sent at once to four datasets, with one Celery worker
   (concurrency 2) and then with two.

Every wait is bounded; the cluster is stopped and purged whatever happens.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pyarrow.csv as pacsv
import yaml

from gbadz import db
from gbadz.cluster import env as cenv
from gbadz.cluster.manager import DEFAULT_POSTGRES, Cluster
from gbadz.identity import service
from gbadz.ingest import samples

REPO = Path(__file__).resolve().parents[1]
CONTRACT = "hk-logistics-deliveries"
ROWS = 100_000
BATCH = 4
BATCH_ROWS = 25_000
TIMEOUT_S = 900.0


def csv_bytes(rows: int) -> bytes:
    sink = io.BytesIO()
    pacsv.write_csv(samples.generate(CONTRACT, rows), sink)
    return sink.getvalue()


def party(cluster: Cluster, api: httpx.Client, role: str, jurisdiction: str) -> tuple[str, dict[str, str]]:
    """An organisation and OAuth client of ``role``: its name and bearer header."""
    engine = db.create_engine(cluster.settings().db)
    try:
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            org = service.create_organization(
                session, actor="bench", name=f"{role}-{secrets.token_hex(4)}", jurisdiction=jurisdiction
            )
            issued = service.create_client(
                session, actor="bench", org_id=org.id, role=role, auth_method="client_secret"
            )
            client_id, secret, name = issued.client.client_id, issued.client_secret, org.name
    finally:
        engine.dispose()
    token = api.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, str(secret)))
    token.raise_for_status()
    return name, {"Authorization": f"Bearer {token.json()['access_token']}"}


def register(api: httpx.Client, provider: tuple[str, dict[str, str]], officer: dict[str, str]) -> str:
    doc = yaml.safe_load((REPO / "contracts" / f"{CONTRACT}.yaml").read_text())
    doc["id"] = f"b{secrets.token_hex(4)}-deliveries"
    doc["gbadz"]["provider"]["organization"] = provider[0]
    headers = provider[1] | {"Content-Type": "application/yaml"}
    api.post("/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=headers).raise_for_status()
    [review] = api.get(f"/api/v1/classification-reviews?dataset={doc['id']}", headers=officer).json()
    api.post(
        f"/api/v1/datasets/{doc['id']}/classification-review",
        json={"approve": True, "note": "bench", "contract_sha256": review["contract_sha256"]},
        headers=officer,
    ).raise_for_status()
    return str(doc["id"])


def upload(api: httpx.Client, headers: dict[str, str], dataset: str, body: bytes) -> int:
    sent = api.post(
        f"/api/v1/datasets/{dataset}/uploads", content=body, headers=headers | {"Content-Type": "text/csv"}
    )
    if sent.status_code != 202:
        raise SystemExit(f"upload refused: {sent.status_code} {sent.text[:300]}")
    return int(sent.json()["id"])


def wait_published(api: httpx.Client, headers: dict[str, str], runs: list[tuple[str, int]]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    pending = list(runs)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"not published within {TIMEOUT_S:.0f} s: uploads {pending}")
        dataset, run_id = pending[0]
        run = api.get(f"/api/v1/datasets/{dataset}/ingestion-runs/{run_id}", headers=headers).json()
        if run["status"] in {"rejected", "failed"}:
            raise SystemExit(f"upload {run_id} ended {run['status']}: {run['summary']}")
        if run["status"] == "accepted" and run["airflow_state"] == "success":
            pending.pop(0)
            continue
        time.sleep(0.5)


def embedded_ingest(cluster: Cluster, source: Path) -> tuple[float, dict[str, Any]]:
    """``gbadz ingest`` (dag.test() in one process) on ``source``, against the cluster's database and S3."""
    state, secret = cluster.home.load(), cluster.secrets()
    env = cenv.base_environment(state, cluster.home.gbadz_home) | cenv.gbadz_environment(
        state, cluster.home, secret
    )
    env.pop("GBADZ_CLUSTER_ID", None)  # not a cluster process: `down` must not sweep it
    began = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "gbadz",
            "ingest",
            str(REPO / "contracts" / f"{CONTRACT}.yaml"),
            str(source),
            "--json",
        ],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    seconds = time.monotonic() - began
    if done.returncode != 0:
        raise SystemExit(f"gbadz ingest failed ({done.returncode}): {done.stderr[-1500:]}")
    return seconds, json.loads(done.stdout)


def throughput(
    cluster: Cluster,
    api: httpx.Client,
    provider: tuple[str, dict[str, str]],
    officer: dict[str, str],
    body: bytes,
) -> float:
    datasets = [register(api, provider, officer) for _ in range(BATCH)]
    began = time.monotonic()
    runs = [(d, upload(api, provider[1], d, body)) for d in datasets]
    wait_published(api, provider[1], runs)
    return BATCH * BATCH_ROWS / (time.monotonic() - began)


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gbadz-bench-cluster-") as tmp:
        home = Path(tmp)
        os.chmod(home, 0o700)
        cluster = Cluster(home, "b" + secrets.token_hex(4))
        try:
            began = time.monotonic()
            state, _ = cluster.up(workers=1, postgres_url=DEFAULT_POSTGRES)
            print(f"cluster up (1 Celery worker) in {time.monotonic() - began:.0f} s")
            api = httpx.Client(base_url=cenv.replica_url(state, "a"), timeout=120)
            provider = party(cluster, api, "provider", "HK")
            _, officer = party(cluster, api, "compliance_officer", "CN-SZ")

            body = csv_bytes(ROWS)
            source = home / "upload.csv"
            source.write_bytes(body)
            small = home / "warm-up.csv"
            small.write_bytes(csv_bytes(200))
            # The embedded path's first run migrates its Airflow metadata database: not timed.
            warm, _ = embedded_ingest(cluster, small)
            print(f"embedded warm-up (Airflow metadata database migrated) {warm:.0f} s")

            dataset = register(api, provider, officer)
            began = time.monotonic()
            run_id = upload(api, provider[1], dataset, body)
            posted = time.monotonic() - began
            wait_published(api, provider[1], [(dataset, run_id)])
            through_cluster = time.monotonic() - began
            through_embedded, outcome = embedded_ingest(cluster, source)
            assert outcome["accepted"], outcome
            print(f"{ROWS:,} rows ({len(body) / 1e6:.1f} MB CSV), upload to published:")
            print(
                f"  cluster (REST trigger, CeleryExecutor)  {through_cluster:6.1f} s  (POST {posted:.1f} s)"
            )
            print(f"  embedded `gbadz ingest` (dag.test())    {through_embedded:6.1f} s")
            print(f"  ratio cluster / embedded                {through_cluster / through_embedded:6.2f}x")

            small_body = csv_bytes(BATCH_ROWS)
            one = throughput(cluster, api, provider, officer, small_body)
            began = time.monotonic()
            cluster.up(workers=2)
            added = time.monotonic() - began
            two = throughput(cluster, api, provider, officer, small_body)
            print(f"throughput, {BATCH} uploads of {BATCH_ROWS:,} rows sent at once to {BATCH} datasets:")
            print(f"  1 Celery worker (concurrency 2)  {one:8.0f} rows/s")
            print(
                f"  2 Celery workers                 {two:8.0f} rows/s  ({two / one:.2f}x; worker added in {added:.0f} s)"
            )
            load = os.getloadavg()
            print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (2 cores)")
        finally:
            began = time.monotonic()
            cluster.down(purge=True)
            print(f"cluster down --purge in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
