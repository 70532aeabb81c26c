"""Catalog tables: datasets (one per contract), their published versions and ingestion runs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gbadz.models import Base, UTCDateTime, utcnow


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(300))
    provider_name: Mapped[str] = mapped_column(sa.String(300))
    origin: Mapped[str] = mapped_column(sa.String(16))
    category: Mapped[str] = mapped_column(sa.String(16))
    has_pi: Mapped[bool] = mapped_column(sa.Boolean)
    has_spi: Mapped[bool] = mapped_column(sa.Boolean)
    status: Mapped[str] = mapped_column(sa.String(16))
    contract_sha256: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # The organisation that owns the dataset (None for datasets published before it registered).
    provider_org_id: Mapped[str | None] = mapped_column(sa.String(36), default=None, index=True)
    # Denormalised from the contract for listing, filtering and visibility (catalog.service keeps them).
    regime: Mapped[str] = mapped_column(sa.String(16), default="elsewhere")
    visible_to: Mapped[str] = mapped_column(sa.String(200), default=" ")  # " HK MO "
    purposes: Mapped[str] = mapped_column(sa.String(500), default=" ")  # " research statistics "
    search_name: Mapped[str] = mapped_column(sa.Text, default="")
    search_tags: Mapped[str] = mapped_column(sa.Text, default="")
    search_columns: Mapped[str] = mapped_column(sa.Text, default="")
    search_description: Mapped[str] = mapped_column(sa.Text, default="")
    # SQLite only: the dataset's row in the FTS5 index, assigned by a trigger (migration 0005).
    search_rowid: Mapped[int | None] = mapped_column(sa.Integer, default=None)
    current_version: Mapped[int | None] = mapped_column(sa.Integer, default=None)
    row_count: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    summary: Mapped[str] = mapped_column(sa.Text, default="")
    tags: Mapped[list[str]] = mapped_column(sa.JSON, default=list)
    # Listing review (issue #15): other organisations see the dataset only once a compliance
    # officer signed off its classification (pending | approved | returned); a contract change
    # that reclassifies reopens it. The fingerprint is of the classification signed off.
    classification_state: Mapped[str] = mapped_column(
        sa.String(16), default="pending", server_default="pending"
    )
    classification_fingerprint: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    classification_review: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON, default=None)
    # The full contract lives in its own table so listing and search scan lean rows (ADR 0010).
    contract_row: Mapped[DatasetContract] = relationship(
        lazy="select", cascade="all, delete-orphan", uselist=False
    )

    @property
    def contract(self) -> dict[str, Any]:
        return self.contract_row.document

    @contract.setter
    def contract(self, document: dict[str, Any]) -> None:
        if self.contract_row is None:
            self.contract_row = DatasetContract(document=document)
        else:
            self.contract_row.document = document


class DatasetContract(Base):
    """A dataset's current ODCS contract document (JSON), one row per dataset."""

    __tablename__ = "dataset_contracts"

    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("datasets.id"), primary_key=True)
    document: Mapped[dict[str, Any]] = mapped_column(sa.JSON)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(sa.ForeignKey("datasets.id"), index=True)
    version: Mapped[int] = mapped_column(sa.Integer)
    source_sha256: Mapped[str] = mapped_column(sa.String(64))
    contract_version: Mapped[str] = mapped_column(sa.String(32))
    manifest_key: Mapped[str] = mapped_column(sa.String(500))
    row_count: Mapped[int] = mapped_column(sa.BigInteger)
    quality: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    published_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Distinct individuals in the version (not rows), and those sensitive by a row-level rule
    # (children under 14): counted at publish time. None for versions published before counting.
    individuals: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    sensitive_individuals: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    # The SHA-256 of the manifest as written; its parts are checked against the hashes it lists
    # on every read (issue #20). None for versions published before it was recorded.
    manifest_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)

    __table_args__ = (
        sa.UniqueConstraint("dataset_id", "version", name="uq_dataset_versions_dataset_id_version"),
        sa.UniqueConstraint("dataset_id", "source_sha256", name="uq_dataset_versions_dataset_id_source"),
    )


class VersionSubject(Base):
    """One individual of a published version, as the exporter-level keyed hash of its identifier.

    The same person in two datasets of one exporter has the same hash (the key is the
    exporter's, not the dataset's), so the year-to-date counters de-duplicate across datasets;
    no raw identifier is ever stored. ``sensitive`` marks people sensitive by a row-level rule.
    """

    __tablename__ = "version_subjects"

    dataset_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    # The subject's position in the version: keys arrive in order, so a million inserts append
    # to the index instead of scattering (subjects are distinct by construction).
    n: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(64))
    sensitive: Mapped[bool] = mapped_column(sa.Boolean, default=False)


class IngestionRun(Base):
    __tablename__ = "ingestion_runs"

    id: Mapped[int] = mapped_column(sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100), index=True)
    source_sha256: Mapped[str] = mapped_column(sa.String(64))
    landing_key: Mapped[str] = mapped_column(sa.String(500))
    # queued -> running (claimed by an ingest worker) -> accepted | rejected; failed when the
    # worker could not finish the DAG (the landed upload is kept; upload it again).
    status: Mapped[str] = mapped_column(sa.String(16), index=True)
    version: Mapped[int | None] = mapped_column(sa.Integer, default=None)
    summary: Mapped[str] = mapped_column(sa.Text)
    report: Mapped[dict[str, Any]] = mapped_column(sa.JSON)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    submitted_by: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)
    # The ingest DAG's task states as the runner reported them ({"land": "success", ...}).
    task_states: Mapped[dict[str, str] | None] = mapped_column(sa.JSON, default=None)
    # Which worker (host:pid) claimed the run: two replicas never run one upload twice.
    claimed_by: Mapped[str | None] = mapped_column(sa.String(100), default=None)
    # Under Airflow (ADR 0026): the DAG run gbadz triggered for this upload (a deterministic id,
    # so a second trigger is refused by Airflow), its last known state, and why the last trigger
    # failed (no secret, no value), how often it was tried and when it is tried next.
    airflow_run_id: Mapped[str | None] = mapped_column(sa.String(250), default=None)
    airflow_state: Mapped[str | None] = mapped_column(sa.String(32), default=None)
    trigger_error: Mapped[str | None] = mapped_column(sa.String(500), default=None)
    trigger_attempts: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")
    next_trigger_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)


class CatalogGeneration(Base):
    """One row: bumped by every transaction that changes the catalog, in that transaction, so
    every replica's read index sees a change by its number, whatever the writer's clock (ADR 0027)."""

    __tablename__ = "catalog_generation"

    id: Mapped[int] = mapped_column(sa.Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(sa.BigInteger)
