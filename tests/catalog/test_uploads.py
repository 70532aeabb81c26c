"""Provider uploads through the API, ingested by the real Airflow DAG, visible in the catalog."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv
import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gbadz.app import create_app
from gbadz.config import ApiSettings, Settings, settings_environment
from gbadz.ingest import samples
from tests.catalog.conftest import YAML, Party
from tests.conftest import REPO, run_cli
from tests.datasets import sign_off

CSV = {"Content-Type": "text/csv"}


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("airflow-uploads-home")


def _csv(rows: int, corrupt: bool = False) -> bytes:
    table = samples.generate("mo-tourism-visitor-arrivals", rows)
    if corrupt:
        table = samples.corrupt(table, "mo-tourism-visitor-arrivals")
    sink = io.BytesIO()
    pacsv.write_csv(table, sink)
    return sink.getvalue()


def _register(http: TestClient, provider: Party, key_prefix: str) -> str:
    doc = yaml.safe_load((REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text())
    doc["id"] = f"{key_prefix.strip('/')}-arrivals"
    doc["gbadz"]["provider"]["organization"] = provider.org_name
    response = http.post(
        "/api/v1/datasets", content=yaml.safe_dump(doc).encode(), headers=provider.headers | YAML
    )
    assert 201 == response.status_code, response.text
    return str(doc["id"])


def _runs(http: TestClient, provider: Party, dataset: str) -> list[dict[str, Any]]:
    response = http.get(f"/api/v1/datasets/{dataset}/ingestion-runs", headers=provider.headers)
    assert 200 == response.status_code, response.text
    assert "no-store" == response.headers["cache-control"]
    runs: list[dict[str, Any]] = response.json()
    return runs


class TestUploads:
    @pytest.mark.e2e
    # The production lane: the inline and SQLite paths are covered beside it and by the demo.
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_upload_is_landed_queued_then_published_by_the_dag(
        self,
        http: TestClient,
        party: Callable[..., Party],
        settings: Settings,
        airflow_home: Path,
        key_prefix: str,
        app: FastAPI,
    ) -> None:
        """An upload lands encrypted and queued; the DAG publishes good data as version 1 and rejects bad."""
        provider = party("provider", "MO")
        consumer = party("consumer", "HK")
        dataset = _register(http, provider, key_prefix)
        sign_off(http, app, dataset)
        good = _csv(3_000)
        queued = http.post(
            f"/api/v1/datasets/{dataset}/uploads", content=good, headers=provider.headers | CSV
        )
        assert 202 == queued.status_code, queued.text
        body = queued.json()
        assert ("queued", len(good)) == (body["status"], body["size"])
        # The raw upload is kept encrypted (never as plaintext) under its content hash.
        landed = app.state.s3.get_object(settings.s3.landing_bucket, body["landing_key"]).read()
        assert body["source_sha256"] in body["landing_key"]
        assert good[:200] not in landed
        bad = http.post(
            f"/api/v1/datasets/{dataset}/uploads",
            content=_csv(3_000, corrupt=True),
            headers=provider.headers | CSV,
        )
        assert 202 == bad.status_code
        assert ["queued", "queued"] == [r["status"] for r in _runs(http, provider, dataset)]

        # The DAG runs in another process with its own home (one Airflow metadata DB for the
        # session) but the API's keyring: the landed upload is encrypted under the API's keys.
        env = settings_environment(settings) | {
            "GBADZ_HOME": str(airflow_home),
            "GBADZ_CRYPTO__KEYRING_PATH": str(settings.keyring_path),
        }
        result = run_cli(airflow_home, "ingest-queued", "--json", timeout=900, **env)
        assert 0 == result.returncode, result.stderr[-3000:]
        outcomes = {u["upload"]: u for u in json.loads(result.stdout)["uploads"]}
        assert outcomes[body["id"]]["accepted"]
        assert 1 == outcomes[body["id"]]["version"]
        assert not outcomes[bad.json()["id"]]["accepted"]

        runs = {r["id"]: r for r in _runs(http, provider, dataset)}
        assert ("accepted", 1) == (runs[body["id"]]["status"], runs[body["id"]]["version"])
        assert "rejected" == runs[bad.json()["id"]]["status"]
        assert "arrivals: must be between" in runs[bad.json()["id"]]["summary"]

        detail = http.get(f"/api/v1/datasets/{dataset}", headers=consumer.headers).json()
        assert (1, 3_000) == (detail["current_version"], detail["row_count"])
        assert detail["latest"]["quality"]["success"]
        version = http.get(f"/api/v1/datasets/{dataset}/versions/1", headers=consumer.headers)
        assert 200 == version.status_code, version.text
        assert "max-age" in version.headers["cache-control"]
        manifest = version.json()["manifest"]
        assert 3_000 == manifest["rows"]
        assert manifest["files"][0]["sha256"]
        assert [1] == [
            v["version"]
            for v in http.get(f"/api/v1/datasets/{dataset}/versions", headers=consumer.headers).json()
        ]
        assert 404 == http.get(f"/api/v1/datasets/{dataset}/versions/2", headers=consumer.headers).status_code
        # Consumers do not see the provider's ingestion runs.
        assert (
            403
            == http.get(f"/api/v1/datasets/{dataset}/ingestion-runs", headers=consumer.headers).status_code
        )

    def test_bad_uploads_are_refused_and_nothing_is_queued(
        self, app: FastAPI, http: TestClient, party: Callable[..., Party], settings: Settings, key_prefix: str
    ) -> None:
        """Wrong-type, empty, oversized or unauthorised uploads are refused and no ingestion is queued."""
        provider, other = party("provider", "MO"), party("provider", "MO")
        dataset = _register(http, provider, key_prefix)
        url = f"/api/v1/datasets/{dataset}/uploads"
        # Not yet signed off: to everyone but its provider the dataset does not exist.
        assert 404 == http.post(url, content=b"a\n1\n", headers=other.headers | CSV).status_code
        sign_off(http, app, dataset)
        assert (
            415
            == http.post(
                url, content=b"a,b\n1,2\n", headers=provider.headers | {"Content-Type": "text/plain"}
            ).status_code
        )
        assert 400 == http.post(url, content=b"", headers=provider.headers | CSV).status_code
        assert 403 == http.post(url, content=b"a\n1\n", headers=other.headers | CSV).status_code
        assert 403 == http.post(url, content=b"a\n1\n", headers=party("consumer").headers | CSV).status_code
        assert (
            404
            == http.post(
                "/api/v1/datasets/no-such/uploads", content=b"a\n1\n", headers=provider.headers | CSV
            ).status_code
        )
        small = settings.model_copy(update={"api": ApiSettings(max_upload_bytes=1_000)})
        with TestClient(create_app(small)) as limited:
            response = limited.post(url, content=b"x" * 5_000, headers=provider.headers | CSV)
            assert 413 == response.status_code
            assert "1,000-byte" in response.json()["detail"]
        assert [] == _runs(http, provider, dataset)
