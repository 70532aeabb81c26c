"""Processes of a cluster: start one, know it is ours, find its ports and memory, stop it.

A process is known by its PID and its start time (``/proc/<pid>/stat``), both recorded at
start: ``down`` signals a PID only while both match, so a PID the kernel has since given to
someone else is left alone. Each process leads a session (and so a process group) of its own:
Airflow's and Celery's children are found by their group and stopped with their leader, each by
its PID. Every process also carries the cluster's id in its environment (``GBADZ_CLUSTER_ID``),
for a last sweep of anything that left its group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from gbadz.embedded import CHILD_UMASK, pid_alive

MARKER = "GBADZ_CLUSTER_ID"
PROC = Path("/proc")


def start(argv: list[str], env: dict[str, str], log_file: Path, cwd: Path) -> int:
    """Start ``argv`` detached (its own session, stdin closed, output appended to ``log_file``,
    umask 077); return its PID. ``env`` is its whole environment and must carry the marker."""
    if MARKER not in env:
        raise ValueError(f"a cluster process needs {MARKER} in its environment")
    log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603 - argv is built by the cluster, no shell
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=cwd,
            env=env,
            umask=CHILD_UMASK,
        )
    # Popen would warn when collected while the process still runs: it is meant to outlive us.
    proc.returncode = 0
    return proc.pid


def _environ(pid: int) -> list[bytes]:
    try:
        return (PROC / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # Fields after the parenthesised command name: state, ppid, pgrp, ... (field 3 onwards).
    return raw.rsplit(")", 1)[1].split()


def start_ticks(pid: int) -> int:
    """When ``pid`` started (clock ticks after boot): with the PID, a process's identity."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def is_ours(pid: int, ticks: int) -> bool:
    """True only for the live process ``pid`` that started at ``ticks`` (not a reused PID)."""
    return pid > 0 and ticks > 0 and pid_alive(pid) and start_ticks(pid) == ticks


def group_members(pgid: int, ticks: int) -> list[int]:
    """Live processes of the group our process ``pgid`` (started at ``ticks``) leads or led.

    The group is ours while its leader is our process, or once the leader is gone: the kernel
    gives no new process a PID that is still some group's id. (Airflow and Celery rewrite their
    process titles, which can clobber /proc/<pid>/environ: the marker alone cannot be read back.)
    """
    if pgid <= 0:
        return []  # not a process of ours (0 is the kernel's group)
    leader = _stat_fields(pgid)
    if leader is not None and leader[0] not in {"Z", "X"} and int(leader[19]) != ticks:
        return []  # the id now belongs to someone else's group
    members = []
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[0] not in {"Z", "X"} and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def marked(cluster_id: str) -> list[int]:
    """Every live process whose environment still carries this cluster's marker."""
    needle = f"{MARKER}={cluster_id}".encode()
    return [
        int(e.name)
        for e in PROC.iterdir()
        if e.name.isdigit() and pid_alive(int(e.name)) and needle in _environ(int(e.name))
    ]


def stop(targets: list[tuple[int, int]], grace_s: float) -> list[int]:
    """Stop each process ``(pid, start ticks)`` and the members of its group, all at once:
    SIGTERM, then SIGKILL after ``grace_s`` (Airflow's api-server sometimes ignores SIGTERM).
    Return the PIDs of ``targets`` that were running. Nothing outside our processes and their
    groups is signalled."""

    def ours() -> list[int]:
        found: list[int] = []
        for pid, ticks in targets:
            found += group_members(pid, ticks)
            if is_ours(pid, ticks):
                found.append(pid)
        return found

    running = [pid for pid, ticks in targets if is_ours(pid, ticks) or group_members(pid, ticks)]
    members = ours()
    if not members:
        return running
    _signal(members, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not ours():
            return running
        time.sleep(0.2)
    for _ in range(50):
        members = ours()
        if not members:
            break
        _signal(members, signal.SIGKILL)
        time.sleep(0.1)
    return running


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in set(pids):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def rss_bytes(pid: int, ticks: int) -> int:
    """Resident memory of ``pid`` and the members of its group."""
    total = 0
    for member in set(group_members(pid, ticks) + ([pid] if is_ours(pid, ticks) else [])):
        with contextlib.suppress(OSError):
            for line in (PROC / str(member) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    fd_dir = PROC / str(pid) / "fd"
    with contextlib.suppress(OSError):
        for fd in fd_dir.iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    return inodes


def _address(hex_addr: str) -> str:
    """An address of /proc/net/tcp{,6} (little-endian 32-bit words) as text."""
    import ipaddress

    raw = bytes.fromhex(hex_addr)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(words))


def listening(pids: list[int]) -> list[tuple[str, int, int]]:
    """Every listening TCP socket (address, port, pid) held by one of ``pids``."""
    owner: dict[str, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner[inode] = pid
    found = []
    for table in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in (PROC / "net" / table).read_text().splitlines()[1:]:
                cols = line.split()
                if len(cols) < 10 or cols[3] != "0A":  # 0A: LISTEN
                    continue
                hex_addr, hex_port = cols[1].split(":")
                if cols[9] in owner:
                    found.append((_address(hex_addr), int(hex_port, 16), owner[cols[9]]))
    return found
