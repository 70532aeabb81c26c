"""Year-to-date counters: de-duplicated, per basis, reset on 1 January (Beijing time), exact under races."""

from __future__ import annotations

import secrets
import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from gbadz import db
from gbadz.compliance import counters


def _exporter() -> str:
    return f"org-{secrets.token_hex(4)}"


class TestCounting:
    def test_deduplicated_and_split_by_kind_and_basis(self, engine: Engine) -> None:
        """The same person twice counts once; SPI and exempt-basis exports are counted apart."""
        exporter = _exporter()
        at = datetime(2026, 6, 1, tzinfo=UTC)
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            first = counters.record(
                session,
                exporter_id=exporter,
                basis="mechanism",
                subjects=["a", "b", "c"],
                sensitive_subjects=["a"],
                at=at,
            )
            again = counters.record(
                session,
                exporter_id=exporter,
                basis="mechanism",
                subjects=["b", "c", "d"],
                sensitive_subjects=["a", "d"],
                at=at,
            )
            exempt = counters.record(
                session, exporter_id=exporter, basis="exempt", subjects=["a", "z"], at=at
            )
        assert (0, 3, 0, 1) == (first.pi_before, first.pi_after, first.spi_before, first.spi_after)
        assert (3, 4, 1, 2) == (again.pi_before, again.pi_after, again.spi_before, again.spi_after)
        assert (0, 2) == (exempt.pi_before, exempt.pi_after)

    def test_would_be_previews_without_counting(self, engine: Engine) -> None:
        """A preview says what the counters would become, and counts nobody."""
        exporter = _exporter()
        at = datetime(2026, 6, 1, tzinfo=UTC)
        factory = db.make_sessionmaker(engine)
        with db.session_scope(factory) as session:
            counters.record(session, exporter_id=exporter, basis="mechanism", subjects=["a", "b"], at=at)
            assert (3, 1) == counters.would_be(
                session, exporter_id=exporter, subjects=["b", "c"], sensitive_subjects=["c"], at=at
            )
            assert 2 == counters.count(session, exporter, 2026, "mechanism", "pi")

    def test_first_of_january_in_beijing(self, engine: Engine) -> None:
        """31 Dec 23:59 and 1 Jan 00:01 Beijing time fall in different counting years."""
        exporter = _exporter()
        before = datetime(2026, 12, 31, 15, 59, tzinfo=UTC)  # 23:59 in Asia/Shanghai
        after = datetime(2026, 12, 31, 16, 1, tzinfo=UTC)  # 00:01 on 1 January 2027
        assert (2026, 2027) == (counters.counter_year(before), counters.counter_year(after))
        with db.session_scope(db.make_sessionmaker(engine)) as session:
            counters.record(session, exporter_id=exporter, basis="mechanism", subjects=["a", "b"], at=before)
            new_year = counters.record(
                session, exporter_id=exporter, basis="mechanism", subjects=["a"], at=after
            )
        assert (0, 1) == (new_year.pi_before, new_year.pi_after)

    def test_bad_input(self, engine: Engine) -> None:
        """An unknown basis or a naive time is refused."""
        with (
            db.session_scope(db.make_sessionmaker(engine)) as session,
            pytest.raises(ValueError, match="basis must be one of"),
        ):
            counters.record(session, exporter_id="x", basis="maybe", subjects=["a"])
        with pytest.raises(ValueError, match="timezone-aware"):
            counters.counter_year(datetime(2026, 1, 1))  # noqa: DTZ001


class TestConcurrency:
    def test_racing_deliveries_end_with_the_exact_count(self, engine: Engine) -> None:
        """Eight deliveries racing with overlapping people on one exporter count each person exactly once."""
        exporter = _exporter()
        at = datetime(2026, 7, 1, tzinfo=UTC)
        factory = db.make_sessionmaker(engine)
        batches = [[f"person-{(w * 700 + i) % 3000}" for i in range(1_000)] for w in range(8)]
        expected = len({p for batch in batches for p in batch})
        errors: list[BaseException] = []

        def deliver(batch: list[str]) -> None:
            for attempt in range(20):
                try:
                    with db.session_scope(factory) as session:
                        counters.record(
                            session,
                            exporter_id=exporter,
                            basis="mechanism",
                            subjects=batch,
                            sensitive_subjects=batch[:100],
                            at=at,
                        )
                    return
                except OperationalError:  # SQLite: database locked by another writer; retry
                    if attempt == 19:
                        raise
                except BaseException as exc:  # noqa: BLE001 - reported below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=deliver, args=(b,)) for b in batches]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [] == errors
        with factory() as session:
            assert expected == counters.count(session, exporter, 2026, "mechanism", "pi")
            assert len({p for b in batches for p in b[:100]}) == counters.count(
                session, exporter, 2026, "mechanism", "spi"
            )
