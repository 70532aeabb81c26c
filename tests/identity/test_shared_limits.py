"""The failed-authentication limiter's shared store (ADR 0027), on SQLite and PostgreSQL.

Two limiters stand for two replicas: each has its own engine on the lane's database, as two
processes would."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from gbadz import db
from gbadz.config import DatabaseSettings
from gbadz.identity.models import AuthFailure, AuthLimitKey
from gbadz.identity.oauth.limits import FailureLimiter

LIMIT = 5


@pytest.fixture
def replicas(database_url: str, engine: Engine) -> Iterator[tuple[FailureLimiter, FailureLimiter]]:
    """Two limiters, each on an engine of its own (as two API processes have)."""
    engines = [db.create_engine(DatabaseSettings(url=database_url)) for _ in range(2)]
    try:
        yield (
            FailureLimiter(db.make_sessionmaker(engines[0]), 60),
            FailureLimiter(db.make_sessionmaker(engines[1]), 60),
        )
    finally:
        for each in engines:
            each.dispose()


def _rows(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(AuthFailure)) or 0)


class TestAttempt:
    def test_concurrent_attempts_on_two_replicas_never_pass_the_limit(
        self, replicas: tuple[FailureLimiter, FailureLimiter]
    ) -> None:
        """16 attempts at once, alternating two replicas, all failing: exactly 5 are let through."""
        barrier = threading.Barrier(16)

        def guess(n: int) -> bool:
            limiter = replicas[n % 2]
            barrier.wait()
            attempt = limiter.attempt({"client-auth-addr:192.0.2.50": LIMIT})
            if attempt.wait is not None:
                return False
            attempt.failed()
            return True

        with ThreadPoolExecutor(16) as pool:
            checked = list(pool.map(guess, range(16)))
        assert LIMIT == checked.count(True)
        refused = replicas[1].attempt({"client-auth-addr:192.0.2.50": LIMIT})
        assert refused.wait is not None
        assert 1 <= refused.wait <= 61

    def test_a_success_is_taken_out_of_the_count(
        self, replicas: tuple[FailureLimiter, FailureLimiter]
    ) -> None:
        """Attempts that succeed leave no failure behind, whichever replica counted them."""
        first, second = replicas
        before = _rows(first.sessions)
        for limiter in [first, second] * LIMIT:
            attempt = limiter.attempt({"signin-addr:192.0.2.51": LIMIT})
            assert attempt.wait is None
            attempt.succeeded()
        assert before == _rows(first.sessions)

    def test_a_refused_attempt_is_not_counted_and_keys_are_hashed(
        self, replicas: tuple[FailureLimiter, FailureLimiter]
    ) -> None:
        """At the limit, more attempts add no rows; no key is stored in clear."""
        first, second = replicas
        key = "signin-user:alice@example"
        for _ in range(2):
            first.attempt({key: 2}).failed()
        counted = _rows(first.sessions)
        assert second.attempt({key: 2}).wait is not None
        assert counted == _rows(first.sessions)
        with first.sessions() as session:
            stored = session.scalars(sa.select(AuthLimitKey.key_hash)).all()
        assert all("alice" not in h and len(h) == 64 for h in stored)

    def test_a_key_at_its_limit_refuses_the_other_keys_attempt(
        self, replicas: tuple[FailureLimiter, FailureLimiter]
    ) -> None:
        """An attempt counted under several keys is refused if any one of them is at its limit."""
        first, second = replicas
        for _ in range(3):
            first.attempt({"signin-user-addr:bob|192.0.2.52": 3}).failed()
        both = {"signin-addr:192.0.2.52": 50, "signin-user-addr:bob|192.0.2.52": 3}
        assert second.attempt(both).wait is not None
