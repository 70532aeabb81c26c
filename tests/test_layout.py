"""The source layout: `platform/` is a source root, the package is `gbadz`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gbadz

REPO = Path(__file__).resolve().parents[1]


class TestSourceRoot:
    def test_platform_has_no_init(self) -> None:
        """A `platform/__init__.py` would shadow the standard library's `platform` module."""
        assert not (REPO / "platform" / "__init__.py").exists()

    def test_stdlib_platform_and_uuid_import_from_repo_root(self) -> None:
        """`import platform, uuid` works from the repository root (uuid calls platform.system())."""
        result = subprocess.run(
            [sys.executable, "-c", "import platform, uuid; print(platform.system(), uuid.uuid4().version)"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        assert (0, "Linux 4") == (result.returncode, result.stdout.strip()), result.stderr

    def test_gbadz_is_imported_from_platform(self) -> None:
        """The import name is `gbadz`, served from `platform/gbadz/`."""
        assert REPO / "platform" / "gbadz" == Path(gbadz.__file__).resolve().parent

    def test_top_level_is_fixed(self) -> None:
        """The top level holds the agreed folders and files."""
        for name in ("dags", "platform", "contracts", "infra", "tests", "pyproject.toml", "README.md"):
            assert (REPO / name).exists(), name
