"""Run a measurement in a child process with no network, bounded time and memory, and no disk.

The API process holds decrypted rows only in memory; the measurement runs in a child so that
a bug or an engine feature cannot reach the network or the file system with them:

* ``unshare --net --mount``: the child has its own network namespace with only a loopback
  interface that is down, so it opens no TCP connection; its own mount namespace lays empty
  read-only tmpfs over ``/run``, ``/tmp``, ``/dev/shm`` and the gbadz home
  (:attr:`Limits.hidden`), so no socket file there (the database's, the storage's gRPC
  sockets) and none of our files (keyring, database) can be reached (we run as root; a
  deployment uses a NetworkPolicy as well). The runner also checks that it sees no interface but ``lo`` and
  refuses to measure otherwise. If ``unshare`` is missing or fails, :class:`SandboxUnavailable`
  is raised: we fail closed and never run unsandboxed silently (``Limits(isolate=False)`` exists
  only for the benchmark that measures what isolation costs).
* ``prlimit``: RLIMIT_DATA (memory; RLIMIT_AS only as an outer bound, see
  :data:`ADDRESS_SPACE_HEADROOM`), RLIMIT_CPU (CPU seconds), RLIMIT_FSIZE=0 (no file can grow:
  plaintext is never at rest) and no core dumps; a wall-clock timeout kills the child.
* The rows go in as an Arrow IPC stream on stdin, the plan, spec and ε as JSON before them;
  the release comes back as JSON on stdout. Nothing is written to disk; the child's working
  and temporary directory is a fresh empty one, removed after.
* A clean environment: nothing of ours (credentials, database URLs) is inherited.

Errors: :class:`AnalysisFailed` on timeout, memory, or a crash, with a message that names the
limit or the kind of failure and never a value from the rows (invariant 9).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import math
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from gbadz.analysis import measure
from gbadz.analysis.plan import Plan
from gbadz.analysis.runner import EXIT_FAILED, EXIT_NOT_ISOLATED, EXIT_OK, READY
from gbadz.analysis.spec import AnalysisSpec
from gbadz.errors import ServiceUnavailable

#: RLIMIT_AS counts address space reserved but never used: the child's runtime (Polars and
#: OpenDP's Rust allocators, thread stacks) reserves about 2.2 GiB while its resident memory is
#: 200 MB (measured), so an RLIMIT_AS of 2 GiB killed every run. The memory limit is therefore
#: RLIMIT_DATA (private writable memory actually mapped: numpy, Arrow and Polars buffers), with
#: RLIMIT_AS as an outer bound this much above it.
ADDRESS_SPACE_HEADROOM = 4 * 1024**3
#: The size asked for the pipe that carries the rows (Linux allows up to 1 MiB unprivileged).
PIPE_BYTES = 1024 * 1024
#: The most bytes of JSON a child may answer with (a release of 10,000 rows is about 1 MB).
MAX_ANSWER_BYTES = 32 * 1024 * 1024


class SandboxUnavailable(ServiceUnavailable):
    """The sandbox cannot be started (no ``unshare``/``prlimit``, or no network namespace): nothing ran."""


class AnalysisFailed(ServiceUnavailable):
    """The analysis was stopped (time or memory limit) or crashed; the message names no value."""


@dataclass(frozen=True)
class Limits:
    """What one analysis may use. ``isolate=False`` is for benchmarks only (see module docstring)."""

    timeout_s: float = 30.0
    memory_bytes: int = 2 * 1024**3
    isolate: bool = True
    threads: int = 2
    #: Keep a spare child started ahead, so an analysis does not wait for the child's imports.
    warm: bool = True
    #: More directories to hide from the child besides :data:`HIDDEN_DIRS` (the gbadz home:
    #: its keyring, its database file, the embedded storage's sockets).
    hidden: tuple[str, ...] = ()


#: Where socket files live (the database's, the storage's gRPC sockets): hidden from the child.
HIDDEN_DIRS = ("/run", "/tmp", "/dev/shm")  # noqa: S108 - hidden, not used
#: Lays an empty, read-only tmpfs over each directory before ``--``, then runs what follows it.
HIDE_DIRS = (
    'set -e; unset PWD OLDPWD; while [ "$1" != "--" ]; do if [ -d "$1" ]; then '
    'mount -t tmpfs -o size=4k,mode=0555,ro,nosuid,nodev,noexec gbadz-hidden "$1"; fi; shift; done; '
    'shift; exec "$@"'
)


def command(limits: Limits, *runner_args: str) -> list[str]:
    """The argv that starts the runner under the limits (and, when ``isolate``, without a network)."""
    prlimit = shutil.which("prlimit")
    if prlimit is None:
        raise SandboxUnavailable("the analysis sandbox needs prlimit (util-linux); nothing ran")
    cpu = max(1, math.ceil(limits.timeout_s))
    argv = [
        prlimit,
        f"--data={limits.memory_bytes}",
        f"--as={limits.memory_bytes + ADDRESS_SPACE_HEADROOM}",
        f"--cpu={cpu}",
        "--fsize=0",
        "--core=0",
        "--",
        sys.executable,
        "-I",  # isolated: no PYTHON* variables, no user site, no cwd on sys.path
        "-B",  # no .pyc written
        "-m",
        "gbadz.analysis.runner",
        *runner_args,
    ]
    if limits.isolate:
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SandboxUnavailable("the analysis sandbox needs unshare (util-linux); nothing ran")
        # A network namespace stops TCP and abstract sockets but not socket *files*, nor files: a
        # mount namespace lays empty tmpfs over the places they live (its mounts are private:
        # nothing changes outside the child).
        argv = [
            unshare,
            "--net",
            "--mount",
            "--",
            "/bin/sh",
            "-c",
            HIDE_DIRS,
            "gbadz-sandbox",
            *HIDDEN_DIRS,
            *limits.hidden,
            "--",
            *argv,
            "--expect-isolated",
        ]
    return argv


def environment(limits: Limits, home: str) -> dict[str, str]:
    """The child's whole environment: no variable of ours is inherited."""
    threads = str(max(1, limits.threads))
    return {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "LANG": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "POLARS_MAX_THREADS": threads,
        "RAYON_NUM_THREADS": threads,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
    }


def encode(table: pa.Table, header: dict[str, Any]) -> bytes:
    """The runner's input: 8 bytes of header length, the JSON header, then an Arrow IPC stream."""
    head = json.dumps(header, separators=(",", ":")).encode()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    body: bytes = sink.getvalue().to_pybytes()
    return len(head).to_bytes(8, "big") + head + body


def run(
    table: pa.Table, plan: Plan, spec: AnalysisSpec, epsilon: float, limits: Limits | None = None
) -> measure.Release:
    """Measure ``plan`` over ``table`` in a sandboxed child and return its release."""
    limits = limits or Limits()
    epsilon = measure.check_epsilon(spec, epsilon)  # a bad ε is the caller's 400, before any spawn
    needed = measure.columns_needed(plan, spec)
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise measure.MeasurementFailed(f"the table lacks columns the query needs: {', '.join(missing)}")
    payload = encode(
        table.select(list(needed)),  # only what the query reads crosses into the child
        {
            "plan": plan.as_dict(),
            "spec": spec.as_dict(),
            "epsilon": epsilon,
            "threshold": measure.threshold_for(plan, spec, epsilon),  # found once, by the estimate
        },
    )
    child = _SPARES.take(limits) if limits.warm else None
    if child is None:
        child = _Child.start(command(limits), limits)
    try:
        answer = child.finish(payload)
    finally:
        if limits.warm:
            # The next analysis's child, started after this one so its imports do not compete
            # with this measurement for the CPU.
            _SPARES.put(limits, _Child.start(command(limits), limits))
    return measure.Release.from_dict(answer)


def prewarm(limits: Limits | None = None, *, wait: bool = False) -> None:
    """Start a spare child for ``limits`` now (an API calls this at start-up), so the first
    analysis does not wait for the child's imports; ``wait`` until it is ready (benchmarks)."""
    limits = limits or Limits()
    if limits.warm and not _SPARES.has(limits):
        _SPARES.put(limits, _Child.start(command(limits), limits))
    if wait:
        _SPARES.wait_ready(limits, limits.timeout_s)


def execute(argv: list[str], payload: bytes, limits: Limits) -> dict[str, Any]:
    """Start ``argv`` in a fresh empty directory, feed it ``payload``, and read its JSON answer.

    Every way the child can end is mapped to an answer or to one of our errors.
    """
    return _Child.start(argv, limits).finish(payload)


class _Child:
    """One sandboxed child: started (and importing) before its rows exist, used for one analysis."""

    def __init__(self, process: subprocess.Popen[bytes], home: str, limits: Limits) -> None:
        self.process = process
        self.home = home
        self.limits = limits
        self.ready = False  # whether its ready byte was read already

    @classmethod
    def start(cls, argv: list[str], limits: Limits) -> _Child:
        home = tempfile.mkdtemp(prefix="gbadz-analysis-")
        try:
            process = subprocess.Popen(  # noqa: S603 - argv is ours, never the analyst's text
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=home,
                env=environment(limits, home),
                close_fds=True,
                start_new_session=True,
            )
        except OSError:
            shutil.rmtree(home, ignore_errors=True)
            raise SandboxUnavailable("the analysis sandbox could not be started; nothing ran") from None
        if process.stdin is not None:
            # A 1 MiB pipe instead of 64 KiB: the rows cross in far fewer wake-ups.
            with contextlib.suppress(OSError):
                fcntl.fcntl(process.stdin.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        return cls(process, home, limits)

    def wait_ready(self, timeout: float) -> bool:
        """Block until the child has written its ready byte (its imports are done), or timeout."""
        if self.ready:
            return True
        stdout = self.process.stdout
        if stdout is None:
            return False
        readable, _, _ = select.select([stdout], [], [], timeout)
        if readable:
            self.ready = stdout.read(len(READY)) == READY
        return self.ready

    def finish(self, payload: bytes) -> dict[str, Any]:
        """Feed the payload, wait for the answer under the wall-clock limit, clean up."""
        try:
            try:
                out, err = self.process.communicate(payload, timeout=self.limits.timeout_s)
                if not self.ready and out.startswith(READY):
                    out = out[len(READY) :]
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.communicate()
                raise AnalysisFailed(
                    f"the analysis was stopped after its time limit of {self.limits.timeout_s:g} s"
                ) from None
            return _answer(self.process.returncode, out, err, self.limits)
        finally:
            shutil.rmtree(self.home, ignore_errors=True)

    def discard(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError, OSError):
            self.process.communicate(timeout=5)
        shutil.rmtree(self.home, ignore_errors=True)


class _Spares:
    """At most one waiting child per kind of limits (a few kinds at most).

    Starting a child costs about 1 s of imports (Python, Arrow, Polars, OpenDP: measured by
    bench_compute.py); a spare pays it before the request comes. Each child still serves one
    analysis only, in its own network namespace: ``unshare --net`` per child, as before.
    """

    MAX_KINDS = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[Limits, _Child] = {}
        atexit.register(self.close)

    def has(self, limits: Limits) -> bool:
        with self._lock:
            return limits in self._ready

    def wait_ready(self, limits: Limits, timeout: float) -> None:
        with self._lock:
            child = self._ready.get(limits)
        if child is not None:
            child.wait_ready(timeout)

    def take(self, limits: Limits) -> _Child | None:
        with self._lock:
            child = self._ready.pop(limits, None)
        if child is not None and child.process.poll() is not None:
            # It died waiting (killed from outside, or the runner refused to start): the caller
            # starts a fresh one, which reports why if the cause persists.
            child.discard()
            return None
        return child

    def put(self, limits: Limits, child: _Child) -> None:
        evicted: list[_Child] = []
        with self._lock:
            old = self._ready.pop(limits, None)
            if old is not None:
                evicted.append(old)
            while len(self._ready) >= self.MAX_KINDS:
                evicted.append(self._ready.pop(next(iter(self._ready))))
            self._ready[limits] = child
        for spare in evicted:
            spare.discard()

    def close(self) -> None:
        with self._lock:
            spares = list(self._ready.values())
            self._ready.clear()
        for spare in spares:
            spare.discard()


_SPARES = _Spares()


def _answer(code: int, out: bytes, err: bytes, limits: Limits) -> dict[str, Any]:
    """The child's answer, or the error its exit says (stderr is read for its first word only)."""
    if code == EXIT_NOT_ISOLATED:
        raise SandboxUnavailable("the analysis sandbox still had a network; nothing was measured")
    if code == EXIT_OK and len(out) <= MAX_ANSWER_BYTES:
        try:
            answer = json.loads(out)
        except ValueError:
            raise AnalysisFailed("the analysis answered something that is not a result") from None
        if isinstance(answer, dict):
            return answer
        raise AnalysisFailed("the analysis answered something that is not a result")
    if code == EXIT_FAILED:
        try:
            failure = json.loads(out)
        except ValueError:
            failure = {}
        kind = failure.get("error") if isinstance(failure, dict) else None
        if kind == "memory":
            raise AnalysisFailed(f"the analysis ran out of memory (limit {limits.memory_bytes // 2**20} MiB)")
        if kind == "MeasurementFailed":
            # Our own messages, written to name no value (invariant 9).
            raise AnalysisFailed(f"the analysis failed: {failure.get('detail')}")
        raise AnalysisFailed(f"the analysis failed ({kind or 'unknown error'})")
    if b"memory allocation of" in err or b"MemoryError" in err:
        # Rust aborts on a failed allocation; Python raises MemoryError outside our handler.
        raise AnalysisFailed(f"the analysis ran out of memory (limit {limits.memory_bytes // 2**20} MiB)")
    if err.startswith(b"unshare:"):
        raise SandboxUnavailable("the analysis sandbox could not make a network namespace; nothing ran")
    if code == -signal.SIGXCPU or code == -signal.SIGKILL:
        raise AnalysisFailed(f"the analysis was stopped by its CPU limit of {math.ceil(limits.timeout_s)} s")
    if code == -signal.SIGXFSZ:
        raise AnalysisFailed("the analysis tried to write a file, which is not allowed")
    if code < 0:
        raise AnalysisFailed(f"the analysis crashed ({signal.Signals(-code).name})")
    raise AnalysisFailed(f"the analysis crashed (exit status {code})")
