"""Transfer-log append throughput (with an inclusion proof per entry) and offline verification of 1,000,000 entries.

Append: each v2 entry (issue #16: basis, mechanism, approvers, PIPIA) in its own committed
transaction (as deliveries do) on SQLite, then the process's tree catches up and proves the
entry's inclusion; the floor is the same transaction inserting an unhashed row of the same
size into a plain table, interleaved with ours in rounds of 250, in the same run.
Verify: a 1,000,000-entry export with a checkpoint every 100,000 entries, verified by
`verify_export` (every leaf re-hashed, every root recomputed, every signature checked).
Goals: at least 5,000 appends/s and 0.8 of the floor (issues #8, #16); verification under 10 s.
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
ROUND = 250
EXPORT_ENTRIES = 1_000_000
CHECKPOINT_EVERY = 100_000


def entry(i: int) -> dict[str, object]:
    """A v2 delivery entry (issue #16) of the demo's health transfer: the final basis, the
    mechanism with its filing, both approvers, the PIPIA and consent, de-identification per column."""
    approvers = [
        {
            "step": "provider",
            "by": "provider:p-1042 via console@hospital",
            "org_id": "org-sz",
            "at": "2026-12-02T09:12:00+00:00",
            "note": "aggregate use only",
        },
        {
            "step": "compliance",
            "by": "compliance_officer:p-7 via console@zone",
            "org_id": "org-zone",
            "at": "2026-12-02T10:40:00+00:00",
            "note": "GBA SC filed on time; PIPIA reviewed; health commission approval covers the dataset",
        },
    ]
    return {
        "entry_version": 2,
        "transfer_id": f"00000000-0000-4000-8000-{i:012d}",
        "access_request_id": "2f0c8d4e-5b6a-4c1d-8e9f-0a1b2c3d4e5f",
        "grant_id": "6b1f7c9e-2d4a-4f0b-9a55-0c1d2e3f4a5b",
        "ts_utc": "2026-12-02T10:41:07.123456+00:00",
        "ts_local": "2026-12-02T18:41:07.123456+08:00",
        "dataset_id": "sz-hospital-outpatient-visits",
        "dataset_version": 3,
        "contract_sha256": "9" * 64,
        "decision_outcome": "GBA_SC",
        "rule_id": "M12",
        "legal_basis": "GBA SC Implementation Guidelines (Mainland-HK, CAC/ITIB Ann. 2023 No.3) Arts.2-3; PIPL Art.38(1)(4); "
        "sector rule health (in addition to the general regime): approval YUE-WJW-2026-DATA-118",
        "rules_version": "2026-12-03.1",
        "rules_hash": "a" * 64,
        "engine_version": "1",
        "exporter": {
            "org_id": "org-sz",
            "name": "Shenzhen Harbour Hospital Group",
            "registration_no": "12440300MB2C01234X",
            "jurisdiction": "CN-SZ",
            "gba_registered": True,
            "ciio": False,
        },
        "recipient": {
            "org_id": "org-hk",
            "name": "Victoria Harbour Analytics",
            "registration_no": "HK-BR-77012345",
            "jurisdiction": "HK",
            "gba_registered": True,
            "ciio": False,
        },
        "origin": "CN-SZ",
        "destination": "HK",
        "columns": ["visit_id", "patient_id", "visit_date", "department"],
        "deid": {
            "visit_id": "none",
            "patient_id": "pseudonymise",
            "visit_date": "none",
            "department": "none",
        },
        "content_hash": f"{i:064x}",
        "files": [
            {
                "key": f"datasets/sz/grants/g/v3/{i}/part-00000.parquet",
                "size": 1_048_576,
                "sha256": "b" * 64,
                "rows": 120_000,
            }
        ],
        "has_pi": True,
        "has_spi": True,
        "spi_categories": ["medical_health"],
        "n_individuals": 1200,
        "counting_method": "distinct subjects of the version (exporter-keyed hash)",
        "pi_ytd_before": 40_000,
        "pi_ytd_after": 41_200,
        "mechanism": "GBA_SC_HK",
        "mechanism_evidence": {
            "status": "satisfied",
            "evidence_id": "e-1",
            "kind": "GBA_SC",
            "variant": "GBA_SC_HK",
            "reference": "GBA-SC-440300-2026-0042",
            "authority": "GD_CAC",
            "effective_date": "2026-11-02",
            "filing_date": "2026-11-08",
            "document_sha256": "c" * 64,
        },
        "approvers": approvers,
        "pipia": {"reference": "PIPIA-SZH-2026-017", "date": "2026-11-20", "retain_until": "2030-03-02"},
        "consent": {"reference": "SZH notice v3 (Art.39) and separate-consent records, batch 2026-10"},
        "onward_transfer": "none",
        "storage_location_at_recipient": "HK",
        "retention_at_recipient": "until 2027-03-02 (the grant's end), then deleted and attested",
        "transfer_mode": "download",
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

        # Floor: one-row transactions inserting the same canonical body into a plain table, no
        # hashing, no proof; measured interleaved with ours in rounds, so a busy machine slows both.
        floor_s = ours_s = 0.0
        for start in range(0, APPENDS, ROUND):
            began = time.perf_counter()
            for i in range(start, start + ROUND):
                with sessions.begin() as session:
                    session.execute(
                        sa.text("INSERT INTO floor_rows (id, body) VALUES (:i, :b)"),
                        {"i": i, "b": canonical(entry(i)).decode()},
                    )
            floor_s += time.perf_counter() - began
            began = time.perf_counter()
            for i in range(start, start + ROUND):
                with sessions.begin() as session:
                    appended = log.append(session, entry(i), kind="delivery")
                log.committed(appended)
                log.tree.inclusion(appended.index)
            ours_s += time.perf_counter() - began
        floor, ours = APPENDS / floor_s, APPENDS / ours_s
        print(f"append v2 entry + commit + inclusion proof: {ours:8.0f} entries/s")
        print(
            f"floor (same transactions, no log):         {floor:8.0f} rows/s -> ratio {ours / floor:.2f} (goal: 0.8)"
        )

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
