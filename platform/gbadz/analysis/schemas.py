"""Wire shapes of compute-to-data: a query, its estimate, a release and the grant's budget meter."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gbadz.analysis.query import MAX_SQL_BYTES

#: The longest SQL text parsed into the body at all; the allow-list refuses anything over
#: ``MAX_SQL_BYTES`` with its own rule (``too-long``), and an empty text with ``empty``.
MAX_SQL = 16 * MAX_SQL_BYTES


class AnalysisAsk(BaseModel):
    """One query: SQL over the dataset's table, and the ε it may spend."""

    model_config = ConfigDict(extra="forbid")

    sql: str = Field(max_length=MAX_SQL, description="one SELECT over the dataset's table")
    epsilon: float | None = Field(
        default=None,
        allow_inf_nan=False,
        description="ε this query spends (default: the contract's max_epsilon_per_query)",
    )


class BudgetRead(BaseModel):
    epsilon_total: float
    epsilon_spent: float
    epsilon_left: float
    delta_total: float
    delta_spent: float
    delta_left: float


class AnalysisSpecRead(BaseModel):
    grant_id: str
    dataset_id: str
    spec: dict[str, Any] = Field(
        description="what may be asked: table, dimensions, measures and their bounds, aggregates, privacy unit"
    )
    budget: BudgetRead


class EstimateRead(BaseModel):
    plan: dict[str, Any] = Field(description="the query as validated: groups, filters, aggregates")
    epsilon: float = Field(description="ε the query would spend")
    delta: float = Field(description="δ the query would spend")
    accuracy: list[dict[str, Any]] = Field(
        description="per aggregate: ± the true value at 95% confidence (accuracy) and the noise scale; "
        "an average's error is its sum's and count's"
    )
    details: dict[str, Any] = Field(
        description="the mechanism's terms: mode, threshold on noisy group counts (keys not public), "
        "rows per person"
    )
    budget: BudgetRead
    budget_after: BudgetRead = Field(description="the budget if the query were run (nothing is spent now)")
    fits: bool = Field(description="whether the budget left pays for the query (else running it is a 409)")


class AnalysisRead(BaseModel):
    id: str
    grant_id: str
    dataset_id: str
    dataset_version: int
    state: str = Field(
        description="charged (running) | released | refunded (failed before the rows were read: ε given back) | failed (failed after: ε stays spent)"
    )
    sql: str
    query_sha256: str
    epsilon: float
    delta: float
    columns: list[str] | None = None
    rows: list[Any] | None = None
    accuracy: list[dict[str, Any]] | None = None
    result_sha256: str | None = None
    transfer_id: str | None = None
    log_index: int | None = Field(default=None, description="the transfer-log entry recording the release")
    error: str | None = Field(default=None, description="why it was refunded or failed (names no value)")
    created_at: datetime
    finished_at: datetime | None = None


class ReleaseRead(AnalysisRead):
    budget: BudgetRead = Field(description="the grant's budget after this analysis")
    reused: bool = Field(description="true when an Idempotency-Key matched an earlier release")
