"""Run the ingest DAG in-process with ``dag.test()``: no scheduler, an Airflow metadata DB
under ``<home>/airflow`` (migrated once per Airflow version)."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from gbadz import db
from gbadz.catalog.models import IngestionRun
from gbadz.config import Settings, airflow_environment, apply_environment, settings_environment
from gbadz.contract import load_contract
from gbadz.errors import ServicesError
from gbadz.ingest import pipeline

DAG_FILE = "gbadz_ingest.py"


@dataclass(frozen=True)
class RunOutcome:
    dag_state: str
    task_states: dict[str, str]
    accepted: bool
    version: int | None
    summary: str
    report: dict[str, Any]


def _airflow_version() -> str:
    from importlib.metadata import version

    return version("apache-airflow")


def ensure_metadata_db(env: dict[str, str]) -> None:
    home = Path(env["AIRFLOW_HOME"])
    marker = home / f".migrated-{_airflow_version()}"
    if marker.exists():
        return
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).parent / "airflow"
    command = [str(airflow)] if airflow.exists() else [sys.executable, "-m", "airflow"]
    result = subprocess.run(  # noqa: S603 - fixed argv
        [*command, "db", "migrate"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise ServicesError("cannot prepare Airflow's metadata database: " + " | ".join(tail))
    marker.write_text("ok\n")


def default_dags_folder() -> Path:
    """./dags when run from a checkout, else the dags/ folder next to this source tree."""
    here = Path.cwd() / "dags"
    if (here / DAG_FILE).exists():
        return here
    return Path(__file__).resolve().parents[3] / "dags"


def default_contracts_folder() -> Path:
    here = Path.cwd() / "contracts"
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "contracts"


def load_dag(dags_folder: Path) -> Any:
    path = dags_folder / DAG_FILE
    spec = importlib.util.spec_from_file_location("gbadz_dags_ingest", path)
    if spec is None or spec.loader is None:
        raise ServicesError(f"cannot load the ingest DAG from {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ingest_dag


def _run_dag(settings: Settings, conf: dict[str, Any], dags_folder: Path) -> tuple[str, dict[str, str]]:
    env = airflow_environment(settings, dags_folder) | settings_environment(settings)
    ensure_metadata_db(apply_environment(env))
    # Airflow logs to stdout; keep stdout for the caller's result (e.g. --json).
    with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
        dag = load_dag(dags_folder)
        dag_run = dag.test(run_conf=conf)
    tasks = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    return str(dag_run.state), tasks


def _outcome(settings: Settings, where: Any, dag_state: str, tasks: dict[str, str]) -> RunOutcome:
    engine = db.create_engine(settings.db)
    try:
        with db.make_sessionmaker(engine)() as session:
            run_row = session.scalar(
                sa.select(IngestionRun).where(where).order_by(IngestionRun.id.desc()).limit(1)
            )
            if run_row is None or run_row.status in ("queued", "running"):
                failed = ServicesError(
                    f"the ingest DAG ended {dag_state} without recording a result; task states: {tasks}"
                )
                failed.tasks = tasks  # type: ignore[attr-defined]
                raise failed
            return RunOutcome(
                dag_state=dag_state,
                task_states=tasks,
                accepted=run_row.status == "accepted",
                version=run_row.version,
                summary=run_row.summary,
                report=run_row.report,
            )
    finally:
        engine.dispose()


def run(settings: Settings, contract_path: Path, source: Path, dags_folder: Path) -> RunOutcome:
    """Ingest one file through the real DAG; the outcome is read back from the catalog."""
    contract = load_contract(contract_path)
    if not source.is_file():
        raise ServicesError(f"{source}: no such file")
    state, tasks = _run_dag(
        settings, {"contract": str(contract_path.resolve()), "source": str(source.resolve())}, dags_folder
    )
    sha, _ = pipeline.file_sha256(source)
    where = sa.and_(IngestionRun.dataset_id == contract.id, IngestionRun.source_sha256 == sha)
    return _outcome(settings, where, state, tasks)


def queued_uploads(settings: Settings) -> list[int]:
    engine = db.create_engine(settings.db)
    try:
        with db.make_sessionmaker(engine)() as session:
            return list(
                session.scalars(
                    sa.select(IngestionRun.id)
                    .where(IngestionRun.status == "queued")
                    .order_by(IngestionRun.id)
                )
            )
    finally:
        engine.dispose()


def claimed_uploads(settings: Settings) -> Iterator[int]:
    """Queued uploads, each claimed before it is yielded (as the embedded worker claims them):
    a worker in an API replica never runs the same upload at the same time. As in the embedded
    worker, the claim is kept fresh while the caller runs the upload, for at most
    ``worker_timeout_s``; past that the run may be claimed again and this outcome is not stored."""
    from gbadz.ingest.worker import beating, claim_next, worker_name

    engine = db.create_engine(settings.db)
    try:
        sessions = db.make_sessionmaker(engine)
        name = "cli:" + worker_name()
        timeout = settings.ingest.worker_timeout_s
        while (run_id := claim_next(sessions, name, timeout)) is not None:
            with beating(sessions, run_id, name, timeout):
                yield run_id
    finally:
        engine.dispose()


def run_upload(settings: Settings, run_id: int, dags_folder: Path) -> RunOutcome:
    """Ingest an upload the API landed (its queued run) through the real DAG."""
    state, tasks = _run_dag(settings, {"upload": run_id}, dags_folder)
    return _outcome(settings, IngestionRun.id == run_id, state, tasks)
