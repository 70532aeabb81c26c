"""The cluster's CLI refusals and its process handling, without starting a cluster."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from gbadz.cluster import procs
from tests.conftest import run_cli


@pytest.mark.e2e  # each test starts the CLI in a subprocess
class TestClusterRefusals:
    def test_a_bad_name_is_refused_in_one_line(self, tmp_path: Path) -> None:
        """A name that cannot be part of a database name is refused before anything starts."""
        result = run_cli(tmp_path, "cluster", "up", "--name", "Bad_Name")
        assert 1 == result.returncode
        assert "cluster name 'Bad_Name'" in result.stderr
        assert 1 == len(result.stderr.strip().splitlines())
        assert not (tmp_path / "cluster").exists()

    def test_a_remote_database_or_broker_is_refused(self, tmp_path: Path) -> None:
        """The cluster runs on loopback only: a PostgreSQL or Redis elsewhere is refused, nothing started."""
        for option, url in (
            ("--postgres", "postgresql://postgres@192.0.2.1:5432/postgres"),
            ("--redis", "redis://192.0.2.1:6379/0"),
        ):
            result = run_cli(tmp_path, "cluster", "up", "--name", "x", option, url)
            assert 1 == result.returncode
            assert f"{option}: the cluster runs on loopback only" in result.stderr
            assert "Traceback" not in result.stderr
        assert not (tmp_path / "cluster").exists()

    def test_status_and_down_of_an_unknown_cluster(self, tmp_path: Path) -> None:
        """`status` of a cluster never brought up says how to start it; `down` has nothing to stop."""
        status = run_cli(tmp_path, "cluster", "status", "--name", "nope")
        assert 1 == status.returncode
        assert "no cluster 'nope'" in status.stderr
        assert "gbadz cluster up --name nope" in status.stderr
        down = run_cli(tmp_path, "cluster", "down", "--name", "nope")
        assert 0 == down.returncode, down.stderr
        assert "nothing was running" in down.stdout


class TestProcesses:
    def test_a_process_is_known_by_pid_and_start_time_and_stopped_with_its_group(
        self, tmp_path: Path
    ) -> None:
        """A started process and its child stop together; a wrong start time (a reused PID) is never signalled."""
        script = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
        pid = procs.start(
            [sys.executable, "-c", script],
            {procs.MARKER: "t-1", "PATH": "/usr/bin:/bin"},
            tmp_path / "p.log",
            tmp_path,
        )
        ticks = procs.start_ticks(pid)
        deadline = time.monotonic() + 10
        while len(procs.group_members(pid, ticks)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        members = procs.group_members(pid, ticks)
        assert 2 == len(members)
        assert procs.is_ours(pid, ticks)
        assert not procs.is_ours(pid, ticks + 1)
        assert [] == procs.stop([(pid, ticks + 1)], 1.0)  # someone else's process: left alone
        assert procs.is_ours(pid, ticks)
        assert sorted(members) == sorted(procs.marked("t-1"))
        assert [pid] == procs.stop([(pid, ticks)], 5.0)
        assert not any(procs.is_ours(m, procs.start_ticks(m)) for m in members)
        assert [] == procs.marked("t-1")

    def test_a_stopped_part_has_no_group(self) -> None:
        """A part recorded as stopped (PID 0) names no process: nothing of the kernel's group 0 is touched."""
        assert [] == procs.group_members(0, 1)
        assert [] == procs.stop([(0, 0)], 1.0)
