"""Transfer-log append throughput (with an inclusion proof per entry) and offline verification of 1,000,000 entries.

Append: each entry in its own committed transaction (as deliveries do) on SQLite, then the
process's tree catches up and proves the entry's inclusion; the floor is the same
transaction inserting an unhashed row of the same size into a plain table, in the same run.
Verify: a 1,000,000-entry export with a checkpoint every 100,000 entries, verified by
`verify_export` (every leaf re-hashed, every root recomputed, every signature checked).
Goals (issue #8): at least 5,000 appends/s; verification under 10 s.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from pydantic import SecretStr

from gbadz import db
from gbadz.config import CryptoSettings, DatabaseSettings, Settings
from gbadz.crypto.keys import provider_from_settings
from gbadz.translog.log import TransferLog, canonical, export, verify_export
from gbadz.translog.merkle import leaf_hash
from gbadz.translog.models import Checkpoint, LogEntry, LogHead

APPENDS = 5_000
EXPORT_ENTRIES = 1_000_000
CHECKPOINT_EVERY = 100_000


def entry(i: int) -> dict[str, object]:
    return {
        "transfer_id": f"00000000-0000-4000-8000-{i:012d}",
        "grant_id": "6b1f7c9e-2d4a-4f0b-9a55-0c1d2e3f4a5b",
        "dataset_id": "sz-hospital-outpatient-visits",
        "dataset_version": 3,
        "decision_outcome": "GBA_SC",
        "rule_id": "M12",
        "legal_basis": "GBA SC Implementation Guidelines (Mainland-HK) Arts.2-3; PIPL Art.38(1)(4)",
        "columns": ["visit_id", "patient_id", "visit_date", "department"],
        "content_hash": f"{i:064x}",
        "n_individuals": 1200,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="gbadz-bench-translog-") as tmp:
        settings = Settings(
            env="test",
            home=Path(tmp),
            db=DatabaseSettings(url=f"sqlite:///{tmp}/log.db"),
            crypto=CryptoSettings(passphrase=SecretStr("benchmark keyring passphrase"), scrypt_log2_n=12),
        )
        engine = db.create_engine(settings.db)
        db.upgrade(engine)
        sessions = db.make_sessionmaker(engine)
        log = TransferLog(provider_from_settings(settings))
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE floor_rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)"))

        # Floor: the same number of one-row transactions, no hashing, no proof.
        started = time.perf_counter()
        for i in range(APPENDS):
            with sessions.begin() as session:
                session.execute(
                    sa.text("INSERT INTO floor_rows (id, body) VALUES (:i, :b)"),
                    {"i": i, "b": canonical(entry(i)).decode()},
                )
        floor = APPENDS / (time.perf_counter() - started)

        started = time.perf_counter()
        for i in range(APPENDS):
            with sessions.begin() as session:
                appended = log.append(session, entry(i), kind="delivery")
            log.committed(appended)
            log.tree.inclusion(appended.index)
        ours = APPENDS / (time.perf_counter() - started)
        print(f"append + commit + inclusion proof: {ours:8.0f} entries/s (goal: at least 5,000)")
        print(f"floor (same transactions, no log):  {floor:8.0f} rows/s -> ratio {ours / floor:.2f}")

        # A 1,000,000-entry log, written in bulk, checkpointed every 100,000 entries.
        with sessions.begin() as session:
            session.execute(sa.delete(Checkpoint))
            session.execute(sa.delete(LogEntry))
            session.execute(sa.update(LogHead).values(size=0))
        log = TransferLog(log.keys)
        started = time.perf_counter()
        batch: list[dict[str, object]] = []
        for i in range(EXPORT_ENTRIES):
            body = canonical({**entry(i), "index": i})
            batch.append(
                {"index": i, "kind": "delivery", "entry": body.decode(), "leaf_hash": leaf_hash(body).hex()}
            )
            if len(batch) == 50_000 or i == EXPORT_ENTRIES - 1:
                with sessions.begin() as session:
                    session.execute(sa.insert(LogEntry), batch)
                    session.execute(sa.update(LogHead).values(size=i + 1))
                batch = []
            if (i + 1) % CHECKPOINT_EVERY == 0:
                with sessions.begin() as session:
                    log.checkpoint(session)
        print(f"built a {EXPORT_ENTRIES:,}-entry log in {time.perf_counter() - started:.1f}s")
        target = Path(tmp) / "export.jsonl"
        started = time.perf_counter()
        with sessions() as session:
            export(session, log, target)
        print(f"exported in {time.perf_counter() - started:.1f}s ({target.stat().st_size / 1e6:.0f} MB)")
        started = time.perf_counter()
        verdict = verify_export(target)
        elapsed = time.perf_counter() - started
        assert verdict.ok, verdict.problem
        print(
            f"verified {verdict.entries:,} entries and {verdict.checkpoints} checkpoints offline in "
            f"{elapsed:.1f}s (goal: under 10 s)"
        )
        engine.dispose()


if __name__ == "__main__":
    main()
