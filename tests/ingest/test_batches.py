"""Ingest in record batches (issue #17, ADR 0028): many batches give what one batch gives."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import sqlalchemy as sa

from gbadz import storage
from gbadz.catalog.models import DatasetVersion
from gbadz.config import IngestSettings, Settings
from gbadz.contract import Contract, load_contract
from gbadz.crypto.columns import ColumnProtector, KeyGrant
from gbadz.crypto.pseudonym import Pseudonymiser
from gbadz.ingest import pipeline, samples
from gbadz.ingest.spill import DuplicateFinder
from gbadz.ingest.validate import read_table, validate_stream
from tests.conftest import REPO

ROWS = 3_000
SMALL = IngestSettings(batch_rows=1_000)
WHOLE = IngestSettings(batch_rows=1_000_000)
HOSPITAL = "sz-hospital-outpatient-visits"


@pytest.fixture
def contract(key_prefix: str) -> tuple[Contract, str]:
    """The hospital contract under a dataset id of the test's own (tests share the buckets)."""
    path = REPO / "contracts" / f"{HOSPITAL}.yaml"
    base = load_contract(path)
    return base.model_copy(update={"id": f"{key_prefix.strip('/')}-visits"}), pipeline.contract_hash(path)


def _context(settings: Settings, limits: IngestSettings) -> pipeline.IngestContext:
    return pipeline.IngestContext.from_settings(settings.model_copy(update={"ingest": limits}))


@pytest.fixture
def small(settings: Settings) -> Iterator[pipeline.IngestContext]:
    """An ingest context reading batches of 1,000 rows."""
    context = _context(settings, SMALL)
    yield context
    context.sessions.kw["bind"].dispose()


def _csv(path: Path, table: pa.Table, **options: Any) -> Path:
    pacsv.write_csv(table, path, pacsv.WriteOptions(**options))
    return path


def _with(table: pa.Table, column: str, row: int, value: Any) -> pa.Table:
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pa.array(values, table.schema.field(column).type))


def _comparable(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "checked_at"}


def _published(
    ctx: pipeline.IngestContext, contract: Contract, version: int
) -> tuple[pa.Table, dict[str, Any]]:
    """A version's data, every protected column decrypted under a grant, and its manifest."""
    with ctx.sessions() as session:
        row = session.scalar(
            sa.select(DatasetVersion).where(
                DatasetVersion.dataset_id == contract.id, DatasetVersion.version == version
            )
        )
        assert row is not None
        manifest_key, quality = row.manifest_key, row.quality
    store = storage.ObjectStore(ctx.client, ctx.settings.s3)
    bucket = ctx.settings.s3.curated_bucket
    manifest = json.loads(store.get_bytes(bucket, manifest_key))
    part = store.get_bytes(bucket, manifest["files"][0]["key"])
    columns = frozenset(c["name"] for c in manifest["protected_columns"])
    grant = KeyGrant("g", contract.id, str(version), columns)
    table = ColumnProtector(ctx.provider).read_table(io.BytesIO(part), "g", {"g": grant}.get)
    return table, {"manifest": manifest, "quality": quality}


class TestManyBatchesAsOne:
    def test_a_failing_file_gets_the_same_report_in_batches(
        self, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A corrupted 3,000-row file validated in three batches gets the one-batch report: counts, percentages, row numbers."""
        c, _ = contract
        bad = samples.corrupt(samples.generate(HOSPITAL, ROWS), HOSPITAL)
        bad = _with(bad, "visit_id", 2_499, 10)  # row 2,500 repeats row 10's visit: batches 1 and 3
        source = _csv(tmp_path / "bad.csv", bad)
        whole = validate_stream(c, source, WHOLE)
        batched = validate_stream(c, source, SMALL)
        assert not batched.success
        assert _comparable(whole.as_dict()) == _comparable(batched.as_dict())
        failed = {(r.rule, r.column): r for r in batched.failures}
        unique = failed[("expect_column_values_to_be_unique", "visit_id")]
        assert (2, [10, 2500], None) == (unique.unexpected_count, unique.sample_rows, unique.sample_values)
        fee = failed[("expect_column_values_to_be_between", "fee_cny")]
        assert (4, [6, 1003, 2000, 2997]) == (fee.unexpected_count, fee.sample_rows)

    def test_the_same_data_is_published_from_one_batch_or_many(
        self,
        settings: Settings,
        small: pipeline.IngestContext,
        contract: tuple[Contract, str],
        tmp_path: Path,
    ) -> None:
        """The same rows published in one batch and in batches of 1,000: equal data, pseudonyms, individuals and report."""
        c, digest = contract
        table = samples.generate(HOSPITAL, ROWS)
        whole = _context(settings, WHOLE)
        one = pipeline.ingest(whole, c, digest, _csv(tmp_path / "one.csv", table))
        # The same rows as other bytes (every value quoted), so the upload is a new one.
        many = pipeline.ingest(
            small, c, digest, _csv(tmp_path / "many.csv", table, quoting_style="all_valid")
        )
        assert one.published is not None
        assert many.published is not None
        assert (1, 2) == (one.published.version, many.published.version)
        first, first_meta = _published(small, c, 1)
        second, second_meta = _published(small, c, 2)
        assert first.equals(second)
        assert _comparable(first_meta["quality"]) == _comparable(second_meta["quality"])
        for key in ("rows", "individuals", "sensitive_individuals", "schema", "protected_columns"):
            assert first_meta["manifest"][key] == second_meta["manifest"][key], key
        typed = read_table(c, tmp_path / "one.csv")
        assert isinstance(typed, pa.Table)
        people = pipeline.count_people(small, c, typed)
        assert people is not None
        assert (people.individuals, people.sensitive_individuals) == (
            second_meta["manifest"]["individuals"],
            second_meta["manifest"]["sensitive_individuals"],
        )
        whole.sessions.kw["bind"].dispose()


class TestAcrossBatches:
    def test_failing_row_in_batch_three_has_its_file_row_number_and_no_value(
        self, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A name too long in row 2,501 (batch 3) is reported as row 2,501 of the file, without the name."""
        c, _ = contract
        table = _with(samples.generate(HOSPITAL, ROWS), "patient_name", 2_500, "Chan Tai-man " + "Zqx" * 30)
        report = validate_stream(c, _csv(tmp_path / "long.csv", table), SMALL)
        (failure,) = report.failures
        assert ("patient_name", 1, [2501], None) == (
            failure.column,
            failure.unexpected_count,
            failure.sample_rows,
            failure.sample_values,
        )
        assert "Zqx" not in json.dumps(report.as_dict())

    def test_duplicate_of_a_non_personal_key_shows_its_value(
        self, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A repeated key of a column that is not personal is shown, as Great Expectations shows it in one batch."""
        c, _ = contract
        columns = dict(c.gbadz.columns)
        columns["visit_id"] = columns["visit_id"].model_copy(update={"pi": False})
        open_ids = c.model_copy(update={"gbadz": c.gbadz.model_copy(update={"columns": columns})})
        table = _with(samples.generate(HOSPITAL, ROWS), "visit_id", 2_999, 1_500)
        source = _csv(tmp_path / "dup.csv", table)
        batched = validate_stream(open_ids, source, SMALL)
        (failure,) = batched.failures
        assert ([1500, 3000], [1500, 1500]) == (failure.sample_rows, failure.sample_values)
        assert _comparable(validate_stream(open_ids, source, WHOLE).as_dict()) == _comparable(
            batched.as_dict()
        )

    def test_over_max_rows_is_refused_mid_stream_with_nothing_published(
        self, settings: Settings, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """A CSV longer than max_rows is refused once the count passes it: quarantined, no version, the landed upload intact."""
        c, digest = contract
        ctx = _context(settings, IngestSettings(batch_rows=1_000, max_rows=2_500))
        source = _csv(tmp_path / "long.csv", samples.generate(HOSPITAL, ROWS))
        result = pipeline.ingest(ctx, c, digest, source)
        assert (False, None) == (result.accepted, result.published)
        assert result.report is not None
        assert "more than 2,500 rows (it stopped being read after 3,000)" in result.report.summary()
        assert result.quarantine_key is not None
        with ctx.sessions() as session:
            versions = session.scalars(
                sa.select(DatasetVersion).where(DatasetVersion.dataset_id == c.id)
            ).all()
        assert [] == list(versions)
        assert [] == list(
            ctx.client.list_objects(ctx.settings.s3.curated_bucket, prefix=f"{c.id}/", recursive=True)
        )
        restored = tmp_path / "restored"
        restored.mkdir()
        assert source.read_bytes() == pipeline.fetch_raw(ctx, c, result.landed, restored).read_bytes()
        ctx.sessions.kw["bind"].dispose()

    def test_pseudonyms_are_equal_across_batches(
        self, small: pipeline.IngestContext, contract: tuple[Contract, str], tmp_path: Path
    ) -> None:
        """One patient's visits in batches 1 and 3 carry one pseudonym, and distinct patients distinct ones."""
        c, digest = contract
        table = _with(samples.generate(HOSPITAL, ROWS), "patient_id", 2_800, "P000000042")
        table = _with(table, "patient_id", 5, "P000000042")
        result = pipeline.ingest(small, c, digest, _csv(tmp_path / "visits.csv", table))
        assert result.published is not None
        published, _ = _published(small, c, 1)
        tokens = published["patient_id"].to_pylist()
        assert tokens[5] == tokens[2_800]
        pairs = set(zip(table["patient_id"].to_pylist(), tokens, strict=True))
        assert len({raw for raw, _ in pairs}) == len(pairs) == len({token for _, token in pairs})


class TestPseudonymCache:
    def test_a_bounded_cache_gives_the_uncached_pseudonyms(self) -> None:
        """With a cache of 3 entries, evicted and kept values alike get the pseudonyms computed without one; 1, 1.0 and True stay apart."""
        key = bytes(range(32))
        plain, cached = Pseudonymiser(key), Pseudonymiser(key, cache=3)
        batches = [pa.array(["a", "b", None, "a"]), pa.array(["c", "d", "e", "a"]), pa.array(["e", "b", "a"])]
        for values in batches:
            assert plain.array(values).equals(cached.array(values))
        assert len(cached._cache) <= 3
        mixed = [pa.array([1, 2]), pa.array([1.0, 2.5]), pa.array([True, False])]
        assert [plain.array(v).to_pylist() for v in mixed] == [cached.array(v).to_pylist() for v in mixed]


class TestDuplicateFinder:
    @pytest.mark.parametrize(
        "values",
        [
            pa.array(np.random.default_rng(1).integers(0, 5_000, 20_000)),
            pa.array(np.random.default_rng(2).integers(0, 5_000, 20_000).astype(float) / 4),
            pa.array([None if i % 7 == 0 else f"id-{i % 9_000}" for i in range(20_000)]),
            pa.array([None if i % 5 == 0 else bool(i % 3) for i in range(50)]),
        ],
        ids=["int", "float", "text-with-nulls", "bool"],
    )
    def test_finds_the_rows_pandas_finds(self, values: pa.Array, tmp_path: Path) -> None:
        """Over chunks added one by one, the repeated rows are exactly pandas' duplicated(keep=False) of non-null values."""
        finder = DuplicateFinder(tmp_path)
        for start in range(0, len(values), 3_000):
            finder.add(values.slice(start, 3_000), start)
        count, first = finder.finish(20)
        series = pd.Series(values.to_pylist())
        expected = series.notna() & series.duplicated(keep=False)
        assert (int(expected.sum()), list(np.flatnonzero(expected)[:20])) == (count, first)
        assert [] == list(tmp_path.iterdir())  # the spill files are gone
