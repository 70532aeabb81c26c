"""Validation: read a raw file with the contract's types, then run a Great Expectations suite
generated from the contract.

Great Expectations is imported inside :func:`run_suite` only (its import costs seconds),
never when a DAG file is parsed or the API starts. The quality report names every failing
rule with its column, how many rows fail and which rows; values of personal-information
columns are never copied into the report.
"""

from __future__ import annotations

import itertools
import logging
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
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


#: Arrow's column-count error ends with the raw row ("Expected 12 columns, got 13: 2,P0001,Li ...").
_ROW_TEXT = re.compile(r"(columns, got \d+)\s*:.*", re.DOTALL)


def without_values(message: str) -> str:
    """A parser's message with the values it quotes, and any raw row it copies, removed (they
    may be personal)."""
    return _QUOTED.sub("'…'", _ROW_TEXT.sub(r"\1", message))


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


class FileRefused(Exception):
    """The file cannot be read as the contract says; ``detail`` names columns and limits, never a value."""

    def __init__(self, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


def contract_schema(contract: Contract) -> pa.Schema:
    """The Arrow schema every batch of an upload has: the contract's columns, in order, typed."""
    return pa.schema([(p.name, ARROW_TYPES[p.logicalType]) for p in contract.table.properties])


#: The smallest CSV block read at a time. Arrow's streaming CSV reader reads up to 32 blocks
#: ahead of the batch being converted, so the block size, not the file, bounds its memory
#: (32 MiB with 1 MiB blocks; with 16 MiB blocks a 10-million-row file held 512 MiB ahead).
CSV_BLOCK_BYTES = 1 << 20
_SCAN_BYTES = 1 << 20
_QUOTE, _LF, _CR = 34, 10, 13
#: Line breaks inside quoted values are read as part of the value (RFC 4180).
CSV_PARSE = pacsv.ParseOptions(newlines_in_values=True)


def _csv_block_size(path: Path, max_line_bytes: int) -> int:
    """A block size for reading ``path``: :data:`CSV_BLOCK_BYTES` when every line is shorter,
    else one that fits the longest line (a row must fit in one block). A line over
    ``max_line_bytes`` is refused (:func:`scan_lines`).

    A file that may hold line breaks inside quoted values (a line end after an odd number of
    quote characters) is read in blocks of ``max_line_bytes``, as before ADR 0028's read-ahead
    finding: a row then spans several lines and the scan does not follow quoting as the parser
    does (a quote inside an unquoted field is literal), so only the limit is sure to fit it.
    """
    longest, quoted_breaks = scan_lines(path, max_line_bytes)
    return max(CSV_BLOCK_BYTES, (max_line_bytes if quoted_breaks else longest) + 2)


def scan_lines(path: Path, max_line_bytes: int, scan_bytes: int = _SCAN_BYTES) -> tuple[int, bool]:
    """The longest line of a file (bytes between line ends, LF or CR, without them) and whether
    any line end follows an odd number of quote characters; :class:`TooLarge` as soon as a line
    is longer than ``max_line_bytes`` (naming the limit, never the line). Read ``scan_bytes`` at
    a time: about two seconds per GB of typical rows from the page cache."""
    longest = start = offset = 0  # ``start``: the file offset where the current line began
    quotes = 0  # quote characters before this chunk
    quoted_breaks = False
    with path.open("rb") as f:
        while chunk := f.read(scan_bytes):
            data = np.frombuffer(chunk, dtype=np.uint8)
            ends = np.flatnonzero((data == _LF) | (data == _CR))
            at = np.flatnonzero(data == _QUOTE)
            if len(ends):
                if not quoted_breaks:  # quotes before each line end: their positions, counted
                    before = np.searchsorted(at, ends) + quotes
                    quoted_breaks = bool((before & 1).any())
                longest = max(
                    longest,
                    int(ends[0]) + offset - start,
                    int(np.diff(ends).max(initial=1)) - 1,  # between two line ends, without them
                )
                start = int(ends[-1]) + offset + 1
            quotes += len(at)
            offset += len(chunk)
            if max(longest, offset - start) > max_line_bytes:
                raise TooLarge(f"a line is longer than the {max_line_bytes:,}-byte limit for one line")
    return max(longest, offset - start), quoted_breaks


def _csv_batches(
    path: Path, expected: list[str], types: dict[str, pa.DataType], limits: IngestSettings, header: list[str]
) -> Iterator[pa.RecordBatch]:
    size = path.stat().st_size
    if size > limits.max_table_bytes:
        raise TooLarge(f"the file is {size:,} bytes; the limit is {limits.max_table_bytes:,}")
    read_options = pacsv.ReadOptions(block_size=_csv_block_size(path, limits.max_line_bytes))
    with pacsv.open_csv(
        path,
        read_options=read_options,
        parse_options=CSV_PARSE,
        convert_options=pacsv.ConvertOptions(column_types={}),
    ) as reader:
        header.extend(reader.schema.names)
    if len(header) > limits.max_columns:
        raise TooLarge(f"the file has {len(header):,} columns; the limit is {limits.max_columns:,}")
    mismatch = _column_mismatch(expected, header)
    if mismatch:
        raise FileRefused(mismatch)
    convert = pacsv.ConvertOptions(
        column_types=types, strings_can_be_null=True, quoted_strings_can_be_null=False
    )
    with pacsv.open_csv(
        path, read_options=read_options, parse_options=CSV_PARSE, convert_options=convert
    ) as reader:
        yield from reader


def _parquet_batches(path: Path, expected: list[str], limits: IngestSettings) -> Iterator[pa.RecordBatch]:
    """A Parquet file's contract columns in batches, or why it is refused. The footer's declared
    sizes are checked first (nothing is decompressed); then batches are read with text columns
    kept as dictionaries, measured, and only decoded while the running total stays within the
    limit."""
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
        raise FileRefused(mismatch)
    fields = [schema.field(name) for name in expected]
    nested = [f.name for f in fields if pa.types.is_nested(f.type)]
    if nested:
        raise FileRefused(
            f"nested values are not accepted (columns {', '.join(nested)}): each column holds one value per row"
        )
    # A column the footer's Arrow schema calls a dictionary is read as one anyway; give it back plain.
    plain = pa.schema(
        [pa.field(f.name, f.type.value_type if pa.types.is_dictionary(f.type) else f.type) for f in fields]
    )
    texts = [f.name for f in plain if pa.types.is_string(f.type) or pa.types.is_binary(f.type)]
    reader = pq.ParquetFile(path, read_dictionary=texts)
    total = 0
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
        yield pa.RecordBatch.from_arrays(columns, schema=plain)


def _typed(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """The batch's contract columns in the contract's order and types (a failed cast names the column)."""
    columns = []
    for wanted in schema:
        column = batch.column(wanted.name)
        if column.type != wanted.type:
            try:
                column = column.cast(wanted.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise FileRefused(
                    f"values are not {wanted.type}: {without_values(str(exc).splitlines()[0])[:200]}",
                    wanted.name,
                ) from None
        columns.append(column)
    return pa.RecordBatch.from_arrays(columns, schema=schema)


def _rebatched(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """Batches of exactly ``rows`` rows (the last one shorter), whatever sizes the reader gave."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        while batch.num_rows:
            take = min(rows - held, batch.num_rows)
            pending.append(batch.slice(0, take))
            held += take
            batch = batch.slice(take)
            if held == rows:
                yield pending[0] if len(pending) == 1 else _concat(pending)
                pending, held = [], 0
    if held:
        yield pending[0] if len(pending) == 1 else _concat(pending)


def _concat(batches: list[pa.RecordBatch]) -> pa.RecordBatch:
    return pa.Table.from_batches(batches).combine_chunks().to_batches()[0]


def iter_batches(
    contract: Contract, path: Path, limits: IngestSettings | None = None
) -> Iterator[pa.RecordBatch]:
    """The upload as record batches of ``limits.batch_rows`` rows with the contract's columns and
    types, read from a local file one batch at a time (memory does not grow with the file).

    Raises :class:`FileRefused` (naming columns and limits, never a value) when the file cannot
    be read as the contract says, also after some batches were yielded: ``max_rows`` and
    ``max_table_bytes`` are counted as the file streams, so an oversize file is refused mid-way.
    """
    limits = limits or IngestSettings()
    schema = contract_schema(contract)
    expected = schema.names
    types = {f.name: f.type for f in schema}
    header: list[str] = list(expected)
    suffix = path.suffix.lower()
    rows = decoded = 0
    try:
        if suffix == ".parquet":
            raw = _parquet_batches(path, expected, limits)
        elif suffix in (".csv", ".txt"):
            header = []
            raw = _csv_batches(path, expected, types, limits, header)
        else:
            raise FileRefused(f"unsupported file type {suffix or '(none)'}: upload CSV or Parquet")
        for batch in _rebatched(raw, limits.batch_rows):
            rows += batch.num_rows
            if rows > limits.max_rows:
                raise TooLarge(
                    f"the file has more than {limits.max_rows:,} rows (it stopped being read after {rows:,})"
                )
            typed = _typed(batch, schema)
            decoded += typed.nbytes if suffix != ".parquet" else 0  # Parquet is measured as it decodes
            if decoded > limits.max_table_bytes:
                raise TooLarge(
                    f"the file decodes to more than {limits.max_table_bytes:,} bytes (it stopped being "
                    f"read after {decoded:,})"
                )
            yield typed
    except TooLarge as exc:
        raise FileRefused(f"the file is refused before it is read in full: {exc}") from None
    except pa.ArrowInvalid as exc:
        if "straddling" in str(exc) or "block size" in str(exc):
            raise FileRefused(
                f"a line is longer than the {limits.max_line_bytes:,}-byte limit for one line"
            ) from None
        message = without_values(str(exc).splitlines()[0])[:300]
        found = re.search(r"CSV column #(\d+)", message)
        column = None
        if found is not None and int(found.group(1)) < len(header):
            column = header[int(found.group(1))]  # the position is in the file's own column order
            message = message.replace(found.group(0), f"column {column}")
        raise FileRefused(f"the file does not match the contract's types: {message}", column) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise FileRefused(f"the file cannot be read: {exc}") from None


def read_table(
    contract: Contract, path: Path, limits: IngestSettings | None = None
) -> pa.Table | QualityReport:
    """The whole file as one Arrow table with the contract's column types, or a failed report
    saying why. Holds the file in memory: the pipeline streams (:func:`iter_batches`) instead."""
    try:
        batches = list(iter_batches(contract, path, limits))
    except FileRefused as exc:
        return _schema_failure(contract, exc.detail, exc.column)
    return pa.Table.from_batches(batches, schema=contract_schema(contract))


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


#: Rules that span batches: computed over the whole stream, not by Great Expectations per batch.
UNIQUE = "expect_column_values_to_be_unique"
ROW_COUNT = "expect_table_row_count_to_be_between"


@dataclass
class _Tally:
    """One expectation's results summed over the batches (GX's own arithmetic for percentages)."""

    rule: str
    column: str | None
    kwargs: dict[str, Any]
    success: bool = True
    elements: int = 0
    missing: int | None = None
    unexpected: int | None = None
    rows: list[int] = field(default_factory=list)
    values: list[Any] = field(default_factory=list)
    observed: Any = None
    seen: bool = False

    def add(self, success: bool, detail: dict[str, Any]) -> None:
        self.success = self.success and success
        if not self.seen:
            self.observed = detail.get("observed_value")
            self.seen = True
        self.elements += int(detail.get("element_count") or 0)
        if "missing_count" in detail:
            self.missing = (self.missing or 0) + int(detail.get("missing_count") or 0)
        if detail.get("unexpected_count") is not None:
            self.unexpected = (self.unexpected or 0) + int(detail["unexpected_count"])
        if len(self.rows) < SAMPLE:
            # GX reports the frame's index: each batch's frame is indexed by file position.
            self.rows += [int(i) for i in (detail.get("partial_unexpected_index_list") or [])]
            self.rows = self.rows[:SAMPLE]
        if len(self.values) < SAMPLE:
            self.values = (self.values + list(detail.get("partial_unexpected_list") or []))[:SAMPLE]

    def percent(self) -> float | None:
        if self.unexpected is None:
            return None
        base = self.elements - self.missing if self.missing is not None else self.elements
        return self.unexpected / base * 100 if base > 0 else None

    def result(self, contract: Contract) -> CheckResult:
        pi = self.column is not None and contract.facts(self.column).pi
        return CheckResult(
            rule=self.rule,
            column=self.column,
            success=self.success,
            unexpected_count=self.unexpected,
            unexpected_percent=self.percent(),
            # Providers read the file's data rows from 1 (the header row not counted).
            sample_rows=[r + 1 for r in self.rows],
            # Personal data never enters a quality report.
            sample_values=None if pi else (self.values or None),
            observed=self.observed,
            detail=_describe(self.rule, self.kwargs),
        )


class StreamValidator:
    """Validate an upload batch by batch with one Great Expectations context and suite.

    Per-row rules run in GX on each batch (only the batch is converted to pandas, indexed by
    its rows' file positions); their results are summed into one report of the same shape as a
    whole-file validation. Rules over the whole file are computed on the stream: the row count
    exactly, uniqueness with :class:`gbadz.ingest.spill.DuplicateFinder` (hash partitions spilled
    to ``workdir``, bounded memory). ADR 0028.
    """

    def __init__(self, contract: Contract, workdir: Path | None = None) -> None:
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig
        from great_expectations.execution_engine import pandas_execution_engine

        from gbadz.ingest.spill import DuplicateFinder

        # GX fingerprints every in-memory batch with an MD5 over pandas' hash of all values (about
        # 1 s per million rows of strings) unless the frame exceeds HASH_THRESHOLD. The fingerprint
        # is batch metadata only; gbadz identifies uploads by their SHA-256, so it is skipped.
        pandas_execution_engine.HASH_THRESHOLD = 0
        for noisy in ("great_expectations", "great_expectations._docs_decorators"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.contract = contract
        self.schema = contract_schema(contract)
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        asset = context.data_sources.add_pandas("gbadz").add_dataframe_asset(name=contract.id)
        self._batches = asset.add_batch_definition_whole_dataframe("upload")
        suite = gx.ExpectationSuite(name=f"{contract.id}-{contract.version}")
        self._tallies: list[_Tally] = []
        self._by_id: dict[str, _Tally] = {}
        self._unique: dict[int, DuplicateFinder] = {}
        self._row_count: list[int] = []
        in_gx: list[_Tally] = []
        for rule in _suite(contract):
            config = rule.configuration
            kwargs = dict(config.kwargs)
            tally = _Tally(rule=config.type, column=kwargs.get("column"), kwargs=kwargs)
            self._tallies.append(tally)
            if config.type == UNIQUE:
                self._unique[len(self._tallies) - 1] = DuplicateFinder(workdir)
            elif config.type == ROW_COUNT:
                self._row_count.append(len(self._tallies) - 1)
            else:
                suite.add_expectation(rule)
                in_gx.append(tally)
        self._suite = context.suites.add(suite)
        # The stored suite's expectations carry their ids, in the order they were added.
        self._by_id = {str(e.id): t for e, t in zip(self._suite.expectations, in_gx, strict=True)}
        self.rows = 0

    def add(self, batch: pa.RecordBatch) -> None:
        """Validate one batch (its rows follow the rows already added)."""
        offset = self.rows
        frame = batch.to_pandas()
        frame.index = range(offset, offset + batch.num_rows)  # pandas makes it a RangeIndex
        outcome = self._batches.get_batch(batch_parameters={"dataframe": frame}).validate(
            self._suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE}
        )
        del frame
        for res in outcome.results:
            # GX returns loosely typed JSON: read it as such.
            info: dict[str, Any] = dict(res.to_json_dict())
            self._by_id[str(info["expectation_config"]["id"])].add(
                bool(info["success"]), info["result"] or {}
            )
        for index, finder in self._unique.items():
            column = self._tallies[index].column
            assert column is not None
            finder.add(batch.column(column), offset)
        self.rows += batch.num_rows

    def report(self, values_at: Callable[[str, list[int]], list[Any]] | None = None) -> QualityReport:
        """The aggregated report; ``values_at(column, rows)`` fetches sample values of a repeated
        non-personal column (a second read of those rows only) when uniqueness failed."""
        if not self.rows and self._by_id:
            self.add(pa.RecordBatch.from_pylist([], schema=self.schema))  # GX's verdicts on no rows
        for index, finder in self._unique.items():
            tally = self._tallies[index]
            repeated, first = finder.finish(SAMPLE)
            tally.seen, tally.success = True, repeated == 0
            tally.elements, tally.missing, tally.unexpected = (
                finder.elements,
                finder.elements - finder.nonnull,
                repeated,
            )
            tally.rows = first
            column = tally.column
            if (
                repeated
                and column is not None
                and not self.contract.facts(column).pi
                and values_at is not None
            ):
                tally.values = values_at(column, first)
        for index in self._row_count:
            tally = self._tallies[index]
            low, high = tally.kwargs.get("min_value"), tally.kwargs.get("max_value")
            tally.seen, tally.observed = True, self.rows
            tally.success = (low is None or self.rows >= low) and (high is None or self.rows <= high)
        results = [t.result(self.contract) for t in self._tallies]
        return QualityReport(
            contract_id=self.contract.id,
            contract_version=self.contract.version,
            success=all(r.success for r in results),
            rows=self.rows,
            checked_at=datetime.now(UTC).isoformat(),
            results=results,
        )


def _values_at(batches: Callable[[], Iterator[pa.RecordBatch]]) -> Callable[[str, list[int]], list[Any]]:
    def values(column: str, rows: list[int]) -> list[Any]:
        wanted, offset = sorted(set(rows)), 0
        found: dict[int, Any] = {}
        for batch in batches():
            inside = [r for r in wanted if offset <= r < offset + batch.num_rows]
            if inside:
                taken = batch.column(column).take(pa.array([r - offset for r in inside])).to_pylist()
                found.update(zip(inside, taken, strict=True))
            offset += batch.num_rows
            if offset > wanted[-1]:
                break
        return [found.get(r) for r in rows]

    return values


def run_suite(contract: Contract, table: pa.Table, batch_rows: int | None = None) -> QualityReport:
    """Validate an in-memory table (in batches of ``batch_rows``, default: as it is chunked)."""
    with tempfile.TemporaryDirectory(prefix="gbadz-validate-") as tmp:
        checker = StreamValidator(contract, Path(tmp))
        table = table.select(contract_schema(contract).names)
        for batch in table.to_batches(max_chunksize=batch_rows):
            checker.add(batch)
        return checker.report(_values_at(lambda: iter(table.to_batches(max_chunksize=batch_rows))))


def validate_stream(contract: Contract, path: Path, limits: IngestSettings | None = None) -> QualityReport:
    """Read and validate a local file batch by batch, in memory that does not grow with it."""
    limits = limits or IngestSettings()
    with tempfile.TemporaryDirectory(prefix="gbadz-validate-") as tmp:
        batches = iter_batches(contract, path, limits)
        try:
            # The first batch before Great Expectations starts (seconds): a file refused at once
            # (a bomb, a wrong header) is answered without it.
            first = next(batches, None)
            checker = StreamValidator(contract, Path(tmp))
            for batch in itertools.chain([first] if first is not None else [], batches):
                checker.add(batch)
        except FileRefused as exc:
            return _schema_failure(contract, exc.detail, exc.column)
        return checker.report(_values_at(lambda: iter_batches(contract, path, limits)))


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
    """Validate (streaming), then read the whole table only when the file passed (for callers
    that want the table; the pipeline streams it instead)."""
    report = validate_stream(contract, path, limits)
    if not report.success:
        return None, report
    table = read_table(contract, path, limits)
    return (table if isinstance(table, pa.Table) else None), report
