"""Ingestion of 1,000,000 rows x 10 columns: the gbadz pipeline vs the plain floor, same run.

Floor: pyarrow reads the CSV, writes Parquet, and PUTs it to the same S3 server.
Ours, as ``pipeline.ingest`` runs it in one process: land (hash, envelope-encrypt, PUT the
raw file), typed read, Great Expectations
suite from the contract, pseudonymise and encrypt the protected columns, write Parquet,
PUT, manifest, register in the catalog with the version's individuals (issue #15: counted per
person under the exporter's key, and stored as keyed hashes). The step functions are timed directly (Airflow's
own scheduling overhead is not part of the pipeline's cost).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import embedded  # bench/embedded.py
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gbadz.contract import load_contract
from gbadz.ingest import pipeline, samples
from gbadz.ingest.validate import read_table, run_suite

ROWS = 1_000_000
REPO = Path(__file__).resolve().parents[1]
DROP = ("birth_year", "insured")  # the hospital dataset has 12 columns; keep 10


def main() -> None:
    base = load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
    table = base.table.model_copy(
        update={"properties": [p for p in base.table.properties if p.name not in DROP]}
    )
    columns = {k: v for k, v in base.gbadz.columns.items() if k not in DROP}
    contract = base.model_copy(
        update={
            "id": "bench-visits",
            "schema_": [table],
            # birth_year is dropped, so the row rule on it goes too.
            "gbadz": base.gbadz.model_copy(update={"columns": columns, "minors": None}),
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = samples.generate(base.id, ROWS).drop_columns(list(DROP))
        source = work / "upload.csv"
        pacsv.write_csv(data, source)
        size_mb = source.stat().st_size / 1e6
        with embedded.services(work) as settings:
            ctx = pipeline.IngestContext.from_settings(settings)
            run_suite(contract, data.slice(0, 10))  # pay Great Expectations' import before timing

            started = time.perf_counter()
            plain = pacsv.read_csv(source)
            out = work / "floor.parquet"
            pq.write_table(plain, out)
            ctx.client.fput_object(settings.s3.curated_bucket, "floor/part.parquet", str(out))
            floor = time.perf_counter() - started

            steps: dict[str, float] = {}

            def timed(name: str, fn, *args):  # type: ignore[no-untyped-def]
                t = time.perf_counter()
                value = fn(*args)
                steps[name] = time.perf_counter() - t
                return value

            started = time.perf_counter()
            landed = timed("land (hash, encrypt, PUT)", pipeline.land, ctx, contract, source)
            typed = timed("typed read", read_table, contract, source)
            report = timed("Great Expectations", run_suite, contract, typed)
            assert report.success, report.summary()
            people = timed("count individuals (exporter-keyed)", pipeline.count_people, ctx, contract, typed)
            protected_table, protected = timed("pseudonymise", pipeline.protect, ctx, contract, typed)
            timed(
                "encrypt + write + PUT + register",
                pipeline.publish,
                ctx,
                contract,
                landed,
                protected_table,
                protected,
                report,
                "bench",
                None,
                people,
            )
            ours = time.perf_counter() - started
    print(f"{ROWS:,} rows x {data.num_columns} columns ({size_mb:.0f} MB CSV)")
    print(f"  floor (pyarrow read CSV -> write Parquet -> PUT)  {floor:6.2f} s")
    print(
        f"  gbadz pipeline                                   {ours:6.2f} s   ratio {ours / floor:.2f}x of the floor (goal: within 3x)"
    )
    for name, seconds in steps.items():
        print(f"    {name:34s} {seconds:6.2f} s")
    print(f"  individuals counted: {people.individuals:,}" if people else "  no individuals counted")
    import resource

    print(f"  peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
