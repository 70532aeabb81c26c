"""One way to run work in the background of the API process: :func:`every`.

The revocation list, the catalog index's generation check and the transfer log's periodic
checkpoint all refresh on a timer. Each is cancelled at shutdown and on failure logs
one line naming the work and the error class, then tries again at the next tick. No
traceback is rendered: an unreachable database would otherwise fill the log (and the
event loop's time) with the same stack every second.
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
    in_thread: bool = True,
) -> None:
    """Run ``work`` every ``interval_s`` seconds until cancelled, in a worker thread unless told
    otherwise (a millisecond query may stay on the event loop: a thread hop per tick measured
    worse under load for the revocation list)."""
    if wait_first:
        await asyncio.sleep(interval_s)
    while True:
        try:
            if in_thread:
                await asyncio.to_thread(work)
            else:
                work()
        except Exception as exc:  # noqa: BLE001 - a refresh survives any failure; the next tick retries
            log.warning(f"{what} failed; retrying", error=type(exc).__name__, reason=_reason(exc))
        await asyncio.sleep(interval_s)
