"""Failed-authentication limits per client and per address (token endpoint and sign-in page)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class FailureLimiter:
    """Sliding-window count of failed client authentications per key (client id, address).

    In-process: each API replica limits on its own, which bounds a brute force at
    replicas x limit per window.
    """

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window = window_s
        self._events: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _trim(self, key: str, now: float) -> deque[float]:
        events = self._events[key]
        while events and now - events[0] > self.window:
            events.popleft()
        return events

    def retry_after(self, *keys: str) -> int | None:
        now = time.monotonic()
        with self._lock:
            waits = []
            for key in keys:
                events = self._trim(key, now)
                if len(events) >= self.limit:
                    waits.append(int(self.window - (now - events[0])) + 1)
            return max(waits) if waits else None

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for key in keys:
                self._trim(key, now).append(now)
