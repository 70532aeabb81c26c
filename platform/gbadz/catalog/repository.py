"""SQL of the catalog beyond visibility: versions and ingestion runs of a dataset.

Which datasets a viewer may read is :func:`gbadz.catalog.service.visibility_clause`, the
one statement of that rule (the in-process index is a cache of it).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from gbadz.catalog.models import Dataset, DatasetVersion, IngestionRun


def latest_version(session: Session, dataset: Dataset) -> DatasetVersion | None:
    if dataset.current_version is None:
        return None
    return version(session, dataset.id, dataset.current_version)


def version(session: Session, dataset_id: str, number: int) -> DatasetVersion | None:
    return session.scalar(
        sa.select(DatasetVersion).where(
            DatasetVersion.dataset_id == dataset_id, DatasetVersion.version == number
        )
    )


def versions(session: Session, dataset_id: str) -> Sequence[DatasetVersion]:
    return session.scalars(
        sa.select(DatasetVersion)
        .where(DatasetVersion.dataset_id == dataset_id)
        .order_by(DatasetVersion.version.desc())
    ).all()


def ingestion_runs(session: Session, dataset_id: str, limit: int) -> Sequence[IngestionRun]:
    return session.scalars(
        sa.select(IngestionRun)
        .where(IngestionRun.dataset_id == dataset_id)
        .order_by(IngestionRun.id.desc())
        .limit(limit)
    ).all()


def ingestion_run(session: Session, dataset_id: str, run_id: int) -> IngestionRun | None:
    return session.scalar(
        sa.select(IngestionRun).where(IngestionRun.dataset_id == dataset_id, IngestionRun.id == run_id)
    )
