"""Failed-authentication limits (token endpoint and sign-in page), shared by every API replica.

Who is counted (ADR 0021):

- the **address** is the socket peer; ``X-Forwarded-For`` counts only when the peer is a
  configured trusted proxy (``api.trusted_proxies``, default none), and then only its
  right-most entry that is not itself a trusted proxy. A client cannot choose the address it
  is counted under;
- failures are counted **in the database** (``auth_failures``, by the SHA-256 of the key), so
  replicas enforce one limit, not one each. A check is one indexed query (1.6 ms on SQLite,
  3 ms on PostgreSQL here), skipped for a key found clean less than ``CLEAN_TTL_S`` ago in
  this process and not failed here since: another replica's failures show up within that
  second. Old rows are purged as failures are recorded;
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
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz.identity.models import AuthFailure

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


class FailureLimiter:
    """Sliding-window counts of failures per key, kept in the ``auth_failures`` table."""

    PURGE_EVERY_S = 60.0
    CLEAN_TTL_S = 1.0
    CLEAN_LIMIT = 100_000

    def __init__(self, sessions: sessionmaker[Session], window_s: float) -> None:
        self.sessions = sessions
        self.window = window_s
        self._purged_at = -1e9
        self._lock = threading.Lock()
        # key hash -> when the database last showed it with no failure in the window
        self._clean: dict[str, float] = {}

    def retry_after(self, limits: Mapping[str, int]) -> int | None:
        """Seconds to wait if any key has reached its limit of failures in the window, else None."""
        if not limits:
            return None
        hashes = {_hash(key): limit for key, limit in limits.items()}
        tick = time.monotonic()
        if all(tick - self._clean.get(h, -1e9) < self.CLEAN_TTL_S for h in hashes):
            return None
        now = datetime.now(UTC)
        with self.sessions() as session:
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
        with self._lock:
            if len(self._clean) >= self.CLEAN_LIMIT:
                self._clean.clear()
            seen = {key_hash for key_hash, _, _ in rows}
            for key_hash in hashes.keys() - seen:
                self._clean[key_hash] = tick
        return max(1, max(waits)) if waits else None

    def failed(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._clean.pop(_hash(key), None)
        now = datetime.now(UTC)
        with self.sessions.begin() as session:
            session.add_all(AuthFailure(key_hash=_hash(key), at=now) for key in keys)
            with self._lock:
                purge = time.monotonic() - self._purged_at > self.PURGE_EVERY_S
                if purge:
                    self._purged_at = time.monotonic()
            if purge:
                session.execute(sa.delete(AuthFailure).where(AuthFailure.at < now - PURGE_AFTER))
