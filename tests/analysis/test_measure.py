"""The measurement: near the truth, each person bounded, a differencing attacker held to ε."""

# ruff: noqa: S608 - analysts' SQL under test, checked by the allow-list and never executed

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date, timedelta

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from gbadz.analysis import measure
from gbadz.analysis.measure import EpsilonRefused, MeasurementFailed, estimate, release
from gbadz.analysis.query import validate
from gbadz.analysis.spec import AnalysisSpec, Budget, Dimension, Measure
from gbadz.ingest.samples import generate
from tests.analysis.conftest import DEPARTMENTS, T


@pytest.fixture(scope="module")
def bounded() -> pa.Table:
    """Hospital-shaped rows where nobody has more than five visits, so truncation removes nothing."""
    table = generate("sz-hospital-outpatient-visits", 100_000)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    kept = frame.filter(pl.int_range(pl.len()).over("patient_id") < 5)
    return kept.to_arrow()


def generous(spec: AnalysisSpec, epsilon: float = 10.0) -> AnalysisSpec:
    """The hospital spec with a large per-query ε, for tests that need tiny noise to be exact."""
    assert spec.budget is not None
    return replace(spec, budget=Budget(epsilon, spec.budget.delta, epsilon))


def visits(rows: list[tuple[str, str, float]], day: date = date(2026, 3, 2)) -> pa.Table:
    """A hospital table of (patient_id, department, fee) visits on one day."""
    return pa.table(
        {
            "patient_id": [r[0] for r in rows],
            "department": [r[1] for r in rows],
            "fee_cny": [r[2] for r in rows],
            "visit_date": [day] * len(rows),
            "clinic_city": ["Shenzhen"] * len(rows),
            "gender": ["F"] * len(rows),
            "insured": [True] * len(rows),
        }
    )


class TestNearTheTruth:
    def test_count_sum_mean_per_department(self, spec: AnalysisSpec, bounded: pa.Table) -> None:
        """Noisy counts, sums and means per department fall within their stated 95% accuracy (x3)."""
        sql = f"SELECT department, COUNT(*) AS n, SUM(fee_cny) AS total, AVG(fee_cny) AS mean FROM {T} GROUP BY department"
        plan = validate(sql, spec)
        result = release(bounded, plan, spec, 1.0)
        truth = (
            pl.from_arrow(bounded)
            .group_by("department")  # type: ignore[union-attr]
            .agg(pl.len().alias("n"), pl.col("fee_cny").sum().alias("total"))
        )
        exact = {r["department"]: r for r in truth.iter_rows(named=True)}
        acc = {a.name: a.accuracy for a in result.accuracy}
        assert acc["n"] is not None
        assert acc["total"] is not None
        assert sorted(DEPARTMENTS) == [r[0] for r in result.rows]
        for department, n, total, mean in result.rows:
            assert abs(n - exact[department]["n"]) <= 3 * acc["n"]
            assert abs(total - exact[department]["total"]) <= 3 * acc["total"]
            # A mean is the noisy sum over the noisy count: its error follows from theirs.
            true_mean = exact[department]["total"] / exact[department]["n"]
            slack = (3 * acc["total"] + 3 * acc["n"] * true_mean) / (exact[department]["n"] - 3 * acc["n"])
            assert abs(mean - true_mean) <= slack
        assert (1.0, 0.0) == (result.epsilon, result.delta)

    def test_month_keys_from_the_data(self, spec: AnalysisSpec, bounded: pa.Table) -> None:
        """Months are not a declared domain: keys are released above a noisy threshold, spending δ."""
        sql = f"SELECT date_trunc('month', visit_date) AS month, COUNT(*) AS n FROM {T} GROUP BY month ORDER BY month"
        plan = validate(sql, spec)
        result = release(bounded, plan, spec, 0.5)
        assert spec.budget is not None
        assert math.isclose(spec.budget.delta * 0.5 / spec.budget.epsilon, result.delta)
        assert result.threshold is not None
        assert result.threshold > spec.min_group_size
        months = [r[0] for r in result.rows]
        assert months == sorted(months)
        assert 10 == len(months)  # the sample spans January to October
        assert all(m.endswith("-01") for m in months)

    def test_filters_apply(self, spec: AnalysisSpec, bounded: pa.Table) -> None:
        """A WHERE clause restricts the rows measured, as the same filter does on the exact data."""
        sql = (
            f"SELECT clinic_city, COUNT(*) AS n FROM {T} WHERE department IN ('ent', 'general') "
            "AND visit_date >= DATE '2026-07-01' AND NOT insured = FALSE GROUP BY clinic_city"
        )
        plan = validate(sql, spec)
        result = release(bounded, plan, generous(spec), 10.0)
        frame = pl.from_arrow(bounded)
        assert isinstance(frame, pl.DataFrame)
        exact = (
            frame.filter(
                pl.col("department").is_in(["ent", "general"])
                & (pl.col("visit_date") >= date(2026, 7, 1))
                & pl.col("insured")
            )
            .group_by("clinic_city")
            .len()
        )
        truth = dict(exact.iter_rows())
        for city, n in result.rows:
            assert abs(n - truth[city]) <= 10


class TestTruncation:
    def test_one_person_counts_as_five(self, spec: AnalysisSpec) -> None:
        """A person with 1,000 visits counts for at most five rows of the release."""
        heavy = [("P000000001", "ent", 5000.0)] * 1000
        others = [(f"P1{i:08d}", "ent", 100.0) for i in range(200)]
        plan = validate(f"SELECT COUNT(*) AS n, SUM(fee_cny) AS s FROM {T} WHERE department = 'ent'", spec)
        result = release(visits(heavy + others), plan, generous(spec), 10.0)
        n, total = result.rows[0]
        assert abs(n - 205) <= 10
        assert abs(total - (200 * 100 + 5 * 5000)) <= 5 * 5000 * 2 * 10 / 10 * 3

    def test_truncation_keeps_at_most_k_rows_per_person(self) -> None:
        """Each person keeps min(rows, k) rows; people with few rows keep them all."""
        rng = np.random.default_rng(3)
        people = rng.integers(0, 500, 20_000)
        frame = pl.DataFrame({"pid": [f"P{p}" for p in people], "row": np.arange(20_000)})
        before = dict(frame.group_by("pid").len().iter_rows())
        for truncate in (measure._truncate, measure._truncate_exact):
            kept = truncate(frame, "pid", 5, 11)
            per_person = dict(kept.group_by("pid").len().iter_rows())
            assert all(per_person[p] == min(5, before[p]) for p in before)

    def test_truncation_is_a_random_choice(self) -> None:
        """Which rows are kept is random, so a table sorted by date is not biased to its first days."""
        frame = pl.DataFrame({"pid": ["P1"] * 100, "row": list(range(100))})
        chosen = {tuple(measure._truncate(frame, "pid", 5, seed=s)["row"].to_list()) for s in range(5)}
        assert len(chosen) > 1


class TestDifferencing:
    """Two queries over tables that differ by one person (who has an extreme fee), repeated.

    The attacker sees the released count and sum and guesses whether the person is in the table
    with the best threshold on a statistic. Under ε-DP no test beats e^ε / (1 + e^ε). The same
    attack on exact aggregates with only a minimum group size (mode threshold) always wins.
    """

    RUNS = 200
    EPSILON = 1.0
    TOLERANCE = 0.08  # sampling error of 2 x 200 runs and the maximum over thresholds

    @staticmethod
    def best_guess(without: list[float], with_target: list[float]) -> float:
        """The attacker's accuracy with the best threshold (either direction) on one statistic."""
        values = sorted(set(without) | set(with_target))
        a, b = np.array(without), np.array(with_target)
        best = 0.5
        for cut in values:
            right = (np.mean(a <= cut) + np.mean(b > cut)) / 2
            best = max(best, right, 1 - right)
        return float(best)

    def tables(self) -> tuple[pa.Table, pa.Table]:
        others = [(f"P2{i:08d}", "ent", 80.0 + (i % 40)) for i in range(60)]
        target = [("P000000042", "ent", 5000.0)] * 50  # truncation keeps 5 of them
        return visits(others), visits(others + target)

    def test_attacker_bounded_by_epsilon(self, spec: AnalysisSpec) -> None:
        """The best threshold on the sum, the count or both does no better than ε allows."""
        plan = validate(f"SELECT COUNT(*) AS n, SUM(fee_cny) AS s FROM {T} WHERE department = 'ent'", spec)
        without, with_target = self.tables()
        outputs: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
        for name, table in (("without", without), ("with", with_target)):
            for _ in range(self.RUNS):
                result = release(table, plan, spec, self.EPSILON)
                n, total = result.rows[0] if result.rows else (0, 0.0)
                outputs[name].append((float(n), float(total)))
        bound = math.exp(self.EPSILON) / (1 + math.exp(self.EPSILON))
        for statistic in (lambda o: o[1], lambda o: o[0], lambda o: o[1] / 50_000 + o[0] / 10):
            accuracy = self.best_guess(
                [statistic(o) for o in outputs["without"]], [statistic(o) for o in outputs["with"]]
            )
            assert accuracy <= bound + self.TOLERANCE

    def test_exact_aggregates_lose(self, spec: AnalysisSpec) -> None:
        """Without noise (threshold mode: exact, small groups suppressed) the same attack always wins."""
        exact = replace(spec, mode="threshold", budget=None, privacy_unit=None)
        plan = validate(f"SELECT COUNT(*) AS n, SUM(fee_cny) AS s FROM {T} WHERE department = 'ent'", exact)
        without, with_target = self.tables()
        a = [release(without, plan, exact, 0.0).rows[0][1] for _ in range(5)]
        b = [release(with_target, plan, exact, 0.0).rows[0][1] for _ in range(5)]
        assert 1.0 == self.best_guess(a, b)


class TestSuppression:
    def test_small_groups_are_not_released(self, spec: AnalysisSpec) -> None:
        """Groups whose noisy count is under the minimum group size are left out, declared or not."""
        rows = [(f"P3{i:08d}", "ent", 100.0) for i in range(300)]
        rows += [(f"P4{i:08d}", "cardiology", 100.0) for i in range(5)]
        plan = validate(f"SELECT department, COUNT(*) AS n FROM {T} GROUP BY department", spec)
        result = release(visits(rows), plan, generous(spec), 10.0)
        assert ["ent"] == [r[0] for r in result.rows]
        assert len(DEPARTMENTS) - 1 == result.suppressed

    def test_declared_values_cost_no_delta(self, spec: AnalysisSpec) -> None:
        """Grouping by declared values (department, month number) spends no δ and has no threshold."""
        plan = validate(f"SELECT department, month(visit_date) AS m, COUNT(*) FROM {T} GROUP BY 1, 2", spec)
        est = estimate(plan, spec, 1.0)
        assert (0.0, None, True) == (est.delta, est.threshold, est.public_keys)


class TestThresholdMode:
    def test_exact_with_small_groups_suppressed(self) -> None:
        """A dataset without personal information gets exact aggregates, ε 0, small groups left out."""
        spec = AnalysisSpec(
            dataset="mo-test",
            table="arrivals",
            mode="threshold",
            dimensions=(Dimension("port", "string", None),),
            measures=(Measure("visitors", "integer", 0, 100_000),),
            privacy_unit=None,
            max_rows_per_person=1,
            max_groups_per_person=None,
            min_group_size=10,
            budget=None,
            schema_columns=("port", "visitors"),
        )
        table = pa.table({"port": ["A"] * 30 + ["B"] * 9, "visitors": list(range(30)) + [7] * 9})
        plan = validate(
            "SELECT port, COUNT(*) AS n, SUM(visitors) AS v, AVG(visitors) AS a FROM arrivals GROUP BY port",
            spec,
        )
        result = release(table, plan, spec, 0.0)
        assert (("A", 30, sum(range(30)), round(sum(range(30)) / 30, 2)),) == result.rows
        assert (0.0, 0.0, 1) == (result.epsilon, result.delta, result.suppressed)


class TestEstimate:
    def test_estimate_equals_the_release(self, spec: AnalysisSpec, bounded: pa.Table) -> None:
        """The estimate's accuracy, ε, δ and threshold are those of the release, computed without rows."""
        sql = f"SELECT department, date_trunc('month', visit_date) AS mo, COUNT(*), SUM(fee_cny), AVG(fee_cny) FROM {T} GROUP BY 1, 2"
        plan = validate(sql, spec)
        est = estimate(plan, spec, 0.8)
        result = release(bounded.slice(0, 5_000), plan, spec, 0.8)
        assert est.accuracy == result.accuracy
        assert (est.epsilon, est.delta, est.threshold) == (result.epsilon, result.delta, result.threshold)

    def test_accuracy_is_opendps(self, spec: AnalysisSpec) -> None:
        """The stated accuracy is OpenDP's own summary of the same query (summarize at alpha 0.05)."""
        import opendp.context as context
        from opendp.extras.polars import Margin, dp_len

        measure._dp()
        plan = validate(
            f"SELECT department, COUNT(*) AS n, SUM(fee_cny) AS s FROM {T} GROUP BY department", spec
        )
        ours = {a.name: a.accuracy for a in estimate(plan, spec, 1.0).accuracy}
        frame = pl.LazyFrame(schema={"department": pl.String, "fee": pl.Int64})
        ctx = context.Context.compositor(
            data=frame,
            privacy_unit=context.unit_of(contributions=5),
            privacy_loss=context.loss_of(epsilon=1.0),
            split_evenly_over=1,
            margins=[Margin(by=[], max_length=50_000_000), Margin(by=["department"], invariant="keys")],
        )
        query = (
            ctx.query()
            .group_by("department")
            .agg(
                [dp_len(signed=False), pl.col("fee").fill_null(0).dp.sum((0, 500_000)).alias("s")]  # type: ignore[attr-defined]
            )
        )
        summary = query.summarize(alpha=0.05)
        theirs = dict(zip(summary["column"].to_list(), summary["accuracy"].to_list(), strict=True))
        assert ours["n"] is not None
        assert ours["s"] is not None
        assert math.isclose(theirs["len"], ours["n"], rel_tol=1e-6)
        assert math.isclose(theirs["s"] / 100, ours["s"], rel_tol=1e-6)

    def test_epsilon_checked(self, spec: AnalysisSpec) -> None:
        """ε must be positive and within the contract's per-query maximum: a 400 about the field epsilon."""
        plan = validate(f"SELECT COUNT(*) FROM {T}", spec)
        for bad in (0.0, -1.0, 1.5, float("nan"), float("inf")):
            with pytest.raises(EpsilonRefused) as caught:
                estimate(plan, spec, bad)
            assert ("epsilon", 400) == (caught.value.field, caught.value.status_code)


class TestRobustness:
    def test_nulls_and_out_of_bounds_values(self, spec: AnalysisSpec) -> None:
        """Null fees are imputed and fees beyond the bounds clamped, data-independently."""
        rows = [(f"P5{i:08d}", "ent", 100.0) for i in range(100)]
        table = visits(rows)
        fees = pa.array([None] * 50 + [1e9] * 50, pa.float64())
        table = table.set_column(table.schema.get_field_index("fee_cny"), "fee_cny", fees)
        plan = validate(f"SELECT COUNT(*) AS n, SUM(fee_cny) AS s FROM {T}", spec)
        result = release(table, plan, generous(spec), 10.0)
        n, total = result.rows[0]
        assert abs(n - 100) <= 10
        assert abs(total - 50 * 5000) <= 5 * 5000 * 2 / 10 * 10

    def test_number_filters_mixing_integers_and_floats_release(self, spec: AnalysisSpec) -> None:
        """fee_cny IN (1, 2.5): the literals are typed as the column's floats, so Polars builds the
        list (a mix of ints and floats was a TypeError, a 503) and the filter counts as SQL does."""
        rows = [(f"P7{i:08d}", "ent", (1.0, 2.5, 3.0)[i % 3]) for i in range(300)]
        plan = validate(f"SELECT COUNT(*) AS n FROM {T} WHERE fee_cny IN (1, 2.5)", spec)
        result = release(visits(rows), plan, generous(spec), 10.0)
        assert abs(result.rows[0][0] - 200) <= 10
        huge = validate(
            f"SELECT COUNT(*) AS n FROM {T} WHERE fee_cny IN (9223372036854775808, 1.5) "
            "AND month(visit_date) IN (3, 4.0)",
            spec,
        )
        release(visits(rows), huge, generous(spec), 10.0)  # typed: no error

    def test_missing_column_names_the_column_only(self, spec: AnalysisSpec) -> None:
        """A table without a needed column fails naming the column, never a value (invariant 9)."""
        plan = validate(f"SELECT department, COUNT(*) FROM {T} GROUP BY department", spec)
        table = pa.table({"patient_id": ["P000000009"], "fee_cny": [1.0]})
        with pytest.raises(MeasurementFailed) as caught:
            release(table, plan, spec, 1.0)
        assert "department" in caught.value.detail
        assert "P000000009" not in caught.value.detail

    def test_dates_are_iso_strings(self, spec: AnalysisSpec) -> None:
        """Released dates are ISO strings and every row is JSON-friendly."""
        rows = [(f"P6{i:08d}", "ent", 100.0) for i in range(400)]
        table = pa.concat_tables(
            [visits(rows[:200]), visits(rows[200:], date(2026, 3, 2) + timedelta(days=40))]
        )
        plan = validate(f"SELECT visit_date, COUNT(*) AS n FROM {T} GROUP BY visit_date", spec)
        result = release(table, plan, generous(spec), 10.0)
        assert [("2026-03-02",), ("2026-04-11",)] == [r[:1] for r in result.rows]
        assert len(result.result_sha256) == 64


class TestGroupsPerPerson:
    def test_each_person_in_at_most_g_groups(self, spec: AnalysisSpec) -> None:
        """With max_groups_per_person 2, a person seen in every department counts in two of them."""
        bounded_spec = replace(generous(spec), max_groups_per_person=2)
        rows = [("P000000007", d, 100.0) for d in DEPARTMENTS]
        frame = pl.from_arrow(visits(rows))
        assert isinstance(frame, pl.DataFrame)
        kept = measure._truncate_groups(frame, "patient_id", ["department"], 2, seed=3)
        assert 2 == kept["department"].n_unique()
        rows += [(f"P7{i:08d}", d, 100.0) for i in range(100) for d in DEPARTMENTS[:1]]
        plan = validate(f"SELECT department, COUNT(*) AS n FROM {T} GROUP BY department", bounded_spec)
        result = release(visits(rows), plan, bounded_spec, 10.0)
        assert [("general",)] == [r[:1] for r in result.rows]
        assert abs(result.rows[0][1] - 100) <= 10
