"""SQL of compute-to-data: the budget ledger (charged under a row lock) and the analyses of a grant.

The one rule written here is the charge: :func:`charge` never lets a grant's spent ε or δ pass
its total, however many API replicas charge the same grant at once. It locks the budget row
(``SELECT … FOR UPDATE`` on PostgreSQL) and then spends with one conditional ``UPDATE`` whose
``WHERE`` re-checks what is left, so even a reader that did not wait for the lock (SQLite, whose
write transactions serialise instead) cannot spend past the total.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from gbadz.analysis.models import Analysis, AnalysisBudget
from gbadz.models import utcnow

#: Floating-point slack when comparing ε and δ sums with a total (three queries of 1.0 fill 3.0).
SLACK = 1e-9


def ensure_budget(session: Session, grant_id: str, epsilon_total: float, delta_total: float) -> None:
    """Create the grant's budget row if it has none (a concurrent creator wins quietly)."""
    values = {
        "grant_id": grant_id,
        "epsilon_total": epsilon_total,
        "delta_total": delta_total,
        "epsilon_spent": 0.0,
        "delta_spent": 0.0,
        "updated_at": utcnow(),
    }
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(postgresql.insert(AnalysisBudget).values(values).on_conflict_do_nothing())
    elif dialect == "sqlite":
        session.execute(sqlite.insert(AnalysisBudget).values(values).on_conflict_do_nothing())
    elif session.get(AnalysisBudget, grant_id) is None:  # pragma: no cover - gbadz runs on the two above
        session.add(AnalysisBudget(**values))
        session.flush()


def budget(session: Session, grant_id: str, *, lock: bool = False) -> AnalysisBudget | None:
    """The grant's budget row; ``lock``: held until the transaction ends (PostgreSQL row lock)."""
    query = sa.select(AnalysisBudget).where(AnalysisBudget.grant_id == grant_id)
    if lock:
        query = query.with_for_update().execution_options(populate_existing=True)
    return session.scalar(query)


def charge(session: Session, grant_id: str, epsilon: float, delta: float) -> bool:
    """Spend ``epsilon`` and ``delta`` of the grant's budget if both fit; False (nothing spent) if not."""
    result = session.execute(
        sa.update(AnalysisBudget)
        .where(
            AnalysisBudget.grant_id == grant_id,
            AnalysisBudget.epsilon_spent + epsilon <= AnalysisBudget.epsilon_total + SLACK,
            AnalysisBudget.delta_spent + delta <= AnalysisBudget.delta_total + SLACK,
        )
        .values(
            epsilon_spent=AnalysisBudget.epsilon_spent + epsilon,
            delta_spent=AnalysisBudget.delta_spent + delta,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(getattr(result, "rowcount", 0) == 1)


def refund(session: Session, grant_id: str, epsilon: float, delta: float) -> None:
    """Give back a charge (never below zero: a refund cannot create budget)."""
    session.execute(
        sa.update(AnalysisBudget)
        .where(AnalysisBudget.grant_id == grant_id)
        .values(
            epsilon_spent=_not_below_zero(session, AnalysisBudget.epsilon_spent - epsilon),
            delta_spent=_not_below_zero(session, AnalysisBudget.delta_spent - delta),
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def _not_below_zero(session: Session, value: sa.ColumnElement[float]) -> sa.ColumnElement[float]:
    # SQLite's two-argument max() is PostgreSQL's greatest().
    name = "max" if session.get_bind().dialect.name == "sqlite" else "greatest"
    return getattr(sa.func, name)(value, 0.0)  # type: ignore[no-any-return]


def add(session: Session, analysis: Analysis) -> Analysis:
    session.add(analysis)
    session.flush()
    return analysis


def by_key(session: Session, grant_id: str, idempotency_key: str) -> Analysis | None:
    """The analysis asked earlier under this grant with this Idempotency-Key."""
    return session.scalar(
        sa.select(Analysis).where(Analysis.grant_id == grant_id, Analysis.idempotency_key == idempotency_key)
    )


def of_grant(session: Session, grant_id: str, analysis_id: str, *, lock: bool = False) -> Analysis | None:
    query = sa.select(Analysis).where(Analysis.grant_id == grant_id, Analysis.id == analysis_id)
    return session.scalar(query.with_for_update() if lock else query)


def listed(session: Session, grant_id: str, limit: int) -> Sequence[Analysis]:
    """The grant's analyses, newest first."""
    return session.scalars(
        sa.select(Analysis)
        .where(Analysis.grant_id == grant_id)
        .order_by(Analysis.created_at.desc(), Analysis.id)
        .limit(limit)
    ).all()


def charged_since(session: Session, grant_id: str, since: datetime) -> Sequence[datetime]:
    """When the grant's analyses since ``since`` were charged, oldest first (the rate limit)."""
    return session.scalars(
        sa.select(Analysis.created_at)
        .where(Analysis.grant_id == grant_id, Analysis.created_at >= since)
        .order_by(Analysis.created_at)
    ).all()
