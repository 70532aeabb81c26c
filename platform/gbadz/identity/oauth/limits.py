"""Failed-authentication limits (token endpoint and sign-in page), shared by every API replica.

Who is counted (ADR 0021):

- the **address** is the socket peer; ``X-Forwarded-For`` counts only when the peer is a
  configured trusted proxy (``api.trusted_proxies``, default none), and then only its
  right-most entry that is not itself a trusted proxy. A client cannot choose the address it
  is counted under;
- failures are counted **in the database** (``auth_failures``, by the SHA-256 of the key), so
  replicas enforce one limit, not one each. An attempt is counted *before* its credentials are
  checked, under the keys' row locks (:meth:`FailureLimiter.attempt`), and uncounted when they
  were right: concurrent guesses on several replicas cannot all pass one check (ADR 0027).
  Old rows are purged as attempts are counted;
- nothing is counted against a name alone in a way a stranger could use to lock its owner
  out: client secrets are 256-bit random values, so client authentication is limited per
  address only; sign-in is limited per (username, address), per address, and per username
  only for browsers that never signed in as that person (the device cookie, see
  :mod:`gbadz.console.signin`).
"""

from __future__ import annotations

import hashlib
import ipaddress
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from gbadz.identity.models import AuthFailure, AuthLimitKey

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
PURGE_AFTER = timedelta(days=1)  # longer than any window (the settings cap windows at a day)


def trusted_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in entries)


def _ip(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(value.strip().strip("[]"))
    except ValueError:
        return None


def _trusted(value: str, trusted: tuple[Network, ...]) -> bool:
    address = _ip(value)
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str | None, forwarded_for: str | None, trusted: tuple[Network, ...]) -> str:
    """The address a request is counted under: the socket peer, unless that peer is a trusted
    proxy; then the right-most ``X-Forwarded-For`` entry that is not a trusted proxy (entries
    to its left were written by the client and prove nothing)."""
    address = peer or "unknown"
    if not trusted or not _trusted(address, trusted) or not forwarded_for:
        return address
    for entry in reversed(forwarded_for.split(",")):
        candidate = entry.strip()
        if _ip(candidate) is None:
            return address  # a malformed chain: count the proxy itself, not a made-up name
        if not _trusted(candidate, trusted):
            return str(_ip(candidate))
        address = candidate
    return address


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Attempt:
    """One authentication attempt, counted before it is checked.

    ``wait`` is set (seconds) when a key had reached its limit: the attempt is refused and was
    not counted. Otherwise the attempt is in ``auth_failures`` already, as a failure: the caller
    calls :meth:`succeeded` when the credentials were right, which takes it out. An attempt whose
    process dies before it says how it went stays counted as a failure.
    """

    limiter: FailureLimiter | None
    wait: int | None
    ids: tuple[int, ...] = ()

    def succeeded(self) -> None:
        if self.limiter is not None and self.ids:
            self.limiter.forget(self.ids)

    def failed(self) -> None:
        """The credentials were wrong: the attempt stays counted (nothing to write)."""


def _quick_commit(session: Session) -> None:
    """On PostgreSQL, commit this transaction without waiting for its WAL flush
    (``synchronous_commit = off``, this transaction only): its locks and rows are visible to
    every replica at once as usual; only a crash of the database server in the next fraction of
    a second could lose it, i.e. forget an attempt or keep a success counted. A limiter can
    afford that; two disk flushes per token request it could not (ADR 0027)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SET LOCAL synchronous_commit TO OFF"))


def _insert(dialect: str) -> Any:
    return pg_insert if dialect == "postgresql" else sqlite_insert


class FailureLimiter:
    """Sliding-window counts of failures per key, kept in the ``auth_failures`` table.

    Check and count are one step (:meth:`attempt`), atomic across replicas: the attempt first
    upserts its keys' rows in ``auth_limit_keys`` (``INSERT ... ON CONFLICT DO UPDATE``, in key
    order), which holds their row locks (PostgreSQL; SQLite's one writer) until it has counted
    itself. A burst of concurrent guesses, spread over any number of replicas, therefore sees
    every guess before it, and no more than the limit is ever checked (ADR 0027).
    """

    PURGE_EVERY_S = 60.0

    def __init__(self, sessions: sessionmaker[Session], window_s: float) -> None:
        self.sessions = sessions
        self.window = window_s
        self._purged_at = -1e9
        self._lock = threading.Lock()

    def attempt(self, limits: Mapping[str, int]) -> Attempt:
        """Refuse (``wait`` set) if any key has reached its limit of failures in the window;
        else count this attempt as a failure of every key until it :meth:`Attempt.succeeded`."""
        if not limits:
            return Attempt(None, None)
        hashes = dict(sorted((_hash(key), limit) for key, limit in limits.items()))
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            _quick_commit(session)
            insert = _insert(session.get_bind().dialect.name)(AuthLimitKey)
            session.execute(
                insert.values([{"key_hash": h, "touched_at": now} for h in hashes]).on_conflict_do_update(
                    index_elements=[AuthLimitKey.key_hash], set_={"touched_at": insert.excluded.touched_at}
                )
            )
            rows = session.execute(
                sa.select(AuthFailure.key_hash, sa.func.count(), sa.func.min(AuthFailure.at))
                .where(
                    AuthFailure.key_hash.in_(hashes),
                    AuthFailure.at > now - timedelta(seconds=self.window),
                )
                .group_by(AuthFailure.key_hash)
            ).all()
            waits = [
                int(self.window - (now - oldest).total_seconds()) + 1
                for key_hash, count, oldest in rows
                if count >= hashes[key_hash] and oldest is not None
            ]
            if waits:
                return Attempt(self, max(1, max(waits)))
            counted = [AuthFailure(key_hash=h, at=now) for h in hashes]
            session.add_all(counted)
            session.flush()
            ids = tuple(row.id for row in counted)
            with self._lock:
                purge = time.monotonic() - self._purged_at > self.PURGE_EVERY_S
                if purge:
                    self._purged_at = time.monotonic()
            if purge:
                session.execute(sa.delete(AuthFailure).where(AuthFailure.at < now - PURGE_AFTER))
                session.execute(sa.delete(AuthLimitKey).where(AuthLimitKey.touched_at < now - PURGE_AFTER))
        return Attempt(self, None, ids)

    def forget(self, ids: tuple[int, ...]) -> None:
        """Take a successful attempt's rows out of the counts."""
        with self.sessions.begin() as session:
            _quick_commit(session)
            session.execute(sa.delete(AuthFailure).where(AuthFailure.id.in_(ids)))
