"""Materialising a 1,000,000-row grant vs a plain pyarrow projection + write of the same columns.

Both run against the same real SeaweedFS in the same run: the floor downloads a plaintext
Parquet copy of the published version, reads the granted columns, writes them as Parquet
and uploads the file; our path (`gbadz.delivery.service.materialise`) downloads the
encrypted version, decrypts the granted encrypted column under the grant's keys, masks the
phone numbers, drops nothing else, writes and uploads. Goal (issue #8): within 2x.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import embedded  # bench/embedded.py
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gbadz.access.models import AccessRequest, Grant
from gbadz.catalog.models import Dataset, DatasetVersion
from gbadz.contract import load_contract
from gbadz.delivery.service import materialise
from gbadz.identity.models import Organization
from gbadz.ingest import pipeline, samples

ROWS = 1_000_000
REPO = Path(__file__).resolve().parents[1]
COLUMNS = [
    "delivery_id",
    "recipient_id",
    "recipient_phone",
    "address",
    "district",
    "parcel_weight_kg",
    "status",
]
ROUNDS = 5
PROFILE = False


def main() -> None:
    contract = load_contract(REPO / "contracts" / "hk-logistics-deliveries.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = samples.generate(contract.id, ROWS)
        source = work / "upload.csv"
        pacsv.write_csv(data, source)
        with embedded.services(work) as settings:
            ctx = pipeline.IngestContext.from_settings(settings)
            started = time.perf_counter()
            result = pipeline.ingest(ctx, contract, "bench", source)
            assert result.accepted
            print(
                f"published {ROWS:,} rows (encrypted, pseudonymised) in {time.perf_counter() - started:.1f}s"
            )

            with ctx.sessions.begin() as session:
                provider = Organization(id=str(uuid.uuid4()), name="bench provider", jurisdiction="HK")
                consumer = Organization(id=str(uuid.uuid4()), name="bench consumer", jurisdiction="HK")
                session.add_all([provider, consumer])
                request = AccessRequest(
                    id=str(uuid.uuid4()),
                    dataset_id=contract.id,
                    requester_org_id=consumer.id,
                    provider_org_id=provider.id,
                    requested_by="bench",
                    purpose="other",
                    purpose_text="benchmark",
                    columns=COLUMNS,
                    destination="HK",
                    onward_transfer="none",
                    duration_days=30,
                    state="approved",
                    decision={"outcome": "EXEMPT"},
                    licence_findings=[],
                )
                session.add(request)
                session.flush()
                now = datetime.now(UTC)
                grant = Grant(
                    id=str(uuid.uuid4()),
                    request_id=request.id,
                    dataset_id=contract.id,
                    grantee_org_id=consumer.id,
                    provider_org_id=provider.id,
                    purpose="other",
                    columns=COLUMNS,
                    decision={"outcome": "EXEMPT"},
                    granted_at=now,
                    expires_at=now + timedelta(days=30),
                )
                session.add(grant)
            session = ctx.sessions()  # kept open: materialise reads the contract lazily
            dataset = session.get(Dataset, contract.id)
            version = session.get(DatasetVersion, 1)
            grant_row = session.get(Grant, grant.id)
            assert dataset is not None
            assert version is not None
            assert grant_row is not None

            # The floor's input: a plaintext copy of the same version, same columns available.
            plain = work / "plain.parquet"
            pq.write_table(data, plain, compression="zstd")
            ctx.client.fput_object(settings.s3.curated_bucket, "floor/plain.parquet", str(plain))

            floors, ours = [], []
            for n in range(ROUNDS):
                started = time.perf_counter()
                local = work / f"floor-in-{n}.parquet"
                ctx.client.fget_object(settings.s3.curated_bucket, "floor/plain.parquet", str(local))
                projected = pq.read_table(local, columns=COLUMNS)
                out = work / f"floor-out-{n}.parquet"
                pq.write_table(projected, out, compression="zstd")
                ctx.client.fput_object(settings.s3.delivery_bucket, f"floor/{n}.parquet", str(out))
                floors.append(time.perf_counter() - started)

                started = time.perf_counter()
                files, columns, subjects = materialise(
                    ctx.client, settings, ctx.provider, grant_row, dataset, version, f"bench-{n}"
                )
                ours.append(time.perf_counter() - started)
                assert sum(f.rows for f in files) == ROWS
                assert columns == COLUMNS
            if PROFILE:
                import cProfile
                import pstats

                profile = cProfile.Profile()
                profile.enable()
                materialise(ctx.client, settings, ctx.provider, grant_row, dataset, version, "bench-profile")
                profile.disable()
                pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
            session.close()
    floor, mine = sorted(floors)[ROUNDS // 2], sorted(ours)[ROUNDS // 2]
    print(
        f"{ROWS:,} rows, {len(COLUMNS)} granted columns (1 decrypted, 1 masked, 1 pseudonymised), median of {ROUNDS}"
    )
    print(f"  floor (GET plain Parquet, project, write, PUT)  {floor:6.2f} s")
    print(
        f"  grant materialisation                           {mine:6.2f} s  -> {mine / floor:.2f}x (goal: within 2x)"
    )
    print(f"  individuals counted on the way: {len(subjects):,}")


if __name__ == "__main__":
    main()
