"""One way to run work in the background of the API process: :func:`every`.

The revocation list, the catalog index's generation check, the ended-grant sweep and the
transfer log's periodic checkpoint all refresh on a timer. Each is cancelled at shutdown and
on failure logs one line naming the work and the error class, then tries again at the next
tick. No traceback is rendered: an unreachable database would otherwise fill the log (and the
event loop's time) with the same stack every second.

The work always runs in a worker thread of the event loop's default executor, never on the
loop and never in the request threads' limiter, and it opens its sessions on the app's
background engine (a pool of its own). A query on the loop that waits for a pooled
connection only the loop can release froze the whole server under a 64-connection burst
(issue #20, finding 3: /healthz unanswered for minutes); a refresher competing with requests
for threads or connections would go stale exactly when it matters.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping

from gbadz.log import get_logger

log = get_logger("gbadz.background")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else ""


async def every(
    interval_s: float,
    work: Callable[[], object],
    *,
    what: str,
    wait_first: bool = False,
) -> None:
    """Run ``work`` in a worker thread every ``interval_s`` seconds until cancelled."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            await asyncio.to_thread(work)
        except Exception as exc:  # noqa: BLE001 - a refresh survives any failure; the next tick retries
            log.warning(f"{what} failed; retrying", error=type(exc).__name__, reason=_reason(exc))
        await asyncio.sleep(interval_s)


class Listener:
    """A thread holding one PostgreSQL connection of its own that ``LISTEN``s on channels and
    calls each channel's handler when a notification arrives (ADR 0027): another replica's
    revocation or catalog change reaches this one in milliseconds instead of at the next poll.

    The timers of :func:`every` stay: they are the bound when a notification is lost (the
    connection broke); after every (re)connection all handlers run once, for what was missed.
    """

    RETRY_S = 1.0
    WAKE_S = 0.2  # how often the thread looks at its stop flag between notifications

    def __init__(self, url: str, handlers: Mapping[str, Callable[[], object]]) -> None:
        self.url = url
        self.handlers = dict(handlers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gbadz-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _handle(self, channel: str) -> None:
        try:
            self.handlers[channel]()
        except Exception as exc:  # noqa: BLE001 - the listener survives a handler's failure; the timer retries
            log.warning(f"{channel} notification failed", error=type(exc).__name__, reason=_reason(exc))

    def _run(self) -> None:
        import psycopg

        while not self._stop.is_set():
            try:
                with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as connection:
                    for channel in self.handlers:
                        connection.execute(f"LISTEN {channel}")
                    for channel in self.handlers:
                        self._handle(channel)
                    while not self._stop.is_set():
                        for note in connection.notifies(timeout=self.WAKE_S):
                            self._handle(note.channel)
            except Exception as exc:  # noqa: BLE001 - reconnect after any failure, as the timers retry
                log.warning("notification listener failed; reconnecting", error=type(exc).__name__)
                self._stop.wait(self.RETRY_S)
