"""A small HTTP/1.1 load generator for liveness tests: N keep-alive connections for D seconds.

Run as a script (its own process, so the server and the prober keep their CPU and GIL):
``python tests/burst.py PORT PATH CONNECTIONS SECONDS [AUTHORIZATION]``. It prints one JSON
object: the count of responses per status, connection errors, and the window it ran in
(``time.monotonic()``, comparable across processes on one machine). Raw asyncio streams
rather than an HTTP client library: about 20 µs of CPU a request, so the generator takes
little from the server it loads (like wrk, which the suite does not require).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter


async def connection(port: int, request: bytes, until: float, statuses: Counter[str]) -> None:
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            statuses["connect-error"] += 1
            await asyncio.sleep(0.05)
            continue
        try:
            while time.monotonic() < until:
                writer.write(request)
                head = await asyncio.wait_for(
                    reader.readuntil(b"\r\n\r\n"), timeout=until - time.monotonic() + 30
                )
                lines = head.decode("latin-1").split("\r\n")
                statuses[lines[0].split(" ", 2)[1]] += 1
                length = next(
                    (
                        int(line.split(":", 1)[1])
                        for line in lines
                        if line.lower().startswith("content-length:")
                    ),
                    0,
                )
                await reader.readexactly(length)
                if any(line.lower() == "connection: close" for line in lines):
                    break
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            statuses["read-error"] += 1
        finally:
            writer.close()


async def main(port: int, path: str, connections: int, seconds: float, authorization: str) -> None:
    header = f"Authorization: {authorization}\r\n" if authorization else ""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{header}\r\n".encode("latin-1")
    statuses: Counter[str] = Counter()
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(*(connection(port, request, until, statuses) for _ in range(connections)))
    sys.stdout.write(
        json.dumps({"statuses": dict(statuses), "started": started, "ended": time.monotonic()}) + "\n"
    )


if __name__ == "__main__":
    os.nice(10)  # the load yields to the server under test and to the prober
    port, path, conns, secs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    asyncio.run(main(port, path, conns, secs, sys.argv[5] if len(sys.argv) > 5 else ""))
