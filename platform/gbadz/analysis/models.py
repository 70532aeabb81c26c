"""Tables of compute-to-data: each analysis grant's privacy budget, and each analysis asked under it.

The budget is a ledger, not a counter kept in memory: every API replica charges the same row,
under a row lock, before a query touches the data (see :mod:`gbadz.analysis.service`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


class AnalysisBudget(Base):
    """What one analysis grant may spend in all (from the contract's ``gbadz.compute.budget``) and
    what it has spent: charges of running and released analyses (refunds give theirs back)."""

    __tablename__ = "analysis_budgets"

    grant_id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    epsilon_total: Mapped[float] = mapped_column(sa.Float)
    delta_total: Mapped[float] = mapped_column(sa.Float)
    epsilon_spent: Mapped[float] = mapped_column(sa.Float, default=0.0)
    delta_spent: Mapped[float] = mapped_column(sa.Float, default=0.0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Analysis(Base):
    """One query under a grant: charged before it runs, then released (its result kept, the
    transfer logged), refunded (it failed before any row reached the measurement: its charge given
    back, with a reason naming no value) or failed (it stopped after the rows reached the child:
    the charge stays, since a refund would tell whether the data made it fail).

    A crash between the charge and the end leaves it ``charged``: the budget stays spent, which
    errs on the side of the people in the data (nothing is refunded that might have been released).
    """

    __tablename__ = "analyses"

    id: Mapped[str] = mapped_column(sa.String(36), primary_key=True)
    grant_id: Mapped[str] = mapped_column(sa.String(36), index=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100))
    dataset_version: Mapped[int] = mapped_column(sa.Integer)
    sql: Mapped[str] = mapped_column(sa.Text)
    query_sha256: Mapped[str] = mapped_column(sa.String(64))
    epsilon: Mapped[float] = mapped_column(sa.Float)
    delta: Mapped[float] = mapped_column(sa.Float)
    state: Mapped[str] = mapped_column(sa.String(16), index=True)  # charged | released | refunded | failed
    columns: Mapped[list[str] | None] = mapped_column(sa.JSON, default=None)
    rows: Mapped[list[Any] | None] = mapped_column(sa.JSON, default=None)
    accuracy: Mapped[list[dict[str, Any]] | None] = mapped_column(sa.JSON, default=None)
    result_sha256: Mapped[str | None] = mapped_column(sa.String(64), default=None)
    transfer_id: Mapped[str | None] = mapped_column(sa.String(36), default=None)
    log_index: Mapped[int | None] = mapped_column(sa.BigInteger, default=None)
    actor: Mapped[str] = mapped_column(sa.String(200))
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(200), default=None)
    error: Mapped[str | None] = mapped_column(sa.Text, default=None)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, default=None)

    __table_args__ = (
        # A retry with the same key is the same analysis: one charge, one release.
        sa.UniqueConstraint("grant_id", "idempotency_key", name="uq_analyses_grant_idempotency_key"),
    )
