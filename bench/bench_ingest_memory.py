"""Peak memory of ingesting 1,000,000 and 10,000,000 rows: does it grow with the file? (issue #17)

Each run is one fresh child process doing what ``pipeline.ingest`` does for an upload (land:
hash, envelope-encrypt, PUT; validate with Great Expectations; count individuals; pseudonymise;
encrypt; write Parquet; PUT; manifest; register) on the hospital contract's 12 columns, with
individuals growing with the file (one patient per three visits). Its peak RSS is the child's
own VmHWM. The floor, in a child of its own: pyarrow streams the same CSV into Parquet and PUTs
it (no validation, no protection). Goals: the 10M peak within 1.3x of the 1M peak, and under
2 GiB.

The CSV files are generated in a temporary folder in chunks (never whole in memory). The
ingest limit ``max_table_bytes`` is raised to 16 GiB for the run (1 GiB by default, about ten
million rows: a bound on work, not memory since ADR 0028).

``--rows 1000000,3000000 --code /path/to/other/checkout/platform`` measures another checkout's
pipeline (the "before" numbers of ADR 0028 came from the commit before it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import embedded  # bench/embedded.py
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from gbadz.config import child_environment
from gbadz.ingest import samples

REPO = Path(__file__).resolve().parents[1]
CONTRACT = REPO / "contracts" / "sz-hospital-outpatient-visits.yaml"
CHUNK = 500_000
GIB = 1024**3


def write_csv(path: Path, rows: int) -> None:
    """The hospital sample's shape, ``rows`` rows, written chunk by chunk: visit ids run on, and
    patient ids are drawn from rows/3 people over the whole file (so individuals grow with it)."""
    rng = np.random.default_rng(17)
    writer: pacsv.CSVWriter | None = None
    try:
        for start in range(0, rows, CHUNK):
            n = min(CHUNK, rows - start)
            chunk = samples.generate("sz-hospital-outpatient-visits", n, seed=start // CHUNK)
            patients = rng.integers(0, max(rows // 3, 1), n).astype(str)
            chunk = chunk.set_column(
                0, "visit_id", pa.array(np.arange(start + 1, start + n + 1, dtype=np.int64))
            )
            chunk = chunk.set_column(
                1, "patient_id", pa.array(np.char.add("P", np.char.zfill(patients, 9)).tolist())
            )
            if writer is None:
                writer = pacsv.CSVWriter(path, chunk.schema)
            writer.write_table(chunk)
    finally:
        if writer is not None:
            writer.close()


def _vmhwm() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def child(kind: str, source: Path, dataset: str) -> None:
    """One measured run in this (fresh) process; prints a JSON line."""
    from gbadz.config import get_settings
    from gbadz.contract import load_contract
    from gbadz.ingest import pipeline

    settings = get_settings()
    ctx = pipeline.IngestContext.from_settings(settings)
    started = time.perf_counter()
    if kind == "floor":
        import pyarrow.parquet as pq

        out = source.with_suffix(".floor.parquet")
        with pacsv.open_csv(source) as reader, pq.ParquetWriter(out, reader.schema, compression="zstd") as w:
            for batch in reader:
                w.write_batch(batch)
        ctx.client.fput_object(
            settings.s3.curated_bucket, f"floor/{source.name}", str(out), part_size=16 << 20
        )
        out.unlink()
        result: dict[str, Any] = {"accepted": True}
    else:
        contract = load_contract(CONTRACT)
        contract = contract.model_copy(update={"id": dataset})
        outcome = pipeline.ingest(ctx, contract, "bench", source)
        result = {
            "accepted": outcome.accepted,
            "summary": outcome.report.summary() if outcome.report else None,
            "rows": outcome.published.row_count if outcome.published else None,
        }
    result |= {"seconds": time.perf_counter() - started, "peak": _vmhwm()}
    print(json.dumps(result))


def run_child(env: dict[str, str], kind: str, source: Path, dataset: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(source), dataset],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"{kind} run failed: {done.stderr.strip().splitlines()[-3:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="1000000,10000000", help="comma-separated row counts")
    parser.add_argument("--code", type=Path, help="another checkout's platform/ folder to measure instead")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "SOURCE", "DATASET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.child[2])
        return
    counts = [int(r) for r in args.rows.split(",")]
    peaks: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="gbadz-bench-memory-") as tmp:
        work = Path(tmp)
        with embedded.services(work) as settings:
            settings = settings.model_copy(
                update={"ingest": settings.ingest.model_copy(update={"max_table_bytes": 16 * GIB})}
            )
            env = child_environment(settings)
            if args.code is not None:
                env["PYTHONPATH"] = str(args.code.resolve())
            print(f"batch_rows {settings.ingest.batch_rows:,}; code {args.code or 'this checkout'}")
            print(
                f"{'rows':>12} {'CSV MB':>7} {'ours s':>7} {'rows/s':>9} {'peak MiB':>9} "
                f"{'floor s':>8} {'floor MiB':>9} {'time x':>7} {'RSS x':>6}"
            )
            for rows in counts:
                source = work / f"visits-{rows}.csv"
                write_csv(source, rows)
                size = source.stat().st_size / 1e6
                floor = run_child(env, "floor", source, "")
                ours = run_child(env, "ingest", source, f"bench-memory-{rows}")
                if not ours["accepted"] or ours["rows"] != rows:
                    raise SystemExit(f"{rows:,} rows: not published: {ours}")
                peaks[rows] = ours["peak"]
                print(
                    f"{rows:>12,} {size:>7.0f} {ours['seconds']:>7.1f} {rows / ours['seconds']:>9,.0f} "
                    f"{ours['peak'] / 2**20:>9,.0f} {floor['seconds']:>8.1f} {floor['peak'] / 2**20:>9,.0f} "
                    f"{ours['seconds'] / floor['seconds']:>7.2f} {ours['peak'] / floor['peak']:>6.2f}"
                )
                source.unlink()
    if len(counts) >= 2:
        small, large = min(counts), max(counts)
        ratio = peaks[large] / peaks[small]
        print(f"peak RSS {large:,} / {small:,} rows: {ratio:.2f}x (goal: at most 1.3x)")
        print(f"peak RSS at {large:,} rows: {peaks[large] / GIB:.2f} GiB (goal: under 2 GiB)")


if __name__ == "__main__":
    main()
