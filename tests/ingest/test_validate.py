"""Validation with the contract's types and a generated Great Expectations suite."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from gbadz.config import IngestSettings
from gbadz.contract import Contract, load_contract
from gbadz.ingest import samples
from gbadz.ingest.validate import (
    ARROW_TYPES,
    CSV_BLOCK_BYTES,
    TooLarge,
    _csv_block_size,
    iter_batches,
    read_table,
    scan_lines,
    validate_file,
)
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
        assert [6, 1003, 2000] == failed["fee_cny"].sample_rows[:3]  # data rows, from 1
        assert "fee_cny: must be between 0.0 and 5000.0 (6 rows)" in report.summary()

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
        assert ("patient_name", None, [4]) == (failure.column, failure.sample_values, failure.sample_rows)
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


def bomb(path: Path, rows: int, value_bytes: int, *, dictionary: bool) -> Path:
    """A tiny Parquet file with the hospital contract's columns whose ``patient_name`` repeats one
    huge value: as a dictionary (one copy, rows of RLE indices) or plain (every copy, compressed)."""
    contract = load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
    like = pa.schema([(p.name, ARROW_TYPES[p.logicalType]) for p in contract.table.properties])
    indices = pa.array(np.zeros(rows, dtype=np.int32))
    columns = []
    for field in like:
        if pa.types.is_string(field.type):
            value = pa.array(["x" * (value_bytes if field.name == "patient_name" else 1)])
            column = pa.DictionaryArray.from_arrays(indices, value)
            columns.append(column if dictionary else column.dictionary_decode())
        else:
            columns.append(pa.nulls(rows, field.type))
    table = pa.table(columns, names=like.names)
    # Written as another tool would: no Arrow schema in the footer saying "read me as a dictionary".
    pq.write_table(
        table, path, compression="zstd", use_dictionary=dictionary, write_statistics=False, store_schema=False
    )
    return path


def peak_rss_since_reset() -> int:
    """The process's peak RSS since :func:`reset_peak_rss` (Linux VmHWM)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))


def reset_peak_rss() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


class TestBoundedReading:
    def test_dictionary_bomb_is_measured_not_decoded(self, hospital: Contract, tmp_path: Path) -> None:
        """200,000 rows of a 1 MiB value (a file of kilobytes, 200 GiB decoded) is refused at the first batch, memory flat."""
        path = bomb(tmp_path / "bomb.parquet", 200_000, 1 << 20, dictionary=True)
        assert path.stat().st_size < 64 * 1024
        reset_peak_rss()
        before = peak_rss_since_reset()
        started = time.monotonic()
        table, report = validate_file(hospital, path, IngestSettings())
        assert time.monotonic() - started < 5
        assert peak_rss_since_reset() - before < 256 * 1024 * 1024
        assert (None, False) == (table, report.success)
        assert "decodes to more than 1,073,741,824 bytes" in report.summary()
        assert "xxxx" not in report.summary()

    def test_declared_uncompressed_size_is_checked_before_reading(
        self, hospital: Contract, tmp_path: Path
    ) -> None:
        """A plain-encoded compression bomb is refused from its footer alone."""
        path = bomb(tmp_path / "plain.parquet", 16, 1 << 20, dictionary=False)
        limits = IngestSettings(max_table_bytes=8 << 20)
        _, report = validate_file(hospital, path, limits)
        assert "declares" in report.summary()
        assert "bytes uncompressed; the limit is 8,388,608" in report.summary()

    def test_repeated_integers_are_counted_at_their_decoded_width(
        self, hospital: Contract, tmp_path: Path
    ) -> None:
        """A run of one integer declares a few KB after encoding; its decoded width is what counts."""
        path = tmp_path / "zeros.parquet"
        rows = 4_000_000
        contract = load_contract(REPO / "contracts" / "sz-hospital-outpatient-visits.yaml")
        like = pa.schema([(p.name, ARROW_TYPES[p.logicalType]) for p in contract.table.properties])
        zeros = {
            f.name: pa.array(np.zeros(rows, dtype=np.int64)).cast(f.type)
            if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
            else pa.nulls(rows, f.type)
            for f in like
        }
        pq.write_table(pa.table(zeros), path, compression="zstd", write_statistics=False, store_schema=False)
        meta = pq.read_metadata(path)
        encoded = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
        limit = 16 << 20
        assert encoded < limit  # the old check, on encoded sizes, let it through
        _, report = validate_file(hospital, path, IngestSettings(max_table_bytes=limit))
        assert "bytes uncompressed; the limit is 16,777,216" in report.summary()

    def test_row_and_column_counts_are_checked_before_reading(
        self, hospital: Contract, tmp_path: Path
    ) -> None:
        """Declared rows and columns over the limits are refused before any page is read."""
        path = bomb(tmp_path / "rows.parquet", 5_000, 8, dictionary=True)
        assert (
            "declares 5,000 rows; the limit is 1,000"
            in validate_file(hospital, path, IngestSettings(max_rows=1_000))[1].summary()
        )
        assert (
            "declares 12 columns; the limit is 4"
            in validate_file(hospital, path, IngestSettings(max_columns=4))[1].summary()
        )

    def test_a_file_within_the_limits_reads_in_batches(self, hospital: Contract, tmp_path: Path) -> None:
        """A real file read in small batches gives the same table as reading it whole."""
        table = samples.generate("sz-hospital-outpatient-visits", 5_000)
        path = tmp_path / "good.parquet"
        gender = table.schema.get_field_index("gender")
        # One column stored as an Arrow dictionary, as pandas categoricals are.
        pq.write_table(table.set_column(gender, "gender", table["gender"].dictionary_encode()), path)
        read = read_table(hospital, path, IngestSettings(batch_rows=700))
        assert isinstance(read, pa.Table), read
        assert table.equals(read)

    def test_csv_lines_longer_than_a_block_still_read(self, hospital: Contract, tmp_path: Path) -> None:
        """Blocks are 1 MiB (they bound the reader's read-ahead), yet a line of 3 MiB under a
        4 MiB limit reads whole, with CRLF line ends and as the last line without one."""
        table = samples.generate("sz-hospital-outpatient-visits", 4)
        long = "y" * (3 << 20)
        table = table.set_column(2, "patient_name", pa.array(["Chan Tai Man", long, "Wong", long]))
        path = tmp_path / "long.csv"
        pacsv.write_csv(table, path)
        crlf = path.read_bytes().replace(b"\n", b"\r\n").rstrip(b"\r\n")
        path.write_bytes(crlf)
        assert _csv_block_size(path, 4 << 20) > (3 << 20)
        read = read_table(hospital, path, IngestSettings(max_line_bytes=4 << 20, batch_rows=2))
        assert isinstance(read, pa.Table), read
        assert read["patient_name"].to_pylist() == ["Chan Tai Man", long, "Wong", long]
        assert _csv_block_size(path, 4 << 20) == _csv_block_size(path, 16 << 20)  # the file decides
        with pytest.raises(TooLarge, match="3,145,727-byte limit"):
            _csv_block_size(path, (3 << 20) - 1)

    def test_csv_blocks_stay_small_for_short_lines(self, tmp_path: Path) -> None:
        """A file of short lines is read in the smallest blocks, however large the limit."""
        path = tmp_path / "short.csv"
        path.write_bytes(b"a,b\n" + b"1,2\n" * 500_000)
        assert _csv_block_size(path, 64 << 20) == CSV_BLOCK_BYTES

    def test_csv_reading_holds_little_of_the_file_ahead(self, hospital: Contract, tmp_path: Path) -> None:
        """Arrow's reader runs up to 32 blocks ahead of its consumer: at the first batch of an
        80 MB file, what Arrow holds is bounded by the small blocks, not by the file."""
        sample = pa.Table.from_pylist(
            samples.generate("sz-hospital-outpatient-visits", 1000).to_pylist(),
            schema=samples.generate("sz-hospital-outpatient-visits", 1).schema,
        )
        pacsv.write_csv(sample, tmp_path / "one.csv")
        header, _, rows = (tmp_path / "one.csv").read_bytes().partition(b"\n")
        path = tmp_path / "big.csv"
        with path.open("wb") as out:
            out.write(header + b"\n")
            while out.tell() < 80_000_000:
                out.write(rows)
        before = pa.total_allocated_bytes()
        batches = iter_batches(hospital, path, IngestSettings(batch_rows=1000))
        first = next(batches)
        time.sleep(0.5)  # let the read-ahead run as far as it will
        held = pa.total_allocated_bytes() - before
        assert 1000 == first.num_rows
        assert held < 48 << 20, f"Arrow holds {held:,} bytes at the first batch"
        batches.close()

    def test_csv_values_may_hold_line_breaks(self, hospital: Contract, tmp_path: Path) -> None:
        """Quoted values with line breaks (as spreadsheets export addresses) read whole, in a file
        of many blocks; a line break after an odd number of quotes reads the file in blocks of the
        line limit, which fit a row of several lines."""
        table = samples.generate("sz-hospital-outpatient-visits", 40_000)
        names = [f"{n}\nsecond line" for n in table["patient_name"].to_pylist()]
        table = table.set_column(2, "patient_name", pa.array(names))
        path = tmp_path / "lines.csv"
        pacsv.write_csv(table, path)
        assert path.stat().st_size > 4 * CSV_BLOCK_BYTES
        assert _csv_block_size(path, 4 << 20) == (4 << 20) + 2
        read = read_table(hospital, path, IngestSettings(max_line_bytes=4 << 20, batch_rows=7_000))
        assert isinstance(read, pa.Table), read
        assert names == read["patient_name"].to_pylist()

    @pytest.mark.parametrize("seed", range(4))
    def test_the_line_scan_agrees_with_a_plain_reading(self, tmp_path: Path, seed: int) -> None:
        """Random files of a, LF, CR and quotes, scanned in chunks of 1 to 9 bytes (every chunk
        boundary case) and in one chunk: the longest line as Python splits it, a line exactly at
        the limit accepted and one byte over refused, quoted line breaks found as a count finds them."""
        rng = np.random.default_rng(seed)
        path = tmp_path / "random.csv"
        alphabet = np.frombuffer(b'aaaa\n\r"', dtype=np.uint8)
        for _ in range(300):
            data = rng.choice(alphabet[: int(rng.integers(1, 8))], int(rng.integers(0, 60))).tobytes()
            path.write_bytes(data)
            longest = max(len(line) for line in re.split(rb"[\r\n]", data))
            quoted = any(data[:i].count(b'"') % 2 for i, c in enumerate(data) if c in b"\r\n")
            for chunk in (*range(1, 10), 1 << 20):
                assert (longest, quoted) == scan_lines(path, longest, scan_bytes=chunk), (data, chunk)
                if longest:
                    with pytest.raises(TooLarge, match=f"longer than the {longest - 1:,}-byte limit"):
                        scan_lines(path, longest - 1, scan_bytes=chunk)

    def test_a_row_with_too_many_fields_is_refused_without_its_values(
        self, hospital: Contract, tmp_path: Path
    ) -> None:
        """Arrow's column-count error copies the raw row: the report keeps the counts, not the row."""
        table = samples.generate("sz-hospital-outpatient-visits", 3)
        path = tmp_path / "extra.csv"
        pacsv.write_csv(table, path, pacsv.WriteOptions(quoting_style="none"))
        header, *rows = path.read_bytes().split(b"\n")
        rows[1] = rows[1] + b",Li Wai Ming"
        path.write_bytes(b"\n".join([header, *rows]))
        _, report = validate_file(hospital, path)
        assert "Expected 12 columns, got 13" in report.summary()
        name = table["patient_name"][1].as_py()
        for value in (name, "Li Wai Ming", table["patient_id"][1].as_py()):
            assert value not in report.summary()

    def test_csv_line_over_the_limit(self, hospital: Contract, tmp_path: Path) -> None:
        """A CSV line longer than the line limit is refused naming the limit, not the value."""
        table = samples.generate("sz-hospital-outpatient-visits", 3)
        table = table.set_column(2, "patient_name", pa.array(["Chan Tai Man", "y" * 200_000, "Wong"]))
        path = tmp_path / "long.csv"
        pacsv.write_csv(table, path)
        _, report = validate_file(hospital, path, IngestSettings(max_line_bytes=64 * 1024))
        assert "a line is longer than the 65,536-byte limit" in report.summary()
        assert "Chan" not in report.summary()
        assert "yyyy" not in report.summary()
