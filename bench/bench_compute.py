"""Compute-to-data: a DP count + sum + mean per group over 1,000,000 hospital rows vs DuckDB.

Our path is what an analysis request costs once the rows are decrypted: check the SQL against
the allow-list (sqlglot), estimate the noise and budget, then release in a sandboxed child
(``unshare --net``, rlimits, rows over a pipe as Arrow IPC; truncation to five rows per person,
OpenDP's Polars front end). The floor is the same query, exact, in DuckDB over the same Arrow
table in this process. Also printed: where the time goes (validation, child start, filter and
truncation, OpenDP), the cost of isolation (the same child without ``unshare``) and of the child
(the same release in process), validation cost per query and peak RSS.

Goal (issue #18): a typical query answers in under 2 s end to end. Finishes in under 2 minutes.
"""

from __future__ import annotations

import os
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from gbadz.analysis import measure, sandbox
from gbadz.analysis.query import validate
from gbadz.analysis.spec import AnalysisSpec
from gbadz.contract import load_contract
from gbadz.ingest.samples import generate

ROWS = 1_000_000
ROUNDS = 3
COLD_ROUNDS = 2
EPSILON = 1.0
REPO = Path(__file__).resolve().parents[1]
QUERIES = {
    "department x month (keys from the data, δ)": (
        "SELECT department, date_trunc('month', visit_date) AS month, COUNT(*) AS visits, "
        "SUM(fee_cny) AS total, AVG(fee_cny) AS mean_fee FROM outpatient_visits GROUP BY department, month"
    ),
    "department (declared keys, no δ)": (
        "SELECT department, COUNT(*) AS visits, SUM(fee_cny) AS total, AVG(fee_cny) AS mean_fee "
        "FROM outpatient_visits GROUP BY department"
    ),
}


def median(
    fn: Callable[[], object], rounds: int = ROUNDS, before: Callable[[], None] | None = None
) -> tuple[float, object]:
    times, last = [], None
    for _ in range(rounds):
        if before is not None:
            before()  # not timed
        started = time.perf_counter()
        last = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), last


def main() -> None:
    spec = AnalysisSpec.from_contract(
        load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
    )
    table = generate("sz-hospital-outpatient-visits", ROWS)
    con = duckdb.connect()
    con.register("outpatient_visits", table)
    print(f"{ROWS:,} hospital rows, ε {EPSILON} per query, median of {ROUNDS}")

    # Validation cost per query (the allow-list alone).
    sql = next(iter(QUERIES.values()))
    validate(sql, spec)
    n = 1_000
    started = time.perf_counter()
    for _ in range(n):
        validate(sql, spec)
    per_query = (time.perf_counter() - started) / n
    print(f"  validation (sqlglot parse + allow-list + plan)  {per_query * 1000:6.2f} ms per query")

    peak = 0.0
    for label, sql in QUERIES.items():
        floor, _ = median(lambda sql=sql: con.execute(sql).to_arrow_table())
        plan = validate(sql, spec)
        est_time, _ = median(lambda plan=plan: measure.estimate(plan, spec, EPSILON))

        def ours(sql: str = sql) -> measure.Release:
            plan = validate(sql, spec)
            measure.estimate(plan, spec, EPSILON)
            return sandbox.run(table, plan, spec, EPSILON)

        def spare_ready() -> None:
            sandbox.prewarm(wait=True)  # requests spaced out: the spare has finished its imports

        mine, result = median(ours, before=spare_ready)
        assert isinstance(result, measure.Release)
        cold, cold_result = median(
            lambda plan=plan: sandbox.run(table, plan, spec, EPSILON, sandbox.Limits(warm=False))
        )
        assert isinstance(cold_result, measure.Release)
        unisolated, _ = median(
            lambda plan=plan: sandbox.run(
                table, plan, spec, EPSILON, sandbox.Limits(isolate=False, warm=False)
            )
        )
        in_process, local = median(lambda plan=plan: measure.release(table, plan, spec, EPSILON))
        assert isinstance(local, measure.Release)
        t = result.timings
        inside = t.get("child_read", 0) + t.get("prepare", 0) + t.get("measure", 0)
        print(f"\n  {label}: {len(result.rows)} groups released, {result.suppressed} suppressed")
        print(f"    floor: DuckDB exact GROUP BY over the Arrow table       {floor * 1000:8.1f} ms")
        print(
            f"    ours: validate + estimate + sandboxed release (spare)  {mine * 1000:8.1f} ms"
            f"  -> {mine / floor:,.0f}x the floor (goal: under 2,000 ms)"
        )
        print(
            f"      validate + estimate (no rows read)                   {(per_query + est_time) * 1000:8.1f} ms"
        )
        print(
            f"      child: read the Arrow IPC stream from the pipe       {t.get('child_read', 0) * 1000:8.1f} ms"
        )
        print(
            f"      child: filter + truncate to 5 per person + keys      {t.get('prepare', 0) * 1000:8.1f} ms"
        )
        print(
            f"      child: OpenDP measurement (noisy counts and sums)    {t.get('measure', 0) * 1000:8.1f} ms"
        )
        print(
            f"      parent: project + encode IPC, pipe, answer (rest)    "
            f"{(mine - inside - per_query - est_time) * 1000:8.1f} ms"
        )
        print(
            f"    a cold child (no spare)                                {cold * 1000:8.1f} ms"
            f"  (imports + OpenDP warm-up {cold_result.timings.get('child_imports', 0) * 1000:.0f} ms)"
        )
        print(
            f"    a cold child without unshare (cost of isolation)       {unisolated * 1000:8.1f} ms"
            f"  ({(cold - unisolated) * 1000:+.0f} ms)"
        )
        print(
            f"    the release in process (no child)                      {in_process * 1000:8.1f} ms"
            f"  (prepare {local.timings['prepare'] * 1000:.0f} + OpenDP {local.timings['measure'] * 1000:.0f})"
        )
        peak = max(peak, t.get("child_peak_rss_mib", 0.0), cold_result.timings.get("child_peak_rss_mib", 0.0))
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"\n  peak RSS: this process {own:.0f} MiB (table, DuckDB, in-process runs); a child {peak:.0f} MiB"
    )
    print(f"  load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())} (2 cores, shared)")


if __name__ == "__main__":
    main()
