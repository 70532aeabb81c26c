"""The sandboxed child: ``python -m gbadz.analysis.runner`` (started by gbadz.analysis.sandbox).

Reads 8 bytes of header length, a JSON header (plan, spec, ε) and an Arrow IPC stream from
stdin; writes the release as JSON to stdout and exits 0, or writes ``{"error", "detail"}`` and
exits 2. With ``--expect-isolated`` it first checks that it sees no network interface but
loopback (exit 3 otherwise), so a namespace that silently did not apply never measures.

``--probe-connect HOST:PORT`` exists for the sandbox's tests only: it tries to open a TCP
connection from inside the sandbox and reports whether it could. It is reachable from this
command line alone; no API path builds it.

Nothing here logs or prints a value from the rows (invariant 9); stderr is not read by the
parent beyond its first word.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

EXIT_OK = 0
EXIT_FAILED = 2
EXIT_NOT_ISOLATED = 3
MAX_HEADER_BYTES = 1024 * 1024


def interfaces() -> list[str]:
    """The network interfaces of this process's namespace (``/proc/self/net/dev`` follows the namespace)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def _write(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer, separators=(",", ":"), allow_nan=False))
    sys.stdout.flush()


def _read(stream: BinaryIO) -> tuple[dict[str, Any], Any]:
    import pyarrow as pa

    size = int.from_bytes(stream.read(8), "big")
    if not 0 < size <= MAX_HEADER_BYTES:
        raise ValueError("bad header length")
    header = json.loads(stream.read(size))
    table = pa.ipc.open_stream(stream).read_all()
    return header, table


def measure_stdin() -> int:
    started = time.perf_counter()
    from gbadz.analysis.measure import _dp, release
    from gbadz.analysis.plan import Plan
    from gbadz.analysis.spec import AnalysisSpec
    from gbadz.errors import GbadzError

    try:
        _dp()  # OpenDP's modules, imported before the rows arrive
        imported = time.perf_counter()
        header, table = _read(sys.stdin.buffer)
        read = time.perf_counter()
        plan = Plan.from_dict(header["plan"])
        spec = AnalysisSpec.from_dict(header["spec"])
        result = release(table, plan, spec, float(header["epsilon"]))
        result.timings.update({"child_imports": imported - started, "child_read": read - imported})
    except MemoryError:
        _write({"error": "memory"})
        return EXIT_FAILED
    except GbadzError as exc:
        # Our errors' messages name columns and rules, never values.
        _write({"error": type(exc).__name__, "detail": exc.detail})
        return EXIT_FAILED
    except Exception as exc:  # noqa: BLE001 - any other failure is reported by its class only
        _write({"error": type(exc).__name__})
        return EXIT_FAILED
    _write(result.as_dict())
    return EXIT_OK


def probe_connect(target: str) -> int:
    """Test-only: can this process open a TCP connection to ``target`` (host:port)?"""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            _write({"connected": True})
    except OSError as exc:
        _write({"connected": False, "errno": exc.errno})
    return EXIT_OK


def main(argv: list[str]) -> int:
    if "--expect-isolated" in argv and interfaces() != ["lo"]:
        return EXIT_NOT_ISOLATED
    if "--probe-connect" in argv:
        return probe_connect(argv[argv.index("--probe-connect") + 1])
    return measure_stdin()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
