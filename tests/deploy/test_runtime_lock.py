"""deploy/images/runtime_lock.py: the runtime part of the lock, with the lock's own hashes."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from tests.deploy.conftest import DEPLOY, REPO

SCRIPT = DEPLOY / "images" / "runtime_lock.py"
PIN = re.compile(r"^([a-z0-9][a-z0-9._-]*)==(\S+)", re.MULTILINE)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    # The way the build stages run it: a bare interpreter, no third-party import.
    return subprocess.run(
        [sys.executable, "-I", str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime() -> dict[str, str]:
    result = run(str(REPO / "requirements.lock"))
    assert 0 == result.returncode, result.stderr
    return {canonical(n): v for n, v in PIN.findall(result.stdout)}


def test_keeps_every_project_dependency_and_no_dev_tool() -> None:
    kept = runtime()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    for spec in project["project"]["dependencies"]:
        assert canonical(Requirement(spec).name) in kept, spec
    for dev_only in (
        "pytest",
        "playwright",
        "ruff",
        "mypy",
        "uv",
        "yamllint",
        "kubernetes-validate",
        "schemathesis",
    ):
        assert dev_only not in kept, dev_only


def test_versions_and_hashes_are_the_locks_own() -> None:
    lock = (REPO / "requirements.lock").read_text()
    result = run(str(REPO / "requirements.lock"))
    for block in re.split(r"\n(?=[a-z0-9])", result.stdout.strip()):
        assert block in lock, block.splitlines()[0]
        assert "--hash=sha256:" in block


def test_the_kept_set_is_closed_under_installed_requirements() -> None:
    """Independent of uv's annotations: every requirement (no extra) of a kept package, as
    installed here, is kept too. This catches a dependency the parser failed to follow."""
    kept = runtime()
    missing = set()
    for name in kept:
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker and not requirement.marker.evaluate({"extra": ""}):
                continue
            if canonical(requirement.name) not in kept:
                missing.add(f"{name} -> {requirement.name}")
    assert set() == missing


def test_only_prints_one_package(tmp_path: Path) -> None:
    result = run(str(REPO / "requirements.lock"), "--only", "uv")
    assert 0 == result.returncode, result.stderr
    assert ["uv"] == [n for n, _ in PIN.findall(result.stdout)]
    unknown = run(str(REPO / "requirements.lock"), "--only", "no-such-package")
    assert 0 != unknown.returncode


SYNTHETIC = """\
app-dep==1.0 \\
    --hash=sha256:aa
    # via gbadz (pyproject.toml)
both==2.0 \\
    --hash=sha256:bb
    # via
    #   app-dep
    #   test-tool
test-tool==3.0 \\
    --hash=sha256:cc
    # via gbadz (pyproject.toml:dev)
tool-helper==4.0 ; sys_platform == 'linux' \\
    --hash=sha256:dd
    # via test-tool
extra-group==5.0 \\
    --hash=sha256:ee
    # via gbadz (pyproject.toml:cluster)
"""


def test_follows_edges_groups_and_markers(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text(SYNTHETIC)
    assert ["app-dep", "both"] == [n for n, _ in PIN.findall(run(str(lock)).stdout)]
    grouped = run(str(lock), "--group", "cluster").stdout
    assert ["app-dep", "both", "extra-group"] == [n for n, _ in PIN.findall(grouped)]
    with_marker = run(str(lock), "--only", "tool-helper").stdout
    assert with_marker.startswith("tool-helper==4.0 ; sys_platform == 'linux' \\\n")


def test_a_lock_without_hashes_is_refused(tmp_path: Path) -> None:
    lock = tmp_path / "requirements.lock"
    lock.write_text("app-dep==1.0\n    # via gbadz (pyproject.toml)\n")
    result = run(str(lock))
    assert 0 != result.returncode
    assert "no --hash" in result.stderr
