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
from collections.abc import Callable

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
