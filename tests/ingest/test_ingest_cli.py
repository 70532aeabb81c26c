"""`gbadz ingest` runs the real Airflow DAG (dag.test()) against the real S3 server and database."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.csv as pacsv
import pytest

from gbadz.config import Settings, settings_environment
from gbadz.ingest import samples
from tests.conftest import REPO, run_cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One gbadz home for these tests, so Airflow's metadata DB is migrated once."""
    return tmp_path_factory.mktemp("airflow-gbadz-home")


class TestIngestThroughAirflow:
    # The production lane only: the demo test runs the same DAG through `dag.test()` on SQLite.
    @pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
    def test_good_then_bad_upload(
        self, settings: Settings, airflow_home: Path, tmp_path: Path, key_prefix: str
    ) -> None:
        """A good file is published as a version (exit 0); a corrupted one is rejected with reasons (exit 1)."""
        contract_src = (REPO / "contracts" / "mo-tourism-visitor-arrivals.yaml").read_text()
        dataset = f"{key_prefix.strip('/')}-arrivals"
        contract = tmp_path / f"{dataset}.yaml"
        contract.write_text(contract_src.replace("id: mo-tourism-visitor-arrivals", f"id: {dataset}"))
        table = samples.generate("mo-tourism-visitor-arrivals", 5_000)
        good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
        pacsv.write_csv(table, good)
        pacsv.write_csv(samples.corrupt(table, "mo-tourism-visitor-arrivals"), bad)
        env = settings_environment(settings) | {"GBADZ_HOME": str(airflow_home)}

        accepted = run_cli(airflow_home, "ingest", str(contract), str(good), "--json", timeout=600, **env)
        assert 0 == accepted.returncode, accepted.stderr[-3000:]
        result = json.loads(accepted.stdout)
        assert (True, 1, "success") == (result["accepted"], result["version"], result["dag_state"])
        assert "skipped" == result["tasks"]["quarantine"]

        rejected = run_cli(airflow_home, "ingest", str(contract), str(bad), "--json", timeout=600, **env)
        assert 1 == rejected.returncode, rejected.stderr[-3000:]
        body = json.loads(rejected.stdout)
        assert not body["accepted"]
        assert "arrivals: must be between 0.0 and 500000.0" in body["summary"]
        assert "skipped" == body["tasks"]["publish"]
