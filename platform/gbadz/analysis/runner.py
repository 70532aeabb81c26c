"""The sandboxed child: ``python -m gbadz.analysis.runner`` (started by gbadz.analysis.sandbox).

Imports what it needs, writes one byte (``R``: ready), then reads 8 bytes of header length, a JSON header (plan, spec, ε) and an Arrow IPC stream from
stdin; writes the release as JSON to stdout and exits 0, or writes ``{"error", "detail"}`` and
exits 2. With ``--expect-isolated`` it first checks that it sees no network interface but
loopback (exit 3 otherwise), so a namespace that silently did not apply never measures.

``--probe NAME [ARG]`` exists for the sandbox's tests only (see :func:`probe`): it runs a check
inside the sandbox, such as trying to open a TCP connection, and reports what happened. It is
reachable from this command line alone; no API path builds it.

Nothing here logs or prints a value from the rows (invariant 9); stderr is not read by the
parent beyond its first word.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

EXIT_OK = 0
EXIT_FAILED = 2
EXIT_NOT_ISOLATED = 3
MAX_HEADER_BYTES = 1024 * 1024
#: Written to stdout once the imports are done, before reading the rows (never part of the JSON).
READY = b"R"


def interfaces() -> list[str]:
    """The network interfaces of this process's namespace (``/proc/self/net/dev`` follows the namespace)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def _peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM: of this program, not of the parent it forked from)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _write(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer, separators=(",", ":"), allow_nan=False))
    sys.stdout.flush()


def _read(stream: BinaryIO) -> tuple[dict[str, Any], Any, float]:
    """The header, the table, and when the first byte arrived (a spare child waits for it)."""
    import pyarrow as pa

    first = stream.read(8)
    arrived = time.perf_counter()
    size = int.from_bytes(first, "big")
    if not 0 < size <= MAX_HEADER_BYTES:
        raise ValueError("bad header length")
    header = json.loads(stream.read(size))
    table = pa.ipc.open_stream(stream).read_all()
    return header, table, arrived


def measure_stdin() -> int:
    started = time.perf_counter()
    from gbadz.analysis.measure import release, warm_up
    from gbadz.analysis.plan import Plan
    from gbadz.analysis.spec import AnalysisSpec
    from gbadz.errors import GbadzError

    try:
        warm_up()  # OpenDP imported and its first-use costs paid before the rows arrive
        imported = time.perf_counter()
        sys.stdout.buffer.write(READY)  # a spare child says it has finished its imports
        sys.stdout.buffer.flush()
        header, table, arrived = _read(sys.stdin.buffer)
        read = time.perf_counter()
        plan = Plan.from_dict(header["plan"])
        spec = AnalysisSpec.from_dict(header["spec"])
        hint = header.get("threshold")
        threshold = int(hint) if isinstance(hint, int) and not isinstance(hint, bool) else None
        result = release(table, plan, spec, float(header["epsilon"]), threshold=threshold)
        result.timings.update({"child_imports": imported - started, "child_read": read - arrived})
        result.timings["child_peak_rss_mib"] = _peak_rss_mib()
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


def probe(name: str, argument: str) -> int:
    """Test-only checks run inside the sandbox (``--probe NAME [ARG]``); never built by the API.

    ``connect HOST:PORT``: can this process open a TCP connection? ``unix PATH``: can it connect
    to a Unix socket file? ``write``: can it create a
    file with content in its working directory? ``env``: which variable names does it see?
    ``abort``: crash with SIGABRT, as a native library might.
    """
    if name == "connect":
        host, _, port = argument.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=2):
                _write({"connected": True})
        except OSError as exc:
            _write({"connected": False, "errno": exc.errno})
    elif name == "unix":
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(2)
                sock.connect(argument)
                _write({"connected": True})
        except OSError as exc:
            _write({"connected": False, "errno": exc.errno})
    elif name == "write":
        try:
            Path("probe.bin").write_bytes(b"x" * 4096)
            _write({"written": True})
        except OSError as exc:
            _write({"written": False, "errno": exc.errno})
    elif name == "env":
        # What the process was started with (read from /proc: configuration is read by Settings only).
        entries = Path("/proc/self/environ").read_bytes().split(b"\0")
        _write({"names": sorted(e.split(b"=", 1)[0].decode() for e in entries if e)})
    elif name == "abort":
        os.abort()
    return EXIT_OK


def main(argv: list[str]) -> int:
    if "--expect-isolated" in argv and interfaces() != ["lo"]:
        return EXIT_NOT_ISOLATED
    if "--probe" in argv:
        at = argv.index("--probe")
        rest = [*argv[at + 1 :], "", ""]
        return probe(rest[0], rest[1] if rest[1] != "--expect-isolated" else "")
    return measure_stdin()


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    # Exit now: tearing down an interpreter that holds Polars and OpenDP takes hundreds of
    # milliseconds (measured), and the parent waits for the end of stdout, which comes at exit.
    os._exit(code)
