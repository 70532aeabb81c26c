"""A provider's upload: landed encrypted and immutable in the landing bucket, then queued for the DAG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from gbadz import audit, db
from gbadz.catalog import schemas
from gbadz.catalog.models import Dataset, IngestionRun
from gbadz.catalog.service import stored_contract
from gbadz.ingest import pipeline


def land_upload(
    ctx: pipeline.IngestContext, *, dataset_id: str, path: Path, size: int, actor: str
) -> schemas.UploadAccepted:
    """Land the file (streamed, encrypted), then record the queued run and audit it in one transaction."""
    sessions: sessionmaker[Session] = ctx.sessions
    with sessions() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:  # pragma: no cover - the route checked ownership just before
            raise LookupError(dataset_id)
        contract = stored_contract(dataset)
    landed = pipeline.land(ctx, contract, path)
    with db.session_scope(sessions) as session:
        run = IngestionRun(
            dataset_id=dataset_id,
            source_sha256=landed.sha256,
            landing_key=landed.key,
            status="queued",
            summary=f"{size:,} bytes landed; waiting for the ingest DAG",
            report={"suffix": landed.suffix, "size": size},
            submitted_by=actor,
        )
        session.add(run)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="ingestion.queued",
            subject_type="dataset",
            subject_id=dataset_id,
            details={"run": run.id, "source_sha256": landed.sha256, "size": size},
        )
        return schemas.UploadAccepted(**schemas.IngestionRunRead.model_validate(run).model_dump(), size=size)


def trigger_upload(
    ctx: pipeline.IngestContext, client: Any, accepted: schemas.UploadAccepted
) -> schemas.UploadAccepted:
    """Worker mode airflow: trigger the just-queued upload's Airflow run at once (short timeout).
    Whatever Airflow answers, the upload is accepted: on failure it stays queued with the reason
    and the worker loop tries again (ADR 0026). The conf is gbadz's alone: ``{"upload": id}``."""
    from gbadz.catalog.models import IngestionRun
    from gbadz.ingest import trigger

    trigger.trigger_now(ctx.sessions, client, ctx.settings, accepted.id)
    with ctx.sessions() as session:
        run = session.get(IngestionRun, accepted.id)
        if run is None:  # pragma: no cover - the run was committed just before
            return accepted
        return schemas.UploadAccepted(
            **schemas.IngestionRunRead.model_validate(run).model_dump(), size=accepted.size
        )
