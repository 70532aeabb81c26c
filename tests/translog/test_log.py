"""The transfer log on both databases: dense appends, signed checkpoints, proofs, export and tamper detection."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from gbadz import db
from gbadz.config import Settings
from gbadz.crypto.keys import provider_from_settings
from gbadz.translog.log import TransferLog, export, verify_export
from gbadz.translog.merkle import leaf_hash, verify_consistency, verify_inclusion
from gbadz.translog.models import Checkpoint, LogEntry, LogHead


@pytest.fixture
def sessions(settings: Settings) -> sessionmaker[Session]:
    """A fresh log: the session-wide database is shared, so the log tables are emptied first."""
    factory = db.make_sessionmaker(db.create_engine(settings.db))
    with factory.begin() as session:
        session.execute(sa.delete(Checkpoint))
        session.execute(sa.delete(LogEntry))
        session.execute(sa.update(LogHead).values(size=0))
    return factory


@pytest.fixture
def log(settings: Settings) -> TransferLog:
    return TransferLog(provider_from_settings(settings))


def entry(i: int) -> dict[str, Any]:
    return {"transfer_id": f"t-{i}", "exporter": "org-sz", "recipient": "org-hk", "rows": i, "note": "数据 ✓"}


def fill(sessions: sessionmaker[Session], log: TransferLog, n: int, checkpoint_every: int = 0) -> None:
    for i in range(n):
        with sessions.begin() as session:
            log.append(session, entry(i), kind="delivery")
        if checkpoint_every and (i + 1) % checkpoint_every == 0:
            with sessions.begin() as session:
                log.checkpoint(session)
    with sessions.begin() as session:
        log.checkpoint(session)


class TestAppendAndProve:
    def test_entries_are_dense_and_provable(self, sessions: sessionmaker[Session], log: TransferLog) -> None:
        """Entries get dense indices, each provably included, and checkpoints are provably consistent."""
        fill(sessions, log, 13, checkpoint_every=5)
        with sessions() as session:
            rows = session.scalars(sa.select(LogEntry).order_by(LogEntry.index)).all()
            assert list(range(13)) == [r.index for r in rows]
            assert all(json.loads(r.entry)["index"] == r.index for r in rows)
            sizes = session.scalars(sa.select(Checkpoint.tree_size).order_by(Checkpoint.tree_size)).all()
            assert [5, 10, 13] == list(sizes)
            log.sync(session)
            head = log.latest_checkpoint(session)
            assert head is not None
            root = bytes.fromhex(head.root_hash)
            for r in rows:
                path = log.tree.inclusion(r.index, 13)
                assert verify_inclusion(leaf_hash(r.entry.encode()), r.index, 13, path, root)
            old = session.get(Checkpoint, 5)
            assert old is not None
            proof = log.tree.consistency(5, 13)
            assert verify_consistency(5, 13, bytes.fromhex(old.root_hash), root, proof)

    def test_concurrent_appends_never_share_an_index(
        self, sessions: sessionmaker[Session], log: TransferLog
    ) -> None:
        """Four threads appending at once get 40 distinct, gap-free indices and a matching log head."""
        errors: list[BaseException] = []

        def worker(w: int) -> None:
            try:
                for i in range(10):
                    with sessions.begin() as session:
                        log.append(session, entry(w * 100 + i), kind="delivery")
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert [] == errors
        with sessions() as session:
            indices = session.scalars(sa.select(LogEntry.index).order_by(LogEntry.index)).all()
            assert list(range(40)) == list(indices)
            assert 40 == session.scalar(sa.select(LogHead.size))

    def test_a_rolled_back_transfer_leaves_no_entry(
        self, sessions: sessionmaker[Session], log: TransferLog
    ) -> None:
        """A transfer whose transaction rolls back leaves no log entry and does not grow the log head."""

        def transfer() -> None:
            with sessions.begin() as session:
                log.append(session, entry(1), kind="delivery")
                raise RuntimeError("S3 went away before the URLs were made")

        with pytest.raises(RuntimeError):
            transfer()
        with sessions() as session:
            assert 0 == session.scalar(sa.select(sa.func.count()).select_from(LogEntry))
            assert 0 == session.scalar(sa.select(LogHead.size))


def _export(sessions: sessionmaker[Session], log: TransferLog, tmp_path: Path) -> list[str]:
    target = tmp_path / "log.jsonl"
    with sessions() as session:
        export(session, log, target)
    return target.read_text().splitlines(keepends=True)


class TestExportAndVerify:
    def test_an_unmodified_export_verifies(
        self, sessions: sessionmaker[Session], log: TransferLog, tmp_path: Path
    ) -> None:
        """An untouched export verifies with its entries and checkpoints, but not against a foreign key."""
        fill(sessions, log, 20, checkpoint_every=7)
        lines = _export(sessions, log, tmp_path)
        verdict = verify_export(tmp_path / "log.jsonl")
        assert verdict.ok, verdict.problem
        assert (20, 3) == (verdict.entries, verdict.checkpoints)  # at 7, 14 and 20
        assert 1 + 20 + 3 == len(lines)
        # Against an out-of-band key that is not the log's, nothing verifies.
        assert not verify_export(tmp_path / "log.jsonl", trusted_keys=[b"\x00" * 32]).ok

    def test_every_single_alteration_is_detected(
        self, sessions: sessionmaker[Session], log: TransferLog, tmp_path: Path
    ) -> None:
        """1,000 random trials: alter, delete, reorder or insert one entry or checkpoint line."""
        fill(sessions, log, 30, checkpoint_every=8)
        lines = _export(sessions, log, tmp_path)
        entries = [i for i, line in enumerate(lines) if '"type": "entry"' in line]
        checkpoints = [i for i, line in enumerate(lines) if '"type": "checkpoint"' in line]
        rng = random.Random(20261123)
        target = tmp_path / "tampered.jsonl"
        kinds: dict[str, int] = {}
        for _ in range(1000):
            mutated = list(lines)
            position = rng.choice(entries + checkpoints)
            kind = rng.choice(["alter", "delete", "reorder", "insert"])
            kinds[kind] = kinds.get(kind, 0) + 1
            if kind == "alter":
                item = json.loads(mutated[position])
                if item["type"] == "entry":
                    body = json.loads(item["entry"])
                    body["rows"] = body.get("rows", 0) + rng.randint(1, 10**6)
                    item["entry"] = json.dumps(
                        body, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                    )
                    if rng.random() < 0.5:  # a careful forger also fixes the recorded leaf hash
                        item["leaf_hash"] = leaf_hash(item["entry"].encode()).hex()
                else:
                    item["tree_size"] = item["tree_size"] - 1 if rng.random() < 0.5 else item["tree_size"]
                    item["root_hash"] = "00" * 32
                    item["note"] = item["note"].replace("\n", "\n ", 1)
                mutated[position] = json.dumps(item) + "\n"
            elif kind == "delete":
                del mutated[position]
            elif kind == "reorder":
                group = entries if position in entries else checkpoints
                other = rng.choice([p for p in group if p != position])
                mutated[position], mutated[other] = mutated[other], mutated[position]
            else:
                mutated.insert(position, lines[rng.choice(entries)])
            target.write_text("".join(mutated))
            verdict = verify_export(target)
            assert not verdict.ok, f"{kind} at line {position} went unnoticed"
            assert verdict.problem
        assert set(kinds) == {"alter", "delete", "reorder", "insert"}

    def test_the_first_bad_index_is_named(
        self, sessions: sessionmaker[Session], log: TransferLog, tmp_path: Path
    ) -> None:
        """Verifying an export with one edited entry names that entry's index as the first bad one."""
        fill(sessions, log, 10)
        lines = _export(sessions, log, tmp_path)
        item = json.loads(lines[1 + 6])  # entry 6
        item["entry"] = item["entry"].replace('"rows":6', '"rows":60')
        lines[1 + 6] = json.dumps(item) + "\n"
        (tmp_path / "bad.jsonl").write_text("".join(lines))
        verdict = verify_export(tmp_path / "bad.jsonl")
        assert (False, 6) == (verdict.ok, verdict.first_bad_index)


@pytest.mark.e2e
class TestAuditCommands:
    def test_export_then_verify_offline_and_catch_an_edit(
        self, sessions: sessionmaker[Session], log: TransferLog, settings: Settings, tmp_path: Path
    ) -> None:
        """An exported log verifies offline with only the public key, and an edited entry is named."""
        from gbadz.config import settings_environment
        from gbadz.crypto.signing import to_pem
        from tests.conftest import run_cli

        fill(sessions, log, 12, checkpoint_every=4)
        env = settings_environment(settings) | {"GBADZ_CRYPTO__KEYRING_PATH": str(settings.keyring_path)}
        target = tmp_path / "export.jsonl"
        exported = run_cli(settings.home, "audit", "export", str(target), "--json", **env)
        assert 0 == exported.returncode, exported.stderr
        assert 12 == json.loads(exported.stdout)["entries"]
        # Verification needs no database and no services: an empty environment and home.
        [key] = [k for k in provider_from_settings(settings).public_keys() if k.name == "transfer-log"]
        pem = tmp_path / "regulator-copy.pem"
        pem.write_text(to_pem(key))
        offline = tmp_path / "offline-home"
        good = run_cli(offline, "audit", "verify", str(target), "--public-key", str(pem))
        assert 0 == good.returncode, good.stdout + good.stderr
        assert "verified 12 entries" in good.stdout
        lines = target.read_text().splitlines(keepends=True)
        item = json.loads(lines[1 + 9])
        item["entry"] = item["entry"].replace('"rows":9', '"rows":90')
        lines[1 + 9] = json.dumps(item) + "\n"
        target.write_text("".join(lines))
        bad = run_cli(offline, "audit", "verify", str(target), "--public-key", str(pem))
        assert 1 == bad.returncode
        assert "first bad index: 9" in bad.stderr


class TestPeriodicCheckpoints:
    def test_the_app_signs_a_checkpoint_when_the_log_grew(
        self, sessions: sessionmaker[Session], settings: Settings
    ) -> None:
        """The running app signs a checkpoint by itself once the log has grown."""
        import time

        from fastapi.testclient import TestClient

        from gbadz.app import create_app

        quick = settings.model_copy(
            update={"api": settings.api.model_copy(update={"checkpoint_interval_s": 0.2})}
        )
        app = create_app(quick)
        with TestClient(app):
            with sessions.begin() as session:
                app.state.transfer_log.append(session, entry(0), kind="delivery")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with sessions() as session:
                    sizes = list(session.scalars(sa.select(Checkpoint.tree_size)))
                if sizes:
                    break
                time.sleep(0.1)
        assert [1] == sizes
