"""Validation with the contract's types and a generated Great Expectations suite."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gbadz.contract import Contract, load_contract
from gbadz.ingest import samples
from gbadz.ingest.validate import validate_file
from tests.conftest import REPO


@pytest.fixture(scope="module")
def hospital() -> Contract:
    return load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")


class TestSamples:
    @pytest.mark.parametrize("contract_id", sorted(samples.GENERATORS))
    def test_generated_samples_pass_their_contract(self, contract_id: str, tmp_path: Path) -> None:
        """Each seeded sample has 100,000 rows and passes every check of its contract."""
        contract = load_contract(REPO / "contracts" / f"{contract_id}.yaml")
        path = tmp_path / "sample.parquet"
        pq.write_table(samples.generate(contract_id), path)
        table, report = validate_file(contract, path)
        assert report.success, report.summary()
        assert table is not None
        assert 100_000 == table.num_rows

    def test_seeded(self) -> None:
        """The same seed gives the same data."""
        assert samples.generate("hk-logistics-deliveries", 500).equals(
            samples.generate("hk-logistics-deliveries", 500)
        )


class TestFailures:
    def test_rule_violations_name_columns_rows_and_counts(self, hospital: Contract, tmp_path: Path) -> None:
        """A corrupted upload fails naming each column, the rule, how many rows and which rows."""
        path = tmp_path / "bad.csv"
        pacsv.write_csv(samples.corrupt(samples.generate(hospital.id, 5_000), hospital.id), path)
        table, report = validate_file(hospital, path)
        assert table is None
        failed = {r.column: r for r in report.failures}
        assert {"patient_id", "department", "fee_cny"} == set(failed)
        assert 6 == failed["fee_cny"].unexpected_count
        assert [5, 1002, 1999] == failed["fee_cny"].sample_rows[:3]
        assert "fee_cny: must be between 0.0 and 100000.0 (6 rows)" in report.summary()

    def test_personal_values_never_enter_the_report(self, hospital: Contract, tmp_path: Path) -> None:
        """Failing values of a PI column are not copied into the report; other columns' are."""
        table = samples.generate(hospital.id, 2_000)
        names = table["patient_name"].to_pylist()
        names[3] = "X" * 100  # violates maxLength 60
        table = table.set_column(
            table.schema.get_field_index("patient_name"), "patient_name", pa.array(names)
        )
        path = tmp_path / "long.parquet"
        pq.write_table(table, path)
        _, report = validate_file(hospital, path)
        (failure,) = report.failures
        assert ("patient_name", None, [3]) == (failure.column, failure.sample_values, failure.sample_rows)
        assert "XXXXXXXX" not in str(report.as_dict())

    @pytest.mark.parametrize(
        ("mutate", "expected"),
        [
            (lambda t: t.drop_columns(["fee_cny"]), "missing columns: fee_cny"),
            (lambda t: t.append_column("ssn", pa.array(["x"] * t.num_rows)), "unexpected columns: ssn"),
            (lambda t: t.set_column(0, "visit_id", pa.array(["abc"] * t.num_rows)), "visit_id"),
        ],
        ids=["missing", "extra", "wrong-type"],
    )
    def test_schema_problems(self, hospital: Contract, tmp_path: Path, mutate: object, expected: str) -> None:
        """Missing, extra and mistyped columns are refused by name before any rule runs."""
        path = tmp_path / "x.csv"
        pacsv.write_csv(mutate(samples.generate(hospital.id, 50)), path)  # type: ignore[operator]
        table, report = validate_file(hospital, path)
        assert table is None
        assert expected in report.summary()

    def test_type_error_names_the_right_column_in_any_order(self, hospital: Contract, tmp_path: Path) -> None:
        """A CSV whose columns come in another order still gets the failing column's own name."""
        table = samples.generate(hospital.id, 50)
        reordered = table.select(list(reversed(table.column_names)))
        reordered = reordered.set_column(
            reordered.schema.get_field_index("fee_cny"), "fee_cny", pa.array(["lots"] * 50)
        )
        path = tmp_path / "reordered.csv"
        pacsv.write_csv(reordered, path)
        _, report = validate_file(hospital, path)
        assert "fee_cny" == report.failures[0].column
        assert "column fee_cny" in report.summary()

    def test_unsupported_and_empty_files(self, hospital: Contract, tmp_path: Path) -> None:
        """Unknown file types and empty files get a reason, not an exception."""
        odd = tmp_path / "data.xlsx"
        odd.write_bytes(b"PK\x03\x04")
        assert "unsupported file type .xlsx" in validate_file(hospital, odd)[1].summary()
        empty = tmp_path / "empty.csv"
        empty.write_bytes(b"")
        assert not validate_file(hospital, empty)[1].success
