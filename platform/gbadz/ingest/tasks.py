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
from gbadz.embedded import resolve_settings
from gbadz.ingest import pipeline
from gbadz.ingest.contract import Contract, load_contract
from gbadz.ingest.validate import QualityReport, read_table, validate_file


def _context() -> pipeline.IngestContext:
    return pipeline.IngestContext.from_settings(resolve_settings(get_settings()))


def _landed(data: dict[str, Any]) -> pipeline.Landed:
    return pipeline.Landed(
        key=data["key"], sha256=data["sha256"], size=int(data["size"]), suffix=data["suffix"]
    )


def land(contract_path: str, source: str) -> dict[str, Any]:
    contract = load_contract(Path(contract_path))
    landed = pipeline.land(_context(), contract, Path(source))
    return {
        "contract": contract.id,
        "contract_sha256": pipeline.contract_hash(Path(contract_path)),
        **asdict(landed),
    }


def validate(contract_path: str, landed: dict[str, Any]) -> dict[str, Any]:
    """Validate the landed file; keep the report in the landing bucket; say where to go next."""
    ctx = _context()
    contract = load_contract(Path(contract_path))
    existing = pipeline.existing_version(ctx, contract, landed["sha256"])
    if existing is not None:
        return {"success": True, "existing_version": existing.version, "summary": "already published"}
    with tempfile.TemporaryDirectory(prefix="gbadz-validate-") as tmp:
        _, report = validate_file(contract, pipeline.fetch_raw(ctx, contract, _landed(landed), Path(tmp)))
    key = f"{contract.id}/reports/{landed['sha256']}.json"
    storage.ObjectStore(ctx.client, ctx.settings.s3).put_bytes(
        ctx.settings.s3.landing_bucket,
        key,
        json.dumps(report.as_dict(), default=str).encode(),
        "application/json",
    )
    return {"success": report.success, "summary": report.summary(), "report_key": key}


def _report(ctx: pipeline.IngestContext, key: str) -> QualityReport:
    from gbadz.ingest.validate import CheckResult

    data = json.loads(
        storage.ObjectStore(ctx.client, ctx.settings.s3).get_bytes(ctx.settings.s3.landing_bucket, key)
    )
    data["results"] = [CheckResult(**r) for r in data["results"]]
    return QualityReport(**data)


def publish(contract_path: str, landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    ctx = _context()
    contract = load_contract(Path(contract_path))
    if validation.get("existing_version"):
        return {"version": validation["existing_version"], "reused": True}
    report = _report(ctx, validation["report_key"])
    with tempfile.TemporaryDirectory(prefix="gbadz-publish-") as tmp:
        raw = pipeline.fetch_raw(ctx, contract, _landed(landed), Path(tmp))
        table = read_table(contract, raw)
    if isinstance(table, QualityReport):  # cannot happen after a passed validation; refuse rather than guess
        raise RuntimeError(f"{contract.id}: landed file no longer reads: {table.summary()}")
    protected_table, protected = pipeline.protect(ctx, contract, table)
    published = pipeline.publish(
        ctx, contract, _landed(landed), protected_table, protected, report, landed["contract_sha256"]
    )
    return asdict(published)


def quarantine(contract_path: str, landed: dict[str, Any], validation: dict[str, Any]) -> dict[str, Any]:
    ctx = _context()
    contract: Contract = load_contract(Path(contract_path))
    key = pipeline.quarantine(ctx, contract, _landed(landed), _report(ctx, validation["report_key"]))
    return {"quarantine_key": key, "summary": validation["summary"]}
