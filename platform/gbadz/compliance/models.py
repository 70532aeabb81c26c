"""Tables of compliance: the individuals counted towards each exporter's yearly thresholds."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from gbadz.models import Base, UTCDateTime, utcnow


class CountedSubject(Base):
    """One individual counted once per exporter, year (Asia/Shanghai), basis and kind.

    The year-to-date counters of crossborder-rules.md §1.4 are counts of these rows:
    natural persons, de-duplicated; ``basis`` keeps exempt-basis (Provisions Arts.3-5(3))
    and mechanism-basis exports apart; ``kind`` is ``pi`` for every individual whose
    personal information left, ``spi`` for those whose sensitive personal information left.
    The primary key makes a repeated or concurrent delivery unable to count anyone twice.
    """

    __tablename__ = "counted_subjects"

    exporter_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    counter_year: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    basis: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    subject: Mapped[str] = mapped_column(sa.String(128), primary_key=True)
    first_counted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CounterTotal(Base):
    """The running size of one counter (exporter, year, basis, kind): a request decision reads
    one row instead of counting ``counted_subjects``. Deliveries lock it, insert their subjects
    and add the rows actually inserted, in the same transaction."""

    __tablename__ = "counter_totals"

    exporter_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    counter_year: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    basis: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    kind: Mapped[str] = mapped_column(sa.String(8), primary_key=True)
    individuals: Mapped[int] = mapped_column(sa.BigInteger, default=0)


class CountedVersion(Base):
    """A published version whose individuals were counted for an exporter, year and basis: a
    later transfer of it adds nobody new, which a re-decision can know without a join."""

    __tablename__ = "counted_versions"

    exporter_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    counter_year: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
    basis: Mapped[str] = mapped_column(sa.String(16), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    version: Mapped[int] = mapped_column(sa.Integer, primary_key=True)
