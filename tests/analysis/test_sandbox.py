"""The sandbox: no network, bounded time and memory, no files, a clean environment, fail closed."""

# ruff: noqa: S608 - analysts' SQL under test, checked by the allow-list and never executed

from __future__ import annotations

import os
import secrets
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from gbadz.analysis import sandbox
from gbadz.analysis.measure import release
from gbadz.analysis.query import validate
from gbadz.analysis.sandbox import AnalysisFailed, Limits, SandboxUnavailable
from gbadz.analysis.spec import AnalysisSpec, Budget
from tests.analysis.conftest import DEPARTMENTS, T
from tests.conftest import REPO


def hospital(rows: int, seed: int = 5) -> pa.Table:
    """Hospital-shaped visits: three per patient (under the contract's five, so truncation
    removes nothing and two releases differ by noise alone), fees within the contract's bounds."""
    rng = np.random.default_rng(seed)
    patients = np.arange(rows) // 3
    return pa.table(
        {
            "patient_id": pa.array([f"P{p:09d}" for p in patients]),
            "department": pa.array(np.array(DEPARTMENTS)[rng.integers(0, len(DEPARTMENTS), rows)]),
            "fee_cny": pa.array(np.round(rng.gamma(2.0, 150.0, rows), 2)),
        }
    )


@pytest.fixture
def listening() -> Iterator[int]:
    """A TCP server on loopback that accepts connections (the sandbox must not reach it)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    try:
        yield server.getsockname()[1]
    finally:
        server.close()


#: No spare child: the fail-closed tests change PATH, and a spare would outlive the test.
COLD = Limits(warm=False)


def probe(limits: Limits, *args: str) -> dict[str, object]:
    """Run a test-only probe of the runner inside the sandbox built for ``limits``."""
    return sandbox.execute(sandbox.command(limits, "--probe", *args), b"", limits)


class TestNetwork:
    def test_child_cannot_connect(self, listening: int) -> None:
        """Inside the sandbox a connection to a listening loopback port fails (no network namespace)."""
        assert {"connected": False, "errno": 101} == probe(Limits(), "connect", f"127.0.0.1:{listening}")

    def test_the_probe_would_connect_unsandboxed(self, listening: int) -> None:
        """The same probe without the namespace connects: the refusal above is the sandbox's doing."""
        assert {"connected": True} == probe(Limits(isolate=False), "connect", f"127.0.0.1:{listening}")


@pytest.fixture
def unix_listening() -> Iterator[str]:
    """A Unix socket open to everyone in /tmp, where SeaweedFS keeps its gRPC sockets."""
    path = f"/tmp/gbadz-probe-{os.getpid()}-{secrets.token_hex(4)}.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(path)
    os.chmod(path, 0o777)  # noqa: S103 - anyone may connect: the sandbox must still not
    server.listen()
    try:
        yield path
    finally:
        server.close()
        os.unlink(path)


class TestUnixSockets:
    def test_child_cannot_reach_a_socket_file(self, unix_listening: str) -> None:
        """Socket files are not covered by a network namespace: the child's empty /tmp hides them."""
        assert {"connected": False, "errno": 2} == probe(Limits(), "unix", unix_listening)

    def test_the_probe_would_connect_unsandboxed(self, unix_listening: str) -> None:
        """The same probe without the sandbox connects: the refusal above is the sandbox's doing."""
        assert {"connected": True} == probe(Limits(isolate=False), "unix", unix_listening)

    def test_child_cannot_reach_the_database_socket(self) -> None:
        """The database's socket (trust auth on this machine) is hidden too."""
        assert {"connected": False, "errno": 2} == probe(Limits(), "unix", "/run/postgresql/.s.PGSQL.5432")

    def test_a_hidden_folder_is_empty_to_the_child(self, tmp_path: Path) -> None:
        """The gbadz home (keyring, database file, the storage's sockets) is hidden too, wherever
        it lies: its socket files cannot be reached."""
        home = Path(tempfile.mkdtemp(prefix="gbadz-home-", dir=REPO))
        path = home / "s3.sock"
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(str(path))
            server.listen()
            limits = Limits(warm=False, hidden=(str(home),))
            assert {"connected": False, "errno": 2} == probe(limits, "unix", str(path))
            assert {"connected": True} == probe(Limits(warm=False), "unix", str(path))
        finally:
            server.close()
            path.unlink(missing_ok=True)
            home.rmdir()


class TestLimits:
    def test_timeout_kills_the_child(self, spec: AnalysisSpec) -> None:
        """A run over its wall-clock limit is killed and reported, naming the limit only."""
        plan = validate(f"SELECT department, COUNT(*) FROM {T} GROUP BY department", spec)
        with pytest.raises(AnalysisFailed) as caught:
            sandbox.run(hospital(200_000), plan, spec, 1.0, Limits(timeout_s=0.3))
        assert "time limit of 0.3 s" in caught.value.detail
        assert 503 == caught.value.status_code

    def test_memory_limit_stops_the_child(self, spec: AnalysisSpec) -> None:
        """The query that runs under the limit on a small table is stopped on a large one."""
        plan = validate(f"SELECT department, COUNT(*), SUM(fee_cny) FROM {T} GROUP BY department", spec)
        limits = Limits(memory_bytes=400 * 2**20)
        sandbox.run(hospital(1_000), plan, spec, 1.0, limits)
        with pytest.raises(AnalysisFailed) as caught:
            sandbox.run(hospital(2_000_000), plan, spec, 1.0, limits)
        assert "memory (limit 400 MiB)" in caught.value.detail

    def test_crash_is_analysis_failed(self) -> None:
        """A child that aborts (as a native library can) is reported as a failed analysis."""
        with pytest.raises(AnalysisFailed) as caught:
            probe(Limits(), "abort")
        assert "crashed (SIGABRT)" in caught.value.detail

    def test_garbage_input_is_analysis_failed(self) -> None:
        """Input that is not a plan and an Arrow stream fails cleanly, naming no content."""
        limits = Limits()
        with pytest.raises(AnalysisFailed) as caught:
            sandbox.execute(sandbox.command(limits), b"\x00\x00\x00\x00\x00\x00\x00\x05P0001", limits)
        assert "P0001" not in caught.value.detail


class TestNoDisk:
    def test_child_cannot_write_a_file(self) -> None:
        """A file the child opens cannot grow (RLIMIT_FSIZE 0): plaintext is never at rest."""
        assert {"written": False, "errno": 27} == probe(Limits(), "write")

    def test_nothing_left_behind(
        self, spec: AnalysisSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """After a run the temporary area holds nothing: the working directory was empty and is gone."""
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
        plan = validate(f"SELECT department, COUNT(*) FROM {T} GROUP BY department", spec)
        sandbox.run(hospital(10_000), plan, spec, 1.0, Limits(warm=False))
        assert [] == list(tmp_path.iterdir())
        # With a spare child, what remains is the spare's own directory, still empty.
        sandbox.run(hospital(10_000), plan, spec, 1.0, Limits(timeout_s=29))
        assert [] == [p for p in tmp_path.rglob("*") if not p.is_dir()]
        assert len(list(tmp_path.iterdir())) <= 1


class TestEnvironment:
    def test_no_variable_of_ours_reaches_the_child(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The child sees only the sandbox's own variables, not a secret in the parent's environment."""
        monkeypatch.setenv("GBADZ_DB__URL", "postgresql://user:secret@db/gbadz")
        names = probe(Limits(), "env")["names"]
        assert isinstance(names, list)
        assert "GBADZ_DB__URL" not in names
        assert sorted(sandbox.environment(Limits(), "/x")) == names


class TestFailClosed:
    @staticmethod
    def fake_unshare(directory: Path, body: str) -> None:
        """An ``unshare`` on PATH that behaves like one refused by the kernel or a container."""
        script = directory / "unshare"
        script.write_text("#!/bin/sh\n" + body + "\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
        prlimit = directory / "prlimit"
        prlimit.symlink_to("/usr/bin/prlimit")

    def test_without_unshare_nothing_runs(
        self, spec: AnalysisSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """No ``unshare`` on PATH: SandboxUnavailable, never an unsandboxed run."""
        (tmp_path / "prlimit").symlink_to("/usr/bin/prlimit")
        monkeypatch.setenv("PATH", str(tmp_path))
        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        with pytest.raises(SandboxUnavailable):
            sandbox.run(hospital(100), plan, spec, 1.0, COLD)

    def test_refused_namespace_fails_closed(
        self, spec: AnalysisSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """``unshare`` refused by the kernel (as in an unprivileged container): SandboxUnavailable."""
        self.fake_unshare(tmp_path, 'echo "unshare: unshare failed: Operation not permitted" >&2; exit 1')
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.defpath}")
        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        with pytest.raises(SandboxUnavailable):
            sandbox.run(hospital(100), plan, spec, 1.0, COLD)

    def test_namespace_that_did_not_apply_fails_closed(
        self, spec: AnalysisSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An ``unshare`` that runs the child with the host's network: the runner sees it and refuses."""
        # Drops its own options and the mount script (never run on the host's mounts), runs the rest.
        self.fake_unshare(
            tmp_path,
            'while [ "$1" != "--" ]; do shift; done; shift; '
            'while [ "$1" != "--" ]; do shift; done; shift; exec "$@"',
        )
        monkeypatch.setenv("PATH", f"{tmp_path}:{os.defpath}")
        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        with pytest.raises(SandboxUnavailable):
            sandbox.run(hospital(100), plan, spec, 1.0, COLD)


class TestRelease:
    def test_sandboxed_equals_in_process(self, spec: AnalysisSpec) -> None:
        """A release through the sandbox matches the in-process release within the noise."""
        assert spec.budget is not None
        wide = AnalysisSpec(**{**spec.__dict__, "budget": Budget(10.0, spec.budget.delta, 10.0)})
        table = hospital(60_000)
        plan = validate(
            f"SELECT department, COUNT(*) AS n, AVG(fee_cny) AS mean FROM {T} GROUP BY department", wide
        )
        inside = sandbox.run(table, plan, wide, 10.0)
        here = release(table, plan, wide, 10.0)
        assert here.columns == inside.columns
        assert here.accuracy == inside.accuracy
        assert (here.epsilon, here.delta) == (inside.epsilon, inside.delta)
        acc = {a.name: a.accuracy for a in here.accuracy}
        assert acc["n"] is not None
        for (d1, n1, m1), (d2, n2, m2) in zip(here.rows, inside.rows, strict=True):
            assert d1 == d2
            assert abs(n1 - n2) <= 6 * acc["n"]
            assert abs(m1 - m2) < 0.05 * m1

    def test_each_analysis_has_its_own_child(self, spec: AnalysisSpec) -> None:
        """The spare child serves one analysis; the next analysis gets a new process."""
        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        limits = Limits(timeout_s=28)
        sandbox.prewarm(limits, wait=True)
        first = sandbox._SPARES._ready[limits].process
        sandbox.run(hospital(300), plan, spec, 1.0, limits)
        assert first.poll() is not None
        second = sandbox._SPARES._ready[limits].process
        assert first.pid != second.pid
        assert second.poll() is None

    def test_bad_epsilon_refused_before_spawn(self, spec: AnalysisSpec) -> None:
        """A bad ε is the caller's 400 and starts no child."""
        from gbadz.analysis.measure import EpsilonRefused

        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        with pytest.raises(EpsilonRefused):
            sandbox.run(hospital(10), plan, spec, 5.0)


class TestWhatIsHidden:
    def test_the_home_is_hidden_unless_a_hidden_folder_holds_it(self, tmp_path: Path) -> None:
        """A home outside /run, /tmp and /dev/shm is laid over; one under /tmp is hidden already
        (and the limits stay the same, so a spare child serves the next analysis)."""
        from gbadz.analysis.service import _hidden_from_compute
        from gbadz.config import Settings

        outside = REPO / ".gbadz-hidden-probe"
        assert (str(outside.resolve()), str((outside / "keys").resolve())) == _hidden_from_compute(
            Settings(home=outside)
        )
        assert () == _hidden_from_compute(Settings(home=tmp_path / "home"))
        # Never the folder that holds the interpreter or gbadz itself: the child could not start.
        assert () == _hidden_from_compute(Settings(home=REPO, crypto={"keyring_path": REPO / "k.bin"}))
