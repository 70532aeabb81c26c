"""The ingest DAG's tasks as plain functions: small JSON in, small JSON out.

Airflow passes only what XCom should carry (object keys, hashes, summaries); data moves
through S3. Each task builds its own context from the settings (the environment of the
worker), so the same functions run under ``dag.test()``, a scheduler, or a test.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gbadz import storage
from gbadz.config import get_settings
from gbadz.contract import Contract, load_contract
from gbadz.embedded import resolve_settings
from gbadz.ingest import pipeline, progress
from gbadz.ingest.validate import QualityReport, validate_stream

CATALOG_REF = "catalog:"


def _context() -> pipeline.IngestContext:
    return pipeline.IngestContext.from_settings(resolve_settings(get_settings()))


def _landed(data: dict[str, Any]) -> pipeline.Landed:
    return pipeline.Landed(
        key=data["key"], sha256=data["sha256"], size=int(data["size"]), suffix=data["suffix"]
    )


def _contract(ref: str) -> Contract:
    """A contract by reference: a file path, or ``catalog:<dataset id>`` for a registered one."""
    if ref.startswith(CATALOG_REF):
        from gbadz.catalog.models import Dataset
        from gbadz.catalog.service import stored_contract

        with _context().sessions() as session:
            dataset = session.get(Dataset, ref.removeprefix(CATALOG_REF))
            if dataset is None:
                raise ValueError(f"{ref}: no such dataset in the catalog")
            return stored_contract(dataset)
    return load_contract(Path(ref))


def land(contract_path: str, source: str) -> dict[str, Any]:
    contract = load_contract(Path(contract_path))
    landed = pipeline.land(_context(), contract, Path(source))
    progress.finished("land")
    return {
        "contract": contract.id,
        "contract_ref": contract_path,
        "contract_sha256": pipeline.contract_hash(Path(contract_path)),
        "upload": None,
        **asdict(landed),
    }


def land_upload(run_id: int, dag_run_id: str | None = None) -> dict[str, Any]:
    """An upload the API already landed: its queued run says where it is.

    ``dag_run_id``: the Airflow run executing this task. An upload gbadz handed to Airflow (ADR
    0026) is ingested only by the DAG run gbadz triggered for it: another run naming the same
    upload (a replay, a hand-made trigger) is refused, so it is never ingested twice."""
    from gbadz.catalog.models import Dataset, IngestionRun

    with _context().sessions() as session:
        run = session.get(IngestionRun, run_id)
        if run is None or run.status not in ("queued", "running"):
            raise ValueError(f"upload {run_id}: no queued upload with that id")
        if run.airflow_run_id is not None and dag_run_id != run.airflow_run_id:
            raise ValueError(f"upload {run_id}: it is ingested by another Airflow run, not {dag_run_id}")
        dataset = session.get(Dataset, run.dataset_id)
        if dataset is None:
            raise ValueError(f"upload {run_id}: its dataset {run.dataset_id!r} is not in the catalog")
        landed = {
            "contract": dataset.id,
            "contract_ref": CATALOG_REF + dataset.id,
            "contract_sha256": dataset.contract_sha256,
            "upload": run_id,
            # The worker holding the claim when the DAG started: the outcome is stored only
            # while it still holds it (a run claimed again by another worker is theirs).
            "claim": run.claimed_by,
            "key": run.landing_key,
            "sha256": run.source_sha256,
            "size": int(run.report.get("size", 0)),
            "suffix": str(run.report.get("suffix", ".csv")),
        }
    progress.finished("land")
    _step(run_id, "land")
    return landed


def _step(run_id: int | None, task: str) -> None:
    """Show a claimed upload's finished task on its run page while the DAG goes on."""
    if run_id is None:
        return
    from gbadz.ingest.worker import step_done

    step_done(_context().sessions, int(run_id), task)


def validate(landed: dict[str, Any]) -> dict[str, Any]:
    """Validate the landed file; keep the report in the landing bucket; say where to go next."""
    ctx = _context()
    contract = _contract(landed["contract_ref"])
    existing = pipeline.existing_version(ctx, contract, landed["sha256"])
    if existing is not None:
        progress.finished("validate")
        return {"success": True, "existing_version": existing.version, "summary": "already published"}
    with tempfile.TemporaryDirectory(prefix="gbadz-validate-") as tmp:
        raw = pipeline.fetch_raw(ctx, contract, _landed(landed), Path(tmp))
        report = validate_stream(contract, raw, ctx.settings.ingest)
    key = f"{contract.id}/reports/{landed['sha256']}.json"
    storage.ObjectStore(ctx.client, ctx.settings.s3).put_bytes(
        ctx.settings.s3.landing_bucket,
        key,
        json.dumps(report.as_dict(), default=str).encode(),
        "application/json",
    )
    progress.finished("validate", report.rows)
    _step(landed.get("upload"), "validate")
    return {"success": report.success, "summary": report.summary(), "report_key": key}


def _report(ctx: pipeline.IngestContext, key: str) -> QualityReport:
    from gbadz.ingest.validate import CheckResult

    data = json.loads(
        storage.ObjectStore(ctx.client, ctx.settings.s3).get_bytes(ctx.settings.s3.landing_bucket, key)
    )
    data["results"] = [CheckResult(**r) for r in data["results"]]
    return QualityReport(**data)


def publish(landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    ctx = _context()
    contract = _contract(landed["contract_ref"])
    if validation.get("existing_version"):
        found = pipeline.existing_version(ctx, contract, landed["sha256"])
        if found is not None:
            pipeline.reuse(ctx, found, landed.get("upload"), claim=landed.get("claim"))
        progress.finished("publish")
        return {"version": validation["existing_version"], "reused": True}
    report = _report(ctx, validation["report_key"])
    with tempfile.TemporaryDirectory(prefix="gbadz-publish-") as tmp:
        raw = pipeline.fetch_raw(ctx, contract, _landed(landed), Path(tmp))
        # Batch by batch (ADR 0028); a file that no longer reads raises rather than guesses.
        published = pipeline.publish_file(
            ctx,
            contract,
            _landed(landed),
            raw,
            report,
            landed["contract_sha256"],
            run_id=landed.get("upload"),
            claim=landed.get("claim"),
        )
    progress.finished("publish")
    return asdict(published)


def quarantine(landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    ctx = _context()
    contract: Contract = _contract(landed["contract_ref"])
    key = pipeline.quarantine(
        ctx,
        contract,
        _landed(landed),
        _report(ctx, validation["report_key"]),
        run_id=landed.get("upload"),
        claim=landed.get("claim"),
    )
    progress.finished("quarantine")
    return {"quarantine_key": key, "summary": validation["summary"]}
