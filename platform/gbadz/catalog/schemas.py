"""Wire schemas of the catalog API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class ProviderRef(BaseModel):
    name: str = Field(examples=["Shenzhen Harbour Hospital Group"])
    org_id: str | None = Field(default=None, description="the registered organisation, if any")


class DatasetSummary(BaseModel):
    id: str = Field(examples=["mo-tourism-visitor-arrivals"])
    name: str = Field(examples=["Macao visitor arrivals by origin and port"])
    provider: ProviderRef
    origin: str = Field(examples=["MO"], description="jurisdiction where the data was collected")
    category: Literal["general", "important", "core"]
    has_pi: bool = Field(description="contains personal information")
    has_spi: bool = Field(description="contains sensitive personal information")
    status: Literal["proposed", "draft", "active", "deprecated", "retired"]
    tags: list[str]
    summary: str = Field(description="the contract's stated purpose, shortened")
    licence_purposes: list[str] = Field(examples=[["statistics", "research"]])
    current_version: int | None
    row_count: int | None
    published_at: datetime | None
    updated_at: datetime
    score: int | None = Field(default=None, description="relevance (only when sorted by relevance)")


class DatasetPage(BaseModel):
    items: list[DatasetSummary]
    total: int = Field(description="datasets matching the query that the caller may see")
    next_cursor: str | None = Field(description="pass as cursor= for the next page; null on the last")
    sort: Literal["relevance", "name", "-updated"]


class ColumnRead(BaseModel):
    name: str
    type: str
    description: str | None
    required: bool
    unique: bool
    classification: Literal["general", "pi", "spi"]
    spi_category: str | None
    classified_by: Literal["declared", "sector_overlay", "unclassified"] = Field(
        default="declared", description="sector_overlay: sensitive because of the dataset's sector"
    )
    not_sensitive_because: str | None = None
    protection: str
    subject_identifier: bool
    tags: list[str]
    examples: list[Any] | None = Field(description="sample values; never given for personal columns")


class LicenceRead(BaseModel):
    permitted_purposes: list[str]
    max_grant_duration: str = Field(examples=["P1Y"])
    onward_transfer_allowed: bool
    attribution: str | None


class ComputeOffer(BaseModel):
    """What the contract's ``gbadz.compute`` block offers a requester (issue #18): whether an
    ``analysis`` request can be made at all, and over which columns."""

    mode: Literal["dp", "threshold", "none"] = Field(
        default="none",
        description="dp: differentially private aggregates; threshold: exact aggregates of "
        "data without personal information; none: no analyses (copies only)",
    )
    dimensions: list[str] = Field(
        default_factory=list, description="columns an analyst may group and filter by"
    )
    measures: list[str] = Field(
        default_factory=list, description="numeric columns an analyst may sum and average"
    )


class QualitySummary(BaseModel):
    success: bool
    evaluated: int
    failed: int
    failed_checks: list[str]


class VersionSummary(BaseModel):
    version: int
    row_count: int
    contract_version: str
    source_sha256: str
    published_at: datetime
    quality: QualitySummary


class Freshness(BaseModel):
    latest_version_published_at: datetime | None
    contract_updated_at: datetime


class DatasetDetail(DatasetSummary):
    description: dict[str, str | None]
    sector_overlay: str
    columns: list[ColumnRead]
    licence: LicenceRead
    compute: ComputeOffer = Field(
        default_factory=ComputeOffer, description="whether analyses may be asked instead of copies"
    )
    contract_version: str
    contract_sha256: str
    latest: VersionSummary | None
    freshness: Freshness
    contract: dict[str, Any] | None = Field(
        default=None, description="the full ODCS contract (only for the provider)"
    )
    classification_state: Literal["pending", "approved", "returned"] = Field(
        default="pending", description="listing review: others see the dataset only once approved"
    )
    classification_review: dict[str, Any] | None = None


class VersionDetail(VersionSummary):
    dataset_id: str
    manifest: dict[str, Any]
    quality_report: dict[str, Any]


class IngestionRunRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    dataset_id: str
    status: Literal["queued", "running", "accepted", "rejected", "failed"] = Field(
        description="queued -> running (an ingest worker claimed it) -> accepted (published) or "
        "rejected (checks failed); failed: the worker could not finish (the upload is kept)"
    )
    source_sha256: str
    landing_key: str
    version: int | None
    summary: str
    finished_at: datetime = Field(description="when the run ended (while queued: when it was queued)")
    submitted_by: str | None
    started_at: datetime | None = Field(default=None, description="when a worker claimed the run")
    task_states: dict[str, str] | None = Field(
        default=None, description="the ingest DAG's task states, as the runner reported them"
    )
    airflow_run_id: str | None = Field(
        default=None, description="the Airflow DAG run ingesting this upload (worker mode airflow)"
    )
    airflow_state: str | None = Field(
        default=None,
        description="that DAG run's state as Airflow last reported it (queued, running, success, failed)",
    )
    trigger_error: str | None = Field(
        default=None,
        description="why the last attempt to trigger Airflow failed; the upload stays queued and is "
        "triggered again later",
    )
    trigger_attempts: int = Field(default=0, description="attempts made to trigger the Airflow run")
    next_trigger_at: datetime | None = Field(
        default=None, description="when a queued upload whose trigger failed is tried again"
    )


class FailedCheck(BaseModel):
    """One quality check an upload failed: the rule, the column and row numbers, never a value."""

    rule: str
    column: str | None
    detail: str | None
    unexpected_count: int | None
    sample_rows: list[int] = Field(
        description="some failing rows: the file's data rows numbered from 1, the header row not counted"
    )


class IngestionRunDetail(IngestionRunRead):
    """One ingestion run with the checks it failed (from its scrubbed quality report)."""

    rows: int | None = None
    checks_run: int | None = None
    failed_checks: list[FailedCheck] = Field(default_factory=list)
    size: int | None = Field(default=None, description="bytes of the upload, as landed")


class UploadAccepted(IngestionRunRead):
    size: int


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=3, max_length=1000, examples=["superseded by hk-logistics-deliveries-v2"])


class ClassificationReview(BaseModel):
    """A compliance officer's listing review of a dataset's classification."""

    model_config = ConfigDict(extra="forbid")

    approve: bool = Field(description="true: sign off (the dataset is listed); false: return to the provider")
    contract_sha256: str = Field(
        min_length=1, max_length=64, description="the contract you reviewed (from the review list)"
    )
    note: str = Field(min_length=3, max_length=2000, examples=["Every column classified; overlay applied"])


class ClassificationItem(BaseModel):
    """A dataset waiting for its listing review, with what the officer signs off."""

    id: str
    name: str
    provider: ProviderRef
    origin: str
    category: str
    sector_overlay: str
    status: str
    classification_state: str
    classification_review: dict[str, Any] | None
    contract_sha256: str
    contract_version: str
    columns: list[ColumnRead]
    provenance: dict[str, Any]
    anonymisation: dict[str, Any] | None
    minors: dict[str, Any] | None
