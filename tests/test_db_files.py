"""Issue #20 item 7: the SQLite database and its side files are readable by their owner only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import sqlalchemy as sa

from gbadz import db
from gbadz.config import DatabaseSettings


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestPrivateSqliteFile:
    def test_new_database_is_0600(self, tmp_path: Path) -> None:
        """A new database, its WAL and shared-memory files are 0600 even under a permissive umask."""
        path = tmp_path / "gbadz.db"
        previous = os.umask(0o022)
        try:
            engine = db.create_engine(DatabaseSettings(url=f"sqlite:///{path}"))
            with engine.begin() as conn:
                conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
                conn.execute(sa.text("INSERT INTO t VALUES (1)"))
            wal, shm = path.with_name("gbadz.db-wal"), path.with_name("gbadz.db-shm")
            assert (True, True) == (wal.exists(), shm.exists())
            assert {"db": 0o600, "wal": 0o600, "shm": 0o600} == {
                "db": _mode(path),
                "wal": _mode(wal),
                "shm": _mode(shm),
            }
            engine.dispose()
        finally:
            os.umask(previous)

    def test_existing_world_readable_files_are_tightened(self, tmp_path: Path) -> None:
        """A database left world-readable by an older version is made 0600 when it is opened."""
        path = tmp_path / "gbadz.db"
        for name in ("gbadz.db", "gbadz.db-wal", "gbadz.db-journal"):
            (tmp_path / name).touch()
            (tmp_path / name).chmod(0o644)
        db.create_engine(DatabaseSettings(url=f"sqlite:///{path}")).dispose()
        assert [0o600, 0o600, 0o600] == [
            _mode(tmp_path / n) for n in ("gbadz.db", "gbadz.db-wal", "gbadz.db-journal")
        ]


class TestErrorsHideValues:
    def test_failed_statement_does_not_quote_its_values(self, tmp_path: Path) -> None:
        """A failing statement's error names the SQL but not the values bound to it."""
        engine = db.create_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'x.db'}"))
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x TEXT UNIQUE)"))
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": "s3cr3t-value-123"})
        with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (:v)"), {"v": "s3cr3t-value-123"})
        assert "s3cr3t" not in str(caught.value)
        engine.dispose()
