"""Validation: read a raw file with the contract's types, then run a Great Expectations suite
generated from the contract.

Great Expectations is imported inside :func:`run_suite` only (its import costs seconds),
never when a DAG file is parsed or the API starts. The quality report names every failing
rule with its column, how many rows fail and which rows; values of personal-information
columns are never copied into the report.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from gbadz.config import IngestSettings
from gbadz.contract import Contract

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}
SAMPLE = 20


@dataclass
class CheckResult:
    rule: str
    column: str | None
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    sample_rows: list[int] = field(default_factory=list)  # the file's data rows, from 1 (no header)
    sample_values: list[Any] | None = None
    observed: Any = None
    detail: str | None = None


@dataclass
class QualityReport:
    contract_id: str
    contract_version: str
    success: bool
    rows: int
    checked_at: str
    results: list[CheckResult]

    @property
    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if not r.success]

    def summary(self) -> str:
        if self.success:
            return f"{self.rows:,} rows passed {len(self.results)} checks"
        parts = []
        for r in self.failures:
            where = f"{r.column}: " if r.column else ""
            count = f" ({r.unexpected_count:,} rows)" if r.unexpected_count else ""
            parts.append(f"{where}{r.detail or r.rule}{count}")
        return f"{len(self.failures)} of {len(self.results)} checks failed: " + "; ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _schema_failure(contract: Contract, detail: str, column: str | None = None) -> QualityReport:
    return QualityReport(
        contract_id=contract.id,
        contract_version=contract.version,
        success=False,
        rows=0,
        checked_at=datetime.now(UTC).isoformat(),
        results=[CheckResult(rule="schema", column=column, success=False, detail=detail)],
    )


def _column_mismatch(expected: list[str], found: list[str]) -> str | None:
    """Which columns are missing or unexpected. A first line that names none of the contract's
    columns is data, not a header (architecture.md invariant 9): its values are never quoted."""
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if found and not set(found) & set(expected):
        return (
            f"the first line names none of the contract's {len(expected)} columns: the file needs a "
            f"header row ({', '.join(expected)}); the line's values are not shown"
        )
    parts = [
        f"missing columns: {', '.join(missing)}" if missing else "",
        f"unexpected columns: {', '.join(extra)}" if extra else "",
    ]
    return "; ".join(p for p in parts if p) or None


_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


def without_values(message: str) -> str:
    """A parser's message with the values it quotes removed (they may be personal)."""
    return _QUOTED.sub("'…'", message)


class TooLarge(Exception):
    """The file would decode to more than the ingest limits allow; the reason names no value."""


def _decoded_bytes(column: pa.Array) -> int:
    """What a column takes once decoded. A dictionary column is measured through its indices
    (each row costs its value's length), so a dictionary bomb is measured, not materialised."""
    if isinstance(column, pa.DictionaryArray):
        lengths = pc.take(pc.binary_length(column.dictionary), column.indices)
        total = pc.sum(lengths).as_py() or 0
        return int(total) + 4 * len(column)
    return int(column.get_total_buffer_size())


#: Decoded bytes per value of Parquet's fixed-width physical types (BOOLEAN as Arrow's bytes, rounded up).
_FIXED_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def _read_parquet(path: Path, expected: list[str], limits: IngestSettings) -> pa.Table | str:
    """A Parquet file's contract columns, or why it is refused. The footer's declared sizes are
    checked first (nothing is decompressed); then batches are read with text columns kept as
    dictionaries, measured, and only decoded while the running total stays within the limit."""
    meta = pq.read_metadata(path)
    if meta.num_columns > limits.max_columns:
        raise TooLarge(f"the file declares {meta.num_columns:,} columns; the limit is {limits.max_columns:,}")
    if meta.num_rows > limits.max_rows:
        raise TooLarge(f"the file declares {meta.num_rows:,} rows; the limit is {limits.max_rows:,}")
    declared = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            chunk = group.column(c)
            size = chunk.total_uncompressed_size
            if size < 0 or chunk.num_values < 0:
                raise TooLarge("the file's metadata declares a negative size: it is not a valid Parquet file")
            # The uncompressed size is after encoding: a run of one repeated integer declares a few
            # KB and decodes to gigabytes. A fixed-width value decodes to its width, whatever the
            # encoding, so count that too (review of #20: 39 KB declared, 80 MB decoded).
            width = _FIXED_WIDTH.get(chunk.physical_type, 0) or (
                meta.schema.column(c).length if chunk.physical_type == "FIXED_LEN_BYTE_ARRAY" else 0
            )
            declared += max(size, chunk.num_values * width)
    if declared > limits.max_table_bytes:
        raise TooLarge(
            f"the file declares {declared:,} bytes uncompressed; the limit is {limits.max_table_bytes:,}"
        )
    schema = pq.read_schema(path)
    mismatch = _column_mismatch(expected, schema.names)
    if mismatch:
        return mismatch
    fields = [schema.field(name) for name in expected]
    nested = [f.name for f in fields if pa.types.is_nested(f.type)]
    if nested:
        return f"nested values are not accepted (columns {', '.join(nested)}): each column holds one value per row"
    # A column the footer's Arrow schema calls a dictionary is read as one anyway; give it back plain.
    plain = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in fields]
    )
    texts = [f.name for f in plain if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    reader = pq.ParquetFile(path, read_dictionary=texts)
    batches, total = [], 0
    for batch in reader.iter_batches(batch_size=limits.batch_rows, columns=expected, use_threads=False):
        total += sum(_decoded_bytes(column) for column in batch.columns)
        if total > limits.max_table_bytes:
            raise TooLarge(
                f"the file decodes to more than {limits.max_table_bytes:,} bytes (it stopped being read "
                f"after {total:,})"
            )
        columns = [
            col.dictionary_decode() if isinstance(col, pa.DictionaryArray) else col for col in batch.columns
        ]
        batches.append(pa.RecordBatch.from_arrays(columns, schema=plain))
    return pa.Table.from_batches(batches, schema=plain)


def read_table(
    contract: Contract, path: Path, limits: IngestSettings | None = None
) -> pa.Table | QualityReport:
    """The file as an Arrow table with the contract's column types, or a failed report saying why."""
    limits = limits or IngestSettings()
    props = contract.table.properties
    expected = [p.name for p in props]
    header = expected
    types = {p.name: ARROW_TYPES[p.logicalType] for p in props}
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            read = _read_parquet(path, expected, limits)
            if isinstance(read, str):
                return _schema_failure(contract, read)
            table = read
        elif suffix in (".csv", ".txt"):
            size = path.stat().st_size
            if size > limits.max_table_bytes:
                raise TooLarge(f"the file is {size:,} bytes; the limit is {limits.max_table_bytes:,}")
            read_options = pacsv.ReadOptions(block_size=limits.max_line_bytes)
            with pacsv.open_csv(
                path, read_options=read_options, convert_options=pacsv.ConvertOptions(column_types={})
            ) as reader:
                header = reader.schema.names
            if len(header) > limits.max_columns:
                raise TooLarge(f"the file has {len(header):,} columns; the limit is {limits.max_columns:,}")
            mismatch = _column_mismatch(expected, header)
            if mismatch:
                return _schema_failure(contract, mismatch)
            table = pacsv.read_csv(
                path,
                read_options=read_options,
                convert_options=pacsv.ConvertOptions(
                    column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
                ),
            )
        else:
            return _schema_failure(
                contract, f"unsupported file type {suffix or '(none)'}: upload CSV or Parquet"
            )
    except TooLarge as exc:
        return _schema_failure(contract, f"the file is refused before it is read in full: {exc}")
    except pa.ArrowInvalid as exc:
        if "straddling" in str(exc) or "block size" in str(exc):
            return _schema_failure(
                contract, f"a line is longer than the {limits.max_line_bytes:,}-byte limit for one line"
            )
        message = without_values(str(exc).splitlines()[0])[:300]
        found = re.search(r"CSV column #(\d+)", message)
        column = None
        if found is not None and int(found.group(1)) < len(header):
            column = header[int(found.group(1))]  # the position is in the file's own column order
            message = message.replace(found.group(0), f"column {column}")
        return _schema_failure(contract, f"the file does not match the contract's types: {message}", column)
    except (OSError, UnicodeDecodeError) as exc:
        return _schema_failure(contract, f"the file cannot be read: {exc}")
    mismatch = _column_mismatch(expected, table.column_names)
    if mismatch:
        return _schema_failure(contract, mismatch)
    columns = []
    for name in expected:
        column = table[name]
        if column.type != types[name]:
            try:
                column = column.cast(types[name], safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                return _schema_failure(
                    contract,
                    f"values are not {types[name]}: {without_values(str(exc).splitlines()[0])[:200]}",
                    name,
                )
        columns.append(column)
    return pa.table(columns, names=expected)


def _suite(contract: Contract) -> list[Any]:
    from great_expectations import expectations as gx_expectations

    gxe: Any = gx_expectations  # GX re-exports its classes without __all__

    table = contract.table
    rules: list[Any] = [
        gxe.ExpectTableColumnsToMatchOrderedList(column_list=[p.name for p in table.properties])
    ]
    for table_rule in table.quality:
        low, high = table_rule.mustBeBetween
        rules.append(gxe.ExpectTableRowCountToBeBetween(min_value=low, max_value=high))
    for prop in table.properties:
        if prop.required or prop.primaryKey:
            rules.append(gxe.ExpectColumnValuesToNotBeNull(column=prop.name))
        if prop.unique or prop.primaryKey:
            rules.append(gxe.ExpectColumnValuesToBeUnique(column=prop.name))
        opts = prop.logicalTypeOptions
        if opts is not None:
            if opts.minimum is not None or opts.maximum is not None:
                rules.append(
                    gxe.ExpectColumnValuesToBeBetween(
                        column=prop.name, min_value=opts.minimum, max_value=opts.maximum
                    )
                )
            if opts.pattern is not None:
                rules.append(gxe.ExpectColumnValuesToMatchRegex(column=prop.name, regex=opts.pattern))
            if opts.minLength is not None or opts.maxLength is not None:
                rules.append(
                    gxe.ExpectColumnValueLengthsToBeBetween(
                        column=prop.name, min_value=opts.minLength, max_value=opts.maxLength
                    )
                )
        for quality in prop.quality:
            rules.append(
                gxe.ExpectColumnValuesToBeInSet(column=prop.name, value_set=list(quality.validValues))
            )
    return rules


def run_suite(contract: Contract, table: pa.Table) -> QualityReport:
    """Validate with Great Expectations (ephemeral context, pandas engine)."""
    import great_expectations as gx
    from great_expectations.execution_engine import pandas_execution_engine

    # GX fingerprints every in-memory batch with an MD5 over pandas' hash of all values (about
    # 1 s per million rows of strings) unless the frame exceeds HASH_THRESHOLD. The fingerprint
    # is batch metadata only; gbadz identifies uploads by their SHA-256, so it is skipped.
    pandas_execution_engine.HASH_THRESHOLD = 0
    for noisy in ("great_expectations", "great_expectations._docs_decorators"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    context = gx.get_context(mode="ephemeral")
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    asset = context.data_sources.add_pandas("gbadz").add_dataframe_asset(name=contract.id)
    batch_definition = asset.add_batch_definition_whole_dataframe("upload")
    suite = gx.ExpectationSuite(name=f"{contract.id}-{contract.version}")
    for rule in _suite(contract):
        suite.add_expectation(rule)
    suite = context.suites.add(suite)
    frame = table.to_pandas()
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    outcome = batch.validate(
        suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE}
    )
    results = []
    for res in outcome.results:
        # GX returns loosely typed JSON: read it as such.
        info: dict[str, Any] = dict(res.to_json_dict())
        config: dict[str, Any] = info["expectation_config"]
        column = config.get("kwargs", {}).get("column")
        detail: dict[str, Any] = info["result"] or {}
        pi = column is not None and contract.facts(column).pi
        results.append(
            CheckResult(
                rule=config["type"],
                column=column,
                success=bool(info["success"]),
                unexpected_count=detail.get("unexpected_count"),
                unexpected_percent=detail.get("unexpected_percent"),
                # GX gives pandas' 0-based index; providers read the file's data rows from 1
                # (the header row not counted), as every report and page says.
                sample_rows=[int(i) + 1 for i in (detail.get("partial_unexpected_index_list") or [])][
                    :SAMPLE
                ],
                # Personal data never enters a quality report.
                sample_values=None if pi else (detail.get("partial_unexpected_list") or None),
                observed=detail.get("observed_value"),
                detail=_describe(config["type"], config.get("kwargs", {})),
            )
        )
    return QualityReport(
        contract_id=contract.id,
        contract_version=contract.version,
        success=bool(outcome.success),
        rows=table.num_rows,
        checked_at=datetime.now(UTC).isoformat(),
        results=results,
    )


def _describe(rule: str, kwargs: dict[str, Any]) -> str:
    names = {
        "expect_column_values_to_not_be_null": "must not be empty",
        "expect_column_values_to_be_unique": "must be unique",
        "expect_column_values_to_match_regex": f"must match {kwargs.get('regex')}",
        "expect_column_values_to_be_in_set": "must be one of the contract's values",
        "expect_column_values_to_be_between": f"must be between {kwargs.get('min_value')} and {kwargs.get('max_value')}",
        "expect_column_value_lengths_to_be_between": f"length must be between {kwargs.get('min_value')} and {kwargs.get('max_value')}",
        "expect_table_row_count_to_be_between": f"row count must be between {kwargs.get('min_value')} and {kwargs.get('max_value')}",
        "expect_table_columns_to_match_ordered_list": "columns must match the contract, in order",
    }
    return names.get(rule, rule)


def validate_file(
    contract: Contract, path: Path, limits: IngestSettings | None = None
) -> tuple[pa.Table | None, QualityReport]:
    """Read and validate; the table is returned only when the file passed."""
    table = read_table(contract, path, limits)
    if isinstance(table, QualityReport):
        return None, table
    report = run_suite(contract, table)
    return (table if report.success else None), report
