"""Ingest one provider upload: land -> validate -> publish | quarantine.

One parametrised DAG for every contract (ADR 0009): the run's conf names the contract file
and the uploaded file, or the id of an upload the API already landed (ADR 0010). The steps live in gbadz.ingest.tasks; this file only wires them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import Param, dag, task

DEFAULT_ARGS = {"retries": 2, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True}


@dag(
    dag_id="gbadz_ingest",
    description="Validate, protect and publish one upload under its data contract",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args=DEFAULT_ARGS,
    tags=["gbadz", "ingest"],
    params={
        "contract": Param(
            None, type=["null", "string"], description="Path of the data contract (contracts/*.yaml)"
        ),
        "source": Param(
            None, type=["null", "string"], description="Path of the uploaded CSV or Parquet file"
        ),
        "upload": Param(
            None,
            type=["null", "integer"],
            description="Or: the id of an upload the API landed (its contract comes from the catalog)",
        ),
    },
)
def gbadz_ingest() -> None:
    @task
    def land(params: dict[str, Any] | None = None, run_id: str | None = None) -> dict[str, Any]:
        from gbadz.ingest import tasks

        assert params is not None
        if params.get("upload") is not None:
            return tasks.land_upload(int(params["upload"]), dag_run_id=run_id)
        if not params.get("contract") or not params.get("source"):
            raise ValueError("give either upload, or both contract and source")
        return tasks.land(params["contract"], params["source"])

    @task
    def validate(landed: dict[str, Any]) -> dict[str, Any]:
        from gbadz.ingest import tasks

        return tasks.validate(landed)

    @task.branch
    def route(validation: dict[str, Any]) -> str:
        return "publish" if validation["success"] else "quarantine"

    @task
    def publish(landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
        from gbadz.ingest import tasks

        return tasks.publish(landed, validation)

    @task
    def quarantine(landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
        from gbadz.ingest import tasks

        return tasks.quarantine(landed, validation)

    landed = land()
    validation = validate(landed)
    route(validation) >> [publish(landed, validation), quarantine(landed, validation)]


ingest_dag = gbadz_ingest()
